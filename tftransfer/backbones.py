"""Image backbones: Keras Applications by name, and the user's own models.

One table, `_ARCHITECTURES`, describes every supported Keras Applications
model: its factory, default and minimum input size, how raw pixels are
preprocessed for it, and how its layers group into **blocks** (the named
stages that "unfreeze the top N blocks" counts in).

Blocks are found by a regular expression with one group, matched against
each layer name in topological order. Layers that match nothing (the input,
the stem, an unnamed shortcut convolution, the concatenation-free part of an
Inception module) join the *next* block that does match; layers after the
last match (EfficientNet's ``top_conv``) join the last block. So every layer
belongs to exactly one block, and unfreezing all blocks unfreezes the whole
backbone.
"""

import collections
import dataclasses
import difflib
import logging
import os
import re

import keras

from tftransfer.layers import PixelPreprocessing

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_PATTERN = r"^(block_?\d+|stage_?\d+)"
"""Block pattern for models that are not in the table: layers named
``block1_conv``, ``block_2_bn``, ``stage3_relu``, ... group into blocks."""


@dataclasses.dataclass(frozen=True)
class _Architecture:
    factory: str  # attribute of keras.applications
    default_size: int
    min_size: int
    preprocessing: str  # a PixelPreprocessing mode; "none": built into the model
    block_pattern: str
    pixel_range: tuple  # the range the network's first layer sees

    def build(self, **kwargs):
        return getattr(keras.applications, self.factory)(**kwargs)


def _efficientnet(factory, size, min_size=32):
    return _Architecture(factory, size, min_size, "none", r"^(block\d+)", (0, 255))


_MOBILENET_V2 = r"^(expanded_conv|block_\d+)_"
_MOBILENET_V3 = r"^(expanded_conv(?:_\d+)?)_"
_RESNET = r"^(conv[2-5])_"

_ARCHITECTURES = {
    "mobilenet_v2": _Architecture("MobileNetV2", 224, 32, "tf", _MOBILENET_V2, (-1, 1)),
    "mobilenet_v3_small": _Architecture(
        "MobileNetV3Small", 224, 32, "none", _MOBILENET_V3, (0, 255)
    ),
    "mobilenet_v3_large": _Architecture(
        "MobileNetV3Large", 224, 32, "none", _MOBILENET_V3, (0, 255)
    ),
    "efficientnet_b0": _efficientnet("EfficientNetB0", 224),
    "efficientnet_b1": _efficientnet("EfficientNetB1", 240),
    "efficientnet_b2": _efficientnet("EfficientNetB2", 260),
    "efficientnet_b3": _efficientnet("EfficientNetB3", 300),
    "efficientnet_b4": _efficientnet("EfficientNetB4", 380),
    "efficientnet_b5": _efficientnet("EfficientNetB5", 456),
    "efficientnet_b6": _efficientnet("EfficientNetB6", 528),
    "efficientnet_b7": _efficientnet("EfficientNetB7", 600),
    "efficientnet_v2_b0": _efficientnet("EfficientNetV2B0", 224),
    "efficientnet_v2_b1": _efficientnet("EfficientNetV2B1", 240),
    "efficientnet_v2_b2": _efficientnet("EfficientNetV2B2", 260),
    "efficientnet_v2_b3": _efficientnet("EfficientNetV2B3", 300),
    "efficientnet_v2_s": _efficientnet("EfficientNetV2S", 384),
    "resnet50": _Architecture("ResNet50", 224, 32, "caffe", _RESNET, ("caffe",)),
    "resnet50_v2": _Architecture("ResNet50V2", 224, 32, "tf", _RESNET, (-1, 1)),
    "xception": _Architecture("Xception", 299, 71, "tf", r"^(block\d+)_", (-1, 1)),
    "inception_v3": _Architecture("InceptionV3", 299, 75, "tf", r"^(mixed\d+)$", (-1, 1)),
    "densenet121": _Architecture("DenseNet121", 224, 32, "torch", _RESNET, ("torch",)),
    "convnext_tiny": _Architecture("ConvNeXtTiny", 224, 32, "none", r"_(stage_\d+)_", (0, 255)),
}


def available_backbones():
    """Names accepted by `load_backbone` and `build_classifier`.

    Example:

    >>> "efficientnet_b0" in available_backbones()
    True
    """
    return sorted(_ARCHITECTURES)


def _normalize_name(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_NORMALIZED_NAME = {
    **{_normalize_name(a.factory): key for key, a in _ARCHITECTURES.items()},
    **{_normalize_name(key): key for key in _ARCHITECTURES},
}


def _resolve_name(name):
    key = _BY_NORMALIZED_NAME.get(_normalize_name(name))
    if key is not None:
        return key
    close = difflib.get_close_matches(
        _normalize_name(name), list(_BY_NORMALIZED_NAME), n=3, cutoff=0.6
    )
    close = sorted({_BY_NORMALIZED_NAME[c] for c in close})
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} Available backbones: "
        f"{', '.join(available_backbones())}. Received: backbone={name!r}"
    )


def _check_input_shape(input_shape, key, arch):
    if input_shape is None:
        return (arch.default_size, arch.default_size, 3)
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) for d in shape):
        raise ValueError(
            "`input_shape` must be an image shape (height, width, channels) of "
            f"three integers, e.g. ({arch.default_size}, {arch.default_size}, 3). "
            f"Received: input_shape={input_shape!r}"
        )
    height, width, channels = shape
    if channels != 3:
        raise ValueError(
            f"Backbone {key!r} takes RGB images (3 channels). Convert grayscale or "
            "RGBA images to RGB first. "
            f"Received: input_shape={input_shape!r}"
        )
    if min(height, width) < arch.min_size:
        raise ValueError(
            f"Backbone {key!r} needs images of at least {arch.min_size}x"
            f"{arch.min_size} pixels (default {arch.default_size}x"
            f"{arch.default_size}). Received: input_shape={input_shape!r}"
        )
    return shape


def _check_weights(weights, key):
    if weights is None or weights == "imagenet":
        return weights
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise ValueError(
                "`weights` must be 'imagenet', None, or the path to a local "
                f"weights file for {key!r} (without the top). No file at "
                f"{path!r}. Received: weights={weights!r}"
            )
        return path
    raise TypeError(
        "`weights` must be 'imagenet', None, or a path to a weights file. "
        f"Received: weights={weights!r} of type {type(weights).__name__}"
    )


@keras.saving.register_keras_serializable(package="tftransfer")
class ImageBackbone(keras.Model):
    """A Keras Applications network without its top, taking raw pixels.

    The model's input is raw RGB pixels in [0, 255]; a `PixelPreprocessing`
    layer inside maps them to the range the network was trained on. Its
    output is the last feature map, shape ``(batch, h, w, channels)``.

    Use `load_backbone` to make one; this class is public so that
    `isinstance` checks and `.keras` loading work.

    Args:
        architecture: a name from `available_backbones()`.
        input_shape: ``(height, width, 3)``; default: the architecture's
            default size.
        weights: `"imagenet"`, `None` (random initialization) or the path
            of a local weights file for the network without its top.

    Attributes:
        architecture: the canonical architecture name.
        image_shape: the input shape ``(height, width, 3)``.
        preprocessing: the `PixelPreprocessing` mode inside the model.
        pixel_range: the range the network's own first layer sees.
        block_pattern: the regular expression that groups layers into blocks.
    """

    def __init__(self, *, architecture, input_shape=None, weights=None, **kwargs):
        key = _resolve_name(architecture)
        arch = _ARCHITECTURES[key]
        shape = _check_input_shape(input_shape, key, arch)
        weights = _check_weights(weights, key)

        # === Layers and functional graph ===
        inputs = keras.Input(shape=shape, name="images")
        x = inputs
        if arch.preprocessing != "none":
            x = PixelPreprocessing(mode=arch.preprocessing, name="pixel_preprocessing")(x)
        try:
            network = arch.build(include_top=False, weights=weights, input_tensor=x)
        except Exception as err:  # noqa: BLE001 - re-raised with the fix
            if weights == "imagenet" and _looks_like_download_failure(err):
                raise WeightsUnavailableError(
                    f"Could not download the ImageNet weights for {key!r} "
                    f"({type(err).__name__}: {err}). This machine looks offline. "
                    "Pass `weights=None` for a randomly initialized backbone, or "
                    "`weights='/path/to/weights.h5'` for a local copy of the "
                    "weights (the file Keras downloads to ~/.keras/models/). "
                    "Received: weights='imagenet'"
                ) from err
            raise
        kwargs.setdefault("name", key)
        super().__init__(inputs=inputs, outputs=network.outputs[0], **kwargs)

        # === Config ===
        self.architecture = key
        self.image_shape = shape
        self.preprocessing = arch.preprocessing
        self.pixel_range = arch.pixel_range
        self.block_pattern = arch.block_pattern

    def get_config(self):
        # `weights` is not part of the config: a saved model restores its
        # own weights after `from_config` builds the architecture.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "architecture": self.architecture,
            "input_shape": list(self.image_shape),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class WeightsUnavailableError(ValueError):
    """Pretrained weights were asked for but could not be fetched."""


def _looks_like_download_failure(err):
    text = f"{type(err).__name__} {err}".lower()
    return any(
        marker in text
        for marker in ("url fetch failure", "urlopen", "connection", "name resolution",
                       "network is unreachable", "temporary failure", "timed out",
                       "http error", "socket")
    )


def load_backbone(backbone, *, input_shape=None, weights="imagenet"):
    """Returns a backbone: a `keras.Model` from raw pixels to features.

    Args:
        backbone: a name from `available_backbones()` (case and separators
            do not matter: ``"EfficientNetB0"`` works too), or a
            `keras.Model` that maps images to a feature map or vector (it is
            returned as it is).
        input_shape: ``(height, width, 3)``. Default: the architecture's
            default size. Ignored for a `keras.Model`.
        weights: `"imagenet"` (default; needs the network once, then Keras
            caches the file in ``~/.keras/models``), `None` for random
            initialization, or the path of a local weights file.

    Returns:
        A `keras.Model`; for a name, an `ImageBackbone`.

    Raises:
        ValueError: unknown name (with close matches), an input shape that
            is not an RGB image or is below the architecture's minimum, a
            missing weights file, or ImageNet weights that cannot be
            downloaded (`WeightsUnavailableError`).

    Example:

    >>> backbone = load_backbone("mobilenet_v2", input_shape=(32, 32, 3),
    ...                          weights=None)
    >>> backbone.output.shape
    (None, 1, 1, 1280)
    """
    if isinstance(backbone, keras.Model):
        return backbone
    if not isinstance(backbone, str):
        raise TypeError(
            "`backbone` must be a backbone name (see "
            "`tftransfer.available_backbones()`) or a `keras.Model`. "
            f"Received: backbone={backbone!r} of type {type(backbone).__name__}"
        )
    return ImageBackbone(architecture=backbone, input_shape=input_shape, weights=weights)


def _all_layers(model):
    """Every layer below `model`, depth-first, in topological order."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def get_blocks(backbone, *, block_pattern=None):
    """Groups a backbone's layers into its named blocks, bottom to top.

    Args:
        backbone: an `ImageBackbone`, or any functional `keras.Model`.
        block_pattern: a regular expression with one group that names the
            block of a layer from the layer's name. Default: the table's
            pattern for an `ImageBackbone`, else `DEFAULT_BLOCK_PATTERN`
            (``block1_*``, ``block_2_*``, ``stage3_*``).

    Returns:
        An ordered dict ``{block_name: [layer, ...]}``. Layers that match no
        block join the next block that does, and trailing layers join the
        last block, so every top-level layer belongs to exactly one block.

    Example:

    >>> backbone = load_backbone("efficientnet_b0", input_shape=(32, 32, 3),
    ...                          weights=None)
    >>> list(get_blocks(backbone))
    ['block1', 'block2', 'block3', 'block4', 'block5', 'block6', 'block7']
    """
    pattern = block_pattern or getattr(backbone, "block_pattern", DEFAULT_BLOCK_PATTERN)
    regex = re.compile(pattern)
    blocks = collections.OrderedDict()
    pending = []
    for layer in backbone.layers:
        match = regex.search(layer.name)
        if match is None:
            pending.append(layer)
            continue
        block = blocks.setdefault(match.group(1), [])
        block.extend(pending)
        pending = []
        block.append(layer)
    if not blocks:
        raise ValueError(
            f"No layer of backbone {backbone.name!r} matches the block pattern "
            f"{pattern!r}, so it has no blocks to unfreeze. Name its stages like "
            "'block1_conv', 'block2_conv', ..., pass `block_pattern=`, or "
            f"unfreeze from a layer with `from_layer=`. Layers: "
            f"{', '.join(layer.name for layer in backbone.layers[:12])}"
            f"{', ...' if len(backbone.layers) > 12 else ''}. "
            f"Received: block_pattern={pattern!r}"
        )
    if pending:
        next(reversed(blocks.values())).extend(pending)
    return blocks
