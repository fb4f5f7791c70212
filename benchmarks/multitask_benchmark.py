"""One shared multi-task model against one model per task, on the bundled digits.

Three tasks on the same images (scikit-learn's 8x8 digits, bundled, at 16 px):
``digit`` (10 classes), ``parity`` (even / odd) and ``loop`` (whether the
digit has a closed loop: 0, 4, 6, 8, 9). A source backbone (the digits demo's
three-block CNN, `tftransfer.demos.digits.digits_cnn`) is pretrained once on
digits 0-4 of one half of the images; the other half is the target set, with
`--shots` labelled images per digit for training and the rest for testing.

Per seed (the target split and the heads' initialization): one
`tft.build_multitask` model with the three heads, and three
`tft.build_classifier` models (one per task, ``parity`` and ``loop`` as
2-class softmax heads), all on the same source backbone, all trained with the
same `tft.fit_two_phase` recipe (head epochs on cached features, then the top
block fine-tuned), no early stopping. Three recipes: ``short`` (10 head epochs,
then 5 at the default fine-tuning rate, 1e-4), ``long`` (10 head epochs, then
15 at 1e-3: enough for phase 2 to converge on this data) and ``long_2_blocks``
(the same with the top 2 blocks unfrozen). Other settings
of the shared model: the yes/no tasks as 2-class softmax heads (the separate
models' kind); loss weights 3 on the yes/no tasks; the mean of the task losses
instead of their sum (loss weights 1/3 each: with Adam, whose steps do not
depend on the scale of the loss, it must train the same model); and the digit
labels of half the training images missing (-1), as data with labels for some
tasks only gives. Recorded: test accuracy per task, training seconds (the fit
calls, after one throwaway warm-up fit), parameters.

    python benchmarks/multitask_benchmark.py --out benchmarks/results

About 6 minutes on 2 CPU cores.
"""

import argparse
import json
import os
import platform
import tempfile
import time

LOOP_DIGITS = (0, 4, 6, 8, 9)
TASKS = ("digit", "parity", "loop")
RECIPES = {"short": {"fine_tune_epochs": 5},
           "long": {"fine_tune_epochs": 15, "fine_tune_learning_rate": 1e-3},
           "long_2_blocks": {"fine_tune_epochs": 15, "fine_tune_learning_rate": 1e-3,
                             "unfreeze_blocks": 2}}
SHARED = {  # setting -> (recipes, yes/no head kind, loss weights of digit / yes-no tasks)
    "shared": (("short", "long", "long_2_blocks"), "binary", (1.0, 1.0)),
    "shared_softmax": (("short", "long"), "softmax", (1.0, 1.0)),
    "shared_loss_weights": (("short",), "binary", (1.0, 3.0)),
    "shared_mean_loss": (("short",), "binary", (1 / 3, 1 / 3)),
    "shared_half_digits": (("short", "long"), "binary", (1.0, 1.0)),
}


def task_labels(digits):
    import numpy as np

    return {"digit": digits.astype("int32"),
            "parity": (digits % 2 == 0).astype("int32"),
            "loop": np.isin(digits, LOOP_DIGITS).astype("int32")}


def pretrain_source(images, labels, path, *, epochs):
    import keras
    import numpy as np

    from tftransfer.demos.digits import digits_cnn

    keras.utils.set_random_seed(0)
    chosen = labels < 5
    backbone = digits_cnn(input_shape=images.shape[1:], name="digits_backbone")
    x = keras.layers.GlobalAveragePooling2D(name="source_pooling")(backbone.output)
    outputs = keras.layers.Dense(5, name="source_predictions")(x)
    source = keras.Model(backbone.input, outputs, name="source_model")
    source.compile(keras.optimizers.Adam(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    source.fit(images[chosen], labels[chosen], epochs=epochs, batch_size=32, verbose=0)
    source.save(path)
    return float(np.mean(source.predict(images[chosen], verbose=0).argmax(-1)
                         == labels[chosen]))


def run_seed(seed, images, labels, source_path, *, shots, head_epochs, recipe):
    import keras
    import numpy as np

    import tftransfer as tft

    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == d), shots, replace=False)
                             for d in range(10)])
    train = np.zeros(len(labels), bool)
    train[chosen] = True
    x_train, x_test = images[train], images[~train]
    y_train, y_test = task_labels(labels[train]), task_labels(labels[~train])
    name = recipe
    recipe = {"head_epochs": head_epochs, "unfreeze_blocks": 1, "early_stopping": False,
              "batch_size": 16, "verbose": 0, **RECIPES[recipe]}

    def backbone():
        return keras.saving.load_model(source_path)

    def accuracy(predicted, task):
        return float(np.mean(predicted.argmax(-1) == y_test[task]))

    results = {}
    for setting, (recipes, kind, (digit_weight, yes_no_weight)) in SHARED.items():
        if name not in recipes:
            continue
        keras.utils.set_random_seed(seed)
        # "softmax": the yes/no tasks as 2-class softmax heads, as the separate
        # models (`build_classifier`) have: only the sharing differs.
        yes_no = tft.heads.classification if kind == "softmax" else tft.heads.binary
        model = tft.build_multitask(backbone(), {
            "digit": tft.heads.classification(10, loss_weight=digit_weight),
            "parity": yes_no(class_names=["odd", "even"], loss_weight=yes_no_weight),
            "loop": yes_no(class_names=["open", "loop"], loss_weight=yes_no_weight)},
            pooling="avg")
        targets = dict(y_train)
        if setting == "shared_half_digits":
            digit = targets["digit"].copy()
            digit[rng.permutation(len(digit))[: len(digit) // 2]] = -1
            targets["digit"] = digit
        start = time.perf_counter()
        tft.fit_two_phase(model, x_train, y=targets, **recipe)
        seconds = time.perf_counter() - start
        predicted = model.predict_tasks(x_test, verbose=0)
        results[setting] = {
            "accuracy": {task: accuracy(predicted[task], task) for task in TASKS},
            "seconds": seconds, "parameters": int(model.count_params()),
            "trained_parameters": tft.trainable_parameters(model),  # in phase 2
            "cached": [s["cache"] is not None for s in model.training_summary]}
    separate = {"accuracy": {}, "seconds": 0.0, "parameters": 0, "trained_parameters": 0,
                "cached": []}
    for task in TASKS:
        keras.utils.set_random_seed(seed)
        model = tft.build_classifier(backbone(), num_classes=10 if task == "digit" else 2,
                                     pooling="avg")
        start = time.perf_counter()
        tft.fit_two_phase(model, x_train, y=y_train[task], **recipe)
        separate["seconds"] += time.perf_counter() - start
        separate["parameters"] += int(model.count_params())
        separate["trained_parameters"] += tft.trainable_parameters(model)
        separate["accuracy"][task] = accuracy(model.predict_proba(x_test, verbose=0), task)
        separate["cached"] += [s["cache"] is not None for s in model.training_summary]
    results["separate"] = separate
    return results


def warm_up(images, source_path):
    """One throwaway fit, so that TensorFlow's one-time start-up costs fall on no
    measured run."""
    import keras
    import numpy as np

    import tftransfer as tft

    model = tft.build_classifier(keras.saving.load_model(source_path), num_classes=2)
    tft.fit_two_phase(model, images[:32], y=np.arange(32) % 2, head_epochs=1,
                      fine_tune_epochs=1, unfreeze_blocks=1, verbose=0)


def _mean_sd(values):
    import numpy as np

    return float(np.mean(values)), float(np.std(values, ddof=1) if len(values) > 1 else 0.0)


def summarize(runs):
    summary = {}
    for recipe in runs[0]:
        for setting in runs[0][recipe]:
            results = [r[recipe][setting] for r in runs]
            entry = {"accuracy": {}, "seconds": _mean_sd([r["seconds"] for r in results]),
                     "parameters": results[0]["parameters"],
                     "trained_parameters": results[0]["trained_parameters"]}
            for task in TASKS:
                entry["accuracy"][task] = _mean_sd([r["accuracy"][task] for r in results])
            summary[f"{recipe}/{setting}"] = entry
    return summary


def markdown(summary, settings):
    names = {"shared": "one shared model (3 heads)",
             "shared_softmax": "shared, yes/no tasks as 2-class softmax heads",
             "shared_loss_weights": "shared, loss weight 3 on parity and loop",
             "shared_mean_loss": "shared, mean of the task losses (weights 1/3)",
             "shared_half_digits": "shared, half the digit labels missing (-1)",
             "separate": "three separate models"}
    recipes = {"short": f"short: {settings['head_epochs']} + 5 epochs, phase 2 at 1e-4",
               "long": f"long: {settings['head_epochs']} + 15 epochs, phase 2 at 1e-3",
               "long_2_blocks": "long, top 2 blocks unfrozen"}
    lines = [
        "# Multi-task: one shared backbone against one model per task",
        "",
        "Generated by `benchmarks/multitask_benchmark.py` "
        f"({settings['seeds']} seeds, {settings['shots']} labelled images per digit, "
        f"{settings['test_examples']} test images; recipes: {settings['head_epochs']} head "
        "epochs, then phase 2 with the top block (or 2) unfrozen; "
        f"{settings['machine']}). Accuracy on the test images, mean ± sd over seeds; "
        "seconds: the `fit_two_phase` calls (all three for the separate models).",
        "",
        ("| recipe | setting | digit | parity | loop | training seconds | parameters "
         "| trained in phase 2 |"),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, entry in summary.items():
        recipe, setting = key.split("/")
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in (entry["accuracy"][t] for t in TASKS)]
        seconds = entry["seconds"]
        lines.append(f"| {recipes[recipe]} | {names[setting]} | {' | '.join(cells)} | "
                     f"{seconds[0]:.1f} ± {seconds[1]:.1f} | {entry['parameters']:,} | "
                     f"{entry['trained_parameters']:,} |")
    lines += ["", f"Source backbone: accuracy {settings['source_accuracy']:.3f} on its own "
              "training images (digits 0-4 of the source half).", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=20)
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help=f"comma-separated, from {sorted(RECIPES)}")
    parser.add_argument("--source-epochs", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    from tftransfer.data.digits import load_digits

    images, labels = load_digits(image_size=16)
    order = np.random.default_rng(123).permutation(len(labels))
    source, target = order[: len(order) // 2], order[len(order) // 2:]
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "source.keras")
        source_accuracy = pretrain_source(images[source], labels[source], path,
                                          epochs=args.source_epochs)
        warm_up(images[target], path)
        runs = [{recipe: run_seed(seed, images[target], labels[target], path,
                                  shots=args.shots, head_epochs=args.head_epochs,
                                  recipe=recipe)
                 for recipe in args.recipes.split(",")}
                for seed in range(args.seeds)]
    settings = {"seeds": args.seeds, "shots": args.shots, "head_epochs": args.head_epochs,
                "recipes": {name: RECIPES[name] for name in args.recipes.split(",")},
                "test_examples": int(len(target) - 10 * args.shots),
                "source_accuracy": source_accuracy,
                "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}"}
    summary = summarize(runs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "multitask.json"), "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "summary": summary, "runs": runs}, f, indent=2)
    text = markdown(summary, settings)
    with open(os.path.join(args.out, "multitask.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
