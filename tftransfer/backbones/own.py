"""The user's own pretrained models as backbones: `.keras` files, cut below their head."""

import difflib
import os

import h5py
import keras

from tftransfer import _compat
from tftransfer.backbones.spec import Backbone
from tftransfer.backbones.spec import backbone_spec
from tftransfer.backbones.spec import with_spec


def h5_error(path):
    """Why an ``.h5`` file is not loaded as a backbone."""
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


def load_keras_file(path, cut_at):
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
    return cut_model(model, cut_at)


_HEAD_ACTIVATIONS = ("linear", "softmax", "sigmoid")


def _activation_name(layer):
    return getattr(getattr(layer, "activation", None), "__name__", "")


def _producer(tensor):
    return _compat.keras_history(tensor)


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


def cut_model(model, cut_at):
    """`model` cut at the layer `cut_at` (default: below its head)."""
    if cut_at is None:
        source = getattr(model, "backbone", None)
        if isinstance(source, keras.Model) and hasattr(model, "class_names"):
            # A tftransfer classifier: its backbone, with the spec it kept.
            return with_spec(source, backbone_spec(model))
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
        cut = Backbone(inputs[0] if len(inputs) == 1 else inputs, layer.output,
                       name=model.name, spec=backbone_spec(model))
    except (AttributeError, ValueError) as err:
        raise ValueError(
            f"Cannot cut model {model.name!r} at layer {layer.name!r} ({err}). "
            "Only functional and Sequential models can be cut, at a layer used "
            "once. Build the backbone yourself, e.g. "
            "`keras.Model(model.input, model.get_layer(name).output)`. "
            f"Received: cut_at={layer.name!r}"
        ) from err
    return cut
