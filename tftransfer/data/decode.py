"""Image files to training pixels: TensorFlow's JPEG decoder where it gives
Pillow's pixels, Pillow for everything else.

Pillow is the loaders' reference decoder (EXIF orientation, CMYK, 16-bit
PNG, WebP, alpha onto white: see `tftransfer.data.images`), but called from
a `tf.numpy_function` it holds Python's GIL for part of each image, and the
first pass over a folder ran at 0.36-0.5 times the speed of
`keras.utils.image_dataset_from_directory`. Most files in real folders are
*plain* JPEGs: RGB or grayscale, no EXIF rotation, one picture. For those,
libjpeg inside TensorFlow with Pillow's DCT method (`JPEG_DCT_METHOD`) gives
Pillow's pixels to the bit, in parallel, and can decode at a reduced DCT
scale when the image is 2, 4 or 8 times the target size. The scan decides
per file which decoder it gets and reads each JPEG's size from its header
(and remembers both with the scan), so a file that passes the scan decodes
in training with the decoder that checked it, at the DCT scale its size
calls for (`jpeg_plan`), with no shape op in the pipeline.
"""

import functools
import os
from concurrent import futures

import numpy as np
import tensorflow as tf
from PIL import Image

from tftransfer.data.images import BadImage
from tftransfer.data.images import check_image_size
from tftransfer.data.images import read_image
from tftransfer.data.images import resize_image
from tftransfer.data.tf_pixels import JPEG_DCT_METHOD
from tftransfer.data.tf_pixels import jpeg_plan
from tftransfer.data.tf_pixels import tf_decode_jpeg
from tftransfer.data.tf_pixels import tf_decode_jpeg_as
from tftransfer.data.tf_pixels import tf_resize

_ORIENTATION = 0x0112


def _plain_jpeg(path):
    """``[height, width]`` of `path` if TensorFlow's JPEG decoder gives
    Pillow's pixels for it: a one-picture JPEG, RGB or grayscale, without an
    EXIF rotation (only the header is read); else None."""
    try:
        with Image.open(path, formats=("JPEG",)) as image:
            if (image.format == "JPEG" and image.mode in ("RGB", "L")
                    and image.getexif().get(_ORIENTATION, 1) == 1):
                return [image.height, image.width]
    except Exception:  # noqa: BLE001 - not a JPEG, or a bad one: Pillow decides
        return None
    return None


def check_file(path):
    """Decodes `path` fully once, as training will: ``(reason, shape)``, the
    reason it cannot be used (or None) and, where TensorFlow's decoder reads
    it in training, its ``[height, width]`` (plain JPEGs it accepts; at the
    smallest DCT scale, which reads every byte of the entropy-coded data),
    else None. A file TensorFlow refuses but Pillow reads goes to Pillow."""
    shape = _plain_jpeg(path)
    if shape is not None:
        try:
            with open(path, "rb") as f:
                data = f.read()
            tf.io.decode_jpeg(data, channels=3, ratio=8, dct_method=JPEG_DCT_METHOD)
            return None, shape
        except (OSError, tf.errors.OpError):
            pass
    return _pillow_reason(path), None


def check_files(paths, *, progress=None):
    """`check_file` for many files, at the speed of a decode pass: the
    headers read in this thread (in threads they contend for Python's GIL:
    about 3 times the CPU, measured; read by the pipeline's own source, as a
    generator, they overlapped the decode but cost more than they hid), the
    plain JPEGs decoded in a parallel `tf.data` pipeline (at the smallest
    DCT scale), the rest (and any JPEG TensorFlow refuses) by Pillow in
    threads. `progress(n)` is called as files are done. Returns
    ``[(reason, shape)]`` in the order of `paths`."""
    progress = progress or (lambda n: None)
    shapes = [_plain_jpeg(path) for path in paths]
    candidates = [i for i, shape in enumerate(shapes) if shape is not None]
    decoded = _decoded_by_tensorflow([paths[i] for i in candidates], progress)
    results = [None] * len(paths)
    for j in decoded:
        results[candidates[j]] = (None, shapes[candidates[j]])
    rest = [i for i, r in enumerate(results) if r is None]
    if rest:
        workers = min(32, (os.cpu_count() or 1) + 2)
        with futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for i, reason in zip(rest, pool.map(_pillow_reason, [paths[i] for i in rest])):
                results[i] = (reason, None)
                progress(1)
    return results


def _decoded_by_tensorflow(paths, progress):
    """The indices of `paths` that TensorFlow's JPEG decoder reads whole."""
    if not paths:
        return set()

    def decode(index, path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, ratio=8,
                                  dct_method=JPEG_DCT_METHOD)
        return index, image[0, 0, 0]  # depends on the decoded pixels

    dataset = (tf.data.Dataset.from_tensor_slices((tf.range(len(paths)), paths))
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors().batch(256))
    done = set()
    for indices, _ in dataset:
        done.update(indices.numpy().tolist())
        progress(len(indices))
    return done


def _pillow_reason(path):
    try:
        read_image(path)
    except BadImage as err:
        return str(err)
    return None


PILLOW = "pillow"
"""The plan of a file Pillow decodes (`decode_plan`)."""


def decode_plan(shape, size):
    """How the pipeline decodes a file `check_file` passed with `shape`:
    `jpeg_plan` for TensorFlow's JPEGs, `PILLOW` for the rest."""
    return PILLOW if shape is None else jpeg_plan(shape[0], shape[1], size)


def file_decoder(size, on_error, *, plans, dtype=tf.uint8):
    """The pipeline's map function ``(path, plan, label) -> (image of size,
    label)``, images uint8 (for a cache) or float32 (the same values), where
    ``plan`` indexes `plans` (the `decode_plan`s the files need):
    `tf_decode_jpeg_as` for JPEGs, Pillow then `tf_resize` for the others.
    One plan needs no branch at all (a folder of photos of one size),
    several a `tf.switch_case` (about 5 us).
    `on_error(path, err)` is called when a Pillow file that passed the scan
    fails now (a gray image stands in).

    The image function is one `tf.function` per settings, traced once per
    process: the splits of a load, and later loads, reuse it (tracing the
    decoders costs a few tenths of a second per pipeline otherwise)."""
    image = _image_function(tuple(size), on_error, tuple(plans), tf.as_dtype(dtype))

    def decode(path, plan, label):
        return image(path, plan), label

    return decode


@functools.lru_cache(maxsize=32)
def _image_function(size, on_error, plans, dtype):
    def pillow(path):
        path = os.fsdecode(path)
        try:
            return read_image(path)
        except BadImage as err:
            on_error(path, err)
            return np.full((*size, 3), 128, np.uint8)

    def branch(path, plan):
        def run():  # built inside its branch, so that only its own ops run
            if plan == PILLOW:
                image = tf.numpy_function(pillow, [path], tf.uint8, stateful=False)
                return tf.cast(tf_resize(tf.ensure_shape(image, [None, None, 3]), size), dtype)
            return tf_decode_jpeg_as(tf.io.read_file(path), size, plan, dtype=dtype)
        return run

    @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)],
                 autograph=False)
    def image(path, plan):
        if len(plans) == 1:
            decoded = branch(path, plans[0])()
        else:
            decoded = tf.switch_case(plan, [branch(path, p) for p in plans])
        return tf.ensure_shape(decoded, (*size, 3))

    return image


def load_image(path, *, image_size=None):
    """Reads an image file the way `image_dataset_from_folder` does.

    The same decoder (TensorFlow's for plain JPEGs, Pillow's for the rest),
    RGB conversion (`to_rgb`: alpha composited onto white) and resizing
    (`tf_resize`) as in training, so a client of an exported model gets the
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
    size = None if image_size is None else check_image_size(image_size)
    name = os.fspath(path)
    shape = _plain_jpeg(name)
    if shape is not None:  # decoded once, by the decoder and plan the scan would pick
        try:
            with open(name, "rb") as f:
                data = f.read()
            if size is None:
                return tf_decode_jpeg(data, None).numpy()
            return tf_decode_jpeg_as(data, size, decode_plan(shape, size)).numpy()
        except (OSError, tf.errors.OpError):
            pass  # TensorFlow refuses it: Pillow decides, as in the scan
    try:
        rgb = read_image(name)
    except BadImage as err:
        raise ValueError(f"Cannot use {name!r}: {err}. Received: path={path!r}") from None
    return rgb if size is None else resize_image(rgb, size)
