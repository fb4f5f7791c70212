"""Backbones exported as TF-Hub-format image feature-vector SavedModels."""

import datetime
import logging
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _compat
from tftransfer.backbones.blocks import feature_rank
from tftransfer.backbones.load import load_backbone
from tftransfer.distribute import is_chief
from tftransfer.errors import VersionExistsError
from tftransfer.export.publish import publish
from tftransfer.export.publish import quiet_tensorflow_logs
from tftransfer.export.publish import staging_directory
from tftransfer.export.publish import write_metadata
from tftransfer.export.serving import package_version
from tftransfer.formats import EXTRA_DIR
from tftransfer.formats import FEATURE_EXTRACTOR_FORMAT
from tftransfer.formats import FEATURES_OUTPUT
from tftransfer.formats import IMAGE_INPUT

logger = logging.getLogger(__name__)


def export_feature_extractor(model_or_backbone, path, *, overwrite=False, verify_atol=1e-4):
    """Exports a backbone as a TF-Hub-format image feature-vector SavedModel.

    The SavedModel is a TF2 *reusable SavedModel*, the format of TF-Hub's
    TF2 modules, so the next task can use it as a backbone: with
    `tftransfer.load_backbone(path)` (or `build_classifier(path, ...)`), with
    TensorFlow Hub's own ``hub.load(path)``, or with ``hub.KerasLayer(path)``
    in a tf_keras (Keras 2) model. It has:

    - ``__call__(images, training=False)``: ``images`` float32 raw pixels in
      [0, 255], shape ``[batch, height, width, 3]`` (the backbone's
      preprocessing is inside); returns float32 features ``[batch, d]``, a
      feature map being pooled with a global average. ``training=True``
      runs the backbone in training mode (e.g. its dropout); layers that are
      frozen, as tftransfer keeps BatchNormalization, stay in inference mode.
    - ``variables``, ``trainable_variables`` (the weights a fine-tuning user
      may train: kernels, biases, BatchNormalization scales and offsets, not
      its moving statistics) and ``regularization_losses`` (the backbone's
      weight regularizers, as zero-argument functions);
    - a ``serving_default`` signature: ``images`` in, ``features`` out.

    ``assets.extra/tftransfer.json`` records the input shape and range and
    the feature width, so `load_backbone` feeds it raw pixels at the right
    size (TF-Hub's own image modules take [0, 1] instead).

    The SavedModel is written to a hidden temporary sibling of `path`,
    loaded back and checked against the backbone, then renamed into place;
    on failure nothing is left behind.

    Args:
        model_or_backbone: a classifier from `build_classifier` (its
            backbone is exported), or a `keras.Model` from raw pixels to
            features; a model with a classification head is cut below it as
            `load_backbone` does.
        path: the directory to write.
        overwrite: replace an existing `path` instead of raising.
        verify_atol: tolerance of the check against the backbone.

    Returns:
        `path`; `None` on a worker that is not the chief (see
        `export_saved_model`).

    Raises:
        FileExistsError: `path` exists and `overwrite` is False (also a
            `ValueError`).

    Example:

    >>> import tempfile
    >>> inputs = keras.Input((32, 32, 3))
    >>> x = keras.layers.Conv2D(8, 3, name="block1_conv")(inputs)
    >>> model = build_classifier(keras.Model(inputs, x), class_names=["a", "b"])
    >>> path = export_feature_extractor(model, tempfile.mkdtemp() + "/features")
    >>> backbone = load_backbone(path)   # reused for the next task
    >>> backbone.output.shape
    (None, 8)
    """
    if not isinstance(model_or_backbone, keras.Model):
        raise TypeError(
            "`model_or_backbone` must be a classifier built by tftransfer or a "
            "`keras.Model` from images to features. Received: "
            f"model_or_backbone={model_or_backbone!r} of type "
            f"{type(model_or_backbone).__name__}"
        )
    backbone = load_backbone(model_or_backbone)
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"`path` must be a directory (or not exist yet); it is a file. Received: path={path!r}"
        )
    if os.path.exists(path) and not overwrite:
        raise VersionExistsError(
            f"{path!r} exists already. Pass `overwrite=True` to replace it, or "
            f"choose another path. Received: path={path!r}"
        )
    if is_chief(getattr(model_or_backbone, "distribute_strategy", None)):
        return _export_features(backbone, path, overwrite, verify_atol)
    # Not the chief: the same work into a throwaway directory, as in export_saved_model.
    with tempfile.TemporaryDirectory(prefix="tftransfer-worker-export-") as scratch:
        _export_features(backbone, os.path.join(scratch, "features"), False, verify_atol)
    logger.info("Not the chief worker: the feature extractor was written to a temporary "
                "directory and deleted; the chief publishes it.")
    return None


def _export_features(backbone, path, overwrite, verify_atol):
    features, example = _feature_function(backbone)
    root = _feature_module(backbone, features)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with staging_directory(parent, ".tmp-hub-export-") as staging:
        with quiet_tensorflow_logs():  # it logs the hidden staging path
            tf.saved_model.save(root, staging, signatures={"serving_default": root.serve})
        extra = os.path.join(staging, EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        write_metadata(extra, _feature_metadata(backbone, example, features))
        verify_feature_extractor(staging, features, example, verify_atol)
        publish(staging, path, overwrite)
    logger.info("Exported a feature extractor to %s", path)
    return path


def _feature_function(backbone):
    """features(images, training): raw pixels -> [batch, d] float32."""
    rank = feature_rank(backbone, subject="A feature extractor needs a backbone that outputs")
    input_dtype = backbone.inputs[0].dtype
    shape = [d if d is not None else 64 for d in backbone.inputs[0].shape[1:]]

    def features(images, training=False):
        x = backbone(tf.cast(images, input_dtype), training=training)
        if rank == 4:
            x = tf.reduce_mean(x, axis=[1, 2])
        return tf.cast(x, tf.float32)

    example = np.random.default_rng(0).uniform(0, 255, [2, *shape]).astype("float32")
    return features, example


def _feature_module(backbone, features):
    """The reusable SavedModel object around `features`."""
    spec = tf.TensorSpec([None, *backbone.inputs[0].shape[1:]], tf.float32, name=IMAGE_INPUT)

    @tf.function
    def call(images, training=False):
        return features(images, training=training)

    for training in (False, True):
        call.get_concrete_function(spec, training=training)

    trainable, seen = [], set()
    for layer in _compat.flatten_layers(backbone):
        for variable in _compat.created_trainable_variables(layer):  # trainable by design
            if id(variable) not in seen:
                seen.add(id(variable))
                trainable.append(variable)

    def regularization(variable):
        return tf.function(lambda: tf.cast(variable.regularizer(variable), tf.float32),
                           input_signature=[])

    root = _compat.auto_trackable()
    root.variables = list(backbone.variables)
    root.trainable_variables = trainable
    root.regularization_losses = [
        regularization(v) for v in trainable if getattr(v, "regularizer", None) is not None
    ]
    root.__call__ = call
    root.serve = tf.function(
        lambda images: {FEATURES_OUTPUT: call(images, training=False)}, input_signature=[spec]
    )
    return root


def _feature_metadata(backbone, example, features):
    width = int(features(example[:1]).shape[-1])
    return {
        "format": f"{FEATURE_EXTRACTOR_FORMAT}/1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "backbone": getattr(backbone, "architecture", backbone.name),
        "input_shape": list(backbone.inputs[0].shape[1:]),
        "input_range": [0, 255],
        "feature_dim": width,
        "pooling": "avg" if len(backbone.output.shape) == 4 else None,
        "signature": {
            "name": "serving_default",
            "inputs": {
                IMAGE_INPUT: "float32 [batch, height, width, 3], raw pixels in [0, 255]"
            },
            "outputs": {FEATURES_OUTPUT: f"float32 [batch, {width}]"},
        },
        "versions": {
            "tftransfer": package_version(),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    }


def verify_feature_extractor(path, features, example, atol):
    """Loads the module back; checks its API and its features."""
    loaded = tf.saved_model.load(path)
    missing = [attr for attr in ("variables", "trainable_variables", "regularization_losses")
               if not hasattr(loaded, attr)]
    if not callable(loaded) or missing:
        raise RuntimeError(
            f"The exported SavedModel lacks {missing or '__call__'}; nothing was published."
        )
    expected = features(example).numpy()
    for name, served in (
        ("__call__", loaded(tf.constant(example)).numpy()),
        ("serving_default",
         loaded.signatures["serving_default"](**{IMAGE_INPUT: tf.constant(example)})
         [FEATURES_OUTPUT].numpy()),
    ):
        if served.shape != expected.shape or not np.allclose(served, expected, atol=atol):
            raise RuntimeError(
                f"The exported feature extractor's {name} does not reproduce the "
                "backbone's features; nothing was published."
            )
