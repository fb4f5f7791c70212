"""Splits, reports and the shared finishing of every loader's `tf.data` pipelines."""

import collections
import dataclasses
import hashlib
import logging
import math
import os
import warnings

import numpy as np
import tensorflow as tf

from tftransfer.caching import CACHE_MODES
from tftransfer.caching import cache_options
from tftransfer.data.augment import augmentation as make_augmentation
from tftransfer.data.class_weights import compute_class_weight
from tftransfer.errors import BadDataError

logger = logging.getLogger(__name__)


SPLITS = ("train", "validation", "test")


_POLICIES = ("skip", "error")




SHUFFLE_BUFFER_BYTES = 256 << 20  # shuffle buffer after a cache of decoded images


_MAX_LISTED = 20  # bad files listed in an error message


class BadFile(collections.namedtuple("BadFile", ["path", "reason"])):
    """A file (or ``"file:line"`` of a text file) left out, and why."""

    __slots__ = ()

    def __str__(self):
        return f"{self.path}: {self.reason}"


@dataclasses.dataclass
class ScanReport:
    """What a loader read, skipped and ignored.

    Attributes:
        source: the directory or file that was read.
        class_counts: usable images (rows) per class, over all splits.
        bad_files: `BadFile` ``(path, reason)`` of every file or row left
            out: empty, truncated, corrupt, not an image, animated,
            unreadable, too large; for text, rows without text or label.
        ignored: hidden files and files without an image extension
            (``.DS_Store``, ``notes.txt``), and files outside the class
            folders: not data, left out silently.
    """

    source: str
    class_counts: dict
    bad_files: list
    ignored: list

    def __str__(self):
        total = sum(self.class_counts.values())
        lines = [f"{self.source}: {total} usable in {len(self.class_counts)} classes "
                 f"({', '.join(f'{k}: {v}' for k, v in self.class_counts.items())}); "
                 f"{len(self.bad_files)} skipped, {len(self.ignored)} ignored"]
        lines += [f"  skipped {bad}" for bad in self.bad_files]
        return "\n".join(lines)


@dataclasses.dataclass
class DataSplits:
    """The pipelines of a data set and what is known about them.

    Attributes:
        train: `tf.data.Dataset` of ``(inputs, labels)`` batches, shuffled
            (and augmented, if asked) each epoch.
        validation: the validation pipeline, or `None`.
        test: the test pipeline, or `None`.
        class_names: the class names, in label order.
        counts: ``{split: [examples per class]}``, or `None` where unknown
            (TFDS).
        files: ``{split: [paths]}`` for a folder, in pipeline order before
            shuffling; else `None`.
        indices: ``{split: row numbers}`` for arrays and text; else `None`.
        report: a `ScanReport` for folders and text files; else `None`.
    """

    train: object
    validation: object
    test: object
    class_names: list
    counts: dict = None
    files: dict = None
    indices: dict = None
    report: ScanReport = None

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def input_shape(self):
        """The shape of one example's input, e.g. ``(224, 224, 3)`` (from the
        training pipeline's element spec; None where it is not known, e.g.
        for strings)."""
        spec = getattr(self.train, "element_spec", None)
        if not isinstance(spec, tuple) or not spec:
            return None
        shape = spec[0].shape
        if shape.rank == 4:  # batches of images
            dims = tuple(shape.as_list()[1:])
        elif shape.rank == 3 and shape[-1] == 3:  # unbatched RGB images (batch_size=None)
            dims = tuple(shape.as_list())
        else:
            return None
        return dims if all(d is not None for d in dims) else None

    def class_weight(self, mode="balanced"):
        """`compute_class_weight` of the training split's counts, for
        ``fit(..., class_weight=...)``."""
        if self.counts is None:
            raise ValueError(
                "The per-class counts of this data are unknown (TFDS data are not "
                "counted). Pass the training labels to `compute_class_weight(labels)`. "
                "Received: counts=None"
            )
        return compute_class_weight(counts=self.counts["train"], mode=mode)

    def __str__(self):
        splits = ", ".join(
            f"{split}: {sum(self.counts[split])}" if self.counts else split
            for split in SPLITS if getattr(self, split) is not None
        )
        return f"{self.num_classes} classes ({', '.join(self.class_names)}); {splits}"


def check_split_args(validation_split, test_split, seed, batch_size):
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"`{name}` must be a fraction in [0, 1). Received: {name}={value!r}")
    if validation_split + test_split >= 1:
        raise ValueError(
            "`validation_split` + `test_split` must leave a training split (sum below 1). "
            f"Received: validation_split={validation_split!r}, test_split={test_split!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an integer. Received: seed={seed!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(
            f"`batch_size` must be a positive integer or None. Received: batch_size={batch_size!r}"
        )


def check_policy(value, name):
    if value not in _POLICIES:
        raise ValueError(f"`{name}` must be one of {_POLICIES}. Received: {name}={value!r}")


def check_class_names(class_names):
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
        raise TypeError(
            f"`class_names` must be a list of strings. Received: class_names={class_names!r}"
        )
    class_names = list(class_names)
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"`class_names` must be unique. Received: class_names={class_names!r}")
    return class_names


def augmentation_layer(augmentation, seed):
    if augmentation is None:
        return None
    if isinstance(augmentation, str):
        return make_augmentation(augmentation, seed=seed)
    if callable(augmentation):
        return augmentation
    raise TypeError(
        "`augmentation` must be None, a preset name ('default', 'light') or a Keras "
        f"layer. Received: augmentation={augmentation!r}"
    )


def _hash_unit(seed, key):
    """A number in [0, 1) from (seed, key bytes), the same on every machine."""
    digest = hashlib.sha256(b"%d\0" % seed + key).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_fractions(validation_split, test_split):
    return {0: 1.0 - validation_split - test_split, 1: validation_split, 2: test_split}


def check_class_sizes(counts, class_names, validation_split, test_split, where,
                       skipped=None):
    """Empty classes, a single class and classes too small for the split are errors."""
    skipped = skipped or {}
    listing = ", ".join(
        f"{name!r}: {n}" + (f" ({skipped[name]} bad files skipped)" if skipped.get(name) else "")
        for name, n in zip(class_names, counts)
    )
    empty = [name for name, n in zip(class_names, counts) if n == 0]
    if empty:
        raise ValueError(
            f"Classes without usable images in {where}: {', '.join(map(repr, empty))}. "
            f"Images per class: {listing}. Add images, or leave them out with "
            "`class_names=[...]`. Received: "
            f"class_names={list(class_names)!r}"
        )
    if len(class_names) < 2:
        raise ValueError(
            f"A classifier needs at least 2 classes; {where} has {len(class_names)}"
            f"{f' ({listing})' if listing else ''}. "
            "Put each class in its own sub-folder (or give labels of at least 2 "
            f"classes). Received: class_names={list(class_names)!r}"
        )
    fractions = [f for f in split_fractions(validation_split, test_split).values() if f > 0]
    needed = max(math.ceil(1.0 / f - 1e-9) for f in fractions)
    small = [name for name, n in zip(class_names, counts) if n < needed]
    if small:
        raise ValueError(
            f"Classes too small for validation_split={validation_split} and "
            f"test_split={test_split}: {', '.join(map(repr, small))}. Each class needs "
            f"at least {needed} images so that every split can get its share. Images per "
            f"class: {listing}. Add images, lower the splits, or leave the classes out "
            f"with `class_names=[...]`. Received: validation_split={validation_split!r}, "
            f"test_split={test_split!r}"
        )


def assign_splits(keys, labels, num_classes, validation_split, test_split, seed):
    """Split index (0 train, 1 validation, 2 test) of each key, by hash.

    Validation takes the hashes in [0, validation_split), test those in
    [1 - test_split, 1), so changing one fraction leaves the other split
    alone. Then every class gets at least one example in each requested split
    (moving the one whose hash is nearest to that split's interval).
    """
    units = np.array([_hash_unit(seed, key) for key in keys], dtype=np.float64)
    split = np.zeros(len(keys), dtype=np.int64)
    split[units < validation_split] = 1
    if test_split > 0:
        split[units >= 1.0 - test_split] = 2
    intervals = {0: (validation_split, 1.0 - test_split), 1: (0.0, validation_split),
                 2: (1.0 - test_split, 1.0)}
    requested = [s for s, f in split_fractions(validation_split, test_split).items() if f > 0]
    labels = np.asarray(labels)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        for s in requested:
            if np.any(split[members] == s):
                continue
            donor = max((int(np.sum(split[members] == d)), d) for d in requested if d != s)[1]
            candidates = members[split[members] == donor]
            if len(candidates) < 2:
                continue  # too small: _check_class_sizes stops this earlier
            low, high = intervals[s]
            u = units[candidates]
            distance = np.maximum(np.maximum(low - u, 0.0), u - high)
            split[candidates[int(np.argmin(distance))]] = s
    return split


def split_counts(split, labels, num_classes, requested):
    labels = np.asarray(labels)
    return {
        SPLITS[s]: np.bincount(labels[split == s], minlength=num_classes).tolist()
        for s in requested
    }


def warn_missing(counts, class_names):
    for name, per_class in counts.items():
        if name == "train":
            continue
        missing = [c for c, n in zip(class_names, per_class) if n == 0]
        if missing:
            logger.warning("No %s images of class(es) %s.", name, ", ".join(missing))


# Strings that mean "no cache" rather than a directory (tftransfer 0.1's form).
_NO_CACHE_WORDS = ("none", "false", "no", "off", "")


def loader_cache_options(cache, cache_dir=None, cache_memory_limit=None):
    """The data loaders' cache arguments, in the shared vocabulary of
    `tftransfer.caching`; checked before any file is read. A directory given
    as `cache` (tftransfer 0.1) still works, as ``cache="disk"`` there."""
    if isinstance(cache, str) and cache.strip().lower() in _NO_CACHE_WORDS:
        raise ValueError(
            f"`cache` is True/'memory', 'auto', 'disk', or False/None for no cache; "
            f"{cache!r} reads as a word for no cache, not as the directory it would name. "
            f"Pass cache=None (or False) for no cache. Received: cache={cache!r}")
    if isinstance(cache, os.PathLike) or (
            isinstance(cache, str) and cache not in CACHE_MODES):
        warnings.warn(
            "Passing a directory as `cache` is deprecated: pass cache='disk', "
            f"cache_dir={os.fspath(cache)!r}.", DeprecationWarning, stacklevel=3)
        os.makedirs(cache, exist_ok=True)
        cache, cache_dir = "disk", cache
    options = cache_options(cache, cache_dir, cache_memory_limit)
    if options.mode == "disk" and options.directory is None:
        raise ValueError(
            "cache='disk' needs `cache_dir`: a data loader's cache files outlive the call, "
            "so they go where you choose (an existing directory). "
            f"Received: cache={cache!r}, cache_dir=None")
    return options


def resolve_cache(options, num_bytes):
    """Where a pipeline caches its decoded images: "memory", a directory for
    cache files, or None (no cache), by the rule of `tftransfer.caching`."""
    if options.mode is None:
        return None
    if options.mode == "memory":
        return "memory"
    if options.mode == "disk":
        return options.directory
    if num_bytes is None:
        return None  # unknown size: no risk of filling the memory
    if options.fits_in_memory(num_bytes):
        return "memory"
    if options.directory is not None:
        return options.directory
    logger.info(
        "Not caching the decoded images (%.1f GB is over the cache's memory limit of "
        "%.1f GB); pass cache_dir='/some/directory' to cache them on disk.",
        num_bytes / 1e9, options.memory_limit / 1e9,
    )
    return None


def _cache(ds, cache, name):
    if cache is None:
        return ds
    if cache == "memory":
        return ds.cache()
    return ds.cache(os.path.join(cache, name))


def finish_pipeline(ds, *, training, shuffle, seed, batch_size, cache, cache_name, image_bytes,
            augment, cardinality):
    """cache -> shuffle -> batch -> float32 -> augment -> prefetch."""
    ds = _cache(ds, cache, cache_name)
    if training and shuffle and cache is not None:
        # Elements after a cache repeat epoch 1's order; re-shuffle them.
        buffer = max(batch_size or 1, SHUFFLE_BUFFER_BYTES // max(1, image_bytes))
        ds = ds.shuffle(min(cardinality, buffer), seed=seed + 1, reshuffle_each_iteration=True)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    if ds.element_spec[0].dtype != tf.float32:
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def bad_data_error(bad, what, policy_name):
    shown = "\n".join(f"  {b}" for b in bad[:_MAX_LISTED])
    more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    return BadDataError(
        f"{len(bad)} bad {what}:\n{shown}{more}\n(all in `error.bad_files`). Fix or remove "
        f"them, or pass {policy_name}='skip' to leave them out. "
        f"Received: {policy_name}='error'",
        bad,
    )
