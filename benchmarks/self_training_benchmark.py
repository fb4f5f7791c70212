"""Self-training (FixMatch, `tft.fit_self_training`) and SimCLR pretraining against labelled-only
transfer and training from scratch, on the digits demo's target task at 1, 3 and 5 labels per
class.

The demo's setting (`tftransfer.demos.digits`, `DemoConfig`): digits at random positions of
a 24-pixel canvas; a source CNN (`digits_cnn`) is pretrained once on digits 0-4 (seed 0, three
placements of each training image, the demo's 15 epochs) and cut below its last convolution.
The target task is digits 5-9: the label curve's split (`tftransfer.demos.label_curve.
pool_and_test`, seed 0) gives a pool of 40% of the target digits and a held-out test set of the
rest, never used for training or choosing anything. Per seed (0, 1, 2) and labels per class,
`shots` labelled images per class are drawn from the pool; the rest of the pool is the
unlabelled set (its labels are only read for the pseudo-label accuracy, a diagnostic).

Methods, all scored on the same test images:

- **scratch**: the same architecture randomly initialized, trained on the labelled images
  only, the demo's epochs, its BatchNormalization statistics recomputed on them (the label
  curve's `from scratch`);
- **transfer**: labelled-only `tft.fit_two_phase` from the source backbone (the demo's recipe);
- **self-training**: `tft.fit_self_training` from that transfer model, with the unlabelled set;
- **SimCLR + transfer**: a `digits_cnn` pretrained by `tft.pretrain_self_supervised` (SimCLR) on
  all the unlabelled images of this world, once per seed: the 720 source digits 0-4 (each at its
  first placement) and the 358 target pool images, 1,078 in all, labels never read and never
  the test images; then the same labelled-only `tft.fit_two_phase` as **transfer**. The
  SimCLR settings, the whole backbone and flatten pooling are those
  `benchmarks/self_supervised_benchmark.py` chose on its development task (centred digits); on
  this canvas they were checked on a development task too (``--development``: labels of the
  digits 0-4, scored on other 0-4 digits; results/self_training_development.json), never on
  the test images;
- **SimCLR + self-training**: the same call from the SimCLR + transfer model;
- **self-training, no class balance**: self-training from the transfer model with
  ``class_balance=None`` (no distribution alignment), which says what the alignment adds;
- **augmented, labelled only**: the same with ``unlabelled_weight=0``: the same steps,
  augmentations and optimizer, with the unlabelled loss switched off, which says how much of
  self-training's gain comes from the unlabelled images.

    python benchmarks/self_training_benchmark.py   # writes results/self_training.json and .md
    python benchmarks/self_training_benchmark.py --development   # the SimCLR transfer check:
                                                  # results/self_training_development.json

About 10 minutes on 2 shared CPU cores (584 s for the recorded results, 187 s of it the three
SimCLR pretrainings; the JSON has the seconds); the development check about 2 minutes.
"""

import argparse
import inspect
import json
import os
import platform
import tempfile
import time

import keras
import numpy as np
from self_supervised_benchmark import SIMCLR  # the settings chosen there (benchmarks/ on path)
from self_supervised_benchmark import SIMCLR_POOLING

import tftransfer as tft
from tftransfer.data.digits import load_digits
from tftransfer.data.digits import place_on_canvas
from tftransfer.demos.config import DemoConfig
from tftransfer.demos.digits import SOURCE_CLASSES
from tftransfer.demos.digits import TARGET_CLASSES
from tftransfer.demos.digits import digits_cnn
from tftransfer.demos.label_curve import pool_and_test
from tftransfer.demos.label_curve import scratch_model
from tftransfer.evaluation.label_efficiency import label_efficiency
from tftransfer.transfer.self_training import DEFAULT_UNFREEZE_BLOCKS

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
METHODS = ("scratch", "transfer", "SimCLR + transfer", "self-training", "SimCLR + self-training",
           "self-training, no class balance", "augmented, labelled only")
VARIANTS = {"self-training": {},
            "self-training, no class balance": {"class_balance": None},
            "augmented, labelled only": {"unlabelled_weight": 0.0}}
"""The `fit_self_training` calls from the transfer model: the method, and two ablations."""
SIMCLR_TRANSFER = {"cut_at": None, "pooling": SIMCLR_POOLING}
"""How the SimCLR backbone is transferred: whole (it has no source head), flatten pooling."""


def digits_tasks(config):
    """The demo's source training images and target images, on its canvas."""
    images, labels = load_digits(image_size=config.image_size)
    rng = np.random.default_rng(config.seed)
    source = np.isin(labels, SOURCE_CLASSES)
    xs, ys = images[source], labels[source] - min(SOURCE_CLASSES)
    order = rng.permutation(len(xs))[: int(0.8 * len(xs))]
    seed = 1000 * config.seed
    source_x = np.concatenate([place_on_canvas(xs[order], config.canvas_size, seed=seed + c)
                               for c in range(config.source_copies)])
    source_y = np.tile(ys[order], config.source_copies)
    target = np.isin(labels, TARGET_CLASSES)
    target_x = place_on_canvas(images[target], config.canvas_size, seed=seed + 200)
    return (source_x, source_y), (target_x, labels[target] - min(TARGET_CLASSES))


def pretrain_source(config, source, path):
    keras.utils.set_random_seed(config.seed)
    backbone = digits_cnn(input_shape=source[0].shape[1:], bn_momentum=config.bn_momentum,
                          name="digits_backbone")
    x = keras.layers.GlobalAveragePooling2D(name="source_pooling")(backbone.output)
    x = keras.layers.Dropout(0.3, name="source_dropout")(x)
    outputs = keras.layers.Dense(len(SOURCE_CLASSES), name="source_predictions")(x)
    model = keras.Model(backbone.input, outputs, name="source_model")
    model.compile(keras.optimizers.Adam(config.learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*source, epochs=config.source_epochs, batch_size=config.source_batch_size,
              verbose=0)
    model.save(path)


def world_unlabelled(config, source, pool):
    """SimCLR's images, without labels: each source digit once (its first placement; the
    other placements are the same digits elsewhere, which SimCLR's crops move anyway) and the
    target pool. 30 epochs of them are as many images as the source's 15 epochs of 3 copies."""
    count = len(source[0]) // config.source_copies
    return np.concatenate([source[0][:count], pool[0]])


def pretrain_simclr(config, images, seed, path):
    """A `digits_cnn` pretrained by SimCLR on `images`, saved whole; its last epoch's logs."""
    keras.utils.set_random_seed(seed)
    backbone = digits_cnn(input_shape=images.shape[1:], bn_momentum=config.bn_momentum,
                          name="simclr_backbone")
    _, history = tft.pretrain_self_supervised(backbone, images, seed=seed, verbose=0,
                                              return_history=True, **SIMCLR)
    backbone.save(path)
    return {key: float(values[-1]) for key, values in history.history.items()}


def draw(pool, shots, seed):
    """`shots` labelled images per class from the pool; the rest unlabelled."""
    x, y = pool
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False)
                             for c in range(len(TARGET_CLASSES))])
    rest = np.setdiff1d(np.arange(len(y)), chosen)
    return (x[chosen], y[chosen]), (x[rest], y[rest])


def transfer_model(config, source_path, labelled, seed, *, cut_at="demo", pooling=None,
                   classes=TARGET_CLASSES):
    """Labelled-only `tft.fit_two_phase` (the demo's recipe) from a saved backbone; by
    default cut and pooled as the demo does."""
    keras.utils.set_random_seed(seed)
    backbone = tft.load_backbone(source_path,
                                 cut_at=config.cut_at if cut_at == "demo" else cut_at)
    model = tft.build_classifier(backbone, class_names=[str(c) for c in classes],
                                 pooling=pooling or config.pooling)
    tft.fit_two_phase(model, labelled[0], y=labelled[1], head_epochs=config.head_epochs,
                      fine_tune_epochs=config.fine_tune_epochs,
                      unfreeze_blocks=config.unfreeze_blocks, learning_rate=config.learning_rate,
                      batch_size=config.batch_size, early_stopping=False, verbose=0)
    return model


def scratch(config, labelled, seed):
    model = scratch_model(config, digits_cnn, labelled[0].shape[1:], len(TARGET_CLASSES),
                          seed=seed)
    model.fit(*labelled, epochs=config.head_epochs + config.fine_tune_epochs,
              batch_size=config.batch_size, verbose=0)
    tft.adapt_batchnorm(model, labelled[0])
    return model


def accuracy(model, test):
    return float(tft.evaluate(model, test, top_k=1).accuracy)


def summarize(runs, shots_list):
    table = {}
    for shots in shots_list:
        for method in METHODS:
            values = [r["accuracy"][method] for r in runs if r["shots"] == shots
                      and method in r["accuracy"]]
            if values:
                table.setdefault(str(shots), {})[method] = {
                    "mean": float(np.mean(values)), "std": float(np.std(values)),
                    "runs": values}
    return table


def markdown(result):
    header = (f"Held-out test images: {result['data']['test']}; pool: "
              f"{result['data']['pool']} (labelled + unlabelled); SimCLR's unlabelled images: "
              f"{result['data']['simclr_unlabelled']} (the source digits and the pool). "
              f"Test accuracy, mean ± std over seeds {result['seeds']} (population std).")
    methods = [m for m in METHODS if any(m in row for row in result["table"].values())]
    lines = ["# Self-training and SimCLR on the demo's digits 5-9 (24-pixel canvas)", "", header,
             "", "| labels per class | " + " | ".join(methods) + " |",
             "| --- |" + " --- |" * len(methods)]
    for shots, row in result["table"].items():
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" if m in row else "-"
                 for m in methods]
        lines.append(f"| {shots} | " + " | ".join(cells) + " |")
    note = ("Self-training at its last epoch (mean over seeds): the mask rate (share of "
            "unlabelled images above the threshold), the accuracy of those pseudo-labels and "
            "the accuracy on all unlabelled images (read from their labels, never trained on).")
    columns = ("| start | labels per class | mask rate | pseudo-label accuracy | "
               "unlabelled accuracy |")
    lines += ["", note, "", columns, "| --- | --- | --- | --- | --- |"]
    for key, start in (("diagnostics", "transfer"), ("diagnostics_simclr", "SimCLR + transfer")):
        for shots, diag in result.get(key, {}).items():
            lines.append(f"| {start} | {shots} | {diag['mask_rate']:.3f} | "
                         f"{diag['pseudo_label_accuracy']:.3f} | "
                         f"{diag['unlabelled_accuracy']:.3f} |")
    settings = json.dumps(result["self_training"])
    seconds = result["seconds"]
    lines += ["", f"Self-training settings: `{settings}`."]
    if "simclr" in result:
        lines += ["", (f"SimCLR: `{json.dumps(result['simclr'])}`; last epoch per seed: "
                  f"`{json.dumps(result['simclr_final_epoch'])}`.")]
    lines += ["", (f"Seconds: `{json.dumps(seconds)}`; {seconds['total']:.0f} s in all on "
              f"{result['machine']}.")]
    return "\n".join(lines) + "\n"


def diagnostics_of(runs, shots_list, key):
    table = {}
    for shots in shots_list:
        last = [r[key] for r in runs if r["shots"] == shots and key in r]
        if last:
            table[str(shots)] = {
                name: float(np.mean([h[name][-1] for h in last]))
                for name in ("mask_rate", "pseudo_label_accuracy", "unlabelled_accuracy")}
    return table


def self_train(model, labelled, unlabelled, hidden, seed, settings, variant):
    """`tft.fit_self_training` in place; its history as lists of floats."""
    history = tft.fit_self_training(model, labelled, unlabelled, unlabelled_labels=hidden,
                                    seed=seed, verbose=0, **settings, **variant)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def one_run(config, paths, pool, test, seed, shots, args, settings):
    """Every method at one seed and label count."""
    labelled, (unlabelled, hidden) = draw(pool, shots, seed)
    run = {"seed": seed, "shots": shots, "accuracy": {}, "seconds": {}}

    def timed(method, train):
        t = time.perf_counter()
        model = train()
        run["accuracy"][method] = accuracy(model, test)
        run["seconds"][method] = time.perf_counter() - t
        return model

    timed("scratch", lambda: scratch(config, labelled, seed))
    model = timed("transfer", lambda: transfer_model(config, paths["source"], labelled, seed))
    transferred = model.get_weights()
    for method, variant in VARIANTS.items():
        if args.no_ablation and method != "self-training":
            continue
        model.set_weights(transferred)
        history = {}

        def train(variant=variant, history=history):
            history.update(self_train(model, labelled, unlabelled, hidden, seed, settings,
                                      variant))
            return model
        timed(method, train)
        if method == "self-training":
            run["history"] = history
    if "simclr" in paths:
        simclr = timed("SimCLR + transfer", lambda: transfer_model(
            config, paths["simclr"], labelled, seed, **SIMCLR_TRANSFER))
        if not args.no_simclr_self_training:
            def train_simclr():
                run["history_simclr"] = self_train(simclr, labelled, unlabelled, hidden, seed,
                                                   settings, {})
                return simclr
            timed("SimCLR + self-training", train_simclr)
    return run


def main(args):
    config = DemoConfig()
    start = time.perf_counter()
    source, target = digits_tasks(config)
    pool, test = pool_and_test(*target, config.seed)
    images = world_unlabelled(config, source, pool)
    settings = {} if args.epochs is None else {"epochs": args.epochs}
    runs, seconds, simclr_logs = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"source": os.path.join(tmp, "source.keras")}
        t = time.perf_counter()
        pretrain_source(config, source, paths["source"])
        seconds["source"] = time.perf_counter() - t
        for seed in args.seeds:
            if not args.no_simclr:  # once per seed, for every label count
                paths["simclr"] = os.path.join(tmp, f"simclr_{seed}.keras")
                t = time.perf_counter()
                simclr_logs[str(seed)] = pretrain_simclr(config, images, seed, paths["simclr"])
                seconds[f"SimCLR pretraining, seed {seed}"] = time.perf_counter() - t
            for shots in args.shots:
                run = one_run(config, paths, pool, test, seed, shots, args, settings)
                runs.append(run)
                print(seed, shots, {k: round(v, 3) for k, v in run["accuracy"].items()},
                      {k: round(v, 1) for k, v in run["seconds"].items()}, flush=True)
    seconds["total"] = time.perf_counter() - start
    defaults = {name: p.default for name, p in inspect.signature(
        tft.fit_self_training).parameters.items() if p.default is not p.empty
        and isinstance(p.default, (int, float, str, type(None)))}
    defaults["unfreeze_blocks"] = DEFAULT_UNFREEZE_BLOCKS
    result = {
        "seeds": args.seeds, "labels_per_class": args.shots,
        "data": {"pool": len(pool[1]), "test": len(test[1]),
                 "source_train": len(source[1]), "simclr_unlabelled": len(images)},
        "table": summarize(runs, args.shots),
        "diagnostics": diagnostics_of(runs, args.shots, "history"),
        "diagnostics_simclr": diagnostics_of(runs, args.shots, "history_simclr"),
        "runs": runs,
        "self_training": {k: v for k, v in {**defaults, **settings}.items()
                          if k not in ("seed", "checkpoint_dir", "callbacks", "verbose",
                                       "validation_data", "unlabelled_labels", "from_layer")},
        "demo_config": {k: v for k, v in config.__dict__.items() if not k.startswith("curve")},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)",
    }
    if not args.no_simclr:
        result["simclr"] = {**SIMCLR, **SIMCLR_TRANSFER, "images": len(images)}
        result["simclr_final_epoch"] = simclr_logs
    return result


# The development check of SimCLR's transfer on this canvas: one SimCLR run (seed 0, the
# benchmark's images), transferred to the digits 0-4 with few labels from the first half of the
# source digits and scored on the second half (the first placement of each); the 5-9 test
# images never enter. Chosen before any test score of SimCLR on the canvas was seen.
DEVELOPMENT = {
    "whole backbone, flatten (the centred benchmark's)": {"cut_at": None, "pooling": "flatten"},
    "cut below the last convolution, flatten": {"cut_at": "block3_relu1", "pooling": "flatten"},
    "whole backbone, average pooling": {"cut_at": None, "pooling": "avg"},
}


def development():
    config = DemoConfig()
    start = time.perf_counter()
    source, target = digits_tasks(config)
    pool, _ = pool_and_test(*target, config.seed)  # only the pool: SimCLR's images
    images = world_unlabelled(config, source, pool)
    count = len(source[1]) // config.source_copies  # the source digits, first placement
    half = count // 2
    x, y = source[0][:count], source[1][:count]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "simclr.keras")
        logs = pretrain_simclr(config, images, 0, path)
        rows = {title: (lambda x, y, *, seed, options=options: transfer_model(
            config, path, (x, y), seed, classes=SOURCE_CLASSES, **options))
            for title, options in DEVELOPMENT.items()}
        rows["from scratch (reference)"] = lambda x, y, *, seed: scratch(config, (x, y), seed)
        curve = label_efficiency(rows, (x[:half], y[:half]), (x[half:], y[half:]),
                                 labels_per_class=(1, 3, 5), seeds=(0, 1))
    return {"task": "digits 0-4 on the canvas: labels from the first half of the source digits, "
                    "scored on the second half", "pool": half, "test": count - half,
            "simclr": {**SIMCLR, "images": len(images)}, "simclr_final_epoch": logs,
            **curve.to_dict(), "table": curve.table(),
            "seconds": round(time.perf_counter() - start, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--epochs", type=int, default=None,
                        help="self-training epochs (default: fit_self_training's)")
    parser.add_argument("--no-ablation", action="store_true",
                        help="skip the two ablations")
    parser.add_argument("--no-simclr", action="store_true", help="skip the SimCLR methods")
    parser.add_argument("--no-simclr-self-training", action="store_true",
                        help="SimCLR + transfer only")
    parser.add_argument("--development", action="store_true",
                        help="the development check of SimCLR's transfer instead")
    parser.add_argument("--out", default=RESULTS)
    arguments = parser.parse_args()
    os.makedirs(arguments.out, exist_ok=True)
    if arguments.development:
        found = development()
        with open(os.path.join(arguments.out, "self_training_development.json"), "w") as f:
            json.dump(found, f, indent=1)
        print(found["table"])
        raise SystemExit
    found = main(arguments)
    with open(os.path.join(arguments.out, "self_training.json"), "w") as f:
        json.dump(found, f, indent=1)
    with open(os.path.join(arguments.out, "self_training.md"), "w") as f:
        f.write(markdown(found))
    print(markdown(found))
