"""Data against a model: the inputs' shape and the labels' range.

Used where the data is first seen: `tftransfer.fit_two_phase` and the other
training functions when they start, and the feature cache once it has read a
dataset's labels. Each mismatch is an error naming both sides and the fix.
"""

import numpy as np
import tensorflow as tf


def is_array(value):
    return isinstance(value, (np.ndarray, tf.Tensor)) or (
        hasattr(value, "__array__") and hasattr(value, "shape") and not isinstance(value, dict)
    )


def _input_shape(data):
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        if isinstance(spec, tf.TensorSpec) and spec.shape.rank is not None:
            return tuple(spec.shape.as_list()[1:])
        return None
    if is_array(data):
        return tuple(np.shape(data)[1:])
    return None


def check_inputs(model, what, data):
    expected = tuple(model.inputs[0].shape[1:])
    shape = _input_shape(data)
    if shape is None or len(expected) != 3 or len(shape) != len(expected):
        return
    if all(e is None or s is None or e == s for e, s in zip(expected, shape)):
        return
    size = "x".join(str(d) for d in shape)
    wanted = "x".join(str(d) for d in expected)
    if expected[2] != shape[2]:
        fix = (f"a backbone that takes {shape[2]}-channel images (this one takes "
               f"{expected[2]}: a grayscale source model does not take RGB data)")
    else:
        fix = (f"build the classifier at the data's size (`build_classifier(..., "
               f"image_size={shape[:2]!r})` or `data=`), or load the data with "
               f"image_size={expected[:2]!r}")
    raise ValueError(
        f"The {what} images are {size} but model {model.name!r} takes {wanted}: {fix}. "
        f"Received: {what} images of shape {shape}, a model with input shape {expected}")


def _classes(model):
    if getattr(model, "tasks", None) or len(model.outputs) != 1:
        # A multi-task model (`tftransfer.MultiTaskModel`) checks its labels per
        # task, where -1 is a missing label.
        return None
    outputs = tuple(model.outputs[0].shape)
    return outputs[-1] if len(outputs) == 2 else None


def check_labels(model, what, labels):
    num_classes = _classes(model)
    if num_classes is None:
        return
    if labels is None or not is_array(labels):
        return
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[-1] > 1:  # multi-hot
        if labels.shape[-1] != num_classes:
            raise ValueError(
                f"The {what} labels are multi-hot vectors of {labels.shape[-1]} classes but "
                f"model {model.name!r} has num_classes={num_classes}. Build the classifier "
                f"with num_classes={labels.shape[-1]} (or the data's class_names). Received: "
                f"{what} labels of shape {labels.shape}")
        return
    if labels.dtype.kind not in "iu" or labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        names = getattr(model, "class_names", None)
        raise ValueError(
            f"The {what} labels go from {low} to {high} but model {model.name!r} has "
            f"num_classes={num_classes}"
            + (f" (class_names={list(names)!r})" if names else "")
            + f": labels must be in [0, {num_classes}). Build the classifier with "
            f"num_classes={high + 1} or with the data's class_names (`build_classifier(..., "
            f"data=data)`). Received: {what} labels in [{low}, {high}]")


def guard_labels(model, what, dataset):
    """`dataset` with its integer labels checked batch by batch against
    `model`'s classes, for pipelines whose labels cannot be read before
    training without a pass over the data (a `cache` in them, or labels past
    the first batch): a label out of range stops training at its batch with
    an InvalidArgument error naming `num_classes` and the fix, instead of the
    loss's error deep in the graph. Other data pass through unchanged."""
    num_classes = _classes(model)
    spec = dataset.element_spec if isinstance(dataset, tf.data.Dataset) else None
    if num_classes is None or not isinstance(spec, tuple) or len(spec) < 2:
        return dataset
    label_spec = spec[1]
    if (not isinstance(label_spec, tf.TensorSpec) or not label_spec.dtype.is_integer
            or label_spec.shape.rank not in (0, 1) and label_spec.shape[-1] != 1):
        return dataset
    message = (f"The {what} labels must be in [0, {num_classes}): model {model.name!r} has "
               f"num_classes={num_classes}. Build the classifier with the data's class_names "
               "(`build_classifier(..., data=data)`) or a larger num_classes. Received: a "
               f"{what} label of ")

    def check(*element):
        labels = element[1]
        inside = tf.reduce_all((labels >= 0) & (labels < num_classes))
        bad = tf.boolean_mask(labels, tf.logical_not((labels >= 0) & (labels < num_classes)))
        with tf.control_dependencies([tf.debugging.Assert(inside, [message, bad[:1]])]):
            return (element[0], tf.identity(labels), *element[2:])

    return dataset.map(check)


def class_indices(y, where):
    """Integer class indices of integer or one-hot labels, or a ValueError
    naming `where`."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1 and np.all((y == 0) | (y == 1)) and np.all(
            y.sum(axis=1) == 1):
        return y.argmax(axis=1)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "biu":
        raise ValueError(
            f"The labels of {where} must be integer class indices or one-hot rows "
            "(single-label data). "
            f"Received: labels of shape {y.shape} and dtype {y.dtype}")
    return y.astype(np.int64)
