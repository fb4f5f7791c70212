"""LiteRT (TFLite) export for devices: `export_litert`, of image and text classifiers.

Built on Keras's own ``model.export(format="litert")``, with one change: Keras
enables ``SELECT_TF_OPS`` by default, which puts TensorFlow ("Flex") ops into
the file where a LiteRT builtin is missing, and the `ai-edge-litert`
interpreter (and LiteRT on devices, without the Flex delegate) cannot run
them. Here only builtin ops are allowed, so a model that needs a Flex op fails
to convert, with TensorFlow's message, instead of failing on the device.

A text classifier's file starts after its tokenizer (LiteRT has no tokenizer
ops): it takes int32 token ids, and `tftransfer.export.litert_text` writes the
vocabulary and the tokenizer's settings beside it.
"""

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from tftransfer.classifiers.image import ImageClassifier
from tftransfer.classifiers.text import TextClassifier
from tftransfer.errors import VersionExistsError
from tftransfer.export import litert_text
from tftransfer.export.publish import publish
from tftransfer.export.publish import quiet_tensorflow_logs
from tftransfer.export.publish import staging_directory
from tftransfer.export.publish import titled
from tftransfer.export.publish import write_labels
from tftransfer.export.publish import write_metadata
from tftransfer.training.lora import merge_lora
from tftransfer.version import __version__

logger = logging.getLogger(__name__)

LITERT_FILE = "model.tflite"
LITERT_FORMAT = "tftransfer-litert/1"
QUANTIZATIONS = (None, "dynamic", "float16", "int8")
"""None: float32; "dynamic": int8 weights, float activations; "float16":
float16 weights; "int8" (image classifiers only): int8 weights and activations
(needs `representative_data`), float32 inputs and outputs."""


def export_litert(model, path, *, quantization=None, representative_data=None,
                  overwrite=False, verbose=0):
    """Exports an image or text classifier as a LiteRT (TFLite) model for devices.

    Writes the directory `path`: ``model.tflite`` (one signature,
    ``serving_default``, with ``probabilities`` float32 ``[batch,
    num_classes]`` out), ``labels.txt`` (one class name a line, in output
    order) and ``tftransfer.json`` (class names, inputs, quantization). Only
    LiteRT builtin ops are used, so the `ai-edge-litert` interpreter runs it.
    The directory is written beside `path` and renamed into place when
    complete.

    An image classifier's file takes ``images``, float32 ``[batch, height,
    width, 3]`` raw pixels in [0, 255].

    A text classifier's file takes token ids, not strings: LiteRT has no
    tokenizer ops (TensorFlow Text's are not builtins). Its inputs are the
    int32 ``[batch, sequence_length]`` features the model's own tokenizer
    makes, by name: ``token_ids``, ``padding_mask`` and, for encoders that
    take them (BERT, MiniLM), ``segment_ids`` (see ``tftransfer.json``). In
    Python, ``model.text_preprocessing(tf.constant(texts))`` makes them; on a
    device, a WordPiece tokenizer with the settings under ``"tokenizer"`` in
    ``tftransfer.json`` and the vocabulary ``vocab.txt``, which is written
    beside the model. Text classifiers need a WordPiece tokenizer, and take
    ``quantization`` None, ``"dynamic"`` or ``"float16"``: full int8
    quantization of a transformer encoder lost too much here (on
    all-MiniLM-L6-v2, probabilities up to 0.67 away from the float model's), so
    ``"int8"`` is refused for them.

    Example:

    >>> import tempfile
    >>> model = build_classifier("mobilenet_v3_small", class_names=["a", "b"],
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> path = export_litert(model, tempfile.mkdtemp() + "/litert")
    >>> sorted(os.listdir(path))
    ['labels.txt', 'model.tflite', 'tftransfer.json']

    Args:
        model: an `ImageClassifier` or a `TextClassifier` (with a WordPiece
            tokenizer).
        path: the directory to write.
        quantization: one of `QUANTIZATIONS`.
        representative_data: for ``"int8"``: a few hundred training images
            (an array ``(n, h, w, 3)``, or a `tf.data.Dataset` of images or of
            ``(images, labels)``), which calibrate the activation ranges.
        overwrite: replace an existing `path`.
        verbose: 1 prints a title and the time taken (as Keras's `verbose`);
            0 is silent.

    Returns:
        `path`.
    """
    is_text = isinstance(model, TextClassifier)
    if not (is_text or isinstance(model, ImageClassifier)):
        raise TypeError(
            "`model` must be an image classifier (`build_classifier`) or a text classifier "
            "(`build_text_classifier`). Received: "
            f"model of type {type(model).__name__}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}. "
                         f"Received: quantization={quantization!r}")
    if is_text:
        litert_text.check_text_model(model, quantization)
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "quantization='int8' needs `representative_data`: a few hundred training images "
            "that calibrate the activations' int8 ranges. Received: representative_data=None")
    model = merge_lora(model)  # LoRA factors merged into plain kernels
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise VersionExistsError(f"{path!r} exists already. Pass `overwrite=True` to replace "
                                 f"it, or choose another path. Received: path={path!r}")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    title = f"Exporting {model.name} to LiteRT ({quantization or 'float32'}) at {path}"
    with titled(title, verbose), staging_directory(parent, ".tmp-litert-") as staging:
        to_convert = litert_text.token_ids_model(model) if is_text else _probabilities_model(model)
        with quiet_tensorflow_logs():
            to_convert.export(
                os.path.join(staging, LITERT_FILE), format="litert", verbose=False,
                **_converter_settings(model, quantization, representative_data))
        write_labels(staging, model.class_names)
        if is_text:
            litert_text.write_vocabulary(staging, model)
        write_metadata(staging, _metadata(model, quantization))
        publish(staging, path, overwrite)
    logger.info("Exported a LiteRT model to %s", path)
    return path


def _probabilities_model(model):
    """The classifier with its outputs turned into probabilities."""
    outputs = {"probabilities": model.probabilities(model.outputs[0])}  # a named output
    return keras.Model(model.inputs, outputs, name=f"{model.name}_probabilities")


def _converter_settings(model, quantization, representative_data):
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is None:
        return {"target_spec": {"supported_ops": builtins}}
    if quantization == "dynamic":
        return {"target_spec": {"supported_ops": builtins},
                "optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantization == "float16":
        return {"target_spec": {"supported_ops": builtins, "supported_types": [tf.float16]},
                "optimizations": [tf.lite.Optimize.DEFAULT]}
    return {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": _representative(model, representative_data)}


def _representative(model, data):
    """A generator of single float32 images, as the converter calibrates."""
    shape = tuple(model.inputs[0].shape[1:])
    if isinstance(data, tf.data.Dataset):
        if isinstance(data.element_spec, tuple):
            data = data.map(lambda images, *rest: images)

        def batches():
            return (np.asarray(b, "float32") for b in data.as_numpy_iterator())
    else:
        array = np.asarray(data, "float32")

        def batches():
            return [array]

    def images():
        for batch in batches():
            batch = batch.reshape((-1, *batch.shape[-3:]))
            if batch.shape[1:] != shape:
                raise ValueError(
                    f"`representative_data` holds images of shape {batch.shape[1:]} but the "
                    f"model takes {shape}. Received: representative_data with images of shape "
                    f"{batch.shape[1:]}")
            for image in batch:
                yield [image[None]]

    return images


def _metadata(model, quantization):
    if isinstance(model, TextClassifier):
        inputs = litert_text.text_metadata(model)  # "inputs", "tokenizer", "pooling"
    else:
        inputs = {"input": {"name": "images", "dtype": "float32",
                            "shape": [None, *model.inputs[0].shape[1:]],
                            "description": "raw RGB pixels in [0, 255]"}}
    return {
        "format": LITERT_FORMAT,
        "file": LITERT_FILE,
        "class_names": list(model.class_names),
        **inputs,
        "output": {"name": "probabilities", "dtype": "float32",
                   "shape": [None, model.num_classes]},
        "quantization": quantization,
        "backbone": model.backbone_spec.get_config(),
        "versions": {"tftransfer": __version__, "keras": keras.__version__,
                     "tensorflow": tf.__version__},
    }
