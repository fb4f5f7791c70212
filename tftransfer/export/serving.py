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
import tempfile

import keras
import tensorflow as tf

from tftransfer.classifiers.base import Classifier
from tftransfer.classifiers.multitask import MultiTaskModel
from tftransfer.classifiers.predictions import check_top_k
from tftransfer.classifiers.task_options import task_top_k
from tftransfer.distribute import is_chief
from tftransfer.errors import VersionExistsError
from tftransfer.export.publish import existing_versions
from tftransfer.export.publish import publish
from tftransfer.export.publish import quiet_tensorflow_logs
from tftransfer.export.publish import staging_directory
from tftransfer.export.publish import titled
from tftransfer.export.publish import write_labels
from tftransfer.export.publish import write_metadata
from tftransfer.export.signatures import DEFAULT_SIGNATURE
from tftransfer.export.signatures import describe
from tftransfer.export.signatures import serving_function
from tftransfer.export.signatures import signature_specs
from tftransfer.export.signatures import verify_export
from tftransfer.export.warmup import write_warmup
from tftransfer.formats import EXTRA_DIR
from tftransfer.training.lora import merge_lora
from tftransfer.version import __version__

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "tftransfer-export/2"
"""Format 2 (tftransfer 0.2): image classifiers' ``serving_default`` takes encoded
images, ``serving_pixels`` raw pixels; format 1's only signature took raw pixels."""


def _check_classifier(model):
    if not isinstance(model, (Classifier, MultiTaskModel)):
        raise TypeError(
            "`model` must be a classifier built by tftransfer (a `tftransfer.Classifier`: "
            "`build_classifier`, `build_text_classifier`) or a `tftransfer.MultiTaskModel` "
            "(`build_multitask`, `build_regressor`). For any other Keras model use "
            f"`model.export()`. Received: model={getattr(model, 'name', model)!r} of type "
            f"{type(model).__name__}"
        )


def _metadata(model, specs, version, extra, top_k):
    default = specs[DEFAULT_SIGNATURE]
    if isinstance(model, MultiTaskModel):
        best = task_top_k(model.tasks, top_k)
        labels = {"tasks": {name: {"kind": head.kind, "labels": list(head.labels),
                                   "outputs": head.describe_outputs(
                                       name, top_k=best.get(name, 1))}
                            for name, head in model.tasks.items()}}
    else:
        labels = {"class_names": list(model.class_names),
                  "multi_label": bool(model.multi_label)}
    metadata = {
        "format": EXPORT_FORMAT,
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "backbone": default.backbone,
        **labels,
        "signatures": {name: describe(spec, top_k, model) for name, spec in specs.items()},
        # Format 1's one signature, kept for readers of it.
        "signature": {"name": DEFAULT_SIGNATURE, **describe(default, top_k, model)},
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


def export_saved_model(model, export_base, *, inputs=None, top_k=1, warmup=True, version=None,
                       overwrite=False, metadata=None, verify_atol=1e-4, verbose=0):
    """Exports a classifier as a SavedModel that TF Serving loads as it is.

    Writes ``export_base/<version>/``: a SavedModel (export format 2) whose
    ``serving_default`` signature takes ``images``: for an image classifier
    encoded image files (`tf.string` ``[batch]``; a TF Serving REST client
    sends them as ``{"b64": ...}``, see `tftransfer.serving_request`), for a
    text classifier strings; ``serving_pixels`` takes float32 raw pixels in
    [0, 255], ``[batch, height, width, 3]``. Each returns ``probabilities``
    (float32, also under mixed precision), ``class_ids`` (int64) and
    ``class_names`` (string), and with `top_k` > 1 the best `top_k`. A batch
    holding a string that is not an image fails whole, with an
    InvalidArgument error naming its index. Beside the SavedModel, in
    ``assets.extra/`` (the SavedModel place for files the graph does not
    load), go ``labels.txt`` (one class name a line) and ``tftransfer.json``
    (backbone, input size, class names, signatures, training summary).

    The export is written to a hidden temporary sibling, loaded back and
    compared with the model, then renamed into place, so TF Serving never
    sees a half-written version; on failure nothing is left behind.

    Under a `tf.distribute.MultiWorkerMirroredStrategy` with several workers,
    call it on every worker (the same script runs everywhere): only the chief
    (see `tftransfer.is_chief`) writes to `export_base`; the other workers
    write the same export to a temporary directory of their own and delete
    it, so that every worker runs the same operations.

    Args:
        model: a classifier from `build_classifier` or `build_text_classifier`.
        export_base: the model's base directory, as given to TF Serving's
            ``--model_base_path``.
        inputs: what an image classifier's ``serving_default`` takes:
            ``"bytes"`` (default): encoded images, `tf.string` ``[batch]``
            (JPEG, PNG, GIF, BMP, WebP), decoded, converted to RGB and resized
            in the graph, with a second signature ``serving_pixels`` for
            raw pixel arrays; ``"pixels"``: raw RGB pixels in [0, 255],
            float32 ``[batch, height, width, 3]`` (export format 1's only
            signature). A text classifier takes ``"text"`` (strings).
        top_k: with top_k > 1 the signatures also return ``top_k_class_ids``,
            ``top_k_class_names`` and ``top_k_probabilities``, best first. A
            multi-task model's: an integer for every classification task, or
            ``{task: k}`` (classification and binary tasks); each such task
            returns ``<task>_top_k_class_ids`` and the others.
        warmup: write ``assets.extra/tf_serving_warmup_requests``, one
            request per signature, which TF Serving replays before serving
            the version (needs ``tensorflow-serving-api``, the ``[serving]``
            extra; without it, none is written and an info line is logged).
        version: a positive integer. Default: one above the highest existing
            version (1 for a new base).
        overwrite: replace an existing `version` instead of raising.
        metadata: a JSON-serializable dict stored under ``"user"`` in
            ``tftransfer.json``.
        verify_atol: tolerance of the check against the Keras model.
        verbose: 1 prints a title and the time taken (as Keras's `verbose`);
            0 is silent.

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
    model = merge_lora(model)  # LoRA factors merged into plain kernels: no LoRA at serving time
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
    if isinstance(model, MultiTaskModel):
        top_k = task_top_k(model.tasks, top_k)
    else:
        check_top_k(top_k, model.num_classes)
    if inputs is not None and inputs not in model.serving_inputs:
        raise ValueError(
            f"`inputs` must be one of {model.serving_inputs} for a {type(model).__name__}"
            + (" ('bytes': encoded images, as TF Serving clients send them in base64; "
               "'pixels': raw pixel arrays, the interface of export format 1)"
               if "bytes" in model.serving_inputs else "")
            + f". Received: inputs={inputs!r}")
    specs = signature_specs(model, inputs)
    options = {"version": version, "metadata": metadata, "verify_atol": verify_atol,
               "specs": specs, "top_k": top_k, "warmup": bool(warmup)}
    if not is_chief(getattr(model, "distribute_strategy", None)):
        return _export_on_other_worker(model, **options)
    with titled(f"Exporting {model.name} for TF Serving (format 2) under {export_base}", verbose):
        return _export_version(model, export_base, overwrite=overwrite, **options)


def _export_on_other_worker(model, **options):
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
        _export_version(model, scratch, overwrite=False, **options)
    logger.info("Not the chief worker: the export was written to a temporary "
                "directory and deleted; the chief publishes it.")
    return None


def _export_version(model, export_base, *, version, overwrite, metadata, verify_atol, specs,
                    top_k, warmup):
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

    with staging_directory(export_base, f".tmp-export-{version}-") as staging:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for name, spec in specs.items():
            archive.add_endpoint(name=name, fn=serving_function(model, spec, top_k),
                                 input_signature=[spec.input_signature])
        with quiet_tensorflow_logs():  # it logs the hidden staging path
            archive.write_out(staging, verbose=False)
        extra = os.path.join(staging, EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        if not isinstance(model, MultiTaskModel):  # its tasks' labels: in the metadata
            write_labels(extra, model.class_names)
        write_metadata(extra, _metadata(model, specs, version, metadata, top_k))
        if warmup:
            write_warmup(staging, specs, model_name=os.path.basename(
                os.path.abspath(export_base)))
        verify_export(staging, model, specs, verify_atol, top_k)
        publish(staging, target, overwrite)
    logger.info("Exported version %d to %s", version, target)
    return target
