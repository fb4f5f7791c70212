"""Task heads as data: `classification`, `binary`, `multi_label`, `regression`.

Each factory returns a `HeadSpec`, a small frozen description of one task's
head that knows its Keras layer (a `ClassificationHead` named after the
task), its masked loss and metrics (`tftransfer.classifiers.masked`: missing
labels are -1, missing regression targets NaN), its loss weight, and what the
export returns for it. `tftransfer.build_multitask` puts one per task on a
shared backbone; `tftransfer.build_regressor` one regression head.

Example:

>>> heads.classification(class_names=["cat", "dog"]).labels
('cat', 'dog')
>>> heads.regression().kind, heads.binary(loss_weight=0.5).loss_weight
('regression', 0.5)
"""

import dataclasses

import keras
import tensorflow as tf

from tftransfer.classifiers.head import ClassificationHead
from tftransfer.classifiers.head import check_head_options
from tftransfer.classifiers.head import resolve_class_names
from tftransfer.classifiers.masked import MISSING_LABEL
from tftransfer.classifiers.masked import MISSING_TARGET
from tftransfer.classifiers.masked import MaskedLoss
from tftransfer.classifiers.masked import MaskedMetric
from tftransfer.classifiers.masked import check_kind
from tftransfer.classifiers.masked import metric_names

__all__ = [
    "MISSING_LABEL",
    "MISSING_TARGET",
    "HeadSpec",
    "binary",
    "classification",
    "multi_label",
    "regression",
]

DEFAULT_DROPOUT = 0.2
"""The heads' default dropout rate (as `tftransfer.build_classifier`'s)."""


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One task's head. Make one with the factories of this module.

    Attributes:
        kind: ``"classification"``, ``"binary"``, ``"multi_label"`` or
            ``"regression"``.
        labels: the class names (regression: one name per output unit).
        hidden_units, hidden_activation, dropout: the `ClassificationHead`'s
            hidden layers and dropout rate.
        loss_weight: the task's weight in the total loss.
        class_weight: classification and binary: a weight per class, in
            class order, ``"balanced"`` (resolved from the training labels
            by the training functions) or None.
        metrics: the names of the task's metrics (see `MaskedMetric`).
        regression_loss: ``"mse"`` or ``"mae"``, for regression.
    """

    kind: str
    labels: tuple
    hidden_units: tuple = ()
    hidden_activation: str = "relu"
    dropout: float = DEFAULT_DROPOUT
    loss_weight: float = 1.0
    class_weight: tuple = None
    metrics: tuple = None
    regression_loss: str = "mse"

    def __post_init__(self):
        check_kind(self.kind)
        check_head_options(dropout=self.dropout, activation=None,
                           multi_label=self.kind != "classification",
                           hidden_units=self.hidden_units)
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "hidden_units", tuple(self.hidden_units))
        if isinstance(self.loss_weight, bool) or not isinstance(
                self.loss_weight, (int, float)) or not self.loss_weight >= 0:
            raise ValueError("`loss_weight` must be a non-negative number, e.g. 0.5. "
                             f"Received: loss_weight={self.loss_weight!r}")
        metrics = metric_names(self.kind)[:1] if self.metrics is None else self.metrics
        if isinstance(metrics, str):
            metrics = (metrics,)
        for name in metrics:
            if name not in metric_names(self.kind):
                raise ValueError(
                    f"A {self.kind} head reports the metrics {metric_names(self.kind)}. "
                    f"Received: metrics={self.metrics!r}")
        object.__setattr__(self, "metrics", tuple(metrics))
        object.__setattr__(self, "class_weight", _class_weight(self))
        if self.regression_loss not in ("mse", "mae"):
            raise ValueError("`loss` of a regression head must be 'mse' or 'mae'. "
                             f"Received: loss={self.regression_loss!r}")

    @property
    def units(self):
        """The head's output units (1 for binary)."""
        return 1 if self.kind == "binary" else len(self.labels)

    def layer(self, task):
        """The head's Keras layer, named `task`: it returns logits (values
        for regression)."""
        return ClassificationHead(self.units, hidden_units=self.hidden_units,
                                  hidden_activation=self.hidden_activation,
                                  dropout=self.dropout, multi_label=self.kind != "classification",
                                  name=task)

    def loss(self, *, label_smoothing=0.0, class_weight=None):
        """The task's `MaskedLoss`; `class_weight`: the weights a
        ``"balanced"`` head resolved from its training labels (without
        them, such a head weighs every class 1)."""
        smoothing = 0.0 if self.kind == "regression" else label_smoothing
        if class_weight is None and self.class_weight != "balanced":
            class_weight = self.class_weight
        return MaskedLoss(self.kind, class_weight=class_weight, label_smoothing=smoothing,
                          regression_loss=self.regression_loss)

    def metric_objects(self):
        """The task's `MaskedMetric` objects."""
        return [MaskedMetric(self.kind, name) for name in self.metrics]

    def predictions(self, outputs):
        """Maps the head's outputs to what a person reads: probabilities
        (classification, binary: ``[batch, 2]``), scores (multi-label) or
        values (regression)."""
        outputs = keras.ops.cast(outputs, "float32")
        if self.kind == "classification":
            return keras.ops.softmax(outputs, axis=-1)
        if self.kind == "binary":
            positive = keras.ops.sigmoid(outputs)
            return keras.ops.concatenate([1.0 - positive, positive], axis=-1)
        if self.kind == "multi_label":
            return keras.ops.sigmoid(outputs)
        return outputs

    def serving_outputs(self, task, outputs, *, top_k=1):
        """The export's outputs for this task: ``{name: tensor}`` (see
        `describe_outputs`); with `top_k` > 1 (classification and binary
        heads) also the `top_k` best classes, best first."""
        values = tf.cast(self.predictions(outputs), tf.float32)
        if self.kind == "regression":
            return {task: values[:, 0] if self.units == 1 else values}
        if self.kind == "multi_label":
            return {f"{task}_scores": values,
                    f"{task}_labels": tf.cast(values >= 0.5, tf.int64)}
        names = tf.constant(list(self.labels))
        ids = tf.argmax(values, axis=-1, output_type=tf.int64)
        served = {f"{task}_probabilities": values, f"{task}_class_ids": ids,
                  f"{task}_class_names": tf.gather(names, ids)}
        if top_k > 1:
            best = tf.math.top_k(values, k=top_k)
            best_ids = tf.cast(best.indices, tf.int64)
            served.update({f"{task}_top_k_probabilities": best.values,
                           f"{task}_top_k_class_ids": best_ids,
                           f"{task}_top_k_class_names": tf.gather(names, best_ids)})
        return served

    def describe_outputs(self, task, *, top_k=1):
        """The export's outputs for this task, as the metadata describes them."""
        k = len(self.labels)
        if self.kind == "regression":
            return {task: "float32 [batch]" if self.units == 1 else f"float32 [batch, {k}]"}
        if self.kind == "multi_label":
            return {f"{task}_scores": f"float32 [batch, {k}]: one sigmoid score per label",
                    f"{task}_labels": f"int64 [batch, {k}]: 1 where the score is >= 0.5"}
        described = {f"{task}_probabilities": f"float32 [batch, {k}]",
                     f"{task}_class_ids": "int64 [batch]: the most probable class",
                     f"{task}_class_names": "string [batch]: its name"}
        if top_k > 1:
            described.update({
                f"{task}_top_k_probabilities":
                    f"float32 [batch, {top_k}]: the {top_k} best, best first",
                f"{task}_top_k_class_ids": f"int64 [batch, {top_k}]",
                f"{task}_top_k_class_names": f"string [batch, {top_k}]"})
        return described

    def get_config(self):
        config = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in config.items()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _class_weight(spec):
    value = spec.class_weight
    if value is None:
        return None
    if spec.kind not in ("classification", "binary"):
        raise ValueError(
            f"`class_weight` applies to classification and binary heads, not {spec.kind}. "
            f"Received: class_weight={value!r}")
    if isinstance(value, str):
        if value != "balanced":
            raise ValueError(
                "`class_weight` must be 'balanced', a dict {class_index: weight} or a list "
                f"of weights. Received: class_weight={value!r}")
        return value
    count = 2 if spec.kind == "binary" else len(spec.labels)
    if isinstance(value, dict):
        unknown = [k for k in value if not isinstance(k, int) or not 0 <= k < count]
        if unknown:
            raise ValueError(
                f"`class_weight` maps class indices in [0, {count}) to weights; "
                f"{unknown!r} are not. Received: class_weight={value!r}")
        value = [float(value.get(i, 1.0)) for i in range(count)]
    value = tuple(float(w) for w in value)
    if len(value) != count or not all(w >= 0 for w in value):
        raise ValueError(
            f"`class_weight` must hold {count} non-negative weights, one per class (or a "
            f"dict {{class_index: weight}}). Received: class_weight={spec.class_weight!r}")
    return value


def _common(hidden_units, hidden_activation, dropout, loss_weight, metrics):
    return {"hidden_units": tuple(hidden_units), "hidden_activation": hidden_activation,
            "dropout": dropout, "loss_weight": loss_weight, "metrics": metrics}


def classification(num_classes=None, *, class_names=None, class_weight=None, hidden_units=(),
                   hidden_activation="relu", dropout=DEFAULT_DROPOUT, loss_weight=1.0,
                   metrics=None):
    """A single-label classification head: one softmax over the classes.

    Labels are integer class indices; `MISSING_LABEL` (-1) marks an example
    without a label for this task.

    Args:
        num_classes: number of classes (or give `class_names`).
        class_names: class names, in label order; they go into the export.
        class_weight: a dict ``{class_index: weight}``, a list of weights,
            or ``"balanced"``: ``n / (classes * count)`` per class over the
            task's labelled training examples, counted by `fit_head`,
            `fine_tune` and `fit_two_phase` (with plain `fit`, call
            `MultiTaskModel.balance_class_weights` first).
        hidden_units, hidden_activation, dropout: the head's hidden dense
            layers, their activation, the dropout rate before each layer.
        loss_weight: the task's weight in the total loss.
        metrics: metric names; default ``("accuracy",)``.

    Example:

    >>> heads.classification(3).labels
    ('0', '1', '2')
    """
    return HeadSpec("classification", resolve_class_names(num_classes, class_names),
                    class_weight=class_weight,
                    **_common(hidden_units, hidden_activation, dropout, loss_weight, metrics))


def binary(*, class_names=("0", "1"), class_weight=None, hidden_units=(),
           hidden_activation="relu", dropout=DEFAULT_DROPOUT, loss_weight=1.0, metrics=None):
    """A binary head: one sigmoid unit; labels 0 or 1, -1 for missing.

    The export returns probabilities of both classes (``[batch, 2]``), the
    class id and the class name, as for `classification`.

    Args:
        class_names: the names of class 0 and class 1.
        class_weight: ``{0: w0, 1: w1}``, ``[w0, w1]`` or ``"balanced"``
            (as for `classification`).
        hidden_units, hidden_activation, dropout, loss_weight, metrics: as for
            `classification`.

    Example:

    >>> heads.binary(class_names=["sick", "healthy"]).units
    1
    """
    names = resolve_class_names(None, class_names)
    if len(names) != 2:
        raise ValueError("`class_names` of a binary head must be two names (class 0, class "
                         f"1). Received: class_names={class_names!r}")
    return HeadSpec("binary", names, class_weight=class_weight,
                    **_common(hidden_units, hidden_activation, dropout, loss_weight, metrics))


def multi_label(class_names=None, *, num_classes=None, hidden_units=(),
                hidden_activation="relu", dropout=DEFAULT_DROPOUT, loss_weight=1.0,
                metrics=None):
    """A multi-label head: one independent sigmoid score per label.

    Labels are multi-hot rows of 0 and 1; -1 marks an entry (or, a whole row
    of -1, an example) without a label.

    Args:
        class_names: the labels' names (or give `num_classes`).
        num_classes: number of labels.
        hidden_units, hidden_activation, dropout, loss_weight, metrics: as for
            `classification`.

    Example:

    >>> heads.multi_label(["red", "round"]).kind
    'multi_label'
    """
    return HeadSpec("multi_label", resolve_class_names(num_classes, class_names),
                    **_common(hidden_units, hidden_activation, dropout, loss_weight, metrics))


def regression(units=1, *, names=None, loss="mse", hidden_units=(), hidden_activation="relu",
               dropout=0.0, loss_weight=1.0, metrics=None):
    """A regression head: `units` linear outputs; NaN marks a missing target.

    Targets are best scaled to about unit size (standardize them, and undo
    it on the predictions): the head starts at 0 and its learning rate is
    the recipe's.

    Args:
        units: number of values predicted per example.
        names: the values' names. Default: ``["0", "1", ...]``.
        loss: ``"mse"`` (default) or ``"mae"``.
        hidden_units, hidden_activation, loss_weight: as for `classification`.
        dropout: the dropout rate before each dense layer (default 0).
        metrics: metric names from ``("mae", "mse")``; default ``("mae",)``.

    Example:

    >>> heads.regression().units
    1
    """
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise ValueError(f"`units` must be a positive integer. Received: units={units!r}")
    labels = resolve_class_names(units, None if names is None else list(names))
    return HeadSpec("regression", labels, regression_loss=loss,
                    **_common(hidden_units, hidden_activation, dropout, loss_weight, metrics))
