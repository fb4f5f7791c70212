"""The training data against the model, checked when training starts, cheaply.

Each mismatch is an error that names both sides and the fix, before any epoch
(and before the feature cache's pass over the data): the images' size and
channels against the model's input, the labels against the model's classes.
A `tftransfer.DataSplits` is taken whole: its training and validation
pipelines and its class names.
"""

import logging

import tensorflow as tf

from tftransfer.classifiers.multitask import MultiTaskModel
from tftransfer.classifiers.multitask import check_targets
from tftransfer.data.checks import check_inputs
from tftransfer.data.checks import check_labels
from tftransfer.data.splits import DataSplits
from tftransfer.feature_cache.sources import dataset_ops

logger = logging.getLogger(__name__)


def unpack_splits(model, x, validation_data):
    """`x` and `validation_data`, with a `DataSplits` as `x` opened up (its
    validation split used unless `validation_data` is given); its classes
    checked against the model's."""
    if not isinstance(x, DataSplits):
        return x, validation_data
    names = list(getattr(model, "class_names", []) or [])
    default = [str(i) for i in range(len(names))]  # built with num_classes only
    if names and list(x.class_names) != names and (
            names != default or len(names) != x.num_classes):
        raise ValueError(
            f"The data's classes ({x.num_classes}: {', '.join(x.class_names)}) are not the "
            f"model's ({len(names)}: {', '.join(names)}). Build the classifier from the data "
            "(`build_classifier(..., data=data)` takes its class names). Received: data with "
            f"class_names={list(x.class_names)!r}, a model with class_names={names!r}")
    return x.train, x.validation if validation_data is None else validation_data


def check_training_data(model, x, y=None, validation_data=None):
    """Raises `ValueError` when the data cannot train `model` (see module)."""
    for what, data, labels in (("training", x, y), ("validation", *_pair(validation_data))):
        if data is None:
            continue
        check_inputs(model, what, data)
        if labels is None and isinstance(data, tf.data.Dataset):
            labels = _first_batch_labels(data)
        if isinstance(model, MultiTaskModel):
            check_targets(model, what, labels)
        else:
            check_labels(model, what, labels)


def _pair(validation_data):
    if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
        return validation_data[0], validation_data[1]
    return validation_data, None


def _first_batch_labels(dataset):
    """The labels of the dataset's first batch, or None where peeking would
    cost: a `cache` in the pipeline would be left half-filled (and TensorFlow
    warns about it). Such a pipeline's labels are checked by the feature cache
    when it reads them (``cache="auto"``), and, trained uncached, batch by
    batch as they train (`tftransfer.data.checks.guard_labels`)."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        return None
    try:
        if any(op.startswith("Cache") for op in dataset_ops(dataset)):
            return None
        for batch in dataset.take(1):
            labels = batch[1]  # a dict for a multi-task model
            if isinstance(labels, dict):
                return {key: value.numpy() for key, value in labels.items()}
            return labels.numpy() if isinstance(labels, tf.Tensor) else None
    except (tf.errors.OpError, ValueError, TypeError) as err:
        logger.debug("Not checking the labels of the first batch: %s", err)
    return None
