"""Pixels with TensorFlow ops: the loaders' resize (`tf_resize`) and their
JPEG decoder (`tf_decode_jpeg`, `tf_decode_jpeg_as` with a `jpeg_plan`), one
rule for files, arrays, TFDS and the serving graph."""

import functools

import tensorflow as tf


def tf_resize(images, size):
    """The loaders' resize, one rule for files, arrays, TFDS and the serving
    graph; uint8 in, uint8 out (rounded), float stays float.

    Where an image is 2 or more times the target height or width it is
    shrunk by area averaging (each output pixel the mean of the source
    pixels it covers, weighted by how much of each it covers), in the
    dimensions that shrink, then enlarged bilinearly in any that do not;
    below a factor of 2 a bilinear resize (which then weighs every source
    pixel) does it all. On photos (measured, 150-800 px to 96 and 224 px)
    this lands 1.4-1.7 levels (mean) from Pillow's Lanczos resize, where
    plain bilinear is 2.2-6.6 away, for about a third of the cost of
    `tf.image.resize(antialias=True)`."""
    if size is None:
        return images
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    shrinks = tf.logical_or(height >= 2 * size[0], width >= 2 * size[1])
    return tf.cond(shrinks, lambda: _shrink(images, size),
                   lambda: _bilinear(images, size, images.dtype))


def _shrink(images, size, dtype=None):
    """`tf_resize` where an image is 2 or more times `size` in a dimension
    (to `dtype`, else the images' own)."""
    shape = tf.shape(images)
    inner = tf.stack([tf.minimum(shape[-3], size[0]), tf.minimum(shape[-2], size[1])])
    x = tf.image.resize(images, inner, method="area")  # takes uint8 as it is
    return _bilinear(x, size, dtype or images.dtype)  # the size it has where both shrink


def _bilinear(x, size, dtype):
    """`tf.image.resize` (which takes uint8 as it is), rounded back to uint8
    where `dtype` is: a convex mix of pixels stays in [0, 255]."""
    resized = tf.image.resize(x, size, method="bilinear")
    if dtype == tf.uint8:
        return tf.cast(tf.round(resized), tf.uint8)
    return resized


JPEG_DCT_METHOD = "INTEGER_ACCURATE"
"""libjpeg's JDCT_ISLOW, Pillow's method: the same pixels as Pillow to the
bit (TensorFlow's default, JDCT_IFAST, differs by up to 4 levels)."""


JPEG_RATIOS = (1, 2, 4, 8)
"""The scales libjpeg decodes at (`tf.io.decode_jpeg`'s `ratio`, Pillow's `draft`)."""


def jpeg_plan(height, width, size):
    """How a ``height`` x ``width`` JPEG decodes to `size`: ``(ratio, area)``,
    the largest ratio in `JPEG_RATIOS` by which libjpeg can shrink it while
    it decodes (scaling its DCT blocks) and keep it at least `size`, and
    whether it is then still twice the size or more in a dimension (where
    `tf_resize` averages areas). The scan knows every JPEG's size, so the
    pipeline decodes each file with its plan and no shape op."""
    ratio = 1
    for r in JPEG_RATIOS[1:]:
        if -(-height // r) >= size[0] and -(-width // r) >= size[1]:
            ratio = r
    return ratio, -(-height // ratio) >= 2 * size[0] or -(-width // ratio) >= 2 * size[1]


JPEG_PLANS = tuple((r, area) for r in JPEG_RATIOS for area in (False, True))


def tf_decode_jpeg_as(data, size, plan, *, dtype=tf.uint8):
    """A JPEG (a scalar `tf.string`) to RGB of `size`, decoded with `plan`
    (`jpeg_plan`) as Pillow decodes (`JPEG_DCT_METHOD`), then `tf_resize`d:
    uint8, or (``dtype=tf.float32``) the same values as float32, without
    the two casts a pipeline with no cache of uint8 images would pay (56 us
    an image at 224 px, measured)."""
    ratio, area = plan
    image = tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method=JPEG_DCT_METHOD)
    image.set_shape([None, None, 3])
    resized = (_shrink(image, size, tf.float32) if area
               else tf.image.resize(image, size, method="bilinear"))
    return tf.cast(tf.round(resized), dtype)  # a no-op cast for float32


def tf_decode_jpeg(data, size):
    """A JPEG (a scalar `tf.string`) to uint8 RGB of `size`: decoded at the
    largest DCT scale that keeps it at least `size` (a quarter or less of
    the work for a photo 2 or more times the size), as Pillow decodes
    (`JPEG_DCT_METHOD`), then `tf_resize`: `jpeg_plan` of the size in its
    header. No EXIF orientation is applied; grayscale becomes RGB."""
    if size is None:
        return tf.io.decode_jpeg(data, channels=3, dct_method=JPEG_DCT_METHOD)
    shape = tf.io.extract_jpeg_shape(data)
    index = tf.constant(0)
    for i, (ratio, area) in enumerate(JPEG_PLANS):
        h, w = (shape[0] + ratio - 1) // ratio, (shape[1] + ratio - 1) // ratio
        fits = tf.logical_and(h >= size[0], w >= size[1]) if ratio > 1 else True
        shrinks = tf.logical_or(h >= 2 * size[0], w >= 2 * size[1])
        index = tf.where(tf.logical_and(fits, tf.equal(shrinks, area)), i, index)
    return tf.switch_case(index, branch_fns=[functools.partial(tf_decode_jpeg_as, data, size, plan)
                                             for plan in JPEG_PLANS])
