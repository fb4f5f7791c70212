"""What a backbone knows about itself: `BackboneSpec`, and the model that carries it.

Every backbone source (`load_backbone` by name, hub handle, `.keras` file or
model; `load_text_backbone`) produces a `BackboneSpec`: the input shape, the
smallest usable image size, the pixel range the network's first layer sees,
the preprocessing inside the model, and the regular expression that groups
its layers into blocks. It travels with the backbone (`ImageBackbone.spec`,
`Backbone.spec`) and with the classifier built on it
(``classifier.backbone_spec``, saved in its config), and later stages read it
from there with `backbone_spec`: fine-tuning its blocks, the export's metadata.
"""

import dataclasses
import re

import keras

from tftransfer import _compat

DEFAULT_BLOCK_PATTERN = r"^(block_?\d+|stage_?\d+)"
"""Block pattern for models that are not in the table: layers named
``block1_conv``, ``block_2_bn``, ``stage3_relu``, ... group into blocks."""


def image_shape(value, *, name="input_shape"):
    """An image shape from an int (a square), ``(height, width)`` or
    ``(height, width, channels)``; channels default to 3 (RGB).

    Example:

    >>> image_shape(64), image_shape((48, 64)), image_shape((32, 32, 1))
    ((64, 64, 3), (48, 64, 3), (32, 32, 1))
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        shape = tuple(value)
    except TypeError:
        shape = ()
    if len(shape) == 2:
        shape = (*shape, 3)
    if len(shape) != 3 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(
            f"`{name}` must be an image size: an int (a square, e.g. 224), (height, width) or "
            f"(height, width, channels) of positive integers. Received: {name}={value!r}"
        )
    return shape


def check_rgb_shape(input_shape, default, what):
    """Validates an RGB image shape (see `image_shape`); returns it as a
    tuple (or `default`)."""
    if input_shape is None:
        return tuple(default)
    shape = image_shape(input_shape)
    if shape[2] != 3:
        raise ValueError(
            f"{what} takes RGB images (3 channels). Convert grayscale or "
            "RGBA images to RGB first. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def check_block_pattern(block_pattern):
    if block_pattern is None:
        return None
    try:
        groups = re.compile(block_pattern).groups
    except (re.error, TypeError) as err:
        raise ValueError(
            f"`block_pattern` must be a regular expression ({err}). "
            f"Received: block_pattern={block_pattern!r}"
        ) from None
    if groups != 1:
        raise ValueError(
            "`block_pattern` must have exactly one group, the block's name, e.g. "
            f"r'^(block\\d+)_'. It has {groups}. Received: block_pattern={block_pattern!r}"
        )
    return block_pattern


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What a backbone knows about itself.

    Attributes:
        name: the architecture (``"efficientnet_b0"``) or the model's name.
        source: where it came from: ``"application"`` (Keras Applications by
            name), ``"hub"`` (a TF-Hub handle or SavedModel directory),
            ``"model"`` (a `keras.Model` or a `.keras` file) or ``"text"``
            (a keras-hub text encoder).
        handle: the hub handle, file or preset it was loaded from, if any.
        input_shape: the input shape without the batch dimension, e.g.
            ``(224, 224, 3)``; None where not known.
        min_size: the smallest image height and width the network takes.
        pixel_range: the range the network's own first layer sees, e.g.
            ``(-1, 1)``, ``("caffe",)``; None where not known. The model
            itself always takes raw pixels in [0, 255].
        preprocessing: the `tftransfer.PixelPreprocessing` mode inside the
            model (``"none"``: the network rescales by itself); None where
            not known (a user's model: inside it, if anywhere).
        block_pattern: the regular expression with one group that names
            each layer's block (see `tftransfer.get_blocks`).

    Example:

    >>> spec = BackboneSpec(name="mine", block_pattern=r"^(stage\\d+)_")
    >>> BackboneSpec.from_config(spec.get_config()) == spec
    True
    """

    name: str = None
    source: str = "model"
    handle: str = None
    input_shape: tuple = None
    min_size: int = None
    pixel_range: tuple = None
    preprocessing: str = None
    block_pattern: str = DEFAULT_BLOCK_PATTERN

    def __post_init__(self):
        check_block_pattern(self.block_pattern)
        for field in ("input_shape", "pixel_range"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, tuple(value))

    def replace(self, **changes):
        """A copy with `changes` applied (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def get_config(self):
        config = dataclasses.asdict(self)
        for field in ("input_shape", "pixel_range"):
            if config[field] is not None:
                config[field] = list(config[field])
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tftransfer")
class Backbone(keras.Model):
    """A functional backbone that carries its `BackboneSpec` (also through
    `.keras` save and load). `load_backbone` returns one for hub modules and
    for cut models; Keras Applications give an `ImageBackbone`.

    Args:
        *args, **kwargs: as for a functional `keras.Model` (``inputs``,
            ``outputs``, ``name``).
        spec: a `BackboneSpec` (or its config). Default: `infer_spec` of the
            model.
    """

    def __init__(self, *args, spec=None, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(spec, dict):
            spec = BackboneSpec.from_config(spec)
        self.spec = spec if spec is not None else infer_spec(self)

    def get_config(self):
        return {**super().get_config(), "spec": self.spec.get_config()}


def infer_spec(model, **changes):
    """The spec of a plain `keras.Model` used as a backbone: its name and
    input shape, the default block pattern; `changes` override fields."""
    try:
        shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    except (AttributeError, ValueError):
        shape = None
    spec = BackboneSpec(name=model.name, source="model", input_shape=shape)
    return spec.replace(**changes)


def backbone_spec(model):
    """The `BackboneSpec` of a backbone or of a classifier built on one.

    Example:

    >>> backbone = load_backbone("mobilenet_v2", input_shape=(32, 32, 3), weights=None)
    >>> spec = backbone_spec(backbone)
    >>> spec.name, spec.input_shape, spec.pixel_range
    ('mobilenet_v2', (32, 32, 3), (-1, 1))
    """
    spec = getattr(model, "backbone_spec", None)  # a classifier
    if isinstance(spec, BackboneSpec):
        return spec
    spec = getattr(model, "spec", None)  # a Backbone or an ImageBackbone
    if isinstance(spec, BackboneSpec):
        return spec
    return infer_spec(model)


def with_spec(model, spec):
    """`model` as a `Backbone` carrying `spec`: the model itself when it
    carries that spec already, else a functional model over the same layers
    and weights."""
    if backbone_spec(model) == spec:
        return model
    if not _compat.is_functional(model) and not isinstance(model, keras.Sequential):
        raise ValueError(
            f"Model {model.name!r} is a subclassed model, so it cannot carry a block "
            "pattern or be cut. Build it as a functional or Sequential model, or pass it "
            f"without `block_pattern`. Received: block_pattern={spec.block_pattern!r}"
        )
    # `input` and `output` keep their structure (a keras-hub encoder takes a dict).
    return Backbone(model.input, model.output, name=model.name, spec=spec)
