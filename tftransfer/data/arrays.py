"""Data sets from arrays in memory (and the indexed core the TFDS loader shares)."""

import numpy as np
import tensorflow as tf

from tftransfer.data.images import check_image_size
from tftransfer.data.images import tf_to_rgb
from tftransfer.data.splits import SPLITS
from tftransfer.data.splits import DataSplits
from tftransfer.data.splits import assign_splits
from tftransfer.data.splits import augmentation_layer
from tftransfer.data.splits import check_class_names
from tftransfer.data.splits import check_class_sizes
from tftransfer.data.splits import check_split_args
from tftransfer.data.splits import split_counts
from tftransfer.data.splits import split_fractions
from tftransfer.data.splits import warn_missing
from tftransfer.data.tf_pixels import tf_resize


def _sort_labels(values):
    """Class names from label values: numeric order if all are integers."""
    values = set(values)
    try:
        return sorted(values, key=int)
    except ValueError:
        return sorted(values)


def _encode_labels(y, class_names, n):
    """Integer labels and class names from int or string labels."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"`y` must hold one label per example: shape ({n},). Received: y of shape {y.shape}"
        )
    if y.dtype.kind in "iu":
        if n and (y.min() < 0 or (class_names is not None and y.max() >= len(class_names))):
            raise ValueError(
                "Integer labels must lie in [0, number of classes). Received: labels from "
                f"{y.min()} to {y.max()} with class_names={class_names!r}"
            )
        if class_names is None:
            class_names = [str(i) for i in range(int(y.max()) + 1 if n else 0)]
        return y.astype(np.int64), class_names
    if y.dtype.kind in "USO":
        y = y.astype(str)
        if class_names is None:
            class_names = _sort_labels(y.tolist())
        index = {name: i for i, name in enumerate(class_names)}
        unknown = sorted(set(y.tolist()) - set(index))
        if unknown:
            raise ValueError(
                f"Labels {unknown[:10]} are not in `class_names`. "
                f"Received: class_names={class_names!r}"
            )
        return np.array([index[v] for v in y.tolist()], dtype=np.int64), class_names
    raise TypeError(f"`y` must hold integer or string labels. Received: y of dtype {y.dtype}")


def _example_keys(x):
    if x.dtype.kind in "USO":
        return [str(v).encode("utf-8") for v in x.tolist()]
    return [np.ascontiguousarray(v).tobytes() for v in x]


def _check_array_images(x):
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "`x` must be images (n, height, width, channels) with 1, 3 or 4 channels, "
            f"(n, height, width) for grayscale, or a list of strings. Received: x of shape "
            f"{x.shape}"
        )
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise TypeError(
            "Image arrays must be uint8, or floats holding raw pixels in [0, 255]. "
            f"Received: x of dtype {x.dtype}"
        )
    return x


def splits_from_indexed(x, y, class_names, *, image_size, batch_size, validation_split, test_split,
                  seed, shuffle, augmentation, report=None):
    """Splits and pipelines for in-memory examples (images or strings)."""
    text = x.dtype.kind in "USO"
    size = None if image_size is None else check_image_size(image_size)
    if text:
        if image_size is not None or augmentation is not None:
            raise ValueError(
                "`image_size` and `augmentation` are for images; `x` holds strings. "
                f"Received: image_size={image_size!r}, augmentation={augmentation!r}"
            )
        x = x.astype(str)
    else:
        x = _check_array_images(x)
    augment = augmentation_layer(augmentation, seed)
    labels, class_names = _encode_labels(y, class_names, len(x))
    per_class = np.bincount(labels, minlength=len(class_names)).tolist()
    if report is not None:
        report.class_counts = dict(zip(class_names, per_class))
    check_class_sizes(per_class, class_names, validation_split, test_split, "the data")
    split = assign_splits(_example_keys(x), labels, len(class_names), validation_split,
                           test_split, seed)
    requested = [s for s, f in split_fractions(validation_split, test_split).items() if f > 0]
    counts = split_counts(split, labels, len(class_names), requested)
    warn_missing(counts, class_names)

    x_all = tf.constant(x)
    y_all = tf.constant(labels.astype(np.int32))

    def transform(xb):
        if text:
            return xb
        return tf.cast(tf_resize(tf_to_rgb(xb), size), tf.float32)

    datasets, indices = {}, {}
    for s in requested:
        name = SPLITS[s]
        idx = np.flatnonzero(split == s)
        indices[name] = idx
        training = s == 0
        ds = tf.data.Dataset.from_tensor_slices(idx)
        if training and shuffle:
            ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
        if batch_size is not None:
            ds = ds.batch(batch_size)
        ds = ds.map(lambda i: (transform(tf.gather(x_all, i)), tf.gather(y_all, i)),
                    num_parallel_calls=tf.data.AUTOTUNE)
        if training and augment is not None:
            ds = ds.map(lambda xb, yb: (augment(xb, training=True), yb),
                        num_parallel_calls=tf.data.AUTOTUNE)
        datasets[name] = ds.prefetch(tf.data.AUTOTUNE)
    return DataSplits(
        train=datasets["train"],
        validation=datasets.get("validation"),
        test=datasets.get("test"),
        class_names=list(class_names),
        counts=counts,
        indices=indices,
        report=report,
    )


def dataset_from_arrays(
    x,
    y,
    *,
    image_size=None,
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    class_names=None,
    shuffle=True,
    augmentation=None,
):
    """Splits and pipelines for images or texts held in memory.

    Splits are stratified per class and seeded like `image_dataset_from_folder`,
    keyed by each example's content: duplicates land in the same split, and
    appending examples moves no other example.

    Args:
        x: images ``(n, h, w, channels)`` with 1, 3 or 4 channels (uint8, or
            floats holding raw pixels in [0, 255]) or ``(n, h, w)``
            grayscale; or a list/array of strings.
        y: ``n`` labels: integers in [0, num_classes) or strings (class
            names; sorted to give the label order unless `class_names` is
            given).
        image_size: resize images to ``(height, width)`` (or an integer);
            `None` keeps their size.
        batch_size, validation_split, test_split, seed, shuffle,
        augmentation: as for `image_dataset_from_folder`.
        class_names: the class names in label order. Default: the sorted
            string labels, or ``["0", "1", ...]`` for integer labels.

    Returns:
        A `DataSplits` (with ``indices``: the rows of each split). Images
        come out as float32 RGB in [0, 255]; texts as strings.

    Example:

    >>> texts = ["good", "great", "fine", "nice", "super",
    ...          "bad", "awful", "poor", "sad", "ugly"]
    >>> labels = ["pos"] * 5 + ["neg"] * 5
    >>> data = dataset_from_arrays(texts, labels, batch_size=4)
    >>> data.class_names, data.counts
    (['neg', 'pos'], {'train': [4, 4], 'validation': [1, 1]})
    """
    check_split_args(validation_split, test_split, seed, batch_size)
    class_names = check_class_names(class_names)
    x = np.asarray(x)
    return splits_from_indexed(x, y, class_names, image_size=image_size, batch_size=batch_size,
                         validation_split=validation_split, test_split=test_split, seed=seed,
                         shuffle=shuffle, augmentation=augmentation)
