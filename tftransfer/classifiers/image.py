"""Image classifiers: a frozen backbone plus a new dense head, as one `keras.Model`."""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from tftransfer.backbones.blocks import feature_rank
from tftransfer.backbones.blocks import get_blocks
from tftransfer.backbones.load import load_backbone
from tftransfer.backbones.spec import backbone_spec
from tftransfer.backbones.spec import with_spec
from tftransfer.classifiers.base import Classifier
from tftransfer.classifiers.base import ServingSpec
from tftransfer.classifiers.head import check_head_options
from tftransfer.classifiers.head import resolve_class_names
from tftransfer.classifiers.inputs import check_backbone_input
from tftransfer.classifiers.inputs import requested_input_shape
from tftransfer.classifiers.inputs import resolve_classes
from tftransfer.classifiers.predictions import image_inputs
from tftransfer.data.images import encode_png
from tftransfer.data.images import tf_decode_images
from tftransfer.formats import IMAGE_INPUT

_POOLING = ("avg", "max", "flatten")
DEFAULT_DROPOUT = 0.2
"""The head's default dropout rate for image classifiers."""


@keras.saving.register_keras_serializable(package="tftransfer")
class ImageClassifier(Classifier):
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
        hidden_units, hidden_activation, dropout, activation, multi_label:
            the `ClassificationHead`'s options: hidden dense layer sizes and
            their activation, the dropout rate before each dense layer, the
            output activation (`None`: logits), one sigmoid score per class
            instead of one softmax over classes.
        backbone_spec: the backbone's `BackboneSpec` (e.g. its block
            pattern). Default: the one the backbone carries
            (`tftransfer.backbones.spec.backbone_spec`). Saved in the config.

    Attributes: see `tftransfer.Classifier` (backbone, backbone_spec, head,
    class_names, num_classes, training_summary).
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
        dropout=DEFAULT_DROPOUT,
        activation=None,
        multi_label=False,
        backbone_spec=None,
        **kwargs,
    ):
        check_pooling(pooling)
        if not isinstance(backbone, keras.Model):
            raise TypeError(
                "`backbone` must be a `keras.Model` (use `build_classifier` to "
                "load one by name). Received: "
                f"backbone={backbone!r} of type {type(backbone).__name__}"
            )
        rank = feature_rank(backbone)
        if backbone_spec is not None:
            backbone = with_spec(backbone, backbone_spec)

        # === Layers ===
        self._init_head(backbone=backbone, spec=backbone_spec, num_classes=num_classes,
                        class_names=class_names, pooling=pooling, hidden_units=hidden_units,
                        hidden_activation=hidden_activation, dropout=dropout,
                        activation=activation, multi_label=multi_label)
        self._freeze_backbone()
        if rank == 4:
            self.pooler = {
                "avg": keras.layers.GlobalAveragePooling2D,
                "max": keras.layers.GlobalMaxPooling2D,
                "flatten": keras.layers.Flatten,
            }[pooling](name="pooling")
        else:
            self.pooler = None

        # === Functional model ===
        inputs = keras.Input(shape=backbone.input.shape[1:], name=IMAGE_INPUT)
        x = self._frozen_call()(inputs)
        if self.pooler is not None:
            x = self.pooler(x)
        outputs = self.head.apply_layers(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    def classify_inputs(self, inputs):
        return image_inputs(inputs, tuple(self.inputs[0].shape[1:]))

    serving_inputs = ("bytes", "pixels")

    def serving_spec(self, inputs="bytes"):
        """How `tftransfer.export_saved_model` serves this model.

        Args:
            inputs: ``"bytes"``: encoded images (``images``, `tf.string`
                ``[batch]``: JPEG, PNG, GIF, BMP or WebP), decoded, converted
                to RGB and resized inside the graph (`tftransfer.data.images.
                tf_decode_images`); ``"pixels"``: raw RGB pixels in [0, 255]
                (``images``, float32 ``[batch, height, width, 3]`` at the
                model's size; another size is an InvalidArgument error).
        """
        return image_serving_spec(self, inputs)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        config["backbone_spec"] = cls._spec_from_config(config)
        return cls(**config)

def image_serving_spec(model, inputs="bytes"):
    """How `tftransfer.export_saved_model` serves an image model (an
    `ImageClassifier`, a `tftransfer.MultiTaskModel`): `inputs` is
    ``"bytes"`` or ``"pixels"``, as `ImageClassifier.serving_spec` says."""
    shape = list(model.inputs[0].shape[1:])
    input_dtype = model.inputs[0].dtype
    pixels = np.random.default_rng(0).integers(0, 256, [2, *shape]).astype("float32")

    def forward_pixels(images):
        images = tf.convert_to_tensor(images, tf.float32)
        check = tf.debugging.assert_equal(
            tf.shape(images)[1:], tf.constant(shape), message=(
                f"`images` must be raw pixels of shape [batch, {shape[0]}, {shape[1]}, "
                f"{shape[2]}] (the model's input); resize them first, or send encoded "
                "images to the serving_default signature"))
        with tf.control_dependencies([check]):
            return model(tf.cast(images, input_dtype), training=False)

    if inputs == "pixels":
        return ServingSpec(
            input_name=IMAGE_INPUT,
            input_signature=tf.TensorSpec([None, *shape], tf.float32, name=IMAGE_INPUT),
            forward=forward_pixels, example=pixels,
            description=f"raw RGB pixels in [0, 255], {shape[0]}x{shape[1]}",
            backbone=serving_metadata(model, shape))
    if inputs != "bytes":
        raise ValueError(
            f"`inputs` must be one of {model.serving_inputs} for an image classifier: "
            "'bytes' serves encoded images (what a TF Serving client sends as base64), "
            f"'pixels' raw pixel arrays. Received: inputs={inputs!r}")
    size, channels = tuple(shape[:2]), shape[2]
    if channels not in (1, 3):
        raise ValueError(
            f"Encoded images decode to RGB or grayscale pixels; model {model.name!r} takes "
            f"{channels} channels: export it with inputs='pixels'. Received: inputs='bytes'")
    return ServingSpec(
        input_name=IMAGE_INPUT,
        input_signature=tf.TensorSpec([None], tf.string, name=IMAGE_INPUT),
        forward=lambda images: forward_pixels(tf_decode_images(images, size, channels)),
        example=np.array([encode_png(image) for image in pixels.astype("uint8")],
                         dtype=object),
        description=(
            "encoded images (JPEG, PNG, GIF, BMP, WebP), one per example; decoded, "
            f"converted to {'RGB' if channels == 3 else 'grayscale'} (alpha onto white) and "
            f"resized to {size[0]}x{size[1]} in the graph; EXIF orientation is not applied"),
        backbone=serving_metadata(model, shape))


def serving_metadata(model, shape):
    """The backbone's entry of an image model's export metadata."""
    spec = model.backbone_spec
    try:
        blocks = list(get_blocks(model))
    except ValueError:  # a backbone whose layer names form no blocks
        blocks = []
    return {
        "name": spec.name,
        "source": spec.source,
        "input_shape": shape,
        "input_range": [0, 255],
        "preprocessing": spec.preprocessing or "inside the backbone",
        "blocks": blocks,
    }


def check_pooling(pooling):
    if pooling not in _POOLING:
        raise ValueError(f"`pooling` must be one of {_POOLING}. Received: pooling={pooling!r}")


def build_classifier(
    backbone,
    *,
    data=None,
    num_classes=None,
    class_names=None,
    input_shape=None,
    image_size=None,
    weights="imagenet",
    pooling="avg",
    hidden_units=(),
    hidden_activation="relu",
    dropout=DEFAULT_DROPOUT,
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
        data: a `tftransfer.DataSplits` (what the loaders return): the
            classes and the image size are taken from it (``class_names``
            and ``input_shape`` then need not be given, and must agree with
            it if they are).
        class_names: class names, in label order; they travel with the
            model into the export.
        input_shape: the images' size: an int (a square), ``(height,
            width)`` or ``(height, width, 3)``. A named backbone is built at
            that size (default: the architecture's default size); a model,
            `.keras` file or hub module with a fixed input must match it.
        image_size: the same as `input_shape`, in the loaders' vocabulary
            (``image_size=224``); give one of the two.
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
    shape = requested_input_shape(input_shape=input_shape, image_size=image_size, data=data)
    num_classes, class_names = resolve_classes(num_classes=num_classes,
                                               class_names=class_names, data=data)
    class_names = resolve_class_names(num_classes, class_names)
    check_pooling(pooling)
    check_head_options(dropout=dropout, activation=activation, multi_label=multi_label,
                       hidden_units=hidden_units)
    with dtype_policy(dtype):
        backbone = load_backbone(backbone, input_shape=shape, weights=weights,
                                 cut_at=cut_at, block_pattern=block_pattern)
        check_backbone_input(backbone, shape, source=(
            "the data has" if data is not None and input_shape is None and image_size is None
            else "`input_shape` / `image_size` ask for"))
        if name is None:
            name = f"{backbone_spec(backbone).name or backbone.name}_classifier"
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
