"""BatchNormalization statistics recomputed exactly on given data.

A BatchNormalization layer normalizes with its batch's statistics while it
trains and with its moving averages in inference mode. Trained for few steps
(a few labelled images, a few epochs) the moving averages are still near
their initial values (mean 0, variance 1), and the model that fits its
training data in training mode predicts one class in inference mode: the
demo's network from scratch, 20 steps at momentum 0.9, scored 0.20 (chance)
on its own 10 training images. Recomputing the statistics over the data
("precise BN", Wu & Johnson 2021) fixes it; on another domain's data it is
AdaBN (Li et al. 2016), which adapts a model to a shifted input distribution
without labels.
"""

import logging

import keras
import numpy as np
import tensorflow as tf

from tftransfer.feature_cache.cut import activations_model
from tftransfer.feature_cache.graph import flatten_graph

logger = logging.getLogger(__name__)


def adapt_batchnorm(model, data, *, batch_size=32):
    """Sets every BatchNormalization layer's moving mean and variance to the
    exact statistics of its inputs over `data`, in inference mode.

    The layers are taken in the order they run: each one's inputs are
    computed with the layers before it already updated, so every layer
    normalizes with the statistics it sees at inference time (one pass over
    the data per layer). Nothing else changes: no other weight, no
    `trainable` flag; frozen layers are updated too (a frozen layer's
    statistics do not move in `fit`, so this is how to change them).

    Args:
        model: a functional Keras model (nested functional models, such as a
            classifier's backbone, are opened up).
        data: the inputs: an array, or a `tf.data.Dataset` of input batches
            or of ``(inputs, labels, ...)`` batches (labels ignored).
        batch_size: for arrays.

    Returns:
        The number of layers updated.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    >>> x = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 6.0]], "float32")
    >>> adapt_batchnorm(model, x)
    1
    >>> model.layers[-1].moving_mean.numpy().tolist()
    [1.0, 2.0, 4.0]
    >>> model.layers[-1].moving_variance.numpy().tolist()
    [1.0, 1.0, 4.0]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a functional keras.Model. Received: model of type "
                        f"{type(model).__name__}")
    batches = _input_batches(data, batch_size)
    graph = flatten_graph(model)
    steps = [s for s in graph.steps if isinstance(s.op, keras.layers.BatchNormalization)]
    seen = set()
    for step in steps:
        if id(step.op) in seen:
            raise ValueError(
                f"BatchNormalization layer {step.name!r} runs more than once in model "
                f"{model.name!r}, so it has no single input distribution to take the "
                "statistics of. Received: a model that shares it")
        seen.add(id(step.op))
    for step in steps:
        probe = activations_model(graph, [step.inputs[0]])
        mean, variance = _moments(probe, batches, step.op.axis)
        step.op.moving_mean.assign(mean.astype(step.op.moving_mean.dtype))
        step.op.moving_variance.assign(variance.astype(step.op.moving_variance.dtype))
    logger.info("Recomputed the statistics of %d BatchNormalization layers", len(steps))
    return len(steps)


def _input_batches(data, batch_size):
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        dataset = data.map(lambda *e: e[0]) if isinstance(spec, tuple) else data
    elif isinstance(data, (np.ndarray, tf.Tensor)) or hasattr(data, "__array__"):
        array = np.asarray(data)
        if len(array) == 0:
            raise ValueError(f"`data` holds no examples. Received: data of shape {array.shape}")
        dataset = tf.data.Dataset.from_tensor_slices(array).batch(batch_size)
    else:
        raise TypeError(
            "`data` must be an array of inputs or a tf.data.Dataset of input batches "
            f"(or of (inputs, labels) batches). Received: data of type {type(data).__name__}")
    return dataset


def _moments(probe, batches, axis):
    """Mean and (biased, as BatchNormalization's) variance of the probe's
    output over all batches, per channel of `axis`."""
    count, total, squares = 0, 0.0, 0.0
    for batch in batches:
        values = np.asarray(probe(batch, training=False), np.float64)
        axes = tuple(i for i in range(values.ndim) if i != axis % values.ndim)
        count += int(np.prod([values.shape[i] for i in axes]))
        total = total + values.sum(axis=axes)
        squares = squares + (values**2).sum(axis=axes)
    if count == 0:
        raise ValueError("`data` holds no examples. Received: an empty dataset")
    mean = total / count
    return mean, np.maximum(squares / count - mean**2, 0.0)
