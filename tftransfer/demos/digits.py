"""`tftransfer demo`: the whole transfer-learning story on real, offline data.

1. **Source task**: a small CNN learns the handwritten digits 0-4 (about 900
   images). It is saved as a `.keras` file, loaded back with
   ``safe_mode=True``, and checked in inference mode on held-out source
   images, since a frozen backbone runs in inference mode and stale
   BatchNormalization statistics would ruin the transfer.
2. **Target task**: the digits 5-9, with only `shots` labelled images per
   class. The source model, cut below its classification layer, becomes the
   backbone of a new classifier trained with `fit_two_phase`.
3. **Baseline**: the same architecture, trained from scratch on the same
   labels, with the same optimizer, batch size and number of epochs.
4. **Export** for TF Serving, then a fresh Python process that imports only
   TensorFlow loads the export and classifies held-out images.

Both the transfer model and the baseline are scored on the same held-out
target images, never used for training or for choosing a model (they are
also plotted each epoch as a learning curve, for monitoring only).
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time

import keras
import numpy as np

from tftransfer.backbones.load import load_backbone
from tftransfer.baselines import baseline_accuracy
from tftransfer.classifiers.image import build_classifier
from tftransfer.data.digits import load_digits
from tftransfer.data.digits import place_on_canvas
from tftransfer.demos.common import EpochLog
from tftransfer.demos.config import DemoConfig
from tftransfer.demos.label_curve import run_curve
from tftransfer.demos.label_curve import scratch_model
from tftransfer.evaluation.evaluate import evaluate
from tftransfer.export.rest import serving_request
from tftransfer.export.serving import export_saved_model
from tftransfer.training.recipe import fit_two_phase
from tftransfer.transfer.adabn import adapt_batchnorm

logger = logging.getLogger(__name__)


SOURCE_CLASSES = (0, 1, 2, 3, 4)


TARGET_CLASSES = (5, 6, 7, 8, 9)


def digits_cnn(*, input_shape, bn_momentum=0.9, name="digits_cnn"):
    """The demo's backbone: three conv blocks, ``block1`` to ``block3``.

    Raw pixels in [0, 255] go in (a `Rescaling` layer is inside); a feature
    map comes out. BatchNormalization uses `bn_momentum` (0.9 rather than
    Keras's 0.99) so that its moving statistics catch up within the few
    hundred steps a small data set gives: with 0.99, a source model at 100%
    training accuracy scored 20% in inference mode after ~225 steps.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    for block, (filters, pool) in enumerate([(32, True), (64, True), (128, False)], 1):
        for i in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    name=f"block{block}_conv{i}")(x)
            x = keras.layers.BatchNormalization(momentum=bn_momentum,
                                                name=f"block{block}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"block{block}_relu{i}")(x)
        if pool:
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=name)


def _split(config):
    images, labels = load_digits(image_size=config.image_size)
    rng = np.random.default_rng(config.seed)
    source = np.isin(labels, SOURCE_CLASSES)
    xs, ys = images[source], labels[source] - min(SOURCE_CLASSES)
    order = rng.permutation(len(xs))
    n_train = int(0.8 * len(xs))
    target = np.isin(labels, TARGET_CLASSES)
    xt, yt = images[target], labels[target] - min(TARGET_CLASSES)
    chosen = np.concatenate([
        rng.choice(np.flatnonzero(yt == c), config.shots, replace=False)
        for c in range(len(TARGET_CLASSES))
    ])
    labelled = np.zeros(len(xt), bool)
    labelled[chosen] = True
    source_train, source_test = xs[order[:n_train]], xs[order[n_train:]]
    train_labels = ys[order[:n_train]]
    if config.canvas_size != config.image_size:  # digits at random positions
        seed = 1000 * config.seed
        source_train = np.concatenate([
            place_on_canvas(source_train, config.canvas_size, seed=seed + copy)
            for copy in range(config.source_copies)])
        train_labels = np.tile(train_labels, config.source_copies)
        source_test = place_on_canvas(source_test, config.canvas_size, seed=seed + 100)
        xt = place_on_canvas(xt, config.canvas_size, seed=seed + 200)
    return {
        "source_train": (source_train, train_labels),
        "source_test": (source_test, ys[order[n_train:]]),
        "target_train": (xt[labelled], yt[labelled]),
        "target_test": (xt[~labelled], yt[~labelled]),
        "target": (xt, yt),
    }


def _first_epoch_reaching(curve, level):
    """1-based epoch at which a held-out curve first reaches `level`, or None."""
    return next((i + 1 for i, v in enumerate(curve) if v is not None and v >= level), None)


def _accuracy(model, x, y):
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))


def _pretrain_source(config, data, out_dir, report, verbose):
    keras.utils.set_random_seed(config.seed)
    shape = data["source_train"][0].shape[1:]
    backbone = digits_cnn(input_shape=shape, bn_momentum=config.bn_momentum,
                          name="digits_backbone")
    x = keras.layers.GlobalAveragePooling2D(name="source_pooling")(backbone.output)
    x = keras.layers.Dropout(0.3, name="source_dropout")(x)
    outputs = keras.layers.Dense(len(SOURCE_CLASSES), name="source_predictions")(x)
    source = keras.Model(backbone.input, outputs, name="source_model")
    source.compile(keras.optimizers.Adam(config.learning_rate),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    source.fit(*data["source_train"], epochs=config.source_epochs,
               batch_size=config.source_batch_size, verbose=verbose,
               callbacks=[EpochLog("source", report)])
    path = os.path.join(out_dir, "source_model.keras")
    source.save(path)
    return path


def _load_source_backbone(config, path, data):
    """Loads the saved source model, checks it in inference mode, cuts it."""
    source = keras.saving.load_model(path, safe_mode=True)
    accuracy = _accuracy(source, *data["source_test"])
    if accuracy < 0.9:
        raise RuntimeError(
            f"The source model scores {accuracy:.2f} on held-out source images in "
            "inference mode; a backbone that poor would not transfer. Train it "
            "longer, or check its BatchNormalization momentum."
        )
    return load_backbone(source, cut_at=config.cut_at), accuracy


def _train_scratch(config, data, report, verbose):
    shape = data["target_train"][0].shape[1:]
    model = scratch_model(config, digits_cnn, shape, len(TARGET_CLASSES), seed=config.seed)
    # Everything trains, BatchNormalization as usual (batch statistics in `fit`);
    # then its statistics are recomputed on the training images, which a few
    # hundred steps leave far from right (see tftransfer.demos.label_curve).
    history = model.fit(*data["target_train"], validation_data=data["target_test"],
                        epochs=config.head_epochs + config.fine_tune_epochs,
                        batch_size=config.batch_size, verbose=verbose,
                        callbacks=[EpochLog("scratch", report)])
    adapt_batchnorm(model, data["target_train"][0])
    return model, history


_SERVE_SCRIPT = r"""
import base64, json, sys
import tensorflow as tf
export_dir, request_path = sys.argv[1], sys.argv[2]
with open(request_path) as f:  # a TF Serving REST body: {"instances": [{"images": {"b64": ...}}]}
    request = json.load(f)
images = [base64.b64decode(instance["images"]["b64"]) for instance in request["instances"]]
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
out = serve(images=tf.constant(images))
print(json.dumps({
    "class_names": [s.decode() for s in out["class_names"].numpy()],
    "probabilities": out["probabilities"].numpy().tolist(),
    "tftransfer_imported": "tftransfer" in sys.modules,
}))
"""


def serve_in_fresh_process(export_dir, images, work_dir):
    """Classifies `images` with the export in a new Python process that
    imports TensorFlow but not tftransfer: they go as PNG files in a TF
    Serving REST body (base64), to the signature that decodes them. Returns
    its decoded outputs."""
    request_path = os.path.join(work_dir, "serve_check_request.json")
    pixels = np.clip(np.round(np.asarray(images, "float32")), 0, 255).astype("uint8")
    with open(request_path, "w") as f:
        json.dump(serving_request(list(pixels)), f)
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, export_dir, request_path],
        capture_output=True, text=True, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    os.remove(request_path)
    if result.returncode != 0:
        raise RuntimeError(f"Serving the export in a fresh process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _plot(path, transfer_history, scratch_history, head_epochs, shots):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.2))
    t = transfer_history.history["val_accuracy"]
    s = scratch_history.history["val_accuracy"]
    ax.plot(range(1, len(t) + 1), t, label="transfer (two-phase)", color="tab:blue")
    ax.plot(range(1, len(s) + 1), s, label="from scratch", color="tab:orange")
    ax.axvline(head_epochs + 0.5, color="gray", linestyle="--", linewidth=1)
    ax.text(head_epochs + 0.7, 0.04, "transfer: fine-tuning starts", color="gray")
    ax.set(xlabel="epoch", ylabel="held-out accuracy", ylim=(0, 1.02),
           title=f"Digits 5-9 from {shots} labelled images per class")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(out_dir, *, config=None, report=None, verbose=0, curve=True):
    """Runs the demo and writes ``report.json``, ``learning_curve.png``,
    ``label_efficiency.png`` and the transfer model's evaluation report
    (``evaluation/report.html``, ...).

    Args:
        out_dir: directory for the report, plots, source model and export.
        config: a `DemoConfig`; default: `DemoConfig()`.
        report: called with a line of progress text; default: logs it.
        verbose: Keras's `verbose` for `fit`.
        curve: measure the label-efficiency curve (the config's
            ``curve_labels_per_class`` and ``curve_seeds``).

    Returns:
        The report as a dict (also written to ``out_dir/report.json``).
    """
    config = config or DemoConfig()
    report = report or logger.info
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    seconds = {}
    start = time.perf_counter()
    data = _split(config)
    names = [str(c) for c in TARGET_CLASSES]

    steps = 6 if curve else 5
    report(f"[1/{steps}] Source task: pretraining a small CNN on digits 0-4 "
           f"({len(data['source_train'][1])} images)")
    t = time.perf_counter()
    source_path = _pretrain_source(config, data, out_dir, report, verbose)
    backbone, source_accuracy = _load_source_backbone(config, source_path, data)
    seconds["source_pretraining"] = time.perf_counter() - t
    report(f"      saved {source_path}; held-out source accuracy in inference mode: "
           f"{source_accuracy:.3f}")

    report(f"[2/{steps}] Target task: digits 5-9 from {config.shots} labelled images per class; "
           f"two-phase transfer")
    keras.utils.set_random_seed(config.seed)
    model = build_classifier(backbone, class_names=names, pooling=config.pooling,
                             name="digits_transfer")
    history = fit_two_phase(
        model, data["target_train"][0], data["target_test"], y=data["target_train"][1],
        head_epochs=config.head_epochs, fine_tune_epochs=config.fine_tune_epochs,
        unfreeze_blocks=config.unfreeze_blocks, learning_rate=config.learning_rate,
        batch_size=config.batch_size, verbose=verbose,
        callbacks=[EpochLog("transfer", report)],
        # The held-out set is shown as validation for the curves only: it must not
        # choose the epoch (the scratch baseline trains for a fixed number too).
        early_stopping=False,
    )
    for phase in model.training_summary:
        seconds[{1: "head", 2: "fine_tune"}[phase["phase"]]] = phase["seconds"]
    head_only = history.history["val_accuracy"][config.head_epochs - 1] if config.head_epochs else None
    transfer_accuracy = _accuracy(model, *data["target_test"])

    report(f"[3/{steps}] Baseline: the same architecture from scratch, same labels and epochs")
    t = time.perf_counter()
    scratch, scratch_history = _train_scratch(config, data, report, verbose)
    scratch_accuracy = _accuracy(scratch, *data["target_test"])
    seconds["scratch"] = time.perf_counter() - t

    label_curve = None
    if curve:
        report(f"[4/{steps}] Label efficiency: transfer, from scratch, 1-NN and logistic "
               f"regression over labels per class and seeds")
        t = time.perf_counter()
        label_curve = run_curve(config, data["target"], source_path, digits_cnn, report=report)
        seconds["label_efficiency"] = time.perf_counter() - t
        figure = label_curve.plot(title="Digits 5-9: held-out accuracy by labels per class")
        figure.savefig(os.path.join(out_dir, "label_efficiency.png"), dpi=120)

    report(f"[{steps - 1}/{steps}] Exporting for TF Serving")
    t = time.perf_counter()
    export_base = os.path.join(out_dir, "export", "digits")
    export_dir = export_saved_model(model, export_base)
    seconds["export"] = time.perf_counter() - t

    report(f"[{steps}/{steps}] Serving held-out images from the export in a fresh TensorFlow-only process")
    t = time.perf_counter()
    x_test, y_test = data["target_test"]
    sample = np.random.default_rng(config.seed).choice(len(y_test), 8, replace=False)
    served = serve_in_fresh_process(export_dir, x_test[sample], out_dir)
    seconds["serve_check"] = time.perf_counter() - t

    evaluation = evaluate(model, data["target_test"], history=history)
    evaluation_files = evaluation.save(os.path.join(out_dir, "evaluation"))
    plot_path = os.path.join(out_dir, "learning_curve.png")
    _plot(plot_path, history, scratch_history, config.head_epochs, config.shots)
    seconds["total"] = time.perf_counter() - start
    result = {
        "transfer_accuracy": transfer_accuracy,
        "head_only_accuracy": head_only,
        "scratch_accuracy": scratch_accuracy,
        "improvement_over_scratch": transfer_accuracy - scratch_accuracy,
        "epochs_to_90_percent": {
            "transfer": _first_epoch_reaching(history.history["val_accuracy"], 0.9),
            "scratch": _first_epoch_reaching(scratch_history.history["val_accuracy"], 0.9),
        },
        "pixel_nearest_neighbour_accuracy": baseline_accuracy(
            "nearest_neighbour", data["target_train"], data["target_test"]),
        "source_accuracy_inference_mode": source_accuracy,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "export_dir": export_dir,
        "learning_curve": plot_path,
        "label_efficiency": None if label_curve is None else {
            **label_curve.to_dict(), "plot": os.path.join(out_dir, "label_efficiency.png"),
            "methods": list(label_curve.accuracy)},
        "evaluation": {"report": evaluation_files["report.html"],
                       "expected_calibration_error": evaluation.expected_calibration_error,
                       "top_k_accuracy": {str(k): v
                                          for k, v in evaluation.top_k_accuracy.items()}},
        "source_model": source_path,
        "served_sample": {
            "true": [names[i] for i in y_test[sample]],
            "predicted": served["class_names"],
            "tftransfer_imported": served["tftransfer_imported"],
        },
        "data": {
            "source_train": int(len(data["source_train"][1])),
            "source_test": int(len(data["source_test"][1])),
            "target_train": int(len(data["target_train"][1])),
            "target_test": int(len(y_test)),
        },
        "history": {
            "transfer": {k: [None if v is None else float(v) for v in vals]
                         for k, vals in history.history.items()},
            "scratch": {k: [float(v) for v in vals] for k, vals in scratch_history.history.items()},
        },
        "config": dataclasses.asdict(config),
    }
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
