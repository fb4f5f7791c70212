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

`load_backbone` also takes backbones from outside the table: a TF-Hub handle
or a local TF2 SavedModel (wrapped in `tftransfer.HubLayer`, see `_hub.py`),
the user's own pretrained model as a `.keras` file or a `keras.Model`, cut
below its classification head.
"""

import collections
import dataclasses
import difflib
import json
import logging
import os
import re

import keras

from tftransfer import _hub
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
    if key is None:
        raise _unknown_name_error(name)
    return key


def _unknown_name_error(name):
    close = difflib.get_close_matches(
        _normalize_name(name), list(_BY_NORMALIZED_NAME), n=3, cutoff=0.6
    )
    close = sorted({_BY_NORMALIZED_NAME[c] for c in close})
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"Unknown backbone {name!r}.{hint} Available backbones: "
        f"{', '.join(available_backbones())}; or pass a TF-Hub URL, the path of "
        "a SavedModel directory or a `.keras` file, or a `keras.Model`. "
        f"Received: backbone={name!r}"
    )


def _check_rgb_shape(input_shape, default, what):
    """Validates an RGB image shape; returns it as a tuple (or `default`)."""
    if input_shape is None:
        return tuple(default)
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            "`input_shape` must be an image shape (height, width, channels) of "
            f"three positive integers, e.g. {tuple(default)}. "
            f"Received: input_shape={input_shape!r}"
        )
    if shape[2] != 3:
        raise ValueError(
            f"{what} takes RGB images (3 channels). Convert grayscale or "
            "RGBA images to RGB first. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def _check_input_shape(input_shape, key, arch):
    default = (arch.default_size, arch.default_size, 3)
    shape = _check_rgb_shape(input_shape, default, f"Backbone {key!r}")
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


def load_backbone(backbone, *, input_shape=None, weights="imagenet", cut_at=None,
                  block_pattern=None):
    """Returns a backbone: a `keras.Model` from raw pixels to features.

    `backbone` may be:

    - **a name** from `available_backbones()` (case and separators do not
      matter: ``"EfficientNetB0"`` works too): a Keras Applications network
      without its top, as an `ImageBackbone`.
    - **a TF-Hub handle or a local TF2 SavedModel**: a tfhub.dev / Kaggle
      Models URL (downloaded once by `tensorflow_hub.resolve`, which caches
      it in ``$TFHUB_CACHE_DIR``), or a directory holding a *reusable*
      SavedModel (``__call__``, ``variables``, ...; TF-Hub's TF2 format, or
      one written by `tftransfer.export_feature_extractor`). It is wrapped in
      a `HubLayer` behind an input of `input_shape` (default 224x224x3, or
      the size stored by `export_feature_extractor`). Hub image modules take
      pixels in [0, 1] (TF-Hub's common image signature), so the backbone
      rescales raw pixels first; modules written by tftransfer take raw
      pixels and say so in their metadata. A hub backbone unfreezes all or
      nothing (its blocks are not visible); it may be a feature-vector
      module or a classification module (its logits are the features).
    - **a `.keras` file**: your own pretrained model, loaded with
      ``keras.saving.load_model(path, safe_mode=True)`` always, so a file
      cannot run Python code (CVE-2024-3660, CVE-2025-1550); then cut as
      below. A tftransfer classifier saved as `.keras` gives its backbone.
      Full-model legacy ``.h5`` files are refused (a deprecated format that
      older Keras releases loaded without safe mode: convert it to `.keras`
      once); a weights-only ``.h5`` goes in `weights` of a named backbone.
    - **a `keras.Model`**: cut below its classification head if it has one
      (see below), or at `cut_at`; else used as it is.

    A model is cut at a layer to become a backbone: `cut_at` names the
    layer (top level) whose output becomes the features. By default it is
    cut below its classification head: walking back from the output over
    layers that are ``Dropout``, ``Softmax``/``Activation`` (softmax,
    sigmoid or linear) and **one** ``Dense`` layer with a softmax, sigmoid or
    no activation, the layer reached first that is none of these is the cut
    (for ``... -> GlobalAveragePooling2D -> Dropout -> Dense`` that is the
    pooling layer). A model whose output layer is anything else, e.g. a
    convolution or a ``Dense`` with ReLU, has no head and stays whole (pass
    ``cut_at=model.layers[-1].name`` to keep a final linear ``Dense``). The
    cut model shares its layers and weights with the given one.

    A SavedModel or hub module is code you run, and so is a model you
    unpickle or a `.keras` file loaded without safe mode: use backbones from
    sources you trust.

    Args:
        backbone: a name, a URL, the path of a SavedModel directory or of a
            `.keras` file, or a `keras.Model` (see above).
        input_shape: ``(height, width, 3)``, for a name or a hub module.
            Default: the architecture's default size; 224x224x3 for a hub
            module. Ignored for a model or a `.keras` file.
        weights: for a name: `"imagenet"` (default; needs the network once,
            then Keras caches the file in ``~/.keras/models``), `None` for
            random initialization, or the path of a local weights file.
            Ignored for other backbones (they come with their weights).
        cut_at: the name of the layer to cut a model at (see above). Not
            for hub modules.
        block_pattern: a regular expression with one group that names the
            block of each layer (e.g. ``r"^(stage\\d+)_"``); stored on the
            returned model as its ``block_pattern``, which
            `tftransfer.get_blocks` and `tftransfer.unfreeze_top_blocks`
            use. Default: the table's pattern for a name, else
            `DEFAULT_BLOCK_PATTERN`. Not for hub modules.

    Returns:
        A `keras.Model`: an `ImageBackbone` for a name; for a hub module, a
        functional model around a `HubLayer`.

    Raises:
        ValueError: unknown name (with close matches), an input shape that
            is not an RGB image or is below the architecture's minimum, a
            missing file, a SavedModel that is not a reusable TF2 model, a
            `.keras` file that safe mode refuses, a legacy ``.h5`` model, a
            `cut_at` layer that does not exist (the error lists the layers),
            or weights / a hub module that cannot be downloaded
            (`WeightsUnavailableError`).

    Example:

    >>> backbone = load_backbone("mobilenet_v2", input_shape=(32, 32, 3),
    ...                          weights=None)
    >>> backbone.output.shape
    (None, 1, 1, 1280)

    Your own model, cut below its classification head:

    >>> inputs = keras.Input((32, 32, 3))
    >>> x = keras.layers.Conv2D(8, 3, name="block1_conv")(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    >>> source = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    >>> load_backbone(source).output.shape
    (None, 8)
    >>> load_backbone(source, cut_at="block1_conv").output.shape
    (None, 30, 30, 8)
    """
    pattern = _check_block_pattern(block_pattern)
    if isinstance(backbone, keras.Model):
        model = _cut(backbone, cut_at)
    elif isinstance(backbone, (str, os.PathLike)):
        model = _load_from_spec(backbone, input_shape, weights, cut_at, pattern)
    else:
        raise TypeError(
            "`backbone` must be a backbone name (see "
            "`tftransfer.available_backbones()`), a TF-Hub URL, the path of a "
            "SavedModel directory or a `.keras` file, or a `keras.Model`. "
            f"Received: backbone={backbone!r} of type {type(backbone).__name__}"
        )
    if pattern is not None:
        model.block_pattern = pattern
    return model


def _check_block_pattern(block_pattern):
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


def _has_path_syntax(text):
    return os.sep in text or "/" in text or text.startswith((".", "~"))


def _load_from_spec(spec, input_shape, weights, cut_at, block_pattern):
    text = os.fspath(spec)
    if _hub.is_url(text):
        return _hub_backbone(text, input_shape, cut_at, block_pattern)
    if not _has_path_syntax(text) and _normalize_name(text) in _BY_NORMALIZED_NAME:
        model = ImageBackbone(architecture=text, input_shape=input_shape, weights=weights)
        return model if cut_at is None else _cut(model, cut_at)
    path = os.path.expanduser(text)
    lower = path.lower()
    if lower.endswith(".keras"):
        return _load_keras_file(path, cut_at)
    if lower.endswith((".h5", ".hdf5")):
        raise _h5_error(path)
    if os.path.isdir(path):
        if _hub.is_saved_model_dir(path):
            return _hub_backbone(path, input_shape, cut_at, block_pattern)
        raise ValueError(
            f"The directory {path!r} is not a SavedModel (it has no "
            "saved_model.pb). Pass a SavedModel directory, a `.keras` file, a "
            f"TF-Hub URL or a backbone name. Received: backbone={spec!r}"
        )
    if os.path.exists(path):
        raise ValueError(
            f"Cannot load a backbone from the file {path!r}: tftransfer loads "
            "`.keras` files, SavedModel directories and TF-Hub URLs. "
            f"Received: backbone={spec!r}"
        )
    if _has_path_syntax(text):
        raise ValueError(
            f"There is no file or directory at {path!r}. Received: backbone={spec!r}"
        )
    raise _unknown_name_error(text)


def _h5_error(path):
    """Why an ``.h5`` file is not loaded as a backbone."""
    import h5py  # a Keras dependency

    if not os.path.isfile(path):
        return ValueError(f"There is no file at {path!r}. Received: backbone={path!r}")
    with h5py.File(path, "r") as f:
        full_model = "model_config" in f.attrs
    if full_model:
        return ValueError(
            f"{path!r} is a legacy HDF5 model file. tftransfer loads full models "
            "only from `.keras` files, always in safe mode; the HDF5 format is "
            "deprecated, and older Keras releases applied no safe mode to it (a "
            "Lambda layer in it could run code). Convert it once, in an "
            "environment where you trust the file: `keras.saving.load_model("
            "path).save('model.keras')`, then pass the `.keras` file. "
            f"Received: backbone={path!r}"
        )
    return ValueError(
        f"{path!r} holds weights only, not a model. Pass it as `weights=` of the "
        "architecture it belongs to, e.g. load_backbone('efficientnet_b0', "
        f"weights={path!r}). Received: backbone={path!r}"
    )


def _load_keras_file(path, cut_at):
    if not os.path.isfile(path):
        raise ValueError(f"There is no file at {path!r}. Received: backbone={path!r}")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as err:
        if "safe_mode" not in str(err):
            raise
        raise ValueError(
            f"Keras's safe mode refuses to load {path!r}: it holds code (a "
            "`Lambda` layer with Python code, or a SavedModel that a layer "
            "would run). tftransfer always loads `.keras` files in safe mode "
            "(CVE-2024-3660, CVE-2025-1550). Rebuild the model without "
            "`Lambda` layers (register custom layers with "
            "`keras.saving.register_keras_serializable`), or, if you trust the "
            "file, load it yourself with `keras.saving.load_model(path, "
            "safe_mode=False)` and pass the model. "
            f"Keras said: {err} Received: backbone={path!r}"
        ) from err
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{path!r} holds a {type(model).__name__}, not a `keras.Model`. "
            f"Received: backbone={path!r}"
        )
    return _cut(model, cut_at)


def _read_feature_extractor_metadata(path):
    """The metadata `export_feature_extractor` writes, or {}."""
    from tftransfer import export  # imported here: export imports this module

    metadata_path = os.path.join(path, export.EXTRA_DIR, export.METADATA_FILE)
    if not os.path.isfile(metadata_path):
        return {}
    with open(metadata_path, encoding="utf-8") as f:
        metadata = json.load(f)
    if not str(metadata.get("format", "")).startswith(export.FEATURE_EXTRACTOR_FORMAT):
        return {}
    return metadata


def _hub_name(handle):
    parts = [p for p in re.split(r"[/\\]+", handle.rstrip("/\\")) if p]
    tail = parts[-2:] if parts and parts[-1].isdigit() and len(parts) > 1 else parts[-1:]
    name = re.sub(r"[^A-Za-z0-9_]+", "_", "_".join(tail)).strip("_")
    return name or "hub_backbone"


def _hub_backbone(handle, input_shape, cut_at, block_pattern):
    for option, value in (("cut_at", cut_at), ("block_pattern", block_pattern)):
        if value is not None:
            raise ValueError(
                f"`{option}` does not apply to a TF-Hub / SavedModel backbone: a "
                "SavedModel keeps no layers to cut at or group into blocks; it "
                "is used whole and unfreezes all or nothing. "
                f"Received: {option}={value!r}"
            )
    name = _hub_name(handle)
    # inference_mode: BatchNormalization inside stays in inference mode, as
    # the recipe keeps it for Keras backbones (see HubLayer).
    layer = _hub.HubLayer(handle, inference_mode=True, name=f"{name}_module")
    metadata = _read_feature_extractor_metadata(layer.module_path)
    default = metadata.get("input_shape", (224, 224, 3))
    shape = _check_rgb_shape(input_shape, default, f"Hub module {handle!r}")
    raw = list(metadata.get("input_range", [0, 1])) == [0, 255]
    mode = "none" if raw else "unit"

    if any(d is None for d in layer.compute_output_spec(
            keras.KerasTensor((None, *shape))).shape[1:]):
        # The builder needs the feature width: run the module once.
        probe = layer(keras.ops.zeros((1, *shape)))
        layer._output_shape = tuple(int(d) for d in probe.shape[1:])  # noqa: SLF001

    # === Functional model ===
    inputs = keras.Input(shape=shape, name="images")
    x = inputs
    if mode != "none":
        x = PixelPreprocessing(mode=mode, name="pixel_preprocessing")(x)
    outputs = layer(x)
    if len(outputs.shape) not in (2, 4):
        raise ValueError(
            f"The hub module {handle!r} returns shape {outputs.shape} for images "
            f"of shape {shape}; a backbone must return a feature vector (batch, "
            "features), logits (batch, classes) or a feature map (batch, height, "
            f"width, channels). Received: backbone={handle!r}"
        )
    model = keras.Model(inputs, outputs, name=name)

    # === Attributes, as on an ImageBackbone ===
    model.handle = handle
    model.image_shape = shape
    model.preprocessing = mode
    model.pixel_range = (0, 255) if raw else (0, 1)
    return model


_HEAD_ACTIVATIONS = ("linear", "softmax", "sigmoid")


def _activation_name(layer):
    return getattr(getattr(layer, "activation", None), "__name__", "")


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def _input_producer(layer):
    try:
        inputs = layer.input
    except (AttributeError, ValueError):  # no or several inbound nodes
        return None
    if isinstance(inputs, (list, tuple, dict)):
        return None
    return _producer(inputs)


def _layer_below_head(model):
    """The layer whose output feeds `model`'s classification head, or None
    when the model has no head (see `load_backbone`)."""
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1:
        return None
    layer = _producer(outputs[0])
    seen_dense = False
    while layer is not None:
        if isinstance(layer, keras.layers.Dropout):
            pass
        elif seen_dense:
            break
        elif isinstance(layer, keras.layers.Dense):
            if _activation_name(layer) not in _HEAD_ACTIVATIONS:
                break
            seen_dense = True
        elif isinstance(layer, keras.layers.Softmax):
            pass
        elif isinstance(layer, keras.layers.Activation):
            if _activation_name(layer) not in _HEAD_ACTIVATIONS:
                break
        else:
            break
        layer = _input_producer(layer)
    return layer if seen_dense else None


def _cut(model, cut_at):
    """`model` cut at the layer `cut_at` (default: below its head)."""
    if cut_at is None:
        source = getattr(model, "backbone", None)
        if isinstance(source, keras.Model) and hasattr(model, "class_names"):
            return source  # a tftransfer classifier: its backbone
        layer = _layer_below_head(model)
        if layer is None:
            return model
        if isinstance(layer, keras.layers.InputLayer):
            raise ValueError(
                f"Model {model.name!r} is only a classification head on its input "
                f"({', '.join(l.name for l in model.layers)}): nothing is left as a "
                f"backbone once the head is cut off. Pass `cut_at=` to choose the "
                f"layer yourself. Received: cut_at={cut_at!r}"
            )
    else:
        names = [layer.name for layer in model.layers]
        if cut_at not in names:
            close = difflib.get_close_matches(str(cut_at), names, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            shown = names[::-1][:30]
            raise ValueError(
                f"Model {model.name!r} has no layer named {cut_at!r}.{hint} Its "
                f"layers, output side first: {', '.join(shown)}"
                f"{', ...' if len(names) > len(shown) else ''}. "
                f"Received: cut_at={cut_at!r}"
            )
        layer = model.get_layer(cut_at)
        outputs = getattr(model, "outputs", None) or []
        if len(outputs) == 1 and _producer(outputs[0]) is layer:
            return model
    try:
        inputs = model.inputs
        cut = keras.Model(inputs[0] if len(inputs) == 1 else inputs, layer.output,
                          name=model.name)
    except (AttributeError, ValueError) as err:
        raise ValueError(
            f"Cannot cut model {model.name!r} at layer {layer.name!r} ({err}). "
            "Only functional and Sequential models can be cut, at a layer used "
            "once. Build the backbone yourself, e.g. "
            "`keras.Model(model.input, model.get_layer(name).output)`. "
            f"Received: cut_at={layer.name!r}"
        ) from err
    for attr in ("architecture", "image_shape", "preprocessing", "pixel_range",
                 "block_pattern"):
        if hasattr(model, attr):
            setattr(cut, attr, getattr(model, attr))
    return cut


def feature_rank(backbone, *, subject="`backbone` must output"):
    """The rank of `backbone`'s output: 4 (a feature map) or 2 (a feature
    vector); anything else is a `ValueError` that starts with `subject`."""
    rank = len(backbone.output.shape)
    if rank not in (2, 4):
        raise ValueError(
            f"{subject} a feature map (batch, height, width, channels) or a feature "
            f"vector (batch, features). Received: a backbone with output shape "
            f"{backbone.output.shape}"
        )
    return rank


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
            block of a layer from the layer's name. Default: the backbone's
            ``block_pattern`` attribute (the table's pattern for an
            `ImageBackbone`, or the one given to `load_backbone`), else
            `DEFAULT_BLOCK_PATTERN` (``block1_*``, ``block_2_*``,
            ``stage3_*``).

    Returns:
        An ordered dict ``{block_name: [layer, ...]}``. Layers that match no
        block join the next block that does, and trailing layers join the
        last block, so every top-level layer belongs to exactly one block.
        A backbone around a TF-Hub / SavedModel module (a `HubLayer`) is
        one block, named after that layer: it unfreezes all or nothing.

    Example:

    >>> backbone = load_backbone("efficientnet_b0", input_shape=(32, 32, 3),
    ...                          weights=None)
    >>> list(get_blocks(backbone))
    ['block1', 'block2', 'block3', 'block4', 'block5', 'block6', 'block7']
    """
    if block_pattern is None and _hub.contains_hub_layer(backbone):
        hub_layer = next(l for l in backbone.layers if isinstance(l, _hub.HubLayer))
        return collections.OrderedDict([(hub_layer.name, list(backbone.layers))])
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
