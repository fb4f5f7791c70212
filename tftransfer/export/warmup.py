"""The warmup file TF Serving replays before it serves a version.

TF Serving reads ``assets.extra/tf_serving_warmup_requests`` (a TFRecord of
`PredictionLog`s) when it loads a SavedModel and runs those requests first, so
the first client does not pay for the graph's initialization
(tensorflow/serving ``g3doc/saved_model_warmup.md``). The records are written
with the protos of the `tensorflow-serving-api` package (``pip install
"tftransfer[serving]"``); without it the export has no warmup file (logged).
"""

import importlib.util
import logging
import os

import numpy as np
import tensorflow as tf

from tftransfer.formats import EXTRA_DIR

logger = logging.getLogger(__name__)

WARMUP_FILE = "tf_serving_warmup_requests"


def available():
    """Whether the `tensorflow-serving-api` protos can be imported."""
    return importlib.util.find_spec("tensorflow_serving") is not None


def write_warmup(export_dir, specs, *, model_name):
    """Writes one warmup request per signature (its spec's example batch);
    returns the file's path, or None without `tensorflow-serving-api`."""
    if not available():
        logger.info("No TF Serving warmup file: `pip install tensorflow-serving-api` (or "
                    "tftransfer[serving]) writes one.")
        return None
    from tensorflow_serving.apis import model_pb2
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(export_dir, EXTRA_DIR, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for name, spec in specs.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name))
            example = np.asarray(spec.example)
            if example.dtype == object:  # strings: encoded images or texts
                example = [e.encode("utf-8") if isinstance(e, str) else bytes(e)
                           for e in example]
            tensor = tf.make_tensor_proto(example, dtype=spec.input_signature.dtype)
            request.inputs[spec.input_name].CopyFrom(tensor)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path
