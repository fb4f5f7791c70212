"""Loss and metric that skip missing labels: `MaskedLoss`, `MaskedMetric`.

A multi-task data set rarely has every label for every example. A missing
label is written as a sentinel: `MISSING_LABEL` (-1) for class labels
(classification, binary, and each entry of a multi-label row) and NaN
(`MISSING_TARGET`) for regression targets. The loss and the metrics of a
task then ignore those entries exactly: they neither add to the sums nor to
the counts, and a batch where a task has no label at all gives that task a
loss of 0 (not NaN).

A task's loss is the mean over its labelled entries of the per-entry loss,
each times its class weight: ``sum(class_weight[y] * loss) / count``, the
count being the labelled entries of the batch (as Keras weighs a
``class_weight``, with the batch size replaced by that count). Metrics are
means over the labelled entries of the whole epoch.
"""

import keras

MISSING_LABEL = -1
"""The label of an example that has no label for a classification, binary or
multi-label task (in a multi-label row, per entry)."""

MISSING_TARGET = float("nan")
"""The target of an example that has no target for a regression task."""

KINDS = ("classification", "binary", "multi_label", "regression")
"""The kinds of task head (`tftransfer.heads`)."""

_METRICS = {
    "classification": ("accuracy",),
    "binary": ("accuracy",),
    "multi_label": ("accuracy",),
    "regression": ("mae", "mse"),
}


def check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
    return kind


def metric_names(kind):
    """The metrics a head of this kind can report."""
    return _METRICS[check_kind(kind)]


def _prepared(kind, y_true, y_pred):
    """``(labels, mask, y_pred)``: labels with missing entries set to 0 and the
    float mask of labelled entries, shaped per entry of `y_pred` (per example
    for classification)."""
    y_pred = keras.ops.cast(y_pred, "float32")
    y_true = keras.ops.cast(y_true, "float32")
    if kind == "classification":
        labels = keras.ops.reshape(y_true, (-1,))
        present = labels >= 0  # False for -1, and for NaN
    else:
        labels = keras.ops.reshape(y_true, keras.ops.shape(y_pred))
        present = keras.ops.logical_not(keras.ops.isnan(labels))
        if kind != "regression":
            present = keras.ops.logical_and(present, labels >= 0)
    labels = keras.ops.where(present, labels, keras.ops.zeros_like(labels))
    return labels, keras.ops.cast(present, "float32"), y_pred


@keras.saving.register_keras_serializable(package="tftransfer")
class MaskedLoss(keras.losses.Loss):
    """A task's loss, with missing labels masked out (see the module).

    Args:
        kind: ``"classification"`` (integer labels, softmax cross-entropy),
            ``"binary"`` (0/1 labels, sigmoid cross-entropy),
            ``"multi_label"`` (multi-hot rows, sigmoid cross-entropy per
            entry) or ``"regression"`` (float targets).
        from_logits: whether the model's outputs are logits.
        class_weight: classification and binary: one weight per class, in
            class order, or None.
        label_smoothing: classification and binary kinds: in [0, 1).
        regression_loss: ``"mse"`` or ``"mae"``.

    Example:

    >>> loss = MaskedLoss("regression")
    >>> float(loss(np.array([[1.0], [np.nan]]), np.array([[3.0], [10.0]])))
    4.0
    >>> float(MaskedLoss("classification")(np.array([-1, -1]), np.zeros((2, 3))))
    0.0
    """

    def __init__(self, kind, *, from_logits=True, class_weight=None, label_smoothing=0.0,
                 regression_loss="mse", name=None, **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name or f"masked_{check_kind(kind)}", reduction="sum", **kwargs)
        if regression_loss not in ("mse", "mae"):
            raise ValueError("`regression_loss` must be 'mse' or 'mae'. "
                             f"Received: regression_loss={regression_loss!r}")
        self.kind = kind
        self.from_logits = from_logits
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]
        self.label_smoothing = float(label_smoothing)
        self.regression_loss = regression_loss

    def call(self, y_true, y_pred):
        labels, present, y_pred = _prepared(self.kind, y_true, y_pred)
        if self.kind == "classification":
            ids = keras.ops.cast(labels, "int32")
            one_hot = keras.ops.one_hot(ids, keras.ops.shape(y_pred)[-1], dtype="float32")
            per = keras.losses.categorical_crossentropy(
                one_hot, y_pred, from_logits=self.from_logits,
                label_smoothing=self.label_smoothing)
        elif self.kind == "regression":
            error = y_pred - labels
            per = error * error if self.regression_loss == "mse" else keras.ops.abs(error)
        else:
            target = labels * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
            per = keras.ops.binary_crossentropy(target, y_pred, from_logits=self.from_logits)
        weight = present
        if self.class_weight is not None:
            table = keras.ops.convert_to_tensor(self.class_weight, "float32")
            weight = weight * keras.ops.take(table, keras.ops.cast(labels, "int32"))
        per = keras.ops.where(present > 0, per * weight, keras.ops.zeros_like(per))
        count = keras.ops.maximum(keras.ops.sum(present), 1.0)
        per = per / count
        # One value per example: the "sum" reduction adds them up.
        return per if len(per.shape) == 1 else keras.ops.sum(
            keras.ops.reshape(per, (keras.ops.shape(per)[0], -1)), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        return {**config, "kind": self.kind, "from_logits": self.from_logits,
                "class_weight": self.class_weight, "label_smoothing": self.label_smoothing,
                "regression_loss": self.regression_loss}


@keras.saving.register_keras_serializable(package="tftransfer")
class MaskedMetric(keras.metrics.Metric):
    """A task's metric over its labelled entries only (see the module).

    Args:
        kind: the task's kind (see `MaskedLoss`).
        metric: ``"accuracy"`` (classification: the most probable class is
            the label; binary and multi-label: each score on the label's
            side of 0.5), ``"mae"`` or ``"mse"`` (regression).
        from_logits: whether the model's outputs are logits.
        name: the metric's name (Keras logs it as ``<task>_<name>``).
            Default: `metric`.

    Example:

    >>> metric = MaskedMetric("binary", "accuracy")
    >>> metric.update_state(np.array([[1], [0], [-1]]), np.array([[2.0], [1.0], [5.0]]))
    >>> float(metric.result())
    0.5
    """

    def __init__(self, kind, metric="accuracy", *, from_logits=True, name=None, **kwargs):
        if metric not in metric_names(kind):
            raise ValueError(
                f"A {kind} head reports the metrics {metric_names(kind)}. "
                f"Received: metric={metric!r}")
        super().__init__(name=name or metric, **kwargs)
        self.kind = kind
        self.metric = metric
        self.from_logits = from_logits
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, present, y_pred = _prepared(self.kind, y_true, y_pred)
        if self.kind == "classification":
            predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "float32")
            values = keras.ops.cast(keras.ops.equal(predicted, labels), "float32")
        elif self.kind == "regression":
            error = y_pred - labels
            values = keras.ops.abs(error) if self.metric == "mae" else error * error
        else:
            threshold = 0.0 if self.from_logits else 0.5
            predicted = keras.ops.cast(y_pred > threshold, "float32")
            values = keras.ops.cast(keras.ops.equal(predicted, labels), "float32")
        weight = present
        if sample_weight is not None:
            sample_weight = keras.ops.cast(sample_weight, "float32")
            shape = [-1] + [1] * (len(weight.shape) - 1)
            weight = weight * keras.ops.reshape(sample_weight, shape)
        values = keras.ops.where(present > 0, values * weight, keras.ops.zeros_like(values))
        self.total.assign_add(keras.ops.sum(values))
        self.count.assign_add(keras.ops.sum(weight))

    def result(self):
        return keras.ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "metric": self.metric,
                "from_logits": self.from_logits}
