"""A linear-probe baseline written into the classifier's head: `fit_linear_probe`.

A linear probe fits a logistic regression on the frozen features a classifier's
head sees (the pooled backbone outputs, `model.head.dropout_layers[0].input`,
the features `tftransfer.evaluation.ranking` scores), with its inverse
regularization strength C chosen on validation data
(`tftransfer.baselines.logistic_regression`). The fitted
``StandardScaler -> LogisticRegression`` pipeline is then folded into the
head's final Dense layer: with ``z = ((f - mu) / sigma) @ W.T + b``,

    kernel = (W / sigma).T        bias = b - sum(W * mu / sigma)

so the model's logits are the pipeline's decision function (to float32
precision) and its softmax the pipeline's ``predict_proba``. For two classes
scikit-learn keeps one row ``z`` (the score of class 1); the head gets the
logits ``[-z/2, z/2]``, whose softmax is ``sigmoid(z)``.

The model stays an ordinary classifier: it saves, exports and evaluates like
any, and `tftransfer.fine_tune` / `tftransfer.fit_two_phase` can go on
training it: the first step of LP-FT (linear probe, then fine-tune; Kumar et
al., "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution", ICLR 2022).
"""

import dataclasses
import logging
import time

import keras
import numpy as np
import tensorflow as tf

from tftransfer.baselines import DEFAULT_C_VALUES
from tftransfer.baselines import check_c_values
from tftransfer.baselines import logistic_regression
from tftransfer.classifiers.base import Classifier
from tftransfer.data.checks import class_indices
from tftransfer.data.checks import is_array
from tftransfer.data.splits import DataSplits
from tftransfer.training.data_checks import check_training_data
from tftransfer.training.data_checks import unpack_splits

logger = logging.getLogger(__name__)

PHASE = "linear_probe"
"""The ``"phase"`` of the entry `fit_linear_probe` appends to
``model.training_summary`` (the training phases number theirs 1 and 2)."""


@dataclasses.dataclass(frozen=True)
class LinearProbeResult:
    """What `fit_linear_probe` fitted and how well.

    Attributes:
        c: the chosen inverse regularization strength.
        c_selection: how it was chosen: ``"validation"`` (best validation
            accuracy), ``"cross_validation"``, or ``"fixed"`` (a single
            value in `c_values`, or a class with a single example; see
            `tftransfer.baselines.logistic_regression`).
        train_accuracy: the probe's accuracy on the training features.
        validation_accuracy: on the validation features; `None` without
            validation data.
        num_train: training examples.
        num_validation: validation examples (0 without validation data).
        feature_dim: the number of features (the head's input size).
        extraction_seconds: the seconds of the pass(es) of the frozen model.
        seconds: the seconds of the whole call.
    """

    c: float
    c_selection: str
    train_accuracy: float
    validation_accuracy: object
    num_train: int
    num_validation: int
    feature_dim: int
    extraction_seconds: float
    seconds: float

    def to_dict(self):
        """A JSON-serializable dict of the fields."""
        return dataclasses.asdict(self)


def _check_model(model):
    if not isinstance(model, Classifier):
        raise TypeError(
            "`model` must be a tftransfer classifier (from `build_classifier` or "
            "`build_text_classifier`): its head is where the probe's weights go. "
            f"Received: model of type {type(model).__name__}")
    if model.multi_label:
        raise ValueError(
            "`fit_linear_probe` fits a single-label (softmax) probe; a multi-label "
            "classifier needs one independent score per class. Train its head with "
            "`tftransfer.fit_head` instead. Received: a model with multi_label=True")
    if model.hidden_units:
        raise ValueError(
            "A linear probe is one linear layer, but this head has hidden layers. Build the "
            "classifier with hidden_units=() for a probe, or train this head with "
            f"`tftransfer.fit_head`. Received: a model with "
            f"hidden_units={list(model.hidden_units)!r}")


def _check_options(c_values, batch_size, seed, verbose):
    check_c_values(c_values)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an integer. Received: seed={seed!r}")
    if verbose not in (0, 1):
        raise ValueError(f"`verbose` must be 0 or 1. Received: verbose={verbose!r}")


def _as_inputs(x):
    """Arrays of images as they are; lists or arrays of strings as object arrays."""
    if not (isinstance(x, (list, tuple)) or is_array(x)):
        return x
    x = np.asarray(x)
    return x.astype(object) if x.dtype.kind in "US" else x


def _to_dataset(data, y, name, batch_size, example_rank):
    """`data` as a batched `tf.data.Dataset` of ``(inputs, labels)``
    (`example_rank`: the rank of one example's inputs)."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(
                f"`{name}` must yield (inputs, labels): a probe needs labels. "
                f"Received: {name} with elements {spec!r}")
        if y is not None:
            raise ValueError(
                f"Pass labels inside the dataset `{name}`, not as `y`. Received: a "
                f"tf.data.Dataset and y of type {type(y).__name__}")
        inputs = spec[0] if not isinstance(spec[0], dict) else next(iter(spec[0].values()))
        if spec[1].shape.rank == 0 or inputs.shape.rank == example_rank:
            data = data.batch(batch_size)  # unbatched examples
        return data
    if y is None:
        raise ValueError(
            f"`{name}` needs labels: pass arrays `x` and `y`, a tuple (x, y) as "
            "`validation_data`, a tf.data.Dataset of (inputs, labels) or a DataSplits. "
            f"Received: {name} of type {type(data).__name__} and no labels")
    x, labels = _as_inputs(data), np.asarray(y)
    if not hasattr(x, "__len__") or len(x) != len(labels):
        raise ValueError(
            f"`{name}` must have one label per input. Received: {name} of shape "
            f"{np.shape(x)} and labels of shape {labels.shape}")
    return tf.data.Dataset.from_tensor_slices((x, labels)).batch(batch_size)


def _extract(extractor, dataset, name, verbose):
    """``(features, labels)`` of one pass over `dataset`, inputs and labels
    read together (a shuffled pipeline keeps them paired)."""
    features, labels = [], []
    progress = keras.utils.Progbar(None, verbose=verbose, unit_name="batch")
    for step, batch in enumerate(dataset):
        features.append(np.asarray(extractor(batch[0]), np.float64))
        labels.append(np.asarray(batch[1]))
        progress.update(step + 1)
    if not labels:
        raise ValueError(f"`{name}` is empty: there is nothing to fit the probe on. "
                         f"Received: {name} without any batch")
    features = np.concatenate(features)
    labels = class_indices(np.concatenate(labels), f"`{name}`")
    return features.reshape(len(features), -1), labels


def _check_classes(model, y, name):
    present = np.unique(y)
    if present.min() < 0 or present.max() >= model.num_classes:
        raise ValueError(
            f"The labels of `{name}` go from {present.min()} to {present.max()} but the model "
            f"has {model.num_classes} classes ({', '.join(model.class_names)}). Build the "
            f"classifier with the data's class_names. Received: labels {present.tolist()}")
    missing = sorted(set(range(model.num_classes)) - set(present.tolist()))
    if missing and name != "validation_data":
        raise ValueError(
            "Every class of the model must have training examples: the probe has no "
            "weights to write for a class it never saw. Add examples of "
            f"{[model.class_names[i] for i in missing]} or build the classifier without "
            f"them. Received: training labels {present.tolist()} for "
            f"{model.num_classes} classes")


def _selection(c_values, validation_data, y):
    if len(c_values) == 1:
        return "fixed"
    if validation_data is not None:
        return "validation"
    return "cross_validation" if np.min(np.unique(y, return_counts=True)[1]) >= 2 else "fixed"


def fold_into_head(model, pipeline):
    """Writes a fitted ``StandardScaler -> LogisticRegression`` pipeline
    (over the head's input features) into the head's final Dense layer, so
    that the model's logits are its decision function (see the module's
    docstring); for two classes the logits are ``[-z/2, z/2]``."""
    scaler, regression = pipeline[0], pipeline[-1]
    coef = regression.coef_ / scaler.scale_  # (rows, features), float64
    intercept = regression.intercept_ - coef @ scaler.mean_
    if coef.shape[0] == 1:  # binary: one row, the score of class 1
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    dense = model.head.output_dense
    dense.kernel.assign(coef.T.astype(dense.kernel.dtype))
    dense.bias.assign(intercept.astype(dense.bias.dtype))


def fit_linear_probe(model, x, y=None, *, validation_data=None, c_values=DEFAULT_C_VALUES,
                     batch_size=32, seed=0, verbose=0):
    """Fits a linear probe on the frozen features and writes it into the head.

    The frozen part of `model` (backbone and pooling; for text, the encoder
    and pooling) runs once, in inference mode, over the training data and
    once over the validation data; the features are held in memory. A
    multinomial logistic regression on the standardized features
    (`tftransfer.baselines.logistic_regression`, the same probe
    `tftransfer.rank_backbones` scores) has its C chosen from `c_values` by
    validation accuracy (without validation data: by stratified
    cross-validation on the training features). It is then folded into the
    head's final Dense kernel and bias, so that the model's logits equal the
    probe's decision function, and its probabilities the probe's
    ``predict_proba`` (up to float32). The backbone is neither trained nor
    changed (its BatchNormalization statistics included), and the model goes
    on as an ordinary classifier: save it, export it, or fine-tune it
    (LP-FT: `tftransfer.fine_tune` after the probe). An entry with
    ``"phase": "linear_probe"`` is appended to ``model.training_summary``.

    Multi-label classifiers and heads with hidden layers are refused (a probe
    is one softmax layer; train those heads with `tftransfer.fit_head`).
    Every class of the model needs training examples.

    Args:
        model: a tftransfer classifier (`build_classifier`,
            `build_text_classifier`) with a single-label head without hidden
            layers.
        x: the training data: a `tftransfer.DataSplits` (its train split;
            its validation split is the validation data unless
            `validation_data` is given), a `tf.data.Dataset` of ``(inputs,
            labels)``, or inputs (an array of images, a list of strings) with
            `y`. Integer or one-hot labels. Read without augmentation where
            you can: the probe sees one pass of it.
        y: the labels, when `x` holds inputs.
        validation_data: ``(x_val, y_val)`` or a `tf.data.Dataset` of
            ``(inputs, labels)`` to choose C on.
        c_values: the inverse regularization strengths to choose from.
        batch_size: for feature extraction from arrays (and unbatched
            datasets).
        seed: for the cross-validation folds and the solver.
        verbose: 1 shows a progress bar per pass (Keras's `Progbar`), 0
            nothing; the result is also logged (INFO) on this module's logger.

    Returns:
        A `LinearProbeResult`: the chosen C, the training and validation
        accuracy, the number of examples, the feature size and the seconds.

    Example:

    >>> import numpy as np
    >>> model = build_classifier("mobilenet_v3_small", class_names=["a", "b"],
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3))
    >>> result = fit_linear_probe(model, images, y=np.arange(8) % 2, c_values=(1.0,))
    >>> result.c, result.num_train, model.training_summary[-1]["phase"]
    (1.0, 8, 'linear_probe')
    """
    start = time.perf_counter()
    _check_model(model)
    _check_options(c_values, batch_size, seed, verbose)
    if isinstance(validation_data, DataSplits):
        raise TypeError(
            "`validation_data` must be (x_val, y_val) or a tf.data.Dataset; pass a DataSplits "
            "as `x` (its validation split is used). Received: validation_data of type "
            "DataSplits")
    if isinstance(x, DataSplits) and y is not None:
        raise ValueError("A DataSplits carries its labels: pass it without `y`. Received: "
                         f"x of type DataSplits and y of type {type(y).__name__}")
    x, validation_data = unpack_splits(model, x, validation_data)
    rank = len(model.inputs[0].shape) - 1
    if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        validation = _to_dataset(*validation_data, "validation_data", batch_size, rank)
    elif isinstance(validation_data, tf.data.Dataset):
        validation = _to_dataset(validation_data, None, "validation_data", batch_size, rank)
    elif validation_data is None:
        validation = None
    else:
        raise TypeError(
            "`validation_data` must be a tuple (x_val, y_val) or a tf.data.Dataset of "
            f"(inputs, labels). Received: validation_data of type "
            f"{type(validation_data).__name__}")
    train = _to_dataset(x, y, "x", batch_size, rank)
    check_training_data(model, train, None, validation)
    if y is not None:  # labels known before any work: check them all now
        _check_classes(model, class_indices(np.asarray(y), "`x`"), "x")

    features = model.head.dropout_layers[0].input
    frozen = keras.Model(model.inputs, features, name=f"{model.name}_probe_features")
    # One trace for all batch sizes (the last batch is smaller), in inference mode.
    extractor = tf.function(lambda inputs: frozen(inputs, training=False),
                            reduce_retracing=True)
    train_x, train_y = _extract(extractor, train, "x", verbose)
    _check_classes(model, train_y, "x")
    held_out = None
    if validation is not None:
        held_out = _extract(extractor, validation, "validation_data", verbose)
        _check_classes(model, held_out[1], "validation_data")
    extraction_seconds = time.perf_counter() - start

    pipeline = logistic_regression(train_x, train_y, validation_data=held_out,
                                   c_values=tuple(c_values), seed=seed)
    fold_into_head(model, pipeline)
    result = LinearProbeResult(
        c=float(pipeline[-1].C),
        c_selection=_selection(list(c_values), held_out, train_y),
        train_accuracy=float(pipeline.score(train_x, train_y)),
        validation_accuracy=None if held_out is None else float(pipeline.score(*held_out)),
        num_train=len(train_y), num_validation=0 if held_out is None else len(held_out[1]),
        feature_dim=int(train_x.shape[1]), extraction_seconds=round(extraction_seconds, 3),
        seconds=round(time.perf_counter() - start, 3))
    model.training_summary.append({"phase": PHASE, **result.to_dict()})
    logger.info("Linear probe of %s: C=%g (%s), train accuracy %.4f, validation accuracy %s "
                "(%d features, %.2f s)", model.name, result.c, result.c_selection,
                result.train_accuracy, result.validation_accuracy, result.feature_dim,
                result.seconds)
    return result
