"""Reading one image: decoding, RGB conversion, resizing (PIL and TensorFlow)."""

import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

from tftransfer.data.tf_pixels import tf_decode_jpeg
from tftransfer.data.tf_pixels import tf_resize

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
"""File extensions (any case) the folder loader reads; other files are ignored."""


_PIL_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


ALPHA_BACKGROUND = 255
"""Transparent pixels are composited onto this gray level (255: white)."""


class BadImage(Exception):
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
    raise BadImage(f"unsupported pixel format: mode {mode!r}")


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
    if isinstance(image, Image.Image):
        try:
            return _pil_to_rgb(image)
        except BadImage as err:
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
    try:
        with Image.open(fileobj, formats=_PIL_FORMATS) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and image.format != "MPO":
                raise BadImage(
                    f"animated image ({frames} frames); save the frame to use as a still image"
                )
            image.load()
            return _pil_to_rgb(ImageOps.exif_transpose(image))
    except BadImage:
        raise
    except Image.DecompressionBombError as err:
        raise BadImage(f"too large: {err}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image: the content is not JPEG, PNG, GIF, BMP or WebP") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds on bad data
        message = str(err) or type(err).__name__
        kind = "truncated" if "truncated" in message.lower() else "corrupt"
        raise BadImage(f"{kind}: {message}") from None


def read_image(path):
    """Reads and fully decodes `path` to an RGB array; raises _BadImage."""
    try:
        if os.path.getsize(path) == 0:
            raise BadImage("empty file (0 bytes)")
        with open(path, "rb") as f:
            return _decode(f)
    except PermissionError:
        raise BadImage("unreadable: permission denied") from None
    except OSError as err:
        raise BadImage(f"unreadable: {err.strerror or err}") from None


def decode_image_bytes(data):
    """Fully decodes an encoded image (bytes) as the loaders decode files
    (EXIF orientation, RGB, alpha onto white); raises `ValueError`."""
    try:
        return _decode(io.BytesIO(data))
    except BadImage as err:
        raise ValueError(f"Cannot decode the image bytes: {err}.") from None


def resize_image(rgb, size):
    """`tf_resize` of a uint8 RGB array: the resize of every loader."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    return tf_resize(tf.constant(rgb), tuple(size)).numpy()


def check_image_size(image_size):
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


def tf_to_rgb(images):
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


# The formats the serving graph decodes, by their first bytes (WebP: "RIFF" then
# "WEBP" at offset 8).
_SIGNATURES = ((0, b"\xff\xd8\xff"), (0, b"\x89PNG"), (0, b"GIF8"), (0, b"BM"), (8, b"WEBP"))


def tf_decode_image(data, size):
    """One encoded image (a scalar `tf.string`) to float32 RGB pixels of
    `size` in [0, 255], with TensorFlow ops only, as the loaders read files:
    JPEGs as `tf_decode_jpeg` (the loaders' own decoder for them); other
    formats any channel count to RGB, alpha composited onto white, then
    `tf_resize`. Unlike the loaders it applies no EXIF orientation, and of an
    animation it takes the first frame."""
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")
    return tf.cast(tf.cond(is_jpeg, lambda: tf_decode_jpeg(data, size),
                           lambda: _tf_decode_other(data, size)), tf.float32)


def _tf_decode_other(data, size):
    image = tf.io.decode_image(data, channels=0, expand_animations=False)
    opaque = tf.fill(tf.concat([tf.shape(image)[:2], [1]], axis=0), tf.constant(255, tf.uint8))
    gray = tf.repeat(image[..., :1], 3, axis=-1)
    rgba = tf.switch_case(tf.shape(image)[-1] - 1, branch_fns=[
        lambda: tf.concat([gray, opaque], axis=-1),  # grayscale
        lambda: tf.concat([gray, image[..., 1:2]], axis=-1),  # grayscale + alpha
        lambda: tf.concat([image[..., :3], opaque], axis=-1),  # RGB
        lambda: image[..., :4],  # RGBA
    ])
    rgba.set_shape([None, None, 4])
    return tf_resize(tf_to_rgb(rgba), size)


def tf_decode_images(images, size, channels=3):
    """A batch of encoded images (`tf.string` ``[batch]``) to float32 pixels
    ``[batch, *size, channels]`` (see `tf_decode_image`; ``channels=1``: the
    RGB image's luma, for grayscale models).

    A string that is not a JPEG, PNG, GIF, BMP or WebP image, or one that is
    truncated or corrupt, fails the whole batch with an InvalidArgument error
    that names its index. The images decode in parallel in a `tf.data`
    pipeline whose failed elements are dropped (`ignore_errors`), so that the
    missing index can be named: the decoder's own error names none."""
    if channels not in (1, 3):
        raise ValueError(
            "Encoded images decode to RGB (3 channels) or grayscale (1) pixels. "
            f"Received: channels={channels!r}")
    count = tf.shape(images)[0]
    indices = tf.range(count)
    head = tf.strings.substr(tf.strings.join([images, tf.constant(b"\0" * 12)]), 0, 12)
    known = tf.reduce_any(tf.stack([
        tf.equal(tf.strings.substr(head, start, len(magic)), magic)
        for start, magic in _SIGNATURES]), axis=0)
    unknown = _first(tf.logical_not(known), count)
    check = tf.debugging.Assert(tf.reduce_all(known), [tf.strings.format(
        "images[{}] is not a JPEG, PNG, GIF, BMP or WebP image ({} bytes)",
        (unknown, tf.gather(tf.concat([tf.strings.length(images), [0]], 0), unknown)))])

    def decode(index, data):
        rgb = tf_decode_image(data, size)
        return index, tf.round(tf.image.rgb_to_grayscale(rgb)) if channels == 1 else rgb

    with tf.control_dependencies([check]):
        pipeline = tf.data.Dataset.from_tensor_slices((indices, images)).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    nothing = tf.data.Dataset.from_tensors(
        (tf.zeros([0], tf.int32), tf.zeros([0, *size, channels], tf.float32)))
    decoded, pixels = (pipeline.ignore_errors().batch(1 << 30).concatenate(nothing)
                       .take(1).get_single_element())
    failed = tf.logical_not(tf.reduce_any(tf.equal(indices[:, None], decoded[None, :]), axis=1))
    corrupt = tf.debugging.Assert(tf.equal(tf.shape(decoded)[0], count), [tf.strings.format(
        "images[{}] is truncated or corrupt: TensorFlow's image decoder refused it",
        (_first(failed, count),))])
    with tf.control_dependencies([corrupt]):
        return tf.identity(pixels)


def _first(mask, count):
    """The first index where `mask` holds, or `count`."""
    return tf.reduce_min(tf.concat([tf.boolean_mask(tf.range(count), mask), [count]], axis=0))


def encode_png(image):
    """Lossless PNG bytes of a PIL image (any mode) or of a uint8 RGB (or
    one-channel) image array."""
    if not isinstance(image, Image.Image):
        pixels = np.asarray(image, np.uint8)
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]  # grayscale
        image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
