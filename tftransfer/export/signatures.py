"""The signatures of an export: what each takes and returns, and their check.

An image classifier's export has two: ``serving_default`` takes encoded images
(``inputs="bytes"``, what a TF Serving REST client sends as base64), and
``serving_pixels`` takes raw pixel arrays. ``inputs="pixels"`` writes the
pixel signature as ``serving_default`` alone (the interface of export format
1). A text classifier's takes strings.
"""

import keras
import numpy as np
import tensorflow as tf

from tftransfer.classifiers.multitask import MultiTaskModel
from tftransfer.classifiers.task_options import task_top_k

DEFAULT_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serving_pixels"


def signature_specs(model, inputs):
    """``{signature name: ServingSpec}`` for `inputs` (None: the model's
    default kind of input)."""
    kinds = model.serving_inputs
    inputs = kinds[0] if inputs is None else inputs
    specs = {DEFAULT_SIGNATURE: model.serving_spec(inputs)}
    if inputs == "bytes":
        specs[PIXELS_SIGNATURE] = model.serving_spec("pixels")
    return specs


def serving_function(model, spec, top_k=1):
    """The function behind a signature: inputs -> probabilities, the most
    probable class (id and name), and the `top_k` best when `top_k` > 1; for
    a `tftransfer.MultiTaskModel`, each task's outputs
    (`MultiTaskModel.serving_outputs`)."""
    if isinstance(model, MultiTaskModel):
        return lambda inputs: model.serving_outputs(spec.forward(inputs), top_k=top_k)
    class_names = tf.constant(model.class_names)

    def serve(inputs):
        probabilities = tf.cast(model.probabilities(spec.forward(inputs)), tf.float32)
        class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        outputs = {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "class_names": tf.gather(class_names, class_ids),
        }
        if top_k > 1:
            best = tf.math.top_k(probabilities, k=top_k)
            ids = tf.cast(best.indices, tf.int64)
            outputs.update(top_k_probabilities=best.values, top_k_class_ids=ids,
                           top_k_class_names=tf.gather(class_names, ids))
        return outputs

    return serve


def describe(spec, top_k, model=None):
    """A signature's metadata entry."""
    if isinstance(model, MultiTaskModel):
        outputs = {}
        best = task_top_k(model.tasks, top_k)
        for name, head in model.tasks.items():
            outputs.update(head.describe_outputs(name, top_k=best.get(name, 1)))
        return {"inputs": _inputs(spec), "outputs": outputs}
    outputs = {
        "probabilities": "float32 [batch, num_classes]",
        "class_ids": "int64 [batch]: the most probable class",
        "class_names": "string [batch]: its name",
    }
    if top_k > 1:
        outputs.update({
            "top_k_probabilities": f"float32 [batch, {top_k}]: the {top_k} best, best first",
            "top_k_class_ids": f"int64 [batch, {top_k}]",
            "top_k_class_names": f"string [batch, {top_k}]",
        })
    return {"inputs": _inputs(spec), "outputs": outputs}


def _inputs(spec):
    return {
        spec.input_name: {
            "dtype": spec.input_signature.dtype.name,
            "shape": spec.input_signature.shape.as_list(),
            "description": spec.description,
        }
    }


def verify_export(path, model, specs, atol, top_k=1):
    """Loads the SavedModel back; every signature must reproduce the model's
    probabilities on its spec's example."""
    loaded = tf.saved_model.load(path)
    for name, spec in specs.items():
        served = loaded.signatures[name](**{spec.input_name: tf.constant(spec.example)})
        if isinstance(model, MultiTaskModel):
            _verify_tasks(name, served,
                          model.serving_outputs(spec.forward(spec.example), top_k=top_k), atol)
            continue
        expected = keras.ops.convert_to_numpy(model.probabilities(spec.forward(spec.example)))
        got = served["probabilities"].numpy()
        if got.shape != expected.shape or not np.allclose(got, expected, atol=atol):
            raise RuntimeError(
                f"The exported SavedModel's {name} signature does not reproduce the model's "
                f"probabilities (max difference {np.abs(got - expected).max():.3g}); nothing "
                "was published.")


def _verify_tasks(name, served, expected, atol):
    """Every float output of a multi-task export against the model's."""
    for key, value in expected.items():
        if not value.dtype.is_floating:
            continue
        got, want = served[key].numpy(), value.numpy()
        if got.shape != want.shape or not np.allclose(got, want, atol=atol):
            raise RuntimeError(
                f"The exported SavedModel's {name} signature does not reproduce the model's "
                f"{key} (max difference {np.abs(got - want).max():.3g}); nothing was "
                "published.")
