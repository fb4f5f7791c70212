"""`load_backbone`: one entry point for every backbone source."""

import os
import re

import keras

from tftransfer.backbones.applications import ImageBackbone
from tftransfer.backbones.applications import find_architecture
from tftransfer.backbones.applications import has_path_syntax
from tftransfer.backbones.applications import unknown_name_error
from tftransfer.backbones.hub import HubLayer
from tftransfer.backbones.hub import is_saved_model_dir
from tftransfer.backbones.hub import is_url
from tftransfer.backbones.own import cut_model
from tftransfer.backbones.own import h5_error
from tftransfer.backbones.own import load_keras_file
from tftransfer.backbones.spec import Backbone
from tftransfer.backbones.spec import BackboneSpec
from tftransfer.backbones.spec import backbone_spec
from tftransfer.backbones.spec import check_block_pattern
from tftransfer.backbones.spec import check_rgb_shape
from tftransfer.backbones.spec import with_spec
from tftransfer.formats import read_feature_extractor_metadata
from tftransfer.layers import PixelPreprocessing


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
    pattern = check_block_pattern(block_pattern)
    if isinstance(backbone, keras.Model):
        model = cut_model(backbone, cut_at)
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
        model = with_spec(model, backbone_spec(model).replace(block_pattern=pattern))
    return model


def _load_from_spec(spec, input_shape, weights, cut_at, block_pattern):
    text = os.fspath(spec)
    if is_url(text):
        return _hub_backbone(text, input_shape, cut_at, block_pattern)
    if find_architecture(text) is not None:
        model = ImageBackbone(architecture=text, input_shape=input_shape, weights=weights,
                              block_pattern=block_pattern)
        return model if cut_at is None else cut_model(model, cut_at)
    path = os.path.expanduser(text)
    lower = path.lower()
    if lower.endswith(".keras"):
        return load_keras_file(path, cut_at)
    if lower.endswith((".h5", ".hdf5")):
        raise h5_error(path)
    if os.path.isdir(path):
        if is_saved_model_dir(path):
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
    if has_path_syntax(text):
        raise ValueError(
            f"There is no file or directory at {path!r}. Received: backbone={spec!r}"
        )
    raise unknown_name_error(text)


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
    layer = HubLayer(handle, inference_mode=True, name=f"{name}_module")
    metadata = read_feature_extractor_metadata(layer.module_path)
    default = metadata.get("input_shape", (224, 224, 3))
    shape = check_rgb_shape(input_shape, default, f"Hub module {handle!r}")
    raw = list(metadata.get("input_range", [0, 1])) == [0, 255]
    mode = "none" if raw else "unit"

    layer.infer_output_shape((None, *shape))  # the builder needs the feature width

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
    spec = BackboneSpec(name=name, source="hub", handle=os.fspath(handle), input_shape=shape,
                        pixel_range=(0, 255) if raw else (0, 1), preprocessing=mode)
    return Backbone(inputs, outputs, name=name, spec=spec)
