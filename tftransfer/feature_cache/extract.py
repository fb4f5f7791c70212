"""The frozen bottom as one compiled graph: weights as constants, BatchNorm folded."""

import logging

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from tftransfer.feature_cache.graph import accepts_training

logger = logging.getLogger(__name__)


class _Forward:
    """A callable holding a concrete function (attributes can be added)."""

    def __init__(self, function):
        self.function = function

    def __call__(self, images):
        return self.function(images)


def _run_steps(steps, values, outputs, constants=None, folds=None):
    """Runs `steps` in inference mode on the tensors in `values` (by tensor
    id); returns the tensors `outputs`. Inside a `tf.function`; cheaper than
    building a functional model for the extractor. With `constants` (numpy
    values by variable id), the layers' weights go into the graph as
    constants (`Layer.stateless_call`), and the BatchNormalization steps in
    `folds` (see `batchnorm_folds`) are folded into their convolutions."""
    values = dict(values)
    folds = folds or {}
    folded = {id(normalization) for normalization in folds.values()}
    for step in steps:
        if id(step) in folded:
            continue  # computed with its convolution
        lookup = {id(t): values[i] for t, i in zip(step.node.input_tensors, step.inputs)}
        args, kwargs = step.node.arguments.fill_in(lookup)
        op = step.op
        if accepts_training(op):
            kwargs["training"] = False
        step_outputs = step.outputs
        if constants is not None and isinstance(op, keras.layers.Layer) and op.weights:
            normalization = folds.get(id(step))
            replaced, bias = {}, None
            if normalization is not None:
                replaced, bias = _folded_weights(op, normalization.op, constants)
                step_outputs = normalization.outputs

            def constant(variable, replaced=replaced):
                return tf.constant(replaced.get(id(variable), constants[id(variable)]))

            trainable = [constant(v) for v in op.trainable_variables]
            fixed = [constant(v) for v in op.non_trainable_variables]
            result, _ = op.stateless_call(trainable, fixed, *args, **kwargs)
            if bias is not None:
                result = tf.nn.bias_add(result, tf.constant(bias))
        else:
            result = op(*args, **kwargs)
        for i, value in zip(step_outputs, tree.flatten(result)):
            values[i] = value
    return [values[i] for i in outputs]


_FOLDABLE_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def batchnorm_folds(steps, outputs):
    """The BatchNormalization steps that can be folded into the convolution
    before them, by the convolution's step id.

    In inference mode a BatchNormalization layer is a per-channel scale and
    shift, so a convolution followed by one is the same convolution with a
    scaled kernel and a bias. TensorFlow's graph optimizer folds the scale
    into regular convolutions' constant kernels, but left a multiplication
    after every depthwise convolution of MobileNetV2; folded here, the
    extractor ran MobileNetV2 at 160 px 9-15% faster on 2 CPU cores
    (EfficientNetB0: 0-8%, within the noise). The features differ from the
    unfolded ones by float rounding, as much as the constant-folded graph
    already differs from `model.predict` (at most 1e-4 to 2e-4 for features
    up to 1.6 and 10 in magnitude).
    Folded only where nothing else reads the convolution's output and
    everything is plain float32.
    """
    producer = {i: step for step in steps for i in step.outputs}
    readers = {}
    for step in steps:
        for i in step.inputs:
            readers[i] = readers.get(i, 0) + 1
    for i in outputs:
        readers[i] = readers.get(i, 0) + 1
    folds = {}
    for step in steps:
        normalization = step.op
        if (
            type(normalization) is not keras.layers.BatchNormalization
            or getattr(normalization, "renorm", False)
            or len(step.inputs) != 1
            or step.node.arguments.kwargs.get("mask") is not None
        ):
            continue
        convolution_step = producer.get(step.inputs[0])
        if convolution_step is None or readers[step.inputs[0]] != 1:
            continue
        convolution = convolution_step.op
        rank = len(convolution_step.node.output_tensors[0].shape)
        if (
            type(convolution) not in _FOLDABLE_CONVOLUTIONS
            or len(convolution_step.outputs) != 1
            or convolution.data_format != "channels_last"
            or convolution.activation is not keras.activations.linear
            or getattr(convolution, "lora_enabled", False)
            or getattr(convolution, "quantization_mode", None)
            or normalization.axis not in (-1, rank - 1)
            or not all(_plain_float32(layer) for layer in (convolution, normalization))
        ):
            continue
        folds[id(convolution_step)] = step
    return folds


def _plain_float32(layer):
    return keras.backend.standardize_dtype(layer.compute_dtype) == "float32" and all(
        keras.backend.standardize_dtype(v.dtype) == "float32" for v in layer.weights
    )


def _folded_weights(convolution, normalization, constants):
    """The kernel and bias of `convolution` with `normalization` (inference
    mode) folded in: ``({variable id: value}, bias to add or None)``."""

    def value(variable):
        return constants[id(variable)].astype(np.float64)

    # As tf.nn.batch_normalization: x * inv + (beta - mean * inv).
    inv = 1.0 / np.sqrt(value(normalization.moving_variance) + normalization.epsilon)
    if normalization.scale:
        inv = inv * value(normalization.gamma)
    shift = -value(normalization.moving_mean) * inv
    if normalization.center:
        shift = shift + value(normalization.beta)
    kernel = value(convolution.kernel)
    if isinstance(convolution, keras.layers.DepthwiseConv2D):
        # (height, width, channels, multiplier): output channel c * multiplier + m.
        kernel = kernel * inv.reshape(kernel.shape[2:])
    else:
        kernel = kernel * inv
    replaced = {id(convolution.kernel): kernel.astype(np.float32)}
    if convolution.use_bias:
        replaced[id(convolution.bias)] = (value(convolution.bias) * inv + shift).astype(
            np.float32)
        return replaced, None
    return replaced, shift.astype(np.float32)


def frozen_forward(steps, input_id, outputs, spec, values=None):
    """The compiled forward pass of `steps`, with the weights as constants in
    the graph (the bottom is frozen: its weights do not change while the
    cache lives, and the cache key holds them), so that TensorFlow's graph
    optimizer can fold them: on 2 CPU cores this ran MobileNetV2 and
    EfficientNetB0 at 160 px 1.6-2x faster than the same graph reading
    variables. BatchNormalization is folded into the convolutions before it
    (`batchnorm_folds`). Falls back to reading the variables where that
    fails. `values`: weights already read, as NumPy arrays by variable id."""
    values = {} if values is None else values
    constants = {
        id(v): values[id(v)] if id(v) in values else keras.ops.convert_to_numpy(v)
        for step in steps
        for v in getattr(step.op, "weights", [])
    }
    folds = batchnorm_folds(steps, outputs)
    # Traced without AutoGraph, as Keras traces its own train and predict
    # functions: the steps are a Python loop over layers, and converting every
    # layer's `call` took more than half of the tracing time.
    try:
        concrete = tf.function(
            lambda images: _run_steps(steps, {input_id: images}, outputs, constants, folds),
            input_signature=[spec], autograph=False,
        ).get_concrete_function()
    except Exception as err:  # noqa: BLE001 - any failure: read the variables instead
        logger.info("Running the feature extractor on variables (%s: %s).",
                    type(err).__name__, err)
        concrete = tf.function(
            lambda images: _run_steps(steps, {input_id: images}, outputs),
            input_signature=[spec], autograph=False,
        ).get_concrete_function()
    return _Forward(concrete)
