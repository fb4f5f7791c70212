"""Export for TF Serving: versioned, atomic SavedModels with named signatures.

TF Serving polls a model's base directory (every second by default) and
loads the highest integer sub-directory, whether or not it is completely
written (tensorflow/serving#1086, #572). So the export is written to a
hidden sibling whose name is not an integer, loaded back and checked against
the Keras model, and only then renamed to its version number. A rename within
one directory is atomic, and renaming onto an existing non-empty directory
fails, so two exports racing for the same version cannot overwrite each other.
"""

import datetime
import json
import logging
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tftransfer.classifiers.base import Classifier
from tftransfer.distribute import is_chief
from tftransfer.errors import VersionExistsError
from tftransfer.export.publish import existing_versions
from tftransfer.export.publish import publish
from tftransfer.export.publish import quiet_tensorflow_logs
from tftransfer.formats import EXTRA_DIR
from tftransfer.formats import LABELS_FILE
from tftransfer.formats import METADATA_FILE
from tftransfer.version import __version__

logger = logging.getLogger(__name__)


def _check_classifier(model):
    if not isinstance(model, Classifier):
        raise TypeError(
            "`model` must be a classifier built by tftransfer (a `tftransfer.Classifier`: "
            "`build_classifier`, `build_text_classifier`). For any other Keras model use "
            f"`model.export()`. Received: model={getattr(model, 'name', model)!r} of type "
            f"{type(model).__name__}"
        )


def serving_function(model, spec):
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
            "tftransfer": package_version(),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    }
    if extra:
        metadata["user"] = extra
    return metadata


def package_version():
    return __version__


def verify_export(path, model, spec, atol):
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
    if not is_chief(getattr(model, "distribute_strategy", None)):
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

    spec = model.serving_spec()
    staging = tempfile.mkdtemp(prefix=f".tmp-export-{version}-", dir=export_base)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            name="serving_default",
            fn=serving_function(model, spec),
            input_signature=[spec.input_signature],
        )
        with quiet_tensorflow_logs():  # it logs the hidden staging path
            archive.write_out(staging, verbose=False)
        extra = os.path.join(staging, EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, LABELS_FILE), "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in model.class_names))
        with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(_metadata(model, spec, version, metadata), f, indent=2)
        verify_export(staging, model, spec, verify_atol)
        publish(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Exported version %d to %s", version, target)
    return target
