"""The unlabelled images of self-supervised pretraining: checked, then batched.

An array is served in full batches reshuffled every epoch, epoch e's order a
function of (seed, e) only, so that a resumed run sees the batches of an
uninterrupted one (as `tftransfer.feature_cache.feed.array_dataset` does for
the recipe, but dropping the last incomplete batch: NT-Xent contrasts the
images of a batch with each other). A `tf.data.Dataset` is read as it is,
re-batched.
"""

import itertools
import logging

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)


def unlabelled_images(unlabelled, backbone, batch_size):
    """Checks `unlabelled` against `backbone` and `batch_size`.

    Returns:
        ``(data, plain, steps)``: `data` is a float32 array of the images,
        or a `tf.data.Dataset` of full batches (the last incomplete one
        dropped); `plain` the same images in batches, none dropped (for
        `tftransfer.adapt_batchnorm`); `steps` the full batches an epoch.
    """
    expected = tuple(backbone.inputs[0].shape[1:])
    if isinstance(unlabelled, tf.data.Dataset):
        spec = unlabelled.element_spec
        dataset = unlabelled.map(lambda *e: e[0]) if isinstance(spec, tuple) else unlabelled
        shape = tuple(dataset.element_spec.shape)
        if len(shape) == 4:
            dataset, shape = dataset.unbatch(), shape[1:]
        if len(shape) != 3:
            raise ValueError(
                "`unlabelled` must give images (height, width, channels), alone or in "
                f"batches. Received: a dataset of elements of shape {shape}")
    elif isinstance(unlabelled, np.ndarray) or hasattr(unlabelled, "__array__"):
        dataset = np.asarray(unlabelled, "float32")
        shape = dataset.shape[1:]
        if dataset.ndim != 4:
            raise ValueError(
                "`unlabelled` must be an array of images (count, height, width, channels). "
                f"Received: unlabelled of shape {dataset.shape}")
        if len(dataset) < batch_size:
            raise ValueError(
                f"`unlabelled` holds {len(dataset)} images, fewer than one batch of "
                f"`batch_size`={batch_size}; each step contrasts a full batch. Pass a "
                f"smaller `batch_size` (at least 2), or more images. Received: "
                f"unlabelled of shape {dataset.shape}, batch_size={batch_size}")
    else:
        raise TypeError(
            "`unlabelled` must be an array of images or a tf.data.Dataset of images (or of "
            f"(images, ...) tuples; labels are ignored). Received: unlabelled of type "
            f"{type(unlabelled).__name__}")
    if any(e is not None and s is not None and e != s for e, s in zip(expected, shape)):
        raise ValueError(
            f"The unlabelled images have shape {tuple(shape)} but backbone "
            f"{backbone.name!r} takes {expected}. Resize them, or build the backbone for this "
            f"size. Received: images of shape {tuple(shape)}")
    if isinstance(dataset, np.ndarray):
        if float(dataset.max()) <= 1.0:
            logger.warning("The unlabelled images are all in [0, 1]; tftransfer's models and "
                           "views expect raw pixels in [0, 255].")
        return dataset, dataset, len(dataset) // batch_size
    batches = dataset.batch(batch_size, drop_remainder=True)
    steps = int(batches.cardinality())
    if steps < 0:  # unknown: one pass counts the batches (for the schedule, the check)
        logger.info("Counting the batches of `unlabelled` (a pass over the dataset).")
        steps = int(batches.reduce(0, lambda count, _: count + 1))
        batches = batches.apply(tf.data.experimental.assert_cardinality(steps))
    if steps == 0:
        raise ValueError(f"`unlabelled` holds fewer images than one batch of "
                         f"`batch_size`={batch_size}. Pass a smaller `batch_size`, or more "
                         f"images. Received: batch_size={batch_size}")
    return batches, dataset.batch(batch_size), steps


def epoch_batches(images, batch_size, *, seed, first_epoch):
    """Full batches of `images`, reshuffled each epoch; epoch e's order
    depends only on (seed, e), so a resumed run sees the uninterrupted run's
    batches. The last incomplete batch of each epoch is dropped."""
    epochs = itertools.count(first_epoch)
    steps = len(images) // batch_size

    def batches():
        order = np.random.default_rng([seed, next(epochs)]).permutation(len(images))
        for step in range(steps):
            yield images[np.sort(order[step * batch_size:(step + 1) * batch_size])]

    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=tf.TensorSpec((batch_size, *images.shape[1:]), tf.float32))
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)
