"""`evaluate`: a single-label classifier's evaluation report on held-out data.

The data are read once, batch by batch: the model's outputs and the labels
are kept (one row of scores per example), and the inputs of the first
misclassified examples. Everything else -- accuracy, top-k accuracy, the
per-class table and confusion matrix (`ClassificationReport.from_labels`),
the calibration -- is computed from those. Predictions are the argmax of the
model's outputs; the outputs become probabilities as the model's own
``probabilities`` does (`tftransfer.Classifier`), or, for another Keras
model, by softmax unless they already are rows of probabilities.

A `DataSplits` is evaluated on its test split, else its validation split.
The loaders never shuffle those (only ``train``), so the n-th example read
is ``files[split][n]``: that is how a misclassified example of a folder
names its file.
"""

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from tftransfer.classifiers.multitask import MultiTaskModel
from tftransfer.data.splits import DataSplits
from tftransfer.evaluation.calibration import DEFAULT_NUM_BINS
from tftransfer.evaluation.calibration import check_num_bins
from tftransfer.evaluation.evaluation_report import EvaluationReport  # noqa: F401 - public here
from tftransfer.evaluation.evaluation_report import MisclassifiedExample  # noqa: F401
from tftransfer.evaluation.evaluation_report import report_from_scores
from tftransfer.evaluation.multitask_report import evaluate_tasks
from tftransfer.evaluation.plots import history_dict
from tftransfer.evaluation.report import read_scores

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
DEFAULT_MAX_MISCLASSIFIED = 25


def evaluate(
    model,
    data,
    *,
    class_names=None,
    top_k=DEFAULT_TOP_K,
    history=None,
    num_bins=DEFAULT_NUM_BINS,
    max_misclassified=DEFAULT_MAX_MISCLASSIFIED,
    batch_size=32,
):
    """Evaluates a single-label classifier: metrics, calibration, mistakes.

    Args:
        model: a classifier returning one score (logit or probability) per
            class, e.g. from `build_classifier`; or a `MultiTaskModel`, whose
            report is a `MultiTaskReport`, one report per task
            (`tftransfer.evaluation.multitask_report`).
        data: a `DataSplits` (its test split, else its validation split),
            a `tf.data.Dataset` of ``(inputs, labels)`` or ``(inputs,
            labels, weights)`` batches (weights are ignored; an unbatched
            dataset is batched by `batch_size`), or a tuple ``(x, y)``;
            integer or one-hot labels. For data from
            `image_dataset_from_folder` each misclassified example names its
            file.
        class_names: the names of the model's outputs. Default: the
            model's ``class_names``, else the `DataSplits`'s, else ``"0"``,
            ``"1"``...
        top_k: `top_k_accuracy` is reported for k = 1 .. `top_k` (capped at
            the number of classes).
        history: the `History` of training (`fit_two_phase`'s), for the
            learning curves; optional.
        num_bins: equal-width confidence bins for the calibration.
        max_misclassified: how many misclassified examples to keep, with
            their inputs (the first ones, in reading order).
        batch_size: for a tuple ``(x, y)`` or an unbatched dataset.

    Returns:
        An `EvaluationReport`; ``print(report)`` summarizes it, and
        ``report.save(directory)`` writes JSON, Markdown, HTML and plots.

    Raises:
        TypeError: for a multi-label classifier, or data of another kind.
        ValueError: for bad options, class names that do not fit the model,
            or labels outside its classes.

    Example:

    >>> import keras
    >>> from tftransfer.evaluation.evaluate import evaluate
    >>> inputs = keras.Input((2,))  # a model whose logits are its inputs
    >>> model = keras.Model(inputs, keras.layers.Dense(
    ...     2, use_bias=False, kernel_initializer="identity")(inputs))
    >>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.0]])
    >>> report = evaluate(model, (logits, [0, 1, 1, 0]), class_names=["cat", "dog"])
    >>> report.accuracy, report.top_k_accuracy
    (0.75, {1: 0.75, 2: 1.0})
    >>> report.misclassified
    [MisclassifiedExample(index=2, true_class='dog', predicted_class='cat',
                          confidence=0.731..., file=None)]
    """
    if not hasattr(model, "predict_on_batch"):
        raise TypeError(f"`model` must be a Keras model. Received: model of type "
                        f"{type(model).__name__}")
    if isinstance(model, MultiTaskModel):
        return evaluate_tasks(model, data, class_names=class_names, top_k=top_k,
                              history=history, num_bins=num_bins,
                              max_misclassified=max_misclassified, batch_size=batch_size)
    if getattr(model, "multi_label", False):
        raise TypeError(
            "`evaluate` is for single-label classifiers (one class per example). For a "
            "multi-label model, threshold `model.predict_proba(x)` and score each class on "
            "its own, e.g. sklearn.metrics.classification_report(y, probabilities > 0.5). "
            f"Received: model={model.name!r} with multi_label=True")
    _check_count("top_k", top_k, 1, "(it is capped at the number of classes)")
    num_bins = check_num_bins(num_bins)
    _check_count("max_misclassified", max_misclassified, 0, "(0 keeps none)")
    _check_count("batch_size", batch_size, 1, "")
    history = None if history is None else history_dict(history)
    if history is not None and not any(v for k, v in history.items() if k != "phase"):
        raise ValueError("`history` records no epochs to plot. Pass the History that `fit` "
                         f"returned after training. Received: history={history!r}")
    source, split, files, data_names = _select(data, model, batch_size)
    class_names = _check_class_names(class_names, model, data_names)

    scores, true, kept = read_scores(model, source, batch_size=batch_size,
                                     max_misclassified=max_misclassified)
    num_classes = scores.shape[1]
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names for a model with {num_classes} "
            f"outputs. Received: class_names={class_names!r}")
    if not 0 <= true.min() <= true.max() < num_classes:
        raise ValueError(
            f"The labels of `data` must lie in [0, {num_classes}) for a model with "
            f"{num_classes} outputs. Received: labels from {true.min()} to {true.max()}")
    if files is not None and len(files) != len(true):
        logger.warning("The %s split has %d files but %d examples were read: the "
                       "misclassified examples are reported without their files.",
                       split, len(files), len(true))
        files = None

    return report_from_scores(scores, true, _probabilities(model, scores),
                              class_names=class_names, top_k=top_k, num_bins=num_bins,
                              kept=kept, files=files, history=history, split=split)

def _check_count(name, value, low, hint):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        what = "a positive integer" if low else "a non-negative integer"
        raise ValueError(f"`{name}` must be {what}{' ' + hint if hint else ''}. "
                         f"Received: {name}={value!r}")


def _select(data, model, batch_size):
    """``(batches source, split, files, data's class names)``."""
    if isinstance(data, DataSplits):
        split = "test" if data.test is not None else "validation"
        dataset = getattr(data, split)
        if dataset is None:
            raise ValueError(
                "`data` has no test and no validation split to evaluate on. Load it with "
                "`test_split=0.2` (or `validation_split=...`), or pass a dataset: "
                "evaluate(model, data.train) would score the training data. "
                "Received: data with test=None and validation=None")
        logger.info("Evaluating on the %s split.", split)
        files = (data.files or {}).get(split)
        if files is not None and dataset.options().deterministic is False:
            logger.warning("The %s pipeline is not deterministic (its order may change): "
                           "the misclassified examples are reported without their files.",
                           split)
            files = None
        return _batched(dataset, model, batch_size), split, files, list(data.class_names)
    if isinstance(data, tf.data.Dataset):
        return _batched(data, model, batch_size), None, None, None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(v) if isinstance(v, (list, tuple)) else v for v in data)
        if len(x) != len(y):
            raise ValueError(
                "`data` must hold as many labels as inputs. "
                f"Received: data=(x, y) with {len(x)} inputs and {len(y)} labels")
        return (x, y), None, None, None
    hint = ""
    if isinstance(data, (str, os.PathLike)):
        hint = (" (for a folder of images, load it first: `tft.image_dataset_from_folder(path, "
                "image_size=..., validation_split=0.0, shuffle=False)`, or run `tftransfer "
                "evaluate MODEL FOLDER`)")
    raise TypeError(
        "`data` must be a DataSplits, a tf.data.Dataset of (inputs, labels) batches or a "
        f"tuple (x, y){hint}. Received: data of type {type(data).__name__}")


def _batched(dataset, model, batch_size):
    """`dataset`, batched when its inputs are single examples of the model's input."""
    spec = dataset.element_spec
    inputs = getattr(model, "inputs", None)
    if not isinstance(spec, tuple) or not isinstance(spec[0], tf.TensorSpec) or not inputs:
        return dataset
    if len(inputs) == 1 and spec[0].shape.rank == len(inputs[0].shape) - 1:
        return dataset.batch(batch_size)
    return dataset


def _check_class_names(class_names, model, data_names):
    """The names of the model's outputs, checked against their number where
    the model tells it; None when nothing names them."""
    outputs = getattr(model, "outputs", None)
    width = outputs[0].shape[-1] if outputs and len(outputs) == 1 else None
    own = list(getattr(model, "class_names", None) or []) or None
    # A classifier built with `num_classes=` only is named "0", "1"...: no names to check.
    named = own if own != [str(i) for i in range(len(own or []))] else None
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
            raise TypeError(f"`class_names` must be a list of strings. "
                            f"Received: class_names={class_names!r}")
        class_names = list(class_names)
        if width is not None and len(class_names) != width:
            raise ValueError(
                f"`class_names` has {len(class_names)} names for a model with {width} "
                f"outputs. Received: class_names={class_names!r}")
        return class_names
    if named and data_names and named != data_names:
        raise ValueError(
            f"The model's classes {named} are not the data's {data_names}, so its "
            "outputs would be scored against the wrong labels. Load the data with "
            "`class_names=model.class_names`, or pass `class_names=` to name the outputs. "
            f"Received: data with class_names={data_names!r}")
    if data_names and width is not None and len(data_names) != width:
        raise ValueError(
            f"The data has {len(data_names)} classes but the model {width} outputs: "
            "evaluate a model on data of the classes it was trained on. "
            f"Received: data with class_names={data_names!r}")
    return named or data_names or own


def _probabilities(model, scores):
    """As the model's own ``probabilities``, else softmax unless `scores`
    already are rows of probabilities."""
    if callable(getattr(model, "probabilities", None)):
        return np.asarray(keras.ops.convert_to_numpy(model.probabilities(scores)), np.float64)
    if np.all(scores >= 0) and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-3):
        return scores
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)
