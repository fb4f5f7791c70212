"""Self-supervised pretraining (SimCLR) against scratch and supervised source pretraining.

Target task: the bundled digits 5-9 (16x16, centred) with 1, 3 or 5 labels per class, drawn
from a pool of 40% of the 5-9 images; every method is scored on the other 60%, which no
method trains on and nothing is chosen on. Seeds 0, 1, 2: each draws the labelled images,
initializes the networks and pretrains anew. All methods use the demo's CNN
(`tftransfer.demos.digits.digits_cnn`):

- **from scratch**: randomly initialized, trained end to end on the few labels for 20 epochs,
  then its BatchNormalization statistics recomputed on them (the demo's baseline,
  `tftransfer.demos.label_curve.scratch_model`);
- **supervised source**: pretrained with labels on all digits 0-4 (the demo's source task:
  15 epochs, batch 32), cut and transferred as the demo does (`cut_at="block3_relu1"`,
  flatten pooling), `tft.fit_two_phase`;
- **SimCLR**: `tft.pretrain_self_supervised` on the unlabelled images, i.e. all digits 0-4
  and the 5-9 pool, labels never read (not the test images), then `tft.fit_two_phase`.

Both transfers use the demo's recipe: flatten pooling, 10 head epochs, 10 fine-tuning epochs of
the top 2 blocks, learning rate 1e-3, batch 10, no early stopping; the SimCLR backbone is used
whole (cut below its last convolution it did worse). SimCLR's settings (30 epochs, batch 128,
temperature 0.5) and its cut and pooling were chosen on a development task, few labels of the
digits 0-4 scored on other 0-4 images (docs/pretraining.md), never on the test images.

    python benchmarks/self_supervised_benchmark.py   # writes results/self_supervised.{json,md}
    python benchmarks/self_supervised_benchmark.py --development   # the settings' choice:
                                                   # results/self_supervised_development.json

About 4-5 minutes on 2 CPU cores (275 s for the recorded results; a second run gave the same
accuracies to the last digit).
"""

import argparse
import json
import os
import platform
import time

import keras
import numpy as np

import tftransfer as tft
from tftransfer.data.digits import load_digits
from tftransfer.demos.config import DemoConfig
from tftransfer.demos.digits import digits_cnn
from tftransfer.demos.label_curve import scratch_model
from tftransfer.evaluation.label_efficiency import label_efficiency

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
LABELS_PER_CLASS = (1, 3, 5)
SEEDS = (0, 1, 2)
CONFIG = DemoConfig(canvas_size=16)  # centred 16-pixel digits
SIMCLR = {"epochs": 30, "batch_size": 128, "temperature": 0.5, "projection_units": (256, 64),
          "learning_rate": 1e-3}
SIMCLR_POOLING = "flatten"  # as the demo (on the development task: avg 0.48 at 1 label)
SOURCE_EPOCHS, SOURCE_BATCH = 15, 32
NAMES = [str(c) for c in range(5, 10)]


def split():
    images, labels = load_digits(image_size=16)
    order = np.random.default_rng(0).permutation(len(labels))
    target = order[labels[order] >= 5]
    cut = int(0.4 * len(target))
    pool, test = target[:cut], target[cut:]
    source = order[labels[order] < 5]
    return {
        "pool": (images[pool], labels[pool] - 5),
        "test": (images[test], labels[test] - 5),
        "source": (images[source], labels[source]),
        "unlabelled": images[np.concatenate([source, pool])],
    }


def pretrain_source(data, seed, path):
    keras.utils.set_random_seed(seed)
    backbone = digits_cnn(input_shape=(16, 16, 1), name="source_backbone")
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    x = keras.layers.Dense(5, name="source_predictions")(keras.layers.Dropout(0.3)(x))
    model = keras.Model(backbone.input, x, name="source_model")
    model.compile(keras.optimizers.Adam(CONFIG.learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*data["source"], epochs=SOURCE_EPOCHS, batch_size=SOURCE_BATCH, verbose=0)
    model.save(path)


def pretrain_simclr(data, seed, path):
    keras.utils.set_random_seed(seed)
    backbone = digits_cnn(input_shape=(16, 16, 1), name="simclr_backbone")
    _, history = tft.pretrain_self_supervised(backbone, data["unlabelled"], seed=seed,
                                              verbose=0, return_history=True, **SIMCLR)
    backbone.save(path)
    return {key: values[-1] for key, values in history.history.items()}


def transfer(path, *, cut_at, pooling):
    def method(x, y, *, seed):
        keras.utils.set_random_seed(seed)
        model = tft.build_classifier(tft.load_backbone(path, cut_at=cut_at), class_names=NAMES,
                                     pooling=pooling)
        tft.fit_two_phase(model, x, y=y, head_epochs=CONFIG.head_epochs,
                          fine_tune_epochs=CONFIG.fine_tune_epochs,
                          unfreeze_blocks=CONFIG.unfreeze_blocks,
                          learning_rate=CONFIG.learning_rate, batch_size=CONFIG.batch_size,
                          early_stopping=False, verbose=0)
        return model
    return method


def from_scratch(x, y, *, seed):
    model = scratch_model(CONFIG, digits_cnn, x.shape[1:], len(NAMES), seed=seed)
    model.fit(x, y, epochs=CONFIG.head_epochs + CONFIG.fine_tune_epochs,
              batch_size=CONFIG.batch_size, verbose=0)
    tft.adapt_batchnorm(model, x)
    return model


def main(work_dir):
    os.makedirs(work_dir, exist_ok=True)
    data = split()
    methods = ("from scratch", "supervised source", "SimCLR")
    accuracy = {m: np.zeros((len(LABELS_PER_CLASS), len(SEEDS))) for m in methods}
    seconds = {m: 0.0 for m in (*methods, "source pretraining", "SimCLR pretraining")}
    simclr_logs = {}
    start = time.perf_counter()
    for j, seed in enumerate(SEEDS):
        source_path = os.path.join(work_dir, f"source_{seed}.keras")
        simclr_path = os.path.join(work_dir, f"simclr_{seed}.keras")
        t = time.perf_counter()
        pretrain_source(data, seed, source_path)
        seconds["source pretraining"] += time.perf_counter() - t
        t = time.perf_counter()
        simclr_logs[seed] = pretrain_simclr(data, seed, simclr_path)
        seconds["SimCLR pretraining"] += time.perf_counter() - t
        runs = {"from scratch": from_scratch,
                "supervised source": transfer(source_path, cut_at=CONFIG.cut_at,
                                              pooling=CONFIG.pooling),
                "SimCLR": transfer(simclr_path, cut_at=None, pooling=SIMCLR_POOLING)}
        x_pool, y_pool = data["pool"]
        for i, count in enumerate(LABELS_PER_CLASS):
            chosen = tft.labelled_subset(y_pool, count, seed=seed)
            for name, method in runs.items():
                t = time.perf_counter()
                model = method(x_pool[chosen], y_pool[chosen], seed=seed)
                accuracy[name][i, j] = tft.evaluate(model, data["test"], top_k=1).accuracy
                seconds[name] += time.perf_counter() - t
            print(f"seed {seed}, {count} per class:", {m: round(float(accuracy[m][i, j]), 3)
                                                       for m in methods}, flush=True)
    return {
        "task": "digits 5-9, 16x16 centred, few labels per class",
        "data": {"pool": len(data["pool"][1]), "test": len(data["test"][1]),
                 "unlabelled (SimCLR)": len(data["unlabelled"]),
                 "source (supervised, labelled)": len(data["source"][1])},
        "labels_per_class": list(LABELS_PER_CLASS),
        "seeds": list(SEEDS),
        "accuracy": {m: {str(c): {"per_seed": [round(float(v), 4) for v in accuracy[m][i]],
                                  "mean": round(float(accuracy[m][i].mean()), 4),
                                  "std": round(float(accuracy[m][i].std()), 4)}
                         for i, c in enumerate(LABELS_PER_CLASS)} for m in methods},
        "simclr_settings": {**SIMCLR, "pooling": SIMCLR_POOLING},
        "simclr_final_epoch": {str(s): logs for s, logs in simclr_logs.items()},
        "transfer_settings": {"head_epochs": CONFIG.head_epochs,
                              "fine_tune_epochs": CONFIG.fine_tune_epochs,
                              "unfreeze_blocks": CONFIG.unfreeze_blocks,
                              "learning_rate": CONFIG.learning_rate,
                              "batch_size": CONFIG.batch_size,
                              "supervised_cut_at": CONFIG.cut_at,
                              "supervised_pooling": CONFIG.pooling},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "total_seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"Python {platform.python_version()}",
    }


# The development task: SimCLR runs (seed 0) transferred to digits 0-4 with few labels, scored
# on other 0-4 images (never the 5-9 test images). (name, pretraining settings, transfer).
DEVELOPMENT = [
    ("30 epochs, batch 256, average pooling", {"epochs": 30, "batch_size": 256},
     {"pooling": "avg"}),
    ("30 epochs, batch 256, linear probe then fine-tuning", {"epochs": 30, "batch_size": 256},
     {"pooling": "avg", "head_method": "linear_probe"}),
    ("30 epochs, batch 256, flatten, cut below the last convolution",
     {"epochs": 30, "batch_size": 256}, {"cut_at": "block3_relu1"}),
    ("30 epochs, batch 256, flatten", {"epochs": 30, "batch_size": 256}, {}),
    ("30 epochs, batch 256, crops from 20% of the area, flatten",
     {"epochs": 30, "batch_size": 256, "crop_scale": (0.2, 1.0)}, {}),
    ("30 epochs, batch 256, temperature 0.3, flatten",
     {"epochs": 30, "batch_size": 256, "temperature": 0.3}, {}),
    ("60 epochs, batch 256, flatten", {"epochs": 60, "batch_size": 256}, {}),
    ("30 epochs, batch 128, flatten (the benchmark's)", {"epochs": 30, "batch_size": 128}, {}),
]


def development(work_dir):
    data = split()
    x, y = data["source"]
    half = len(y) // 2
    pool, test = (x[:half], y[:half]), (x[half:], y[half:])
    names = [str(c) for c in range(5)]
    backbones, rows = {}, {}
    for title, pretraining, options in DEVELOPMENT:
        key = json.dumps(pretraining, sort_keys=True)
        if key not in backbones:
            settings = dict(pretraining)
            views = tft.ContrastiveViews(crop_scale=settings.pop("crop_scale", (0.4, 1.0)), seed=0)
            keras.utils.set_random_seed(0)
            backbone = digits_cnn(input_shape=(16, 16, 1), name="simclr_backbone")
            tft.pretrain_self_supervised(backbone, data["unlabelled"], seed=0, verbose=0,
                                         augmentation=views, **settings)
            backbones[key] = os.path.join(work_dir, f"development_{len(backbones)}.keras")
            backbone.save(backbones[key])

        def method(x, y, *, seed, path=backbones[key], options=options):
            keras.utils.set_random_seed(seed)
            model = tft.build_classifier(tft.load_backbone(path, cut_at=options.get("cut_at")),
                                         class_names=names, pooling=options.get("pooling",
                                                                                "flatten"))
            head = ({"head_method": "linear_probe"} if "head_method" in options
                    else {"head_epochs": CONFIG.head_epochs})
            tft.fit_two_phase(model, x, y=y, fine_tune_epochs=CONFIG.fine_tune_epochs,
                              unfreeze_blocks=CONFIG.unfreeze_blocks,
                              learning_rate=CONFIG.learning_rate, batch_size=CONFIG.batch_size,
                              early_stopping=False, verbose=0, **head)
            return model

        rows[title] = method
        print(title, flush=True)

    def scratch(x, y, *, seed):
        model = scratch_model(CONFIG, digits_cnn, x.shape[1:], len(names), seed=seed)
        model.fit(x, y, epochs=CONFIG.head_epochs + CONFIG.fine_tune_epochs,
                  batch_size=CONFIG.batch_size, verbose=0)
        tft.adapt_batchnorm(model, x)
        return model

    rows["from scratch (reference)"] = scratch
    curve = label_efficiency(rows, pool, test, labels_per_class=LABELS_PER_CLASS, seeds=(0, 1))
    return {"task": "digits 0-4: labels from the first half, scored on the second",
            "pool": half, "test": len(y) - half, **curve.to_dict(), "table": curve.table()}


def markdown(result):
    lines = ["# Self-supervised pretraining (SimCLR) on digits, few labels", "",
             f"Task: {result['task']}; {result['data']}. Held-out accuracy, mean ± std over "
             f"seeds {result['seeds']}. Machine: {result['machine']}; "
             f"{result['total_seconds']:.0f} s in all.", "",
             "| method | " + " | ".join(f"{c} per class" for c in result["labels_per_class"])
             + " |", "| --- |" + " --- |" * len(result["labels_per_class"])]
    for method, by_count in result["accuracy"].items():
        cells = [f"{v['mean']:.3f} ± {v['std']:.3f}" for v in by_count.values()]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", f"SimCLR: {result['simclr_settings']}; final epoch per seed: "
              f"{result['simclr_final_epoch']}.", "",
              f"Transfer (both pretrained backbones): {result['transfer_settings']}.", "",
              f"Seconds: {result['seconds']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="/tmp/tftransfer_self_supervised")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--development", action="store_true",
                        help="the development task that chose SimCLR's settings instead")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.development:
        os.makedirs(args.work_dir, exist_ok=True)
        result = development(args.work_dir)
        with open(os.path.join(args.out, "self_supervised_development.json"), "w") as f:
            json.dump(result, f, indent=1)
        print(result["table"])
        raise SystemExit
    result = main(args.work_dir)
    with open(os.path.join(args.out, "self_supervised.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "self_supervised.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))
