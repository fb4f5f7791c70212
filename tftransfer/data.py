"""Data in: image folders, TFDS, arrays and text, as `tf.data` pipelines.

Every loader returns a `DataSplits`: the ``train``, ``validation`` and
``test`` pipelines (batched, prefetched; images as float32 raw RGB pixels in
[0, 255] and int32 labels, the input of every tftransfer model), the class
names, the per-class counts of each split and, for files, a report of what
was skipped and why.

Decisions, and why:

- **Splits by hash, stratified per class.** Each file (each row of an array
  or text file) goes to a split by a hash of ``(seed, its relative path)``
  (of its content for arrays and text), compared with the split fractions,
  class by class. A file's split depends on nothing else, so adding images
  never moves another image between splits, and the validation set of last
  month stays out of this month's training set. The per-class proportions
  follow the fractions up to sampling noise; a class that the hash leaves
  without an image in some split gets one moved in (the one whose hash is
  nearest), so every class has at least one training and one validation
  image. Only such a top-up can change when images are added.
- **One decoder, Pillow, everywhere.** `tf.image.decode_image` does not read
  WebP (`image_dataset_from_directory` skips ``.webp`` silently), stops `fit`
  with `InvalidArgumentError` at a truncated or non-image file, and decodes
  alpha, CMYK and 16-bit images differently from the scanner. Pillow decodes
  in a `tf.numpy_function` (it releases the GIL, so the parallel `map` uses
  every core): measured on 300 JPEGs of 640x480 resized to 224x224 on 2
  cores, 273 images/s against 270 for `tf.io.decode_image`; decoded images
  are cached, so this is paid once. The scan before training decodes every
  file fully with the same code, so a file that passes it decodes in
  training. (`PIL.Image.verify` is not enough: it passes truncated JPEGs.)
  Only the JPEG, PNG, GIF, BMP and WebP decoders are used, whatever a file's
  extension (Pillow's EPS loader, for one, runs Ghostscript on the file); the
  EXIF orientation is applied, as browsers and photo viewers do.
- **Alpha is composited onto white** (``ALPHA_BACKGROUND``), in training and
  in `load_image` / `to_rgb`, which serving clients use to turn their images
  into the RGB pixels the exported signature takes.
- **Resizing** is bilinear, antialiased when shrinking (Pillow for files;
  `tf.image.resize(..., antialias=True)` for arrays and TFDS), without
  keeping the aspect ratio, like `keras.utils.image_dataset_from_directory`.
"""

import collections
import csv
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import unicodedata
from concurrent import futures

import keras
import numpy as np
import tensorflow as tf

from tftransfer.augment import augmentation as make_augmentation

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
"""File extensions (any case) the folder loader reads; other files are ignored."""

_PIL_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")

ALPHA_BACKGROUND = 255
"""Transparent pixels are composited onto this gray level (255: white)."""

SPLITS = ("train", "validation", "test")
_POLICIES = ("skip", "error")
_CACHE_MEMORY_FRACTION = 0.25  # cache="auto" caches in memory up to this share of the RAM
_SHUFFLE_BUFFER_BYTES = 256 << 20  # shuffle buffer after a cache of decoded images
_MAX_LISTED = 20  # bad files listed in an error message


# ----------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------

class BadFile(collections.namedtuple("BadFile", ["path", "reason"])):
    """A file (or ``"file:line"`` of a text file) left out, and why."""

    __slots__ = ()

    def __str__(self):
        return f"{self.path}: {self.reason}"


class BadDataError(ValueError):
    """Bad files or rows were found and ``on_bad_file="error"`` (or
    ``on_bad_row="error"``) was asked for. ``error.bad_files`` lists them."""

    def __init__(self, message, bad_files):
        super().__init__(message)
        self.bad_files = list(bad_files)


class DatasetUnavailableError(ValueError):
    """A TFDS data set is neither on disk nor downloadable."""


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


# ----------------------------------------------------------------------------
# Decoding: one code path for the scan, the pipeline and serving clients
# ----------------------------------------------------------------------------

class _BadImage(Exception):
    """Carries the reason a file cannot be used."""


def _composite(rgba):
    """Composites RGBA uint8 onto ALPHA_BACKGROUND with integer rounding."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    out = (rgb * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _pil_to_rgb(image):
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit gray (PNG): keep the high byte, as Pillow does for 16-bit RGB.
        gray = (np.clip(np.asarray(image), 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        return _composite(np.asarray(image.convert("RGBA")))
    if mode == "RGB":
        return np.array(image)
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.array(image.convert("RGB"))
    raise _BadImage(f"unsupported pixel format: mode {mode!r}")


def to_rgb(image):
    """Turns an image into RGB pixels the way tftransfer's loaders do.

    Grayscale is repeated into three channels, palette and CMYK images are
    converted, 16-bit images keep their high byte, and transparent pixels are
    composited onto white (`ALPHA_BACKGROUND`). Use it (or `load_image`) in a
    client of an exported model, whose signature takes RGB pixels, so that
    images with alpha look as they did in training.

    Args:
        image: a `PIL.Image.Image`, or an array ``(h, w)``, ``(h, w, 1)``,
            ``(h, w, 3)`` or ``(h, w, 4)`` of uint8, uint16 or floats in
            [0, 255].

    Returns:
        A uint8 array ``(h, w, 3)``.

    Example:

    >>> import numpy as np
    >>> half_transparent_black = np.array([[[0, 0, 0, 128]]], dtype="uint8")
    >>> to_rgb(half_transparent_black).tolist()
    [[[127, 127, 127]]]
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        try:
            return _pil_to_rgb(image)
        except _BadImage as err:
            raise ValueError(f"Cannot convert the image to RGB: {err}. "
                             f"Received: image={image!r}") from None
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "`image` must be a PIL image or an array (h, w), (h, w, 1), (h, w, 3) or "
            f"(h, w, 4). Received: image of shape {array.shape}"
        )
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype.kind == "f":
        array = np.clip(array, 0.0, 255.0)
        if array.shape[-1] == 4:
            alpha = array[..., 3:4] / 255.0
            array = array[..., :3] * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
        array = np.round(array).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise TypeError(
            "`image` must hold uint8, uint16 or float pixels. "
            f"Received: image of dtype {array.dtype}"
        )
    if array.shape[-1] == 4:
        array = _composite(array)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


def _decode(fileobj):
    """Fully decodes an open image file to RGB; raises _BadImage with the reason.

    Only the formats of IMAGE_EXTENSIONS are tried (whatever the file's
    extension): Pillow's other plugins include formats such as EPS, whose
    loader runs Ghostscript on the file. The EXIF orientation is applied, as
    browsers and photo viewers do. Of a multi-picture JPEG (MPO, from some
    cameras) the primary image is used; other images with several frames are
    animations, and left out.
    """
    from PIL import Image
    from PIL import ImageOps
    from PIL import UnidentifiedImageError

    try:
        with Image.open(fileobj, formats=_PIL_FORMATS) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and image.format != "MPO":
                raise _BadImage(
                    f"animated image ({frames} frames); save the frame to use as a still image"
                )
            image.load()
            return _pil_to_rgb(ImageOps.exif_transpose(image))
    except _BadImage:
        raise
    except Image.DecompressionBombError as err:
        raise _BadImage(f"too large: {err}") from None
    except UnidentifiedImageError:
        raise _BadImage("not an image: the content is not JPEG, PNG, GIF, BMP or WebP") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds on bad data
        message = str(err) or type(err).__name__
        kind = "truncated" if "truncated" in message.lower() else "corrupt"
        raise _BadImage(f"{kind}: {message}") from None


def _read_image(path):
    """Reads and fully decodes `path` to an RGB array; raises _BadImage."""
    try:
        if os.path.getsize(path) == 0:
            raise _BadImage("empty file (0 bytes)")
        with open(path, "rb") as f:
            return _decode(f)
    except PermissionError:
        raise _BadImage("unreadable: permission denied") from None
    except OSError as err:
        raise _BadImage(f"unreadable: {err.strerror or err}") from None


def _resize(rgb, size):
    if rgb.shape[:2] == tuple(size):
        return rgb
    from PIL import Image

    resized = Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def load_image(path, *, image_size=None):
    """Reads an image file the way `image_dataset_from_folder` does.

    The same decoder, RGB conversion (`to_rgb`: alpha composited onto white)
    and resizing as in training, so a client of an exported model gets the
    pixels the model was trained on.

    Args:
        path: path of a JPEG, PNG, GIF (one frame), BMP or WebP file.
        image_size: ``(height, width)`` or an integer for a square; `None`
            keeps the size.

    Returns:
        A uint8 array ``(height, width, 3)``.

    Raises:
        ValueError: the file cannot be used (the message says why).

    Example:

    >>> import tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "logo.png")
    >>> Image.new("LA", (40, 20), (0, 0)).save(path)  # transparent black
    >>> image = load_image(path, image_size=16)
    >>> image.shape, int(image.min())
    ((16, 16, 3), 255)
    """
    size = None if image_size is None else _check_image_size(image_size)
    try:
        rgb = _read_image(os.fspath(path))
    except _BadImage as err:
        raise ValueError(
            f"Cannot use {os.fspath(path)!r}: {err}. Received: path={path!r}"
        ) from None
    return rgb if size is None else _resize(rgb, size)


# ----------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------

def _check_image_size(image_size):
    size = image_size
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(
            "`image_size` must be a positive integer or a pair (height, width) of "
            f"them, e.g. (224, 224). Received: image_size={image_size!r}"
        )
    return tuple(size)


def _check_split_args(validation_split, test_split, seed, batch_size):
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


def _check_policy(value, name):
    if value not in _POLICIES:
        raise ValueError(f"`{name}` must be one of {_POLICIES}. Received: {name}={value!r}")


def _check_class_names(class_names):
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


def _augmentation_layer(augmentation, seed):
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


# ----------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------

def _hash_unit(seed, key):
    """A number in [0, 1) from (seed, key bytes), the same on every machine."""
    digest = hashlib.sha256(b"%d\0" % seed + key).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _fractions(validation_split, test_split):
    return {0: 1.0 - validation_split - test_split, 1: validation_split, 2: test_split}


def _check_class_sizes(counts, class_names, validation_split, test_split, where,
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
    fractions = [f for f in _fractions(validation_split, test_split).values() if f > 0]
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


def _assign_splits(keys, labels, num_classes, validation_split, test_split, seed):
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
    requested = [s for s, f in _fractions(validation_split, test_split).items() if f > 0]
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


def _split_counts(split, labels, num_classes, requested):
    labels = np.asarray(labels)
    return {
        SPLITS[s]: np.bincount(labels[split == s], minlength=num_classes).tolist()
        for s in requested
    }


def _warn_missing(counts, class_names):
    for name, per_class in counts.items():
        if name == "train":
            continue
        missing = [c for c, n in zip(class_names, per_class) if n == 0]
        if missing:
            logger.warning("No %s images of class(es) %s.", name, ", ".join(missing))


# ----------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------

def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _resolve_cache(cache, num_bytes):
    """Returns "memory", None, or a directory for cache files."""
    if cache is True:
        return "memory"
    if cache is False or cache is None:
        return None
    if cache == "auto":
        if num_bytes is None:
            return None  # unknown size: no risk of filling the memory
        if num_bytes <= _CACHE_MEMORY_FRACTION * _memory_bytes():
            return "memory"
        logger.info(
            "Not caching the decoded images (%.1f GB is over a quarter of the memory); "
            "pass cache='/some/directory' to cache them on disk.", num_bytes / 1e9,
        )
        return None
    if isinstance(cache, (str, os.PathLike)):
        os.makedirs(cache, exist_ok=True)
        return os.fspath(cache)
    raise ValueError(
        "`cache` must be 'auto', True (memory), False, or a directory for cache files. "
        f"Received: cache={cache!r}"
    )


def _cache(ds, cache, name):
    if cache is None:
        return ds
    if cache == "memory":
        return ds.cache()
    return ds.cache(os.path.join(cache, name))


def _finish(ds, *, training, shuffle, seed, batch_size, cache, cache_name, image_bytes,
            augment, cardinality):
    """cache -> shuffle -> batch -> float32 -> augment -> prefetch."""
    ds = _cache(ds, cache, cache_name)
    if training and shuffle and cache is not None:
        # Elements after a cache repeat epoch 1's order; re-shuffle them.
        buffer = max(batch_size or 1, _SHUFFLE_BUFFER_BYTES // max(1, image_bytes))
        ds = ds.shuffle(min(cardinality, buffer), seed=seed + 1, reshuffle_each_iteration=True)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _tf_to_rgb(images):
    """`to_rgb` in TensorFlow, for uint8 or float images with 1, 3 or 4 channels."""
    channels = images.shape[-1]
    if channels == 3:
        return images
    if channels == 1:
        return tf.repeat(images, 3, axis=-1)
    if images.dtype == tf.uint8:
        rgb = tf.cast(images[..., :3], tf.int32)
        alpha = tf.cast(images[..., 3:], tf.int32)
        out = (rgb * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127) // 255
        return tf.cast(out, tf.uint8)
    images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)
    alpha = images[..., 3:] / 255.0
    return images[..., :3] * alpha + ALPHA_BACKGROUND * (1.0 - alpha)


def _tf_resize(images, size):
    """Bilinear, antialiased resize; uint8 in, uint8 out (rounded)."""
    if size is None:
        return images
    resized = tf.image.resize(images, size, method="bilinear", antialias=True)
    if images.dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    return resized


# ----------------------------------------------------------------------------
# Image folders
# ----------------------------------------------------------------------------

def _hidden(name):
    return name.startswith(".")


def _list_folder(directory, class_names):
    """Class names, [(path, relative path, label)], ignored files."""
    ignored = []
    entries = sorted(os.scandir(directory), key=lambda e: e.name)
    folders = [e.name for e in entries if not _hidden(e.name) and e.is_dir()]
    ignored += [e.path for e in entries if not e.is_dir()]
    stray = [path for path in ignored if path.lower().endswith(IMAGE_EXTENSIONS)]
    if stray:
        logger.info("%d image files lie directly in %s, outside the class folders: ignored.",
                    len(stray), directory)
    if class_names is None:
        class_names = folders
    else:
        missing = [c for c in class_names if c not in folders]
        if missing:
            raise ValueError(
                f"No sub-folder for class(es) {', '.join(map(repr, missing))} in "
                f"{directory!r}; its sub-folders are {folders}. "
                f"Received: class_names={class_names!r}"
            )
    if not class_names:
        raise ValueError(
            f"No class sub-folders in {directory!r}. Put the images of each class in "
            f"a sub-folder named after it (flowers/roses/1.jpg, flowers/tulips/2.jpg). "
            f"Received: directory={directory!r}"
        )
    files = []
    for label, name in enumerate(class_names):
        root = os.path.join(directory, name)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            for filename in sorted(filenames):
                path = os.path.join(dirpath, filename)
                if _hidden(filename) or not filename.lower().endswith(IMAGE_EXTENSIONS):
                    ignored.append(path)
                    continue
                relative = os.path.relpath(path, directory).replace(os.sep, "/")
                files.append((path, unicodedata.normalize("NFC", relative), label))
    for path in ignored:
        logger.debug("Ignoring %s (hidden, not an image file, or outside the class folders)",
                     path)
    return class_names, files, ignored


def _check_file(path):
    try:
        _read_image(path)
    except _BadImage as err:
        return str(err)
    return None


def _scan(paths, verbose):
    """Decodes every file fully; returns the reason for each bad one (or None)."""
    bar = keras.utils.Progbar(len(paths), unit_name="file") if verbose and paths else None
    reasons = []
    workers = min(32, (os.cpu_count() or 1) + 2)
    with futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for i, reason in enumerate(pool.map(_check_file, paths), start=1):
            reasons.append(reason)
            if bar is not None:
                bar.update(i, finalize=i == len(paths))
    return reasons


def _bad_data_error(bad, what, policy_name):
    shown = "\n".join(f"  {b}" for b in bad[:_MAX_LISTED])
    more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    return BadDataError(
        f"{len(bad)} bad {what}:\n{shown}{more}\n(all in `error.bad_files`). Fix or remove "
        f"them, or pass {policy_name}='skip' to leave them out. "
        f"Received: {policy_name}='error'",
        bad,
    )


def _file_decoder(size):
    def decode(path):
        path = os.fsdecode(path)
        try:
            return _resize(_read_image(path), size)
        except _BadImage as err:
            logger.error(
                "%s passed the scan but cannot be decoded now (%s): changed on disk? "
                "A gray image stands in for it.", path, err,
            )
            return np.full((*size, 3), 128, np.uint8)

    def decode_tf(path, label):
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (*size, 3)), label

    return decode_tf


def image_dataset_from_folder(
    directory,
    *,
    image_size,
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    class_names=None,
    on_bad_file="skip",
    shuffle=True,
    cache="auto",
    augmentation=None,
    verbose=1,
):
    """Image classification data from a folder with one sub-folder per class.

    ```
    flowers/
      daisy/   001.jpg  002.png  more/003.webp ...
      roses/   ...
    ```

    Before building the pipelines every image is decoded once (with a
    progress bar when `verbose`): empty, truncated and corrupt files,
    non-images with an image extension, animated images, unreadable files and
    images too large to decode are skipped and reported (each with its
    reason, in the log and in ``result.report.bad_files``), or raise a
    `BadDataError` listing them all with ``on_bad_file="error"``. Hidden files
    and files without an image extension (``.DS_Store``, ``notes.txt``) are
    ignored. A class without images, a single class, or a class too small
    for the splits is an error that lists the images per class.

    Any image -- grayscale, RGBA, palette, CMYK, 16-bit; JPEG, PNG, GIF, BMP,
    WebP -- becomes RGB (`to_rgb`: alpha composited onto white) resized to
    `image_size`.

    The splits are stratified per class and seeded, and stay stable when
    images are added: each image's split comes from a hash of `seed` and its
    path relative to `directory` (see the module's notes). The same `seed`
    gives the same splits and the same order of training batches.

    Args:
        directory: the folder holding one sub-folder per class; images may
            be nested deeper in a class folder.
        image_size: ``(height, width)``, or an integer for a square; use the
            backbone's input size.
        batch_size: examples per batch, or `None` for unbatched elements.
        validation_split: fraction of each class for validation, in [0, 1).
        test_split: fraction of each class for a test split.
        seed: seeds the splits, the shuffling and the augmentation.
        class_names: the class sub-folders to use, in label order. Default:
            all non-hidden sub-folders, sorted.
        on_bad_file: ``"skip"`` (report and leave out) or ``"error"``.
        shuffle: shuffle the training split each epoch.
        cache: keep decoded images: ``"auto"`` (in memory if they fill at
            most a quarter of it), `True` (memory), `False`, or a directory
            for cache files (named after a fingerprint of the files, so an
            edited folder never reads a stale cache). The cache fills during
            the first epoch.
        augmentation: `None`, a preset of `tftransfer.augmentation`
            (``"default"``, ``"light"``), or a Keras layer; applied to the
            training split only.
        verbose: 0 for silence, 1 for the scan's progress bar.

    Returns:
        A `DataSplits` with ``train``, ``validation`` and ``test`` (`None`
        for a split of size 0) pipelines of ``(float32 images (batch, h, w,
        3) in [0, 255], int32 labels)``, ``class_names``, ``counts``,
        ``files`` and ``report``.

    Example:

    >>> import tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for name, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
    ...     os.makedirs(os.path.join(root, name))
    ...     for i in range(5):
    ...         Image.new("RGB", (40, 30), color).save(f"{root}/{name}/{i}.png")
    >>> open(os.path.join(root, "red", "broken.jpg"), "w").close()
    >>> data = image_dataset_from_folder(root, image_size=32, verbose=0)
    >>> data.class_names, data.counts["train"], data.counts["validation"]
    (['blue', 'red'], [3, 3], [2, 2])
    >>> data.report.bad_files
    [BadFile(path='.../red/broken.jpg', reason='empty file (0 bytes)')]
    >>> images, labels = next(iter(data.train))
    >>> images.shape, images.dtype.name
    (TensorShape([6, 32, 32, 3]), 'float32')
    """
    size = _check_image_size(image_size)
    _check_split_args(validation_split, test_split, seed, batch_size)
    _check_policy(on_bad_file, "on_bad_file")
    class_names = _check_class_names(class_names)
    augment = _augmentation_layer(augmentation, seed)
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(
            f"`directory` must be an existing folder with one sub-folder per class. "
            f"Received: directory={directory!r}"
        )

    class_names, files, ignored = _list_folder(directory, class_names)
    reasons = _scan([path for path, _, _ in files], verbose)
    bad = [BadFile(path, reason) for (path, _, _), reason in zip(files, reasons) if reason]
    for item in bad:
        logger.warning("Skipping %s: %s", item.path, item.reason)
    if bad and on_bad_file == "error":
        raise _bad_data_error(bad, "image files", "on_bad_file")
    good = [f for f, reason in zip(files, reasons) if reason is None]
    labels = np.array([label for _, _, label in good], dtype=np.int64)
    per_class = np.bincount(labels, minlength=len(class_names)).tolist()
    report = ScanReport(
        source=directory,
        class_counts=dict(zip(class_names, per_class)),
        bad_files=bad,
        ignored=ignored,
    )
    if bad:
        logger.warning("Skipped %d of %d image files in %s (see `report.bad_files`).",
                       len(bad), len(files), directory)
    skipped = collections.Counter(
        class_names[label] for (_, _, label), reason in zip(files, reasons) if reason
    )
    _check_class_sizes(per_class, class_names, validation_split, test_split,
                       f"directory={directory!r}", skipped)

    split = _assign_splits([rel.encode() for _, rel, _ in good], labels, len(class_names),
                           validation_split, test_split, seed)
    requested = [s for s, f in _fractions(validation_split, test_split).items() if f > 0]
    counts = _split_counts(split, labels, len(class_names), requested)
    _warn_missing(counts, class_names)

    image_bytes = size[0] * size[1] * 3
    cache_dir = _resolve_cache(cache, image_bytes * len(good))
    fingerprint = hashlib.sha256(repr(size).encode())
    for path, rel, label in good:
        stat = os.stat(path)
        fingerprint.update(f"{rel}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    decode = _file_decoder(size)
    datasets, split_files = {}, {}
    for s in requested:
        name = SPLITS[s]
        chosen = [(path, label) for (path, _, label), sp in zip(good, split) if sp == s]
        split_files[name] = [path for path, _ in chosen]
        training = s == 0
        ds = tf.data.Dataset.from_tensor_slices(
            ([os.fsencode(p) for p, _ in chosen],
             np.array([label for _, label in chosen], np.int32))
        )
        if training and shuffle:
            ds = ds.shuffle(len(chosen), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        datasets[name] = _finish(
            ds, training=training, shuffle=shuffle, seed=seed, batch_size=batch_size,
            cache=cache_dir, cache_name=f"tftransfer-{name}-{fingerprint.hexdigest()[:16]}",
            image_bytes=image_bytes, augment=augment, cardinality=len(chosen),
        )
    logger.info("%s: %s", directory, ", ".join(f"{k}: {sum(v)}" for k, v in counts.items()))
    return DataSplits(
        train=datasets["train"],
        validation=datasets.get("validation"),
        test=datasets.get("test"),
        class_names=list(class_names),
        counts=counts,
        files=split_files,
        report=report,
    )


# ----------------------------------------------------------------------------
# Arrays and text
# ----------------------------------------------------------------------------

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


def _from_indexed(x, y, class_names, *, image_size, batch_size, validation_split, test_split,
                  seed, shuffle, augmentation, report=None):
    """Splits and pipelines for in-memory examples (images or strings)."""
    text = x.dtype.kind in "USO"
    size = None if image_size is None else _check_image_size(image_size)
    if text:
        if image_size is not None or augmentation is not None:
            raise ValueError(
                "`image_size` and `augmentation` are for images; `x` holds strings. "
                f"Received: image_size={image_size!r}, augmentation={augmentation!r}"
            )
        x = x.astype(str)
    else:
        x = _check_array_images(x)
    augment = _augmentation_layer(augmentation, seed)
    labels, class_names = _encode_labels(y, class_names, len(x))
    per_class = np.bincount(labels, minlength=len(class_names)).tolist()
    if report is not None:
        report.class_counts = dict(zip(class_names, per_class))
    _check_class_sizes(per_class, class_names, validation_split, test_split, "the data")
    split = _assign_splits(_example_keys(x), labels, len(class_names), validation_split,
                           test_split, seed)
    requested = [s for s, f in _fractions(validation_split, test_split).items() if f > 0]
    counts = _split_counts(split, labels, len(class_names), requested)
    _warn_missing(counts, class_names)

    x_all = tf.constant(x)
    y_all = tf.constant(labels.astype(np.int32))

    def transform(xb):
        if text:
            return xb
        return tf.cast(_tf_resize(_tf_to_rgb(xb), size), tf.float32)

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
    _check_split_args(validation_split, test_split, seed, batch_size)
    class_names = _check_class_names(class_names)
    x = np.asarray(x)
    return _from_indexed(x, y, class_names, image_size=image_size, batch_size=batch_size,
                         validation_split=validation_split, test_split=test_split, seed=seed,
                         shuffle=shuffle, augmentation=augmentation)


def _text_label(value):
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, (int, str)):
        return str(value).strip() or None
    return None


def _text_splits(rows, bad, path, on_bad_row, class_names, **kwargs):
    for item in bad:
        logger.warning("Skipping %s: %s", item.path, item.reason)
    if bad and on_bad_row == "error":
        raise _bad_data_error(bad, "rows", "on_bad_row")
    report = ScanReport(source=path, class_counts={}, bad_files=bad, ignored=[])
    texts = np.array([t for t, _ in rows], dtype=object)
    labels = np.array([label for _, label in rows], dtype=object)
    return _from_indexed(texts.astype(str) if len(texts) else np.array([], dtype=str),
                         labels.astype(str), class_names, image_size=None,
                         augmentation=None, report=report, **kwargs)


def _check_text_args(path, text_column, label_column, on_bad_row):
    _check_policy(on_bad_row, "on_bad_row")
    if not os.path.isfile(path):
        raise ValueError(f"`path` must be an existing file. Received: path={path!r}")
    for name, value in (("text_column", text_column), ("label_column", label_column)):
        if not isinstance(value, str):
            raise TypeError(
                f"`{name}` must be a column name (a string). Received: {name}={value!r}"
            )


def _row(path, line, text, label):
    """(row, None) or (None, BadFile)."""
    where = f"{path}:{line}"
    if not isinstance(text, str) or not text.strip():
        return None, BadFile(where, "no text")
    label = _text_label(label)
    if label is None:
        return None, BadFile(where, "no label (or not a string or integer)")
    return (text, label), None


def text_dataset_from_csv(
    path,
    *,
    text_column="text",
    label_column="label",
    delimiter=None,
    encoding="utf-8-sig",
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    class_names=None,
    on_bad_row="skip",
    shuffle=True,
):
    """Text classification data from a CSV (or TSV) file with a header row.

    Rows without text or label are skipped and reported in
    ``result.report.bad_files`` as ``"file:line"`` (or raise a `BadDataError`
    with ``on_bad_row="error"``). Splits are stratified per class and keyed by
    the text, so duplicates share a split.

    Args:
        path: the file; quoted fields may span lines.
        text_column, label_column: header names of the text and the label.
        delimiter: field separator. Default: tab for ``.tsv``, else comma.
        encoding: file encoding (the default also strips a byte-order mark).
        batch_size, validation_split, test_split, seed, class_names,
        shuffle: as for `dataset_from_arrays`.
        on_bad_row: ``"skip"`` or ``"error"``.

    Returns:
        A `DataSplits` of ``(string texts, int32 labels)`` batches.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "reviews.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("review,stars\\n" + "".join(
    ...         f'"text {i}, with a comma",{1 + i % 2}\\n' for i in range(20)) + ",2\\n")
    >>> data = text_dataset_from_csv(path, text_column="review", label_column="stars")
    >>> data.class_names, data.report.bad_files
    (['1', '2'], [BadFile(path='.../reviews.csv:22', reason='no text')])
    """
    path = os.fspath(path)
    _check_text_args(path, text_column, label_column, on_bad_row)
    _check_split_args(validation_split, test_split, seed, batch_size)
    class_names = _check_class_names(class_names)
    if delimiter is None:
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
    rows, bad = [], []
    with open(path, newline="", encoding=encoding) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        for name, value in (("text_column", text_column), ("label_column", label_column)):
            if value not in header:
                raise ValueError(
                    f"`{name}` {value!r} is not a column of {path!r}; its header is "
                    f"{header}. Received: {name}={value!r}"
                )
        line = reader.line_num
        for record in reader:
            row, problem = _row(path, line + 1, record.get(text_column),
                                record.get(label_column))
            line = reader.line_num
            if row:
                rows.append(row)
            else:
                bad.append(problem)
    return _text_splits(rows, bad, path, on_bad_row, class_names, batch_size=batch_size,
                        validation_split=validation_split, test_split=test_split, seed=seed,
                        shuffle=shuffle)


def text_dataset_from_jsonl(
    path,
    *,
    text_column="text",
    label_column="label",
    encoding="utf-8",
    batch_size=32,
    validation_split=0.2,
    test_split=0.0,
    seed=0,
    class_names=None,
    on_bad_row="skip",
    shuffle=True,
):
    """Text classification data from a JSON Lines file (one object a line).

    Like `text_dataset_from_csv`; lines that are not JSON objects, or lack
    the text or a string/integer label, are skipped and reported. Blank
    lines are ignored.

    Example:

    >>> import json, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "data.jsonl")
    >>> with open(path, "w") as f:
    ...     for i in range(10):
    ...         _ = f.write(json.dumps({"text": f"t{i}", "label": i % 2}) + "\\n")
    ...     _ = f.write("{not json\\n")
    >>> data = text_dataset_from_jsonl(path)
    >>> data.class_names, [str(b) for b in data.report.bad_files]
    (['0', '1'], ['...data.jsonl:11: not a JSON object: Expecting property name ...'])
    """
    path = os.fspath(path)
    _check_text_args(path, text_column, label_column, on_bad_row)
    _check_split_args(validation_split, test_split, seed, batch_size)
    class_names = _check_class_names(class_names)
    rows, bad = [], []
    with open(path, encoding=encoding) as f:
        for line, content in enumerate(f, start=1):
            if not content.strip():
                continue
            try:
                record = json.loads(content)
            except json.JSONDecodeError as err:
                bad.append(BadFile(f"{path}:{line}", f"not a JSON object: {err}"))
                continue
            if not isinstance(record, dict):
                bad.append(BadFile(f"{path}:{line}", "not a JSON object"))
                continue
            row, problem = _row(path, line, record.get(text_column), record.get(label_column))
            if row:
                rows.append(row)
            else:
                bad.append(problem)
    return _text_splits(rows, bad, path, on_bad_row, class_names, batch_size=batch_size,
                        validation_split=validation_split, test_split=test_split, seed=seed,
                        shuffle=shuffle)


# ----------------------------------------------------------------------------
# TFDS
# ----------------------------------------------------------------------------

def _tfds_builder(name, data_dir, download):
    import tensorflow_datasets as tfds

    if not isinstance(name, str):
        raise TypeError(f"`name` must be a TFDS dataset name. Received: name={name!r}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        base = name.split(":")[0].split("/")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"TFDS has no dataset {name!r}.{hint} See https://www.tensorflow.org/datasets/"
            f"catalog. Received: name={name!r}"
        ) from None
    if builder.is_prepared():
        return builder
    where = data_dir or "~/tensorflow_datasets"
    offline_help = (
        f"To use it offline, prepare it once on a machine with internet access "
        f"(`tfds.builder({name!r}).download_and_prepare()`) and copy its folder under "
        f"{where!r} (or pass `data_dir`)."
    )
    if not download:
        raise DatasetUnavailableError(
            f"TFDS dataset {name!r} is not in {where!r} and download=False. "
            f"{offline_help} Received: download=False"
        )
    try:
        builder.download_and_prepare()
    except ModuleNotFoundError as err:
        raise DatasetUnavailableError(
            f"TFDS could not prepare {name!r}: it needs the module {err.name!r} "
            f"(`pip install {err.name}`; tensorflow/datasets#11212). Received: name={name!r}"
        ) from err
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise DatasetUnavailableError(
            f"Could not download TFDS dataset {name!r} ({type(err).__name__}: {err}). "
            f"This machine may be offline. {offline_help} Received: name={name!r}"
        ) from err
    return builder


def dataset_from_tfds(
    name,
    *,
    image_size,
    split=("train[:80%]", "train[80%:]"),
    batch_size=32,
    seed=0,
    shuffle=True,
    cache="auto",
    augmentation=None,
    data_dir=None,
    download=True,
):
    """Image classification data from a TensorFlow Datasets name.

    The data come from ``data_dir`` (default ``~/tensorflow_datasets``);
    when they are not there they are downloaded once (``download=True``).
    Offline and without the data, a `DatasetUnavailableError` says how to
    bring them. Class names come from the dataset's `DatasetInfo`.

    Args:
        name: a TFDS name, e.g. ``"tf_flowers"`` or ``"cats_vs_dogs:4.0.1"``.
        image_size: ``(height, width)`` or an integer.
        split: TFDS split strings for train, validation and test: one string
            (train only), or a sequence of 1 to 3. TFDS slices them by
            position (not stratified), reproducibly for a dataset version.
        batch_size, seed, shuffle, cache, augmentation: as for
            `image_dataset_from_folder`.
        data_dir: where TFDS data live.
        download: download the data if they are not in `data_dir`.

    Returns:
        A `DataSplits` (``counts`` is `None`: TFDS does not store them).

    Example (downloads 218 MB the first time):

    >>> data = dataset_from_tfds("tf_flowers", image_size=224)  # doctest: +SKIP
    >>> data.class_names  # doctest: +SKIP
    ['dandelion', 'daisy', 'tulips', 'sunflowers', 'roses']
    """
    import tensorflow_datasets as tfds

    size = _check_image_size(image_size)
    _check_split_args(0.0, 0.0, seed, batch_size)
    splits = [split] if isinstance(split, str) else list(split)
    if not 1 <= len(splits) <= 3 or not all(isinstance(s, str) for s in splits):
        raise ValueError(
            "`split` must be a TFDS split string or a sequence of 1 to 3 of them "
            f"(train, validation, test). Received: split={split!r}"
        )
    augment = _augmentation_layer(augmentation, seed)
    builder = _tfds_builder(name, data_dir, download)
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) != 2:
        raise ValueError(
            f"TFDS dataset {name!r} has no (image, label) supervised keys. "
            f"Received: name={name!r}"
        )
    image_key, label_key = keys
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    channels = (getattr(image_feature, "shape", None) or (None,))[-1]
    if not isinstance(image_feature, tfds.features.Image) or channels not in (1, 3, 4):
        raise ValueError(
            f"TFDS dataset {name!r} is not an image classification dataset "
            f"({image_key!r} is {image_feature!r}). Received: name={name!r}"
        )
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise ValueError(
            f"TFDS dataset {name!r} has no class labels ({label_key!r} is "
            f"{label_feature!r}). Received: name={name!r}"
        )
    class_names = list(label_feature.names)
    image_bytes = size[0] * size[1] * 3

    def prepare(image, label):
        image = _tf_resize(_tf_to_rgb(image), size)
        return tf.ensure_shape(image, (*size, 3)), tf.cast(label, tf.int32)

    datasets = {}
    for s, split_name in zip(SPLITS, splits):
        training = s == "train"
        ds = builder.as_dataset(
            split=split_name, as_supervised=True, shuffle_files=training and shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
        try:
            num_examples = info.splits[split_name].num_examples
        except (KeyError, ValueError, TypeError):
            num_examples = 0
        cache_dir = _resolve_cache(cache, image_bytes * num_examples if num_examples else None)
        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        if training and shuffle and cache_dir is None:
            ds = ds.shuffle(max(1, min(num_examples, _SHUFFLE_BUFFER_BYTES // image_bytes)),
                            seed=seed, reshuffle_each_iteration=True)
        key = hashlib.sha256(f"{name}\0{split_name}\0{size}".encode()).hexdigest()[:16]
        datasets[s] = _finish(
            ds, training=training, shuffle=shuffle, seed=seed, batch_size=batch_size,
            cache=cache_dir, cache_name=f"tftransfer-tfds-{key}", image_bytes=image_bytes,
            augment=augment, cardinality=max(1, num_examples),
        )
    return DataSplits(
        train=datasets["train"],
        validation=datasets.get("validation"),
        test=datasets.get("test"),
        class_names=class_names,
    )


# ----------------------------------------------------------------------------
# Imbalance
# ----------------------------------------------------------------------------

def compute_class_weight(labels=None, *, counts=None, num_classes=None, mode="balanced"):
    """Class weights for ``fit(..., class_weight=...)`` on imbalanced data.

    ``"balanced"`` weighs class ``c`` by ``n_samples / (n_classes *
    count_c)`` (scikit-learn's formula): every class then contributes the
    same total weight to the loss, and a uniformly distributed data set gets
    weights of 1.

    Args:
        labels: integer labels ``(n,)``, or one-hot labels ``(n, classes)``.
        counts: instead of `labels`: examples per class, as a list (index =
            class) or a dict ``{class_index: count}``.
        num_classes: number of classes (for `labels`). Default: the largest
            label + 1.
        mode: ``"balanced"``.

    Returns:
        ``{class_index: weight}`` for every class.

    Example:

    >>> compute_class_weight([0, 0, 0, 1])
    {0: 0.6666666666666666, 1: 2.0}
    >>> compute_class_weight(counts=[90, 10])
    {0: 0.5555555555555556, 1: 5.0}
    """
    if mode != "balanced":
        raise ValueError(f"`mode` must be 'balanced'. Received: mode={mode!r}")
    if (labels is None) == (counts is None):
        raise ValueError(
            "Pass exactly one of `labels` and `counts`. "
            f"Received: labels={labels!r}, counts={counts!r}"
        )
    if labels is not None:
        y = np.asarray(labels)
        if y.ndim == 2:
            if not np.all(np.isin(y, (0, 1))) or not np.all(y.sum(axis=1) == 1):
                raise ValueError(
                    "2-D `labels` must be one-hot (a single 1 a row); multi-label data "
                    f"have no single class per example. Received: labels of shape {y.shape}"
                )
            num_classes = num_classes or y.shape[1]
            y = y.argmax(axis=1)
        if y.ndim != 1 or (y.size and (y.dtype.kind not in "iu" or y.min() < 0)):
            raise ValueError(
                "`labels` must be non-negative integer class indices (n,) or one-hot (n, "
                f"classes). Received: labels of shape {y.shape} and dtype {y.dtype}"
            )
        if num_classes is None:
            num_classes = int(y.max()) + 1 if y.size else 0
        counts = np.bincount(y, minlength=num_classes)
    elif isinstance(counts, dict):
        size = max(counts) + 1 if counts else 0
        counts = np.array([counts.get(i, 0) for i in range(size)])
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0):
        raise ValueError(
            "`counts` must be a non-empty list of example counts per class. "
            f"Received: counts={counts.tolist()!r}"
        )
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        raise ValueError(
            f"Class(es) {empty} have no examples, so no finite balanced weight. Drop them "
            f"from the data (and the class names). Received: counts={counts.tolist()!r}"
        )
    total, n = float(counts.sum()), len(counts)
    return {i: total / (n * float(c)) for i, c in enumerate(counts)}


@dataclasses.dataclass
class ClassificationReport:
    """Per-class precision, recall, F1 and support, and the confusion matrix.

    ``confusion_matrix[i, j]`` counts examples of true class ``i`` predicted
    as ``j``. A class never predicted has precision 0; a class without
    examples has recall 0.
    """

    class_names: list
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion_matrix: np.ndarray

    @property
    def accuracy(self):
        total = self.confusion_matrix.sum()
        return float(np.trace(self.confusion_matrix) / total) if total else 0.0

    @property
    def macro_f1(self):
        return float(np.mean(self.f1))

    def to_dict(self):
        """A JSON-serializable dict."""
        return {
            "classes": {
                name: {"precision": float(p), "recall": float(r), "f1": float(f),
                       "support": int(s)}
                for name, p, r, f, s in zip(self.class_names, self.precision, self.recall,
                                            self.f1, self.support)
            },
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "confusion_matrix": self.confusion_matrix.tolist(),
        }

    def __str__(self):
        width = max(12, *(len(n) for n in self.class_names))
        lines = [f"{'':>{width}}  precision  recall     f1  support"]
        for name, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1,
                                    self.support):
            lines.append(f"{name:>{width}}  {p:9.3f}  {r:6.3f}  {f:5.3f}  {s:7d}")
        lines.append(f"{'accuracy':>{width}}  {'':9}  {'':6}  {self.accuracy:5.3f}  "
                     f"{int(self.support.sum()):7d}")
        lines.append(f"{'macro avg':>{width}}  {np.mean(self.precision):9.3f}  "
                     f"{np.mean(self.recall):6.3f}  {self.macro_f1:5.3f}  "
                     f"{int(self.support.sum()):7d}")
        return "\n".join(lines)


def _batches(data):
    if isinstance(data, tf.data.Dataset):
        yield from data
        return
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        for start in range(0, len(y), 256):
            yield x[start:start + 256], y[start:start + 256]
        return
    raise TypeError(
        "`data` must be a tf.data.Dataset of (inputs, labels) batches or a tuple "
        f"(x, y). Received: data of type {type(data).__name__}"
    )


def classification_report(model, data, *, class_names=None):
    """Evaluates a single-label classifier class by class.

    The data are read once, predictions and labels batch by batch, so a
    shuffled dataset is fine.

    Args:
        model: a classifier returning one score (logit or probability) per
            class.
        data: a `tf.data.Dataset` of ``(inputs, labels)`` (or
            ``(inputs, labels, weights)``, weights ignored) batches, or a
            tuple ``(x, y)``; integer or one-hot labels.
        class_names: default: ``model.class_names``, else ``"0"``, ``"1"``...

    Returns:
        A `ClassificationReport`; ``print(report)`` shows a table.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((2,))  # a model whose scores are its inputs
    >>> model = keras.Model(inputs, keras.layers.Dense(
    ...     2, use_bias=False, kernel_initializer="identity")(inputs))
    >>> scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    >>> report = classification_report(model, (scores, [0, 1, 1, 1]),
    ...                                class_names=["cat", "dog"])
    >>> report.confusion_matrix.tolist()
    [[1, 0], [1, 2]]
    >>> print(report)
                  precision  recall     f1  support
             cat      0.500   1.000  0.667        1
             dog      1.000   0.667  0.800        3
        accuracy                     0.750        4
       macro avg      0.750   0.833  0.733        4
    """
    if getattr(model, "multi_label", False):
        raise TypeError(
            "`classification_report` is for single-label classifiers. "
            f"Received: model={model.name!r} with multi_label=True"
        )
    true, predicted = [], []
    for batch in _batches(data):
        x, y = batch[0], batch[1]
        scores = np.asarray(model.predict_on_batch(x))
        if scores.ndim != 2 or scores.shape[1] < 2:
            raise ValueError(
                "`model` must output one score per class, (batch, classes >= 2). "
                f"Received: outputs of shape {scores.shape}"
            )
        y = np.asarray(y)
        true.append(y.argmax(axis=-1) if y.ndim == 2 else y.reshape(-1))
        predicted.append(scores.argmax(axis=-1))
    num_classes = scores.shape[1]
    if class_names is None:
        class_names = list(getattr(model, "class_names", None) or map(str, range(num_classes)))
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names for a model with {num_classes} "
            f"outputs. Received: class_names={class_names!r}"
        )
    true = np.concatenate(true).astype(np.int64)
    predicted = np.concatenate(predicted).astype(np.int64)
    matrix = np.bincount(true * num_classes + predicted,
                         minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    correct = np.diag(matrix).astype(np.float64)
    predicted_per_class, support = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_per_class > 0, correct / predicted_per_class, 0.0)
        recall = np.where(support > 0, correct / support, 0.0)
        f1 = np.where(precision + recall > 0,
                      2 * precision * recall / (precision + recall), 0.0)
    return ClassificationReport(
        class_names=list(class_names), precision=precision, recall=recall, f1=f1,
        support=support, confusion_matrix=matrix,
    )
