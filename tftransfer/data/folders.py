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
- **Pillow's pixels, TensorFlow's speed.** `tf.image.decode_image` does not
  read WebP (`image_dataset_from_directory` skips ``.webp`` silently), stops
  `fit` with `InvalidArgumentError` at a truncated or non-image file, and
  decodes alpha, CMYK, 16-bit images and EXIF-rotated photos differently
  from what people see. Pillow is the reference decoder; but plain JPEGs
  (RGB or grayscale, no EXIF rotation: most photos) decode with libjpeg inside
  TensorFlow with Pillow's DCT method, which gives Pillow's pixels to the bit
  and runs in parallel without Python, at a reduced DCT scale for photos 2 or
  more times the target size (`tftransfer.data.decode`). The scan before
  training decodes every file fully once with the decoder training will use,
  so a file that passes it decodes in training. (`PIL.Image.verify` is not
  enough: it passes truncated JPEGs.) Only the JPEG, PNG, GIF, BMP and WebP
  decoders are used, whatever a file's extension (Pillow's EPS loader, for
  one, runs Ghostscript on the file); the EXIF orientation is applied, as
  browsers and photo viewers do.
- **Alpha is composited onto white** (``ALPHA_BACKGROUND``), in training and
  in `load_image` / `to_rgb`, which serving clients use to turn their images
  into the RGB pixels the exported signature takes.
- **Resizing** is bilinear, with area averaging where it shrinks to half the size or
  less (`tftransfer.data.tf_pixels.tf_resize`: one rule for files, arrays, TFDS
  and the serving graph), without keeping the aspect ratio, like
  `keras.utils.image_dataset_from_directory`.
"""

import collections
import hashlib
import logging
import os
import unicodedata

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _compat
from tftransfer.data.decode import check_files
from tftransfer.data.decode import decode_plan
from tftransfer.data.decode import file_decoder
from tftransfer.data.images import IMAGE_EXTENSIONS
from tftransfer.data.images import check_image_size
from tftransfer.data.scan_index import file_key
from tftransfer.data.scan_index import load_index
from tftransfer.data.scan_index import save_index
from tftransfer.data.splits import SPLITS
from tftransfer.data.splits import BadFile
from tftransfer.data.splits import DataSplits
from tftransfer.data.splits import ScanReport
from tftransfer.data.splits import assign_splits
from tftransfer.data.splits import augmentation_layer
from tftransfer.data.splits import bad_data_error
from tftransfer.data.splits import check_class_names
from tftransfer.data.splits import check_class_sizes
from tftransfer.data.splits import check_policy
from tftransfer.data.splits import check_split_args
from tftransfer.data.splits import finish_pipeline
from tftransfer.data.splits import loader_cache_options
from tftransfer.data.splits import resolve_cache
from tftransfer.data.splits import split_counts
from tftransfer.data.splits import split_fractions
from tftransfer.data.splits import warn_missing

logger = logging.getLogger(__name__)


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
            # The path relative to `directory`, by its prefix (os.path.relpath
            # costs a third of a second per 10,000 files).
            prefix = os.path.relpath(dirpath, directory).replace(os.sep, "/") + "/"
            for filename in sorted(filenames):
                path = os.path.join(dirpath, filename)
                if _hidden(filename) or not filename.lower().endswith(IMAGE_EXTENSIONS):
                    ignored.append(path)
                    continue
                files.append((path, unicodedata.normalize("NFC", prefix + filename), label))
    for path in ignored:
        logger.debug("Ignoring %s (hidden, not an image file, or outside the class folders)",
                     path)
    return class_names, files, ignored


def _scan(directory, paths, verbose):
    """Decodes every file fully (`check_file`), except those the folder's
    last scan decoded unchanged (`tftransfer.data.scan_index`); returns, per
    file, the reason it is bad (or None) and, where TensorFlow decodes it,
    its ``[height, width]`` (else None), and ``{path: (size, modification
    time)}`` of the files."""
    remembered = load_index(directory)
    keys = [file_key(path) for path in paths]
    results = [remembered[path][1:] if key is not None and path in remembered
               and remembered[path][0] == key else None for path, key in zip(paths, keys)]
    todo = [i for i, result in enumerate(results) if result is None]
    bar = None
    if verbose and paths:
        known = len(paths) - len(todo)
        _compat.print_msg(f"Checking {len(todo)} image files (each is decoded once)"
                          + (f"; {known} unchanged since the last scan" if known else ""))
        bar = keras.utils.Progbar(len(todo), unit_name="file") if todo else None
    done = [0]

    def progress(n):
        done[0] += n
        if bar is not None:
            bar.update(done[0], finalize=done[0] == len(todo))

    for i, result in zip(todo, check_files([paths[i] for i in todo], progress=progress)):
        results[i] = result
    if todo or len(remembered) != len(paths):
        save_index(directory, {path: (key, *result) for path, key, result
                               in zip(paths, keys, results) if key is not None})
    return results, dict(zip(paths, keys))


def _changed_on_disk(path, err):
    logger.error("%s passed the scan but cannot be decoded now (%s): changed on disk? "
                 "A gray image stands in for it.", path, err)


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
    cache_dir=None,
    cache_memory_limit=None,
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
        cache: keep the decoded images (see `tftransfer.caching`, the same
            vocabulary as the training functions): ``"auto"`` (in memory if
            they fit within `cache_memory_limit`, else on disk in
            `cache_dir` if one is given, else not cached), ``True`` or
            ``"memory"``, ``"disk"`` (in `cache_dir`), or `False`. Cache
            files are named after a fingerprint of the files, so an edited
            folder never reads a stale cache. The cache fills during the
            first epoch.
        cache_dir: an existing directory for cache files.
        cache_memory_limit: bytes of decoded images ``"auto"`` keeps in
            memory. Default: a quarter of the available memory.
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
    size = check_image_size(image_size)
    check_split_args(validation_split, test_split, seed, batch_size)
    cache = loader_cache_options(cache, cache_dir, cache_memory_limit)
    check_policy(on_bad_file, "on_bad_file")
    class_names = check_class_names(class_names)
    augment = augmentation_layer(augmentation, seed)
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(
            f"`directory` must be an existing folder with one sub-folder per class. "
            f"Received: directory={directory!r}"
        )

    class_names, files, ignored = _list_folder(directory, class_names)
    results, keys = _scan(directory, [path for path, _, _ in files], verbose)
    reasons = [reason for reason, _ in results]
    shapes = {path: shape for (path, _, _), (_, shape) in zip(files, results)}
    bad = [BadFile(path, reason) for (path, _, _), reason in zip(files, reasons) if reason]
    for item in bad:
        logger.warning("Skipping %s: %s", item.path, item.reason)
    if bad and on_bad_file == "error":
        raise bad_data_error(bad, "image files", "on_bad_file")
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
    check_class_sizes(per_class, class_names, validation_split, test_split,
                       f"directory={directory!r}", skipped)

    split = assign_splits([rel.encode() for _, rel, _ in good], labels, len(class_names),
                           validation_split, test_split, seed)
    requested = [s for s, f in split_fractions(validation_split, test_split).items() if f > 0]
    counts = split_counts(split, labels, len(class_names), requested)
    warn_missing(counts, class_names)

    image_bytes = size[0] * size[1] * 3
    cache_to = resolve_cache(cache, image_bytes * len(good))
    fingerprint = hashlib.sha256(repr(size).encode())
    for path, rel, label in good:
        size_bytes, mtime_ns = keys[path] or (None, None)  # None: stat failed
        fingerprint.update(f"{rel}\0{label}\0{size_bytes}\0{mtime_ns}\n".encode())
    datasets, split_files = {}, {}
    for s in requested:
        name = SPLITS[s]
        chosen = [(path, label) for (path, _, label), sp in zip(good, split) if sp == s]
        split_files[name] = [path for path, _ in chosen]
        training = s == 0
        plans = [decode_plan(shapes[p], size) for p, _ in chosen]
        used = sorted(set(plans), key=str)
        index = {plan: i for i, plan in enumerate(used)}
        # Uncached, the decoder gives float32 (the cache keeps uint8).
        decode = file_decoder(size, _changed_on_disk, plans=used,
                              dtype=tf.uint8 if cache_to is not None else tf.float32)
        ds = tf.data.Dataset.from_tensor_slices(
            ([os.fsencode(p) for p, _ in chosen],
             np.array([index[plan] for plan in plans], np.int32),
             np.array([label for _, label in chosen], np.int32))
        )
        if training and shuffle:
            ds = ds.shuffle(len(chosen), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        datasets[name] = finish_pipeline(
            ds, training=training, shuffle=shuffle, seed=seed, batch_size=batch_size,
            cache=cache_to, cache_name=f"tftransfer-{name}-{fingerprint.hexdigest()[:16]}",
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
