"""`Classifier`: what tftransfer's classifiers share, and what later stages read.

A classifier is a functional `keras.Model`: a frozen backbone called in
inference mode, a pooling layer, and a `ClassificationHead`. The stages after
it read only this interface: ``backbone`` and ``backbone_spec`` (training
unfreezes blocks), ``class_names``, ``multi_label`` and ``probabilities``
(evaluation), ``serving_spec()`` (export), ``training_summary`` (filled by
training, written into the export's metadata).
"""

import dataclasses

import keras
import tensorflow as tf

from tftransfer.backbones.spec import BackboneSpec
from tftransfer.backbones.spec import backbone_spec
from tftransfer.classifiers.head import ClassificationHead
from tftransfer.classifiers.head import resolve_class_names
from tftransfer.classifiers.losses import SparseCategoricalCrossentropyWithSmoothing
from tftransfer.classifiers.predictions import check_top_k
from tftransfer.classifiers.predictions import is_classify_input
from tftransfer.classifiers.predictions import predictions
from tftransfer.layers import InferenceModeCall


class _InferenceModeCall(InferenceModeCall):
    """`InferenceModeCall` under the class name tftransfer 0.1 used: Keras
    names the weights it saves in `.keras` files after the class names of a
    model's layers, so this name keeps files saved by 0.1 loadable."""


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """What a classifier's ``serving_default`` signature takes.

    `Classifier.serving_spec` returns one; `tftransfer.export_saved_model`
    builds the signature from it.

    Attributes:
        input_name: the signature's input name (``"images"``, ``"text"``).
        input_signature: the `tf.TensorSpec` of a batch of inputs.
        forward: maps a batch of inputs to the model's outputs (logits or
            probabilities); used both by the signature and to verify it.
        example: a small batch of inputs to verify the export with.
        description: a sentence on the input, for the metadata.
        backbone: metadata about the backbone (name, input shape, ...).
    """

    input_name: str
    input_signature: tf.TensorSpec
    forward: object
    example: object
    description: str
    backbone: dict


class Classifier(keras.Model):
    """The base of `ImageClassifier` and `TextClassifier`.

    It holds the backbone and its `BackboneSpec`, the `ClassificationHead`,
    the class names and the training summary; it compiles with `"auto"`
    defaults and maps outputs to probabilities. A subclass builds its layers
    with `_init_head` (which also freezes the backbone), wires its functional
    graph with `_frozen_call` and `head.apply_layers`, calls
    ``super().__init__(inputs=..., outputs=...)``, and implements
    `serving_spec`.

    Attributes:
        backbone: the backbone model, frozen after construction.
        backbone_spec: its `BackboneSpec`.
        head: the `ClassificationHead`.
        class_names: list of class names, in label order.
        num_classes: number of classes.
        multi_label: whether each class gets an independent score.
        training_summary: one dict per training phase run by
            `tftransfer.fit_head` / `fine_tune` / `fit_two_phase` (phase,
            epochs, learning rate, unfrozen blocks, seconds, final metrics);
            `export_saved_model` writes it into the export's metadata.
    """

    def _init_head(self, *, backbone, spec, num_classes, class_names, pooling, hidden_units,
                   hidden_activation, dropout, activation, multi_label):
        """Sets the backbone, its spec and the head (before the graph is
        wired); the backbone is frozen."""
        self.class_names = resolve_class_names(num_classes, class_names)
        self.head = ClassificationHead(
            len(self.class_names), hidden_units=hidden_units,
            hidden_activation=hidden_activation, dropout=dropout, activation=activation,
            multi_label=multi_label, name="head")
        self.backbone = backbone
        self.backbone_spec = spec if spec is not None else backbone_spec(backbone)
        self.pooling = pooling
        self.training_summary = []  # filled by tftransfer.training

    def _frozen_call(self):
        """The layer that calls the backbone in inference mode, also in `fit`."""
        return _InferenceModeCall(self.backbone, name="frozen_backbone_call")

    def _freeze_backbone(self):
        # By way of True: a backbone rebuilt from a frozen config has layers
        # marked non-trainable whose sublayers `build` created trainable, and
        # under TensorFlow `layer.trainable = False` on a layer that is False
        # already returns early, not reaching them.
        self.backbone.trainable = True
        self.backbone.trainable = False

    # Read-only views of the head's options, as before the head was a layer.
    num_classes = property(lambda self: self.head.num_classes)
    hidden_units = property(lambda self: self.head.hidden_units)
    hidden_activation = property(lambda self: self.head.hidden_activation)
    dropout = property(lambda self: self.head.dropout)
    activation = property(lambda self: self.head.activation)
    multi_label = property(lambda self: self.head.multi_label)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "backbone_spec": self.backbone_spec.get_config(),
            "class_names": list(self.class_names),
            "pooling": self.pooling,
            "hidden_units": list(self.hidden_units),
            "hidden_activation": self.hidden_activation,
            "dropout": self.dropout,
            "activation": self.activation,
            "multi_label": self.multi_label,
        }

    @staticmethod
    def _spec_from_config(config):
        """The `BackboneSpec` a saved config holds (tftransfer 0.1 saved
        only a `block_pattern`, for image classifiers)."""
        spec = config.pop("backbone_spec", None)
        legacy_pattern = config.pop("block_pattern", None)
        if spec is not None:
            return BackboneSpec.from_config(spec)
        backbone = config["backbone"]
        spec = backbone_spec(backbone)
        return spec.replace(block_pattern=legacy_pattern)

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", label_smoothing=0.0,
                **kwargs):
        """Configures the model for training, with `"auto"` defaults.

        Args:
            optimizer: `"auto"` (Adam, learning rate 1e-3) or any Keras
                optimizer.
            loss: `"auto"` picks sparse categorical cross-entropy (single
                label, integer labels) or binary cross-entropy (multi-label,
                multi-hot labels), with ``from_logits`` set from the output
                activation.
            metrics: `"auto"`: accuracy (binary accuracy for multi-label).
            label_smoothing: for ``loss="auto"``, in [0, 1): the labels'
                targets are smoothed towards the uniform distribution by this
                much (`SparseCategoricalCrossentropyWithSmoothing` for single
                labels, Keras's `BinaryCrossentropy(label_smoothing=...)` for
                multi-label).
            **kwargs: passed to `keras.Model.compile`.
        """
        from_logits = self.activation is None
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        if loss == "auto":
            loss = self.default_loss(label_smoothing=label_smoothing)
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

    def default_loss(self, *, label_smoothing=0.0):
        """The loss ``compile(loss="auto")`` uses: sparse categorical
        cross-entropy (smoothed with `label_smoothing`), or binary
        cross-entropy for a multi-label classifier, with ``from_logits``
        set from the output activation."""
        from_logits = self.activation is None
        if self.multi_label:
            return keras.losses.BinaryCrossentropy(from_logits=from_logits,
                                                   label_smoothing=label_smoothing)
        if label_smoothing:
            return SparseCategoricalCrossentropyWithSmoothing(label_smoothing,
                                                              from_logits=from_logits)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)

    def compile_from_config(self, config):
        # Called when a `.keras` file is loaded: the saved config holds the
        # resolved optimizer, loss and metrics, not the "auto" strings.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def predict_proba(self, x, **kwargs):
        """`predict`, turned into probabilities whatever the output activation.

        `x` may also be what `classify` takes (file paths, folders, encoded
        bytes, PIL images, or a list of them).

        Example:

        >>> model = build_classifier("mobilenet_v3_small", num_classes=3,
        ...                          input_shape=(32, 32, 3), weights=None)
        >>> model.predict_proba(np.zeros((2, 32, 32, 3)), verbose=0).shape
        (2, 3)
        """
        if is_classify_input(x):  # files, folders, bytes, PIL images: as `classify` reads them
            _, x = self.classify_inputs(x)
        outputs = self.predict(x, **kwargs)
        return keras.ops.convert_to_numpy(self.probabilities(outputs))

    def classify(self, inputs, *, top_k=1, batch_size=32):
        """Classifies inputs and names their classes.

        An image classifier takes file paths, folders (every image inside,
        sorted), encoded image bytes, PIL images and arrays (one image or a
        batch), decoded and resized as the loaders do; a text classifier
        takes strings.

        Example:

        >>> model = build_classifier("mobilenet_v3_small", class_names=["cat", "dog"],
        ...                          input_shape=(32, 32, 3), weights=None)
        >>> result = model.classify(np.zeros((32, 32, 3), "uint8"), top_k=2)
        >>> result.class_names[0] in ("cat", "dog"), len(result[0].top_k)
        (True, 2)

        Args:
            inputs: one input or a list of them (see above).
            top_k: how many of the best classes each `Prediction` lists.
            batch_size: for `predict`.

        Returns:
            `Predictions`: a list with one `Prediction` (source, class name,
            probability, top_k) per input, printable one line each.
        """
        check_top_k(top_k, self.num_classes)
        sources, batch = self.classify_inputs(inputs)
        probabilities = self.predict_proba(batch, batch_size=batch_size, verbose=0)
        return predictions(self.class_names, sources, probabilities, top_k)

    def classify_inputs(self, inputs):
        """``(sources, batch)``: what `classify` feeds to `predict`."""
        raise NotImplementedError(f"{type(self).__name__} must implement `classify_inputs()`.")

    def probabilities(self, outputs):
        """Maps the model's outputs (logits or probabilities) to probabilities."""
        return self.head.probabilities(outputs)

    serving_inputs = ()
    """The kinds of input `serving_spec` takes, the default first."""

    def serving_spec(self, inputs=None):
        """The `ServingSpec` `tftransfer.export_saved_model` builds a
        signature from, for one of `serving_inputs`."""
        raise NotImplementedError(f"{type(self).__name__} must implement `serving_spec()`.")

