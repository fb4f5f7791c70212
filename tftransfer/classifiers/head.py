"""The head every tftransfer classifier puts on its backbone: `ClassificationHead`."""

import keras


def resolve_class_names(num_classes, class_names):
    """The class names from `num_classes` and/or `class_names` (checked to
    agree); ``["0", "1", ...]`` when only `num_classes` is given."""
    if class_names is not None:
        if isinstance(class_names, str) or not all(
            isinstance(name, str) for name in class_names
        ):
            raise TypeError(
                "`class_names` must be a list of strings. "
                f"Received: class_names={class_names!r}"
            )
        class_names = list(class_names)
        if len(set(class_names)) != len(class_names):
            raise ValueError(
                f"`class_names` must be unique. Received: class_names={class_names!r}"
            )
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(
                f"`num_classes` ({num_classes}) does not match the number of "
                f"`class_names` ({len(class_names)}). Pass one of them, or make "
                f"them agree. Received: num_classes={num_classes!r}, "
                f"class_names={class_names!r}"
            )
        num_classes = len(class_names)
    if num_classes is None:
        raise ValueError(
            "Pass `num_classes` or `class_names`. "
            "Received: num_classes=None, class_names=None"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}"
        )
    return class_names or [str(i) for i in range(num_classes)]


def check_head_options(*, dropout, activation, multi_label, hidden_units):
    """Validates the head's options (before any weights are loaded)."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (
        0.0 <= dropout < 1.0
    ):
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    allowed = (None, "sigmoid") if multi_label else (None, "softmax")
    if activation not in allowed:
        raise ValueError(
            f"`activation` must be one of {allowed} when multi_label={multi_label} "
            "(None returns logits; the export and `predict_proba` turn them into "
            f"probabilities). Received: activation={activation!r}"
        )
    if isinstance(hidden_units, (int, str)) or not all(
        isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in hidden_units
    ):
        raise ValueError(
            "`hidden_units` must be a list of positive integers, e.g. [256]. "
            f"Received: hidden_units={hidden_units!r}"
        )


@keras.saving.register_keras_serializable(package="tftransfer")
class ClassificationHead(keras.layers.Layer):
    """Dropout, optional hidden dense layers, and the output dense layer.

    ``x -> [Dropout -> Dense(units, hidden_activation)] * len(hidden_units)
    -> Dropout -> Dense(num_classes, activation)``. The output layer computes
    in float32 also under a mixed-precision policy, so the loss and the
    exported probabilities stay float32. It returns logits by default
    (``activation=None``); `probabilities` maps outputs to probabilities
    whatever the activation.

    Args:
        num_classes: number of output units.
        hidden_units: sizes of the hidden dense layers.
        hidden_activation: activation of the hidden layers.
        dropout: dropout rate before each dense layer, in [0, 1).
        activation: `None` (logits), ``"softmax"``, or ``"sigmoid"`` with
            `multi_label`.
        multi_label: one independent sigmoid score per class.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> head = ClassificationHead(3, hidden_units=[8])
    >>> head(np.zeros((2, 5), "float32")).shape
    TensorShape([2, 3])
    >>> [float(p) for p in head.probabilities(np.zeros((1, 3)))[0]]
    [0.3333333432674408, 0.3333333432674408, 0.3333333432674408]
    """

    def __init__(self, num_classes, *, hidden_units=(), hidden_activation="relu", dropout=0.2,
                 activation=None, multi_label=False, **kwargs):
        check_head_options(dropout=dropout, activation=activation, multi_label=multi_label,
                           hidden_units=hidden_units)
        resolve_class_names(num_classes, None)
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.hidden_units = tuple(hidden_units)
        self.hidden_activation = hidden_activation
        self.dropout = dropout
        self.activation = activation
        self.multi_label = multi_label
        self.hidden_layers = [
            keras.layers.Dense(units, activation=hidden_activation, name=f"head_dense_{i}")
            for i, units in enumerate(self.hidden_units)
        ]
        self.dropout_layers = [
            keras.layers.Dropout(dropout, name=f"head_dropout_{i}")
            for i in range(len(self.hidden_units) + 1)
        ]
        self.output_dense = keras.layers.Dense(
            num_classes, activation=activation, dtype="float32", name="predictions"
        )

    def apply_layers(self, x, training=None):
        """Runs the head's layers one by one on `x`. On a symbolic `x` each
        layer becomes a node of the caller's functional graph, which is how
        the classifiers use it (so their saved weights keep the layout of
        tftransfer 0.1 files, which load unchanged)."""
        for dense, drop in zip(self.hidden_layers, self.dropout_layers):
            x = dense(drop(x, training=training))
        x = self.output_dense(self.dropout_layers[-1](x, training=training))
        self.built = True
        return x

    def call(self, inputs, training=None):
        return self.apply_layers(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def probabilities(self, outputs):
        """Maps the head's outputs (logits or probabilities) to probabilities."""
        outputs = keras.ops.cast(outputs, "float32")
        if self.activation is not None:
            return outputs
        if self.multi_label:
            return keras.ops.sigmoid(outputs)
        return keras.ops.softmax(outputs, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "hidden_units": list(self.hidden_units),
            "hidden_activation": self.hidden_activation,
            "dropout": self.dropout,
            "activation": self.activation,
            "multi_label": self.multi_label,
        }
