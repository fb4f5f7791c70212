"""Keras Applications by name: the one table, and `ImageBackbone`.

One table, `ARCHITECTURES`, describes every supported Keras Applications
model: its factory, default and minimum input size, how raw pixels are
preprocessed for it, and how its layers group into **blocks** (the named
stages that "unfreeze the top N blocks" counts in; see
`tftransfer.backbones.blocks` for how a pattern groups layers).

`tftransfer.load_backbone` also takes backbones from outside the table: a
TF-Hub handle or a local TF2 SavedModel (`tftransfer.backbones.hub`), the
user's own pretrained model as a `.keras` file or a `keras.Model`, cut below
its classification head (`tftransfer.backbones.own`).
"""

import dataclasses
import difflib
import os
import re

import keras

from tftransfer.backbones.spec import BackboneSpec
from tftransfer.backbones.spec import check_rgb_shape
from tftransfer.errors import WeightsUnavailableError
from tftransfer.layers import PixelPreprocessing


@dataclasses.dataclass(frozen=True)
class Architecture:
    factory: str  # attribute of keras.applications
    default_size: int
    min_size: int
    preprocessing: str  # a PixelPreprocessing mode; "none": built into the model
    block_pattern: str
    pixel_range: tuple  # the range the network's first layer sees

    def build(self, **kwargs):
        return getattr(keras.applications, self.factory)(**kwargs)


def _efficientnet(factory, size, min_size=32):
    return Architecture(factory, size, min_size, "none", r"^(block\d+)", (0, 255))


_MOBILENET_V2 = r"^(expanded_conv|block_\d+)_"


_MOBILENET_V3 = r"^(expanded_conv(?:_\d+)?)_"


_RESNET = r"^(conv[2-5])_"


ARCHITECTURES = {
    "mobilenet_v2": Architecture("MobileNetV2", 224, 32, "tf", _MOBILENET_V2, (-1, 1)),
    "mobilenet_v3_small": Architecture(
        "MobileNetV3Small", 224, 32, "none", _MOBILENET_V3, (0, 255)
    ),
    "mobilenet_v3_large": Architecture(
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
    "resnet50": Architecture("ResNet50", 224, 32, "caffe", _RESNET, ("caffe",)),
    "resnet50_v2": Architecture("ResNet50V2", 224, 32, "tf", _RESNET, (-1, 1)),
    "xception": Architecture("Xception", 299, 71, "tf", r"^(block\d+)_", (-1, 1)),
    "inception_v3": Architecture("InceptionV3", 299, 75, "tf", r"^(mixed\d+)$", (-1, 1)),
    "densenet121": Architecture("DenseNet121", 224, 32, "torch", _RESNET, ("torch",)),
    "convnext_tiny": Architecture("ConvNeXtTiny", 224, 32, "none", r"_(stage_\d+)_", (0, 255)),
}


def available_backbones():
    """Names accepted by `load_backbone` and `build_classifier`.

    Example:

    >>> "efficientnet_b0" in available_backbones()
    True
    """
    return sorted(ARCHITECTURES)


def normalize_name(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


BY_NORMALIZED_NAME = {
    **{normalize_name(a.factory): key for key, a in ARCHITECTURES.items()},
    **{normalize_name(key): key for key in ARCHITECTURES},
}


def has_path_syntax(text):
    """Whether `text` reads as a file path rather than a backbone name."""
    return os.sep in text or "/" in text or text.startswith((".", "~"))


def find_architecture(text):
    """The table's key for a backbone name (any case and separators), or
    None for anything else (a path, a URL, an unknown name)."""
    if not isinstance(text, str) or has_path_syntax(text):
        return None
    return BY_NORMALIZED_NAME.get(normalize_name(text))


def _resolve_name(name):
    key = BY_NORMALIZED_NAME.get(normalize_name(name))
    if key is None:
        raise unknown_name_error(name)
    return key


def unknown_name_error(name):
    close = difflib.get_close_matches(
        normalize_name(name), list(BY_NORMALIZED_NAME), n=3, cutoff=0.6
    )
    close = sorted({BY_NORMALIZED_NAME[c] for c in close})
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"Unknown backbone {name!r}.{hint} Available backbones: "
        f"{', '.join(available_backbones())}; or pass a TF-Hub URL, the path of "
        "a SavedModel directory or a `.keras` file, or a `keras.Model`. "
        f"Received: backbone={name!r}"
    )


def _check_input_shape(input_shape, key, arch):
    default = (arch.default_size, arch.default_size, 3)
    shape = check_rgb_shape(input_shape, default, f"Backbone {key!r}")
    if min(shape[:2]) < arch.min_size:
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

        block_pattern: overrides the table's block pattern (see
            `tftransfer.get_blocks`).

    Attributes:
        architecture: the canonical architecture name.
        spec: the `BackboneSpec`: input shape, minimum size, pixel range the
            network sees, the `PixelPreprocessing` mode inside the model,
            block pattern.
    """

    def __init__(self, *, architecture, input_shape=None, weights=None, block_pattern=None,
                 **kwargs):
        key = _resolve_name(architecture)
        arch = ARCHITECTURES[key]
        shape = _check_input_shape(input_shape, key, arch)
        weights = _check_weights(weights, key)
        spec = BackboneSpec(
            name=key, source="application", input_shape=shape, min_size=arch.min_size,
            pixel_range=arch.pixel_range, preprocessing=arch.preprocessing,
            block_pattern=block_pattern or arch.block_pattern,
        )

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
        self.spec = spec

    def get_config(self):
        # `weights` is not part of the config: a saved model restores its
        # own weights after `from_config` builds the architecture.
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "architecture": self.architecture,
            "input_shape": list(self.spec.input_shape),
        }
        if self.spec.block_pattern != ARCHITECTURES[self.architecture].block_pattern:
            config["block_pattern"] = self.spec.block_pattern
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _looks_like_download_failure(err):
    text = f"{type(err).__name__} {err}".lower()
    return any(
        marker in text
        for marker in ("url fetch failure", "urlopen", "connection", "name resolution",
                       "network is unreachable", "temporary failure", "timed out",
                       "http error", "socket")
    )
