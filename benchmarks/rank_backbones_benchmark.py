"""Backbone ranking benchmark: do the scores of `rank_backbones` order candidates as training does?

Offline, on the handwritten digits shipped with tftransfer (16x16 grayscale):

- **Candidates**: small CNN source models trained on the digits 0-4 at
  different widths, depths, cut points and numbers of epochs, plus an
  untrained one, each saved as a `.keras` file and loaded (and cut) from it.
- **Tasks** (each with few labels): ``digits_5_9`` (the digits 5-9, 20
  labelled images per class), ``inverted_5_9`` (the same digits inverted,
  255 - x, with Gaussian pixel noise: a domain shift) and ``parity`` (even
  against odd over all ten digits, 50 labelled images per class).
- For each task and candidate: the three scores of `tft.rank_backbones` on the
  labelled images only (linear probe and kNN on a stratified hold-out of
  them, LogME on all of them); then, on the task's other (unlabelled) images,
  the accuracy after `tft.fit_two_phase` for each recipe in `RECIPES` (fixed
  epochs, no early stopping, mean over `--seeds`) and after its head phase
  alone (the frozen-phase accuracy), and the accuracy of the linear probe
  itself (`baselines.logistic_regression` fitted on all labelled features):
  what the probe's hold-out score estimates.
- Then, per task, Kendall's tau (`scipy.stats.kendalltau`) and the weighted
  tau (`scipy.stats.weightedtau`, hyperbolic weights on the ranks, as in
  thuml/Transfer-Learning-Library's model-selection examples) between each
  score and each accuracy, and the seconds per candidate.

It writes ``rank_backbones.json`` and ``rank_backbones.md`` to ``--out``:

    python benchmarks/rank_backbones_benchmark.py --out benchmarks/results

About 13 minutes on 2 CPU cores. The "Reading" section at the end of
``results/rank_backbones.md`` was written by hand after the recorded run; a
new run rewrites the file without it.
"""

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import scipy
import scipy.stats
import tensorflow as tf

import tftransfer as tft
from tftransfer.baselines import logistic_regression
from tftransfer.data.digits import load_digits
from tftransfer.demos.digits import digits_cnn
from tftransfer.evaluation.ranking import METHODS
from tftransfer.evaluation.ranking import rank_backbones

IMAGE_SIZE = 16
UNFREEZE_BLOCKS = 2
SOURCE_CLASSES = (0, 1, 2, 3, 4)

# name: (head learning rate, head epochs, fine-tune epochs). "demo": the
# settings of `tftransfer demo`; "long_head": a head trained to (near)
# convergence first. Fine-tuning runs at a tenth of the head's rate.
RECIPES = {"demo": (1e-3, 10, 10), "long_head": (1e-2, 30, 10)}

# (candidate name, source architecture, source epochs, cut_at: None = below the head)
CANDIDATES = [
    ("untrained_cnn", "cnn", 0, None),
    ("cnn_1_epoch", "cnn", 1, None),
    ("cnn_3_epochs", "cnn", 3, None),
    ("cnn", "cnn", 12, None),
    ("cnn_cut_block2", "cnn", 12, "block2_pool"),
    ("cnn_cut_block1", "cnn", 12, "block1_pool"),
    ("narrow_cnn", "narrow", 12, None),
    ("shallow_cnn", "shallow", 12, None),
]


def small_cnn(filters, *, input_shape, name):
    """Like `digits_cnn`, with other widths and numbers of blocks."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    for block, width in enumerate(filters, 1):
        for i in (1, 2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                    name=f"block{block}_conv{i}")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"block{block}_relu{i}")(x)
        if block < len(filters):
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=name)


def source_backbone(architecture, shape):
    if architecture == "cnn":
        return digits_cnn(input_shape=shape, bn_momentum=0.9, name="cnn")
    if architecture == "narrow":
        return small_cnn((8, 16, 32), input_shape=shape, name="narrow")
    return small_cnn((32,), input_shape=shape, name="shallow")


def pretrain(architecture, epochs, source, work, seed):
    """Trains a source model on the digits 0-4, saves it; returns the path
    and its held-out source accuracy."""
    (x, y), (x_test, y_test) = source
    keras.utils.set_random_seed(seed)
    backbone = source_backbone(architecture, x.shape[1:])
    features = keras.layers.GlobalAveragePooling2D(name="source_pooling")(backbone.output)
    features = keras.layers.Dropout(0.3, name="source_dropout")(features)
    outputs = keras.layers.Dense(len(SOURCE_CLASSES), name="source_predictions")(features)
    model = keras.Model(backbone.input, outputs, name=f"source_{architecture}")
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    if epochs:
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    path = os.path.join(work, f"{architecture}_{epochs}.keras")
    model.save(path)
    accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))
    return path, accuracy


def few_labels(x, y, per_class, rng):
    chosen = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                             for c in np.unique(y)])
    rest = np.setdiff1d(np.arange(len(y)), chosen)
    return (x[chosen], y[chosen]), (x[rest], y[rest])


def make_data(seed, shots):
    images, labels = load_digits(image_size=IMAGE_SIZE)
    rng = np.random.default_rng(seed)
    source = np.isin(labels, SOURCE_CLASSES)
    xs, ys = images[source], labels[source]
    order = rng.permutation(len(xs))
    cut = int(0.8 * len(xs))
    data = {"source": ((xs[order[:cut]], ys[order[:cut]]), (xs[order[cut:]], ys[order[cut:]]))}
    target = ~source
    xt, yt = images[target], labels[target] - 5
    data["digits_5_9"] = few_labels(xt, yt, shots, np.random.default_rng(seed + 1))
    shifted = 255.0 - xt + np.random.default_rng(seed + 2).normal(0, 40, xt.shape)
    data["inverted_5_9"] = few_labels(np.clip(shifted, 0, 255).astype("float32"), yt, shots,
                                      np.random.default_rng(seed + 3))
    data["parity"] = few_labels(images, labels % 2, 50, np.random.default_rng(seed + 4))
    return data


def load_candidate(path, cut_at):
    return tft.load_backbone(path, cut_at=cut_at)


def build(path, cut_at, y, shape, pooling):
    return tft.build_classifier(load_candidate(path, cut_at),
                                class_names=[str(c) for c in range(int(y.max()) + 1)],
                                input_shape=shape, pooling=pooling)


def fine_tuned_accuracy(path, cut_at, task, recipe, pooling, seed):
    """(frozen-phase accuracy, final accuracy, seconds) after fit_two_phase."""
    (x, y), (x_test, y_test) = task
    learning_rate, head_epochs, fine_tune_epochs = RECIPES[recipe]
    keras.utils.set_random_seed(seed)
    model = build(path, cut_at, y, x.shape[1:], pooling)
    # Two blocks, or all there are (a model cut at block1 has one).
    unfreeze = min(UNFREEZE_BLOCKS, len(tft.get_blocks(model)))
    start = time.perf_counter()
    history = tft.fit_two_phase(model, x, y=y, validation_data=(x_test, y_test),
                                head_epochs=head_epochs, fine_tune_epochs=fine_tune_epochs,
                                unfreeze_blocks=unfreeze, learning_rate=learning_rate,
                                early_stopping=False, batch_size=10, verbose=0)
    seconds = time.perf_counter() - start
    phases = history.history["phase"]
    accuracy = history.history["val_accuracy"]
    frozen = accuracy[max(i for i, p in enumerate(phases) if p == 1)]
    return float(frozen), float(accuracy[-1]), seconds


def probe_test_accuracy(path, cut_at, task, pooling):
    """The linear probe fitted on all labelled features, scored on the test
    images: what the probe's hold-out score estimates, without its noise."""
    (x, y), (x_test, y_test) = task
    model = build(path, cut_at, y, x.shape[1:], pooling)
    features = keras.Model(model.inputs, model.head.dropout_layers[0].input)
    probe = logistic_regression(features.predict(x, verbose=0), y)
    return float(np.mean(probe.predict(features.predict(x_test, verbose=0)) == y_test))


def targets(recipes):
    """The accuracies the scores are compared with."""
    return ([f"accuracy_{r}" for r in recipes] + [f"frozen_accuracy_{r}" for r in recipes]
            + ["probe_test_accuracy"])


def taus(scores, accuracies):
    tau = scipy.stats.kendalltau(scores, accuracies)
    weighted = scipy.stats.weightedtau(scores, accuracies)
    return {"kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "weighted_tau": float(weighted.statistic)}


def run(args):
    tf.get_logger().setLevel("ERROR")  # retracing notes from many small models
    keras.utils.set_random_seed(0)
    data = make_data(0, args.shots)
    work = tempfile.mkdtemp(prefix="rank-backbones-")
    sources, source_accuracy = {}, {}
    start = time.perf_counter()
    for _, architecture, epochs, _ in CANDIDATES:
        key = (architecture, epochs)
        if key not in sources:
            sources[key], source_accuracy[key] = pretrain(architecture, epochs, data["source"],
                                                          work, seed=0)
    pretrain_seconds = time.perf_counter() - start
    results = {"tasks": {}, "candidates": [
        {"name": name, "architecture": architecture, "source_epochs": epochs, "cut_at": cut,
         "source_accuracy": source_accuracy[(architecture, epochs)]}
        for name, architecture, epochs, cut in CANDIDATES]}
    for task_name in args.tasks:
        train, test = data[task_name]
        task = {"num_labelled": len(train[1]), "num_test": len(test[1]), "candidates": {}}
        for method in METHODS:
            ranking = rank_backbones(
                {name: load_candidate(sources[(a, e)], cut) for name, a, e, cut in CANDIDATES},
                train, method=method, pooling=args.pooling, seed=0)
            for row in ranking.rows:
                entry = task["candidates"].setdefault(row.name, {})
                entry[method] = row.score
                entry[f"{method}_seconds"] = row.seconds
                entry["feature_dim"] = row.feature_dim
        for name, architecture, epochs, cut in CANDIDATES:
            path, entry = sources[(architecture, epochs)], task["candidates"][name]
            entry["probe_test_accuracy"] = probe_test_accuracy(path, cut, (train, test),
                                                               args.pooling)
            for recipe in args.recipes:
                runs = [fine_tuned_accuracy(path, cut, (train, test), recipe, args.pooling,
                                            seed) for seed in range(args.seeds)]
                entry[f"frozen_accuracy_{recipe}"] = float(np.mean([r[0] for r in runs]))
                entry[f"accuracy_{recipe}"] = float(np.mean([r[1] for r in runs]))
                entry[f"accuracy_{recipe}_per_seed"] = [r[1] for r in runs]
                entry[f"fit_two_phase_seconds_{recipe}"] = float(np.mean([r[2] for r in runs]))
            print(f"{task_name} {name}: " + ", ".join(
                f"{k}={v:.3f}" for k, v in entry.items() if isinstance(v, float)), flush=True)
        names = [name for name, *_ in CANDIDATES]
        task["tau"] = {
            target: {method: taus([task["candidates"][n][method] for n in names],
                                  [task["candidates"][n][target] for n in names])
                     for method in METHODS}
            for target in targets(args.recipes)}
        results["tasks"][task_name] = task
    results["settings"] = {
        "image_size": IMAGE_SIZE, "shots": args.shots, "parity_shots": 50,
        "recipes": {r: dict(zip(("learning_rate", "head_epochs", "fine_tune_epochs"),
                                RECIPES[r])) for r in args.recipes},
        "seeds": args.seeds, "pooling": args.pooling, "unfreeze_blocks": UNFREEZE_BLOCKS,
        "batch_size": 10}
    shutil.rmtree(work, ignore_errors=True)  # the source models' .keras files
    results["seconds"] = {"pretraining": pretrain_seconds,
                          "total": time.perf_counter() - start}
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version(), "tensorflow": tf.__version__,
                          "keras": keras.__version__, "scipy": scipy.__version__,
                          "tftransfer": tft.__version__}
    return results


TARGET_NAMES = {
    "probe_test_accuracy": "linear probe on the test images",
}


def target_name(target):
    if target in TARGET_NAMES:
        return TARGET_NAMES[target]
    recipe = target.removeprefix("frozen_accuracy_").removeprefix("accuracy_")
    return (f"frozen phase, {recipe}" if target.startswith("frozen")
            else f"after fit_two_phase, {recipe}")


def markdown(results):
    settings = results["settings"]
    recipes = settings["recipes"]
    recipe_text = "; ".join(
        f"`{name}`: head learning rate {r['learning_rate']:g}, {r['head_epochs']} head + "
        f"{r['fine_tune_epochs']} fine-tune epochs" for name, r in recipes.items())
    lines = [
        "# Backbone ranking: agreement with the accuracy after `fit_two_phase`",
        "",
        ("`python benchmarks/rank_backbones_benchmark.py` (one run; "
        f"{results['machine']['cpus']} CPUs, {results['seconds']['total']:.0f} s in all). "
        f"{len(results['candidates'])} candidates, source models trained on the digits 0-4 "
        "(see the JSON for their source accuracy). Scores from the labelled images only "
        "(linear probe and kNN: a stratified 25% hold-out of them). Accuracies on each "
        "task's other images, mean of "
        f"{settings['seeds']} seeds, {settings['unfreeze_blocks']} blocks unfrozen (1 for the "
        f"model cut at block1), no early stopping, {settings['pooling']} pooling. Recipes: "
        f"{recipe_text}."),
        "",
        "## Kendall tau (weighted tau) of each score against each accuracy",
        "",
        "| task | labelled | accuracy | " + " | ".join(METHODS) + " |",
        "|---|---|---|" + "---|" * len(METHODS),
    ]
    for name, task in results["tasks"].items():
        for target, row in task["tau"].items():
            cells = [f"{row[m]['kendall_tau']:+.2f} ({row[m]['weighted_tau']:+.2f})"
                     for m in METHODS]
            lines.append(f"| {name} | {task['num_labelled']} | {target_name(target)} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Mean over tasks (weighted tau in brackets):", ""]
    first = next(iter(results["tasks"].values()))
    for target in first["tau"]:
        means = {m: (np.mean([t["tau"][target][m]["kendall_tau"]
                              for t in results["tasks"].values()]),
                     np.mean([t["tau"][target][m]["weighted_tau"]
                              for t in results["tasks"].values()])) for m in METHODS}
        lines.append(f"- {target_name(target)}: " + ", ".join(
            f"{m} {k:+.2f} ({w:+.2f})" for m, (k, w) in means.items()))
    lines.append("")
    for name, task in results["tasks"].items():
        columns = ["probe_test_accuracy"] + [f"{kind}_{r}" for r in recipes
                                             for kind in ("frozen_accuracy", "accuracy")]
        headers = ["probe on test"] + [f"{'frozen' if k == 'frozen_accuracy' else 'final'} "
                                       f"{r}" for r in recipes
                                       for k in ("frozen_accuracy", "accuracy")]
        lines += [f"## {name} ({task['num_labelled']} labelled, {task['num_test']} test)", "",
                  "| candidate | dims | linear_probe | knn | logme | " + " | ".join(headers)
                  + " | seconds: probe / knn / logme / "
                  + " / ".join(f"fit {r}" for r in recipes) + " |",
                  "|---|---|---|---|---|" + "---|" * len(headers) + "---|"]
        last = f"accuracy_{list(recipes)[-1]}"
        for candidate, entry in sorted(task["candidates"].items(),
                                       key=lambda item: -item[1][last]):
            seconds = [entry[f"{m}_seconds"] for m in METHODS] + [
                entry[f"fit_two_phase_seconds_{r}"] for r in recipes]
            lines.append(
                f"| {candidate} | {entry['feature_dim']} | {entry['linear_probe']:.3f} | "
                f"{entry['knn']:.3f} | {entry['logme']:.3f} | "
                + " | ".join(f"{entry[c]:.3f}" for c in columns) + " | "
                + " / ".join(f"{v:.2f}" for v in seconds) + " |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--tasks", nargs="+", default=["digits_5_9", "inverted_5_9", "parity"])
    parser.add_argument("--shots", type=int, default=20)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--pooling", default="avg")
    args = parser.parse_args()
    results = run(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "rank_backbones.json"), "w") as f:
        json.dump(results, f, indent=2)
    text = markdown(results)
    with open(os.path.join(args.out, "rank_backbones.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
