"""Export for TF Serving: versioned, atomic SavedModels with named signatures.

TF Serving polls a model's base directory (every second by default) and
loads the highest integer sub-directory, whether or not it is completely
written (tensorflow/serving#1086, #572). So the export is written to a
hidden sibling whose name is not an integer, loaded back and checked against
the Keras model, and only then renamed to its version number. A rename within
one directory is atomic, and renaming onto an existing non-empty directory
fails, so two exports racing for the same version cannot overwrite each other.
"""

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tftransfer import distribute

logger = logging.getLogger(__name__)

SIGNATURE_INPUT = "images"
LABELS_FILE = "labels.txt"
METADATA_FILE = "tftransfer.json"
EXTRA_DIR = "assets.extra"  # the SavedModel place for files the graph does not load


class VersionExistsError(FileExistsError, ValueError):
    """The export version directory exists already (a `FileExistsError` and,
    as bad input, a `ValueError`)."""


def _check_classifier(model):
    for attr in ("class_names", "probabilities"):
        if not hasattr(model, attr):
            raise TypeError(
                "`model` must be a classifier built by tftransfer (it needs "
                f"`{attr}`). For any other Keras model use `model.export()`. "
                f"Received: model={getattr(model, 'name', model)!r} of type "
                f"{type(model).__name__}"
            )


def existing_versions(export_base):
    """The integer version directories under `export_base`, sorted."""
    if not os.path.isdir(export_base):
        return []
    return sorted(
        int(name) for name in os.listdir(export_base)
        if re.fullmatch(r"\d+", name) and os.path.isdir(os.path.join(export_base, name))
    )


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """What a classifier's ``serving_default`` signature takes.

    A model class can define ``serving_spec()`` returning one of these to be
    exportable by `export_saved_model`; image classifiers get
    `image_serving_spec`.

    Attributes:
        input_name: the signature's input name (``"images"``).
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


def image_serving_spec(model):
    """The `ServingSpec` of an image classifier: raw pixels in [0, 255]."""
    shape = list(model.inputs[0].shape[1:])
    input_dtype = model.inputs[0].dtype
    backbone = model.backbone
    return ServingSpec(
        input_name=SIGNATURE_INPUT,
        input_signature=tf.TensorSpec([None, *shape], tf.float32, name=SIGNATURE_INPUT),
        forward=lambda images: model(tf.cast(images, input_dtype), training=False),
        example=np.random.default_rng(0).uniform(0, 255, [2, *shape]).astype("float32"),
        description="raw RGB pixels in [0, 255]",
        backbone={
            "name": getattr(backbone, "architecture", backbone.name),
            "input_shape": shape,
            "input_range": [0, 255],
            "preprocessing": getattr(backbone, "preprocessing", "inside the backbone"),
        },
    )


def _serving_spec(model):
    if callable(getattr(model, "serving_spec", None)):
        return model.serving_spec()
    return image_serving_spec(model)


def _serving_function(model, spec):
    class_names = tf.constant(model.class_names)

    def serve(inputs):
        probabilities = tf.cast(model.probabilities(spec.forward(inputs)), tf.float32)
        class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "class_names": tf.gather(class_names, class_ids),
        }

    return serve


def _metadata(model, spec, version, extra):
    metadata = {
        "format": "tftransfer-export/1",
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "backbone": spec.backbone,
        "class_names": list(model.class_names),
        "multi_label": bool(model.multi_label),
        "signature": {
            "name": "serving_default",
            "inputs": {
                spec.input_name: {
                    "dtype": spec.input_signature.dtype.name,
                    "shape": spec.input_signature.shape.as_list(),
                    "description": spec.description,
                }
            },
            "outputs": {
                "probabilities": "float32 [batch, num_classes]",
                "class_ids": "int64 [batch]: the most probable class",
                "class_names": "string [batch]: its name",
            },
        },
        "training": list(getattr(model, "training_summary", [])),
        "versions": {
            "tftransfer": _package_version(),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    }
    if extra:
        metadata["user"] = extra
    return metadata


def _package_version():
    from tftransfer import __version__

    return __version__


def _verify(path, model, spec, atol):
    """Loads the SavedModel back and checks it against the Keras model."""
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    served = signature(**{spec.input_name: tf.constant(spec.example)})
    expected = keras.ops.convert_to_numpy(model.probabilities(spec.forward(spec.example)))
    if not np.allclose(served["probabilities"].numpy(), expected, atol=atol):
        raise RuntimeError(
            "The exported SavedModel does not reproduce the model's "
            f"probabilities (max difference "
            f"{np.abs(served['probabilities'].numpy() - expected).max():.3g}); "
            "nothing was published."
        )


def export_saved_model(model, export_base, *, version=None, overwrite=False,
                       metadata=None, verify_atol=1e-4):
    """Exports a classifier as a SavedModel that TF Serving loads as it is.

    Writes ``export_base/<version>/``: a SavedModel whose
    ``serving_default`` signature takes ``images`` (float32 raw pixels in
    [0, 255], shape ``[batch, height, width, channels]``) and returns
    ``probabilities`` (float32, also under mixed precision), ``class_ids``
    (int64) and ``class_names`` (string). Beside it, in ``assets.extra/``
    (the SavedModel place for files the graph does not load), go
    ``labels.txt`` (one class name a line) and ``tftransfer.json`` (backbone,
    input size, class names, training summary).

    The export is written to a hidden temporary sibling, loaded back and
    compared with the model, then renamed into place, so TF Serving never
    sees a half-written version; on failure nothing is left behind.

    Under a `tf.distribute.MultiWorkerMirroredStrategy` with several workers,
    call it on every worker (the same script runs everywhere): only the chief
    (see `tftransfer.is_chief`) writes to `export_base`; the other workers
    write the same export to a temporary directory of their own and delete
    it, so that every worker runs the same operations.

    Args:
        model: a classifier from `build_classifier`.
        export_base: the model's base directory, as given to TF Serving's
            ``--model_base_path``.
        version: a positive integer. Default: one above the highest existing
            version (1 for a new base).
        overwrite: replace an existing `version` instead of raising.
        metadata: a JSON-serializable dict stored under ``"user"`` in
            ``tftransfer.json``.
        verify_atol: tolerance of the check against the Keras model.

    Returns:
        The path of the new version directory; `None` on a worker that is not
        the chief.

    Raises:
        VersionExistsError: the version exists and `overwrite` is False.

    Example:

    >>> import tempfile
    >>> model = build_classifier("mobilenet_v3_small", class_names=["a", "b"],
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> base = tempfile.mkdtemp()
    >>> os.path.basename(export_saved_model(model, base))
    '1'
    >>> os.path.basename(export_saved_model(model, base))
    '2'
    """
    _check_classifier(model)
    export_base = os.fspath(export_base)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ValueError(
            "`version` must be a positive integer (TF Serving loads integer "
            f"directories only). Received: version={version!r}"
        )
    if metadata is not None:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"`metadata` must be JSON-serializable ({err}). Received: metadata={metadata!r}"
            ) from None
    if not distribute.is_chief(getattr(model, "distribute_strategy", None)):
        return _export_on_other_worker(model, version=version, metadata=metadata,
                                       verify_atol=verify_atol)
    return _export_version(model, export_base, version=version, overwrite=overwrite,
                           metadata=metadata, verify_atol=verify_atol)


def _export_on_other_worker(model, *, version, metadata, verify_atol):
    """A non-chief worker's part of an export under MultiWorkerMirroredStrategy.

    The worker cannot simply skip the export. Reading a variable created with
    ``synchronization=ON_READ`` outside a replica context, as saving does, is
    a collective all-reduce over all workers, so a chief saving alone waits
    for the others forever (checked with TF 2.21: `tf.saved_model.save` of
    such a variable on the chief only fails with "Collective ops is aborted"
    once the other worker exits, and succeeds when both save). Keras 3 makes
    only metric variables ON_READ, and metrics are not exported, so a
    tftransfer classifier would do without (a two-worker run with this worker
    skipping the export finished), but a custom layer may hold such a weight.
    So the worker writes the same export to a temporary directory of its own
    and deletes it, as TensorFlow's multi-worker guide does for
    ``model.save``; nothing is written under `export_base`.
    """
    with tempfile.TemporaryDirectory(prefix="tftransfer-worker-export-") as scratch:
        _export_version(model, scratch, version=version, overwrite=False,
                        metadata=metadata, verify_atol=verify_atol)
    logger.info("Not the chief worker: the export was written to a temporary "
                "directory and deleted; the chief publishes it.")
    return None


def _export_version(model, export_base, *, version, overwrite, metadata, verify_atol):
    """The export proper (arguments checked by `export_saved_model`)."""
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise ValueError(
            "`export_base` must be a directory (or not exist yet); it is a file. "
            f"Received: export_base={export_base!r}"
        )
    os.makedirs(export_base, exist_ok=True)
    if version is None:
        version = (existing_versions(export_base) or [0])[-1] + 1
    target = os.path.join(export_base, str(version))
    if os.path.exists(target) and not overwrite:
        raise VersionExistsError(
            f"Version {version} exists already at {target!r}. Leave `version` "
            "unset to write the next version, or pass `overwrite=True` to "
            f"replace it. Received: version={version}"
        )

    spec = _serving_spec(model)
    staging = tempfile.mkdtemp(prefix=f".tmp-export-{version}-", dir=export_base)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            name="serving_default",
            fn=_serving_function(model, spec),
            input_signature=[spec.input_signature],
        )
        with _quiet_tensorflow_logs():  # it logs the hidden staging path
            archive.write_out(staging, verbose=False)
        extra = os.path.join(staging, EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, LABELS_FILE), "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in model.class_names))
        with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(_metadata(model, spec, version, metadata), f, indent=2)
        _verify(staging, model, spec, verify_atol)
        _publish(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Exported version %d to %s", version, target)
    return target


@contextlib.contextmanager
def _quiet_tensorflow_logs():
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        tf_logger.setLevel(level)


def _readable_like_a_new_directory(path):
    """`mkdtemp` makes the staging directory 0700; the published one gets the
    mode a plain `mkdir` would (0777 less the umask), so that a TF Serving
    running as another user can read it."""
    os.chmod(path, 0o777 & ~_umask())


def _umask():
    try:  # Linux: read it, without setting it (os.umask sets it, for all threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _publish(staging, target, overwrite):
    _readable_like_a_new_directory(staging)
    if not os.path.exists(target):
        os.rename(staging, target)
        return
    if not overwrite:  # appeared while we were writing
        raise VersionExistsError(f"Version directory {target!r} appeared during the export.")
    old = tempfile.mkdtemp(prefix=".tmp-replaced-", dir=os.path.dirname(target))
    os.rename(target, os.path.join(old, "model"))
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def read_labels(export_dir):
    """Reads ``labels.txt`` of an exported version directory."""
    with open(os.path.join(export_dir, EXTRA_DIR, LABELS_FILE), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def read_metadata(export_dir):
    """Reads ``tftransfer.json`` of an exported version directory."""
    with open(os.path.join(export_dir, EXTRA_DIR, METADATA_FILE), encoding="utf-8") as f:
        return json.load(f)


FEATURE_EXTRACTOR_FORMAT = "tftransfer-feature-extractor"
FEATURES_OUTPUT = "features"


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
    from tftransfer.backbones import load_backbone  # export is imported by backbones

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
    if distribute.is_chief(getattr(model_or_backbone, "distribute_strategy", None)):
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
    staging = tempfile.mkdtemp(prefix=".tmp-hub-export-", dir=parent)
    try:
        with _quiet_tensorflow_logs():  # it logs the hidden staging path
            tf.saved_model.save(root, staging, signatures={"serving_default": root.serve})
        extra = os.path.join(staging, EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(_feature_metadata(backbone, example, features), f, indent=2)
        _verify_feature_extractor(staging, features, example, verify_atol)
        _publish(staging, path, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Exported a feature extractor to %s", path)
    return path


def _feature_function(backbone):
    """features(images, training): raw pixels -> [batch, d] float32."""
    from tftransfer.backbones import feature_rank  # export is imported by backbones

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
    from tftransfer.training import _all_sublayers

    spec = tf.TensorSpec([None, *backbone.inputs[0].shape[1:]], tf.float32, name=SIGNATURE_INPUT)

    @tf.function
    def call(images, training=False):
        return features(images, training=training)

    for training in (False, True):
        call.get_concrete_function(spec, training=training)

    trainable, seen = [], set()
    for layer in _all_sublayers(backbone):
        for variable in layer._trainable_variables:  # trainable by design
            if id(variable) not in seen:
                seen.add(id(variable))
                trainable.append(variable)

    def regularization(variable):
        return tf.function(lambda: tf.cast(variable.regularizer(variable), tf.float32),
                           input_signature=[])

    root = tf.__internal__.tracking.AutoTrackable()
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
                SIGNATURE_INPUT: "float32 [batch, height, width, 3], raw pixels in [0, 255]"
            },
            "outputs": {FEATURES_OUTPUT: f"float32 [batch, {width}]"},
        },
        "versions": {
            "tftransfer": _package_version(),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    }


def _verify_feature_extractor(path, features, example, atol):
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
         loaded.signatures["serving_default"](**{SIGNATURE_INPUT: tf.constant(example)})
         [FEATURES_OUTPUT].numpy()),
    ):
        if served.shape != expected.shape or not np.allclose(served, expected, atol=atol):
            raise RuntimeError(
                f"The exported feature extractor's {name} does not reproduce the "
                "backbone's features; nothing was published."
            )
