"""Builders: a frozen backbone plus a new dense head, as one `keras.Model`."""

import contextlib
import keras

from tftransfer.backbones import ImageBackbone
from tftransfer.backbones import feature_rank
from tftransfer.backbones import load_backbone

_POOLING = ("avg", "max", "flatten")


class _InferenceModeCall(keras.layers.Layer):
    """Calls `layer` with ``training=False``, whatever the outer call says.

    In a Keras 3 functional model, a ``training=False`` written into the graph
    is overridden when the model itself is called with ``training=True``
    (in `fit`): the outer value is passed to every layer that takes a
    `training` argument. This layer takes none, so the backbone inside it
    runs in inference mode (Dropout off, BatchNormalization on its moving
    statistics) in `fit` too, while its trainable weights still get
    gradients. Part of `ImageClassifier`'s graph, rebuilt by its `__init__`.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs):
        return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


class _Classifier(keras.Model):
    """What tftransfer's classifiers share: the dense head, `"auto"`
    compile defaults, and probabilities from logits. Subclasses build their
    functional graph in `__init__` and set `activation` and `multi_label`."""

    def _make_head(self, num_classes, hidden_units, hidden_activation, dropout, activation):
        self.hidden_layers = [
            keras.layers.Dense(units, activation=hidden_activation, name=f"head_dense_{i}")
            for i, units in enumerate(hidden_units)
        ]
        self.dropout_layers = [
            keras.layers.Dropout(dropout, name=f"head_dropout_{i}")
            for i in range(len(hidden_units) + 1)
        ]
        # The output stays float32 under a mixed-precision policy.
        self.output_dense = keras.layers.Dense(
            num_classes, activation=activation, dtype="float32", name="predictions"
        )

    def _store_head_config(self, class_names, pooling, hidden_units, hidden_activation,
                           dropout, activation, multi_label):
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.pooling = pooling
        self.hidden_units = tuple(hidden_units)
        self.hidden_activation = hidden_activation
        self.dropout = dropout
        self.activation = activation
        self.multi_label = multi_label
        self.training_summary = []  # filled by tftransfer.training

    def _head_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "class_names": list(self.class_names),
            "pooling": self.pooling,
            "hidden_units": list(self.hidden_units),
            "hidden_activation": self.hidden_activation,
            "dropout": self.dropout,
            "activation": self.activation,
            "multi_label": self.multi_label,
        }

    def _apply_head(self, x):
        for dense, drop in zip(self.hidden_layers, self.dropout_layers):
            x = dense(drop(x))
        return self.output_dense(self.dropout_layers[-1](x))

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """Configures the model for training, with `"auto"` defaults.

        Args:
            optimizer: `"auto"` (Adam, learning rate 1e-3) or any Keras
                optimizer.
            loss: `"auto"` picks sparse categorical cross-entropy (single
                label, integer labels) or binary cross-entropy (multi-label,
                multi-hot labels), with ``from_logits`` set from the output
                activation.
            metrics: `"auto"`: accuracy (binary accuracy for multi-label).
            **kwargs: passed to `keras.Model.compile`.
        """
        from_logits = self.activation is None
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        if loss == "auto":
            if self.multi_label:
                loss = keras.losses.BinaryCrossentropy(from_logits=from_logits)
            else:
                loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        if metrics == "auto":
            if self.multi_label:
                metrics = [
                    keras.metrics.BinaryAccuracy(
                        name="accuracy", threshold=0.0 if from_logits else 0.5
                    )
                ]
            else:
                metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        # Called when a `.keras` file is loaded: the saved config holds the
        # resolved optimizer, loss and metrics, not the "auto" strings.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def predict_proba(self, x, **kwargs):
        """`predict`, turned into probabilities whatever the output activation.

        Example:

        >>> import numpy as np
        >>> model = build_classifier("mobilenet_v3_small", num_classes=3,
        ...                          input_shape=(32, 32, 3), weights=None)
        >>> model.predict_proba(np.zeros((2, 32, 32, 3)), verbose=0).shape
        (2, 3)
        """
        outputs = self.predict(x, **kwargs)
        return keras.ops.convert_to_numpy(self.probabilities(outputs))

    def probabilities(self, outputs):
        """Maps the model's outputs (logits or probabilities) to probabilities."""
        if self.activation is not None:
            return keras.ops.cast(outputs, "float32")
        if self.multi_label:
            return keras.ops.sigmoid(keras.ops.cast(outputs, "float32"))
        return keras.ops.softmax(keras.ops.cast(outputs, "float32"), axis=-1)


@keras.saving.register_keras_serializable(package="tftransfer")
class ImageClassifier(_Classifier):
    """A frozen backbone and a new dense head, with its class names.

    The backbone always runs in inference mode, also inside `fit`: Dropout
    is off and BatchNormalization uses its moving statistics. Writing
    ``backbone(x, training=False)`` into a Keras 3 functional graph does not
    ensure that (the outer ``training=True`` of `fit` overrides it, and
    trainable BatchNormalization layers then update their statistics:
    keras#20285), so the backbone is called through a small layer that pins
    ``training=False``. `tftransfer.fit_two_phase` also sets each
    BatchNormalization layer non-trainable, so fine-tuning leaves its
    scale and offset alone too.

    The model takes raw pixels in [0, 255] (the backbone preprocesses) and
    returns logits by default (``activation=None``); `compile()` then picks
    a loss with ``from_logits=True``. Single-label models train on integer
    labels, multi-label ones on multi-hot vectors.

    Prefer `build_classifier`, which also loads a backbone by name.

    Args:
        backbone: a `keras.Model` from images to a feature map
            ``(batch, h, w, c)`` or a feature vector ``(batch, c)``.
        num_classes: number of classes; may be left out when `class_names`
            is given.
        class_names: names of the classes, in label order. Default:
            ``["0", "1", ...]``.
        pooling: ``"avg"``, ``"max"`` or ``"flatten"``, applied to a feature
            map.
        hidden_units: sizes of hidden dense layers in the head.
        hidden_activation: activation of the hidden layers.
        dropout: dropout rate before each dense layer of the head.
        activation: activation of the output layer: `None` (logits),
            ``"softmax"`` or ``"sigmoid"``.
        multi_label: one sigmoid score per class instead of one softmax
            over classes.
        block_pattern: sets the backbone's `block_pattern` (see
            `tftransfer.get_blocks`); saved in the config, so a custom
            backbone keeps its blocks through `.keras` save and load.

    Attributes:
        backbone: the backbone model, frozen after construction.
        class_names: list of class names.
        num_classes: number of classes.
        training_summary: one dict per training phase run by
            `tftransfer.fit_head` / `fine_tune` / `fit_two_phase` (phase,
            epochs, learning rate, unfrozen blocks, seconds, final metrics);
            `export_saved_model` writes it into the export's metadata.
    """

    def __init__(
        self,
        *,
        backbone,
        num_classes=None,
        class_names=None,
        pooling="avg",
        hidden_units=(),
        hidden_activation="relu",
        dropout=0.2,
        activation=None,
        multi_label=False,
        block_pattern=None,
        **kwargs,
    ):
        class_names = _resolve_class_names(num_classes, class_names)
        _check_pooling(pooling)
        _check_head_options(dropout, activation, multi_label, hidden_units)
        if not isinstance(backbone, keras.Model):
            raise TypeError(
                "`backbone` must be a `keras.Model` (use `build_classifier` to "
                "load one by name). Received: "
                f"backbone={backbone!r} of type {type(backbone).__name__}"
            )
        rank = feature_rank(backbone)

        # === Layers ===
        if block_pattern is not None:
            backbone.block_pattern = block_pattern  # restored from a saved config
        self.backbone = backbone
        self.backbone.trainable = False
        if rank == 4:
            self.pooler = {
                "avg": keras.layers.GlobalAveragePooling2D,
                "max": keras.layers.GlobalMaxPooling2D,
                "flatten": keras.layers.Flatten,
            }[pooling](name="pooling")
        else:
            self.pooler = None
        self._make_head(len(class_names), hidden_units, hidden_activation, dropout, activation)

        # === Functional model ===
        inputs = keras.Input(shape=backbone.input.shape[1:], name="images")
        x = _InferenceModeCall(self.backbone, name="frozen_backbone_call")(inputs)
        if self.pooler is not None:
            x = self.pooler(x)
        outputs = self._apply_head(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self._store_head_config(class_names, pooling, hidden_units, hidden_activation, dropout,
                                activation, multi_label)

    def get_config(self):
        return {
            **self._head_config(),
            # A plain functional backbone loses its attributes when saved.
            "block_pattern": getattr(self.backbone, "block_pattern", None),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def _resolve_class_names(num_classes, class_names):
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


def _check_pooling(pooling):
    if pooling not in _POOLING:
        raise ValueError(f"`pooling` must be one of {_POOLING}. Received: pooling={pooling!r}")


def _check_head_options(dropout, activation, multi_label, hidden_units):
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    allowed = (None, "sigmoid") if multi_label else (None, "softmax")
    if activation not in allowed:
        raise ValueError(
            f"`activation` must be one of {allowed} when multi_label={multi_label} "
            "(None returns logits; the export and `predict_proba` turn them into "
            f"probabilities). Received: activation={activation!r}"
        )
    if isinstance(hidden_units, int) or not all(
        isinstance(u, int) and u > 0 for u in hidden_units
    ):
        raise ValueError(
            "`hidden_units` must be a list of positive integers, e.g. [256]. "
            f"Received: hidden_units={hidden_units!r}"
        )


def build_classifier(
    backbone,
    *,
    num_classes=None,
    class_names=None,
    input_shape=None,
    weights="imagenet",
    pooling="avg",
    hidden_units=(),
    hidden_activation="relu",
    dropout=0.2,
    activation=None,
    multi_label=False,
    name=None,
    cut_at=None,
    block_pattern=None,
    dtype=None,
):
    """Builds a classifier: a frozen backbone plus a new dense head.

    Args:
        backbone: anything `tftransfer.load_backbone` takes: a name from
            `tftransfer.available_backbones()`, a TF-Hub URL or SavedModel
            directory, a `.keras` file, or a `keras.Model` (e.g. your own
            pretrained model; it is cut below its classification head).
        num_classes: number of classes (or give `class_names`).
        class_names: class names, in label order; they travel with the
            model into the export.
        input_shape: ``(height, width, 3)`` for a named backbone. Default:
            the architecture's default size.
        weights: for a named backbone: `"imagenet"` (default), `None`, or
            the path of a local weights file.
        pooling, hidden_units, hidden_activation, dropout, activation,
        multi_label: see `ImageClassifier`.
        name: model name. Default: ``"<backbone>_classifier"``.
        cut_at, block_pattern: see `tftransfer.load_backbone`.
        dtype: the dtype policy of the model, e.g. ``"mixed_float16"`` (GPUs)
            or ``"mixed_bfloat16"`` (TPUs, recent CPUs) for mixed precision:
            layers compute in 16 bits and keep float32 weights; the head's
            output stays float32, and `compile` adds loss scaling for
            ``"mixed_float16"``. Default: Keras's global policy. A backbone
            given as a built `keras.Model` keeps its own policy.

    Returns:
        An `ImageClassifier` (a `keras.Model`), compiled with the `"auto"`
        defaults and its backbone frozen.

    Example:

    >>> model = build_classifier("efficientnet_b0", class_names=["cat", "dog"],
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> model.class_names, model.backbone.trainable
    (['cat', 'dog'], False)
    """
    # Check the cheap arguments before loading weights.
    class_names = _resolve_class_names(num_classes, class_names)
    _check_pooling(pooling)
    _check_head_options(dropout, activation, multi_label, hidden_units)
    with dtype_policy(dtype):
        backbone = load_backbone(backbone, input_shape=input_shape, weights=weights,
                                 cut_at=cut_at, block_pattern=block_pattern)
        if name is None:
            base = backbone.architecture if isinstance(backbone, ImageBackbone) else backbone.name
            name = f"{base}_classifier"
        model = ImageClassifier(
            backbone=backbone,
            class_names=class_names,
            pooling=pooling,
            hidden_units=hidden_units,
            hidden_activation=hidden_activation,
            dropout=dropout,
            activation=activation,
            multi_label=multi_label,
            name=name,
        )
        model.compile()
    return model


@contextlib.contextmanager
def dtype_policy(dtype):
    """Builds under the dtype policy `dtype` (``None``: the global one),
    restoring the global policy afterwards."""
    if dtype is None:
        yield
        return
    try:
        policy = keras.dtype_policies.get(dtype)
    except (ValueError, TypeError) as error:
        raise ValueError(
            "`dtype` must be a Keras dtype policy name such as 'float32', "
            f"'mixed_float16' or 'mixed_bfloat16' ({error}). Received: dtype={dtype!r}"
        ) from None
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
