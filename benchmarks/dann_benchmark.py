"""DANN on digits -> digits-M: source-only, AdaBN, DANN, and fine-tuning on a few labels.

The split of `domain_shift_benchmark.py`: the bundled digits (16x16, as RGB), one permutation
(seed 0), 1,200 training and 597 test images. Per seed (0, 1, 2):

- **source-only**: the demo's CNN (`digits_cnn`, BatchNormalization) + average pooling +
  dropout 0.3 + a dense layer, trained on the 1,200 source digits (Adam 1e-3, 15 epochs,
  batch 32, BatchNormalization on batch statistics), then made a tftransfer classifier
  (`tft.build_classifier` over its backbone, the trained dense layer as the head's).
- **AdaBN**: `tft.adapt_batchnorm` on the unlabelled target training images.
- **DANN**: `tft.fit_domain_adversarial` from the source-only model, on the labelled source
  digits and the unlabelled target training images.
- **DANN, lambda_max=0**: the same call with the reversal weight 0 (the domain classifier
  trains, the features get no gradient from it): what per-domain BatchNormalization and the
  extra epochs do without the adversary. Leave out with ``--no-control``.
- **fine-tune, 5/class**: `tft.fine_tune` of the source-only model (all blocks) on 5 labelled
  target training images per class (50).

The target domain: `tft.digits_m`. Scored on ``digits_m(images[test], seed=seed)``; the
unlabelled target training images are ``digits_m(images[train], seed=seed + 1000)`` (the
training digits on other photo patches), never the test images.

    python benchmarks/dann_benchmark.py      # writes benchmarks/results/dann.json and dann.md

About 10 minutes on 2 shared CPU cores.
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
from tftransfer.demos.digits import digits_cnn

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CLASS_NAMES = [str(i) for i in range(10)]
METHODS = ["source-only", "AdaBN", "DANN", "DANN, lambda_max=0", "fine-tune, 5/class"]


def rgb(x):
    return np.repeat(x, 3, -1)


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=256, verbose=0).argmax(-1) == y))


def source_model(x, y, seed):
    """The source-only classifier and its weights."""
    keras.utils.set_random_seed(seed)
    backbone = digits_cnn(input_shape=(16, 16, 3), name="digits_backbone")
    pooled = keras.layers.GlobalAveragePooling2D()(backbone.output)
    dense = keras.layers.Dense(10)
    plain = keras.Model(backbone.input, dense(keras.layers.Dropout(0.3)(pooled)))
    plain.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(x, y, epochs=15, batch_size=32, verbose=0)
    model = tft.build_classifier(backbone, class_names=CLASS_NAMES, dropout=0.3)
    model.head.output_dense.set_weights(dense.get_weights())
    return model.get_weights()


def fresh(weights):
    """A new classifier of the same architecture with `weights`."""
    model = tft.build_classifier(digits_cnn(input_shape=(16, 16, 3), name="digits_backbone"),
                                 class_names=CLASS_NAMES, dropout=0.3)
    model.set_weights(weights)
    return model


def run_seed(seed, data, *, epochs, control):
    (xs, ys), x_unlabelled, (x_few, y_few), (xt, yt), (xs_test, ys_test) = data(seed)
    results = {}
    start = time.perf_counter()
    weights = source_model(xs, ys, seed)
    model = fresh(weights)
    results["source-only"] = {"target": accuracy(model, xt, yt),
                              "source": accuracy(model, xs_test, ys_test),
                              "seconds": round(time.perf_counter() - start, 1)}
    start = time.perf_counter()
    tft.adapt_batchnorm(model, x_unlabelled)
    results["AdaBN"] = {"target": accuracy(model, xt, yt),
                        "seconds": round(time.perf_counter() - start, 1)}
    runs = [("DANN", 1.0)] + ([("DANN, lambda_max=0", 0.0)] if control else [])
    for name, lambda_max in runs:
        start = time.perf_counter()
        model = fresh(weights)
        history = tft.fit_domain_adversarial(model, (xs, ys), x_unlabelled, epochs=epochs,
                                             lambda_max=lambda_max, seed=seed, verbose=0)
        results[name] = {"target": accuracy(model, xt, yt),
                         "seconds": round(time.perf_counter() - start, 1),
                         "final_domain_accuracy": history.history["domain_accuracy"][-1],
                         "final_domain_loss": history.history["domain_loss"][-1],
                         "final_label_loss": history.history["label_loss"][-1]}
        tft.adapt_batchnorm(model, xs_test)  # back on the source's statistics
        results[name]["source"] = accuracy(model, xs_test, ys_test)
    start = time.perf_counter()
    model = fresh(weights)
    keras.utils.set_random_seed(seed)
    tft.fine_tune(model, x_few, y=y_few, epochs=30, unfreeze_blocks="all", batch_size=10,
                  early_stopping=False, verbose=0)
    results["fine-tune, 5/class"] = {"target": accuracy(model, xt, yt),
                                     "seconds": round(time.perf_counter() - start, 1)}
    return results


def make_data():
    images, labels = load_digits(image_size=16)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:1200], order[1200:]

    def data(seed):
        unlabelled = tft.digits_m(images[train], seed=seed + 1000)
        rng = np.random.default_rng(seed)
        few = np.concatenate([rng.choice(np.flatnonzero(labels[train] == c), 5, replace=False)
                              for c in range(10)])
        return ((rgb(images[train]), labels[train]), unlabelled,
                (unlabelled[few], labels[train][few]),
                (tft.digits_m(images[test], seed=seed), labels[test]),
                (rgb(images[test]), labels[test]))

    return data


def summarize(per_seed, methods):
    summary = {}
    for method in methods:
        values = np.array([per_seed[s][method]["target"] for s in per_seed])
        summary[method] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
                           "min": float(values.min()), "max": float(values.max()),
                           "per_seed": [float(v) for v in values]}
    return summary


def markdown(out):
    lines = [
        "# DANN on digits -> digits-M",
        "",
        (f"Machine: {out['machine']}. Settings: {out['settings']}. Target accuracy on the 597 "
         "held-out digits as digits-M; mean ± sample standard deviation over the seeds, each "
         "seed's value in `dann.json`."),
        "",
        "| method | target accuracy | per seed | seconds (mean) |",
        "|---|---|---|---|",
    ]
    for method, row in out["summary"].items():
        seconds = np.mean([out["seeds"][s][method]["seconds"] for s in out["seeds"]])
        seeds = ", ".join(f"{v:.3f}" for v in row["per_seed"])
        lines.append(f"| {method} | {row['mean']:.3f} ± {row['std']:.3f} | {seeds} | "
                     f"{seconds:.0f} |")
    lines += ["", "Source accuracy (597 held-out source digits; DANN's after "
              "`adapt_batchnorm` on them): " + ", ".join(
                  f"{m} {np.mean([out['seeds'][s][m]['source'] for s in out['seeds']]):.3f}"
                  for m in out["summary"] if "source" in out["seeds"][next(iter(out["seeds"]))][m]),
              ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30, help="DANN's epochs")
    parser.add_argument("--no-control", action="store_true",
                        help="leave out the lambda_max=0 run")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    data = make_data()
    methods = [m for m in METHODS if not (args.no_control and "lambda_max=0" in m)]
    per_seed = {}
    for seed in args.seeds:
        per_seed[seed] = run_seed(seed, data, epochs=args.epochs, control=not args.no_control)
        print(seed, {m: round(r["target"], 3) for m, r in per_seed[seed].items()}, flush=True)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python "
                      f"{platform.python_version()}",
           "settings": {"dann_epochs": args.epochs, "batch_size": 32, "learning_rate": 0.01,
                        "source_epochs": 15, "fine_tune_epochs": 30, "seeds": args.seeds},
           "seeds": per_seed, "summary": summarize(per_seed, methods)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "dann.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(args.out, "dann.md"), "w") as f:
        f.write(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
