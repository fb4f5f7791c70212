"""TF Serving REST request bodies for an export (format 2): images as base64.

TF Serving's REST API (``POST /v1/models/NAME:predict``) takes JSON in a row
format, ``{"instances": [value, ...]}``, or a columnar one, ``{"inputs":
{"images": [value, ...]}}``, optionally with ``"signature_name"``. A string
tensor's value may be ``{"b64": "<base64>"}``, which the server decodes to
bytes (tensorflow/serving ``g3doc/api_rest.md``; ``util/json_tensor.cc``), so
an image goes in as its encoded file: about 1.3x the file's size, against
about 18 bytes of JSON per pixel value for raw pixels.
"""

import base64
import io
import os

import numpy as np
from PIL import Image
from PIL import ImageOps

from tftransfer.data.images import encode_png
from tftransfer.formats import IMAGE_INPUT

_ORIENTATION = 0x0112  # the EXIF tag


def encode_image(image):
    """The bytes to send for one image: a file's bytes as they are, unless its
    EXIF orientation says to rotate it, which the serving graph does not do
    (training does, with Pillow): then the image upright, re-encoded (PNG).

    Args:
        image: a file path, the encoded bytes of an image, a `PIL.Image.Image`,
            or a uint8 array ``(height, width[, channels])``.

    Returns:
        `bytes`.
    """
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            image = f.read()
    if isinstance(image, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(image)) as opened:
                rotated = opened.getexif().get(_ORIENTATION, 1) not in (0, 1)
                if not rotated:
                    return bytes(image)
                return encode_png(ImageOps.exif_transpose(opened))
        except OSError:
            return bytes(image)  # not an image to Pillow: the server will say so
    if isinstance(image, Image.Image):
        return encode_png(ImageOps.exif_transpose(image))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise TypeError(
            "`image` must be a file path, encoded image bytes, a PIL image or a uint8 array "
            f"(height, width[, channels]). Received: image of type {type(image).__name__}"
            + (f" with dtype {array.dtype} and shape {array.shape}" if array.ndim else ""))
    return encode_png(array)


def serving_request(images, *, format="instances", signature_name=None, input_name=IMAGE_INPUT):
    """A TF Serving REST request body (a JSON-ready dict) for images.

    Example:

    >>> body = serving_request([b"\\x89PNG..."], format="inputs")
    >>> sorted(body), sorted(body["inputs"])
    (['inputs'], ['images'])

    Args:
        images: a list of images, each as `encode_image` takes it (paths,
            bytes, PIL images, uint8 arrays).
        format: ``"instances"`` (the row format: the server answers
            ``{"predictions": [...]}``, one object per image) or ``"inputs"``
            (the columnar format: ``{"outputs": {...}}``).
        signature_name: the signature to call; default: ``serving_default``.
        input_name: the signature's input (``"images"``).

    Returns:
        A dict for `json.dumps`.
    """
    if format not in ("instances", "inputs"):
        raise ValueError(
            "`format` must be 'instances' (TF Serving's row format) or 'inputs' (its "
            f"columnar format). Received: format={format!r}")
    if isinstance(images, (str, bytes, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    values = [{"b64": base64.b64encode(encode_image(image)).decode("ascii")}
              for image in images]
    body = {}
    if signature_name is not None:
        body["signature_name"] = signature_name
    if format == "instances":
        body["instances"] = [{input_name: value} for value in values]
    else:
        body["inputs"] = {input_name: values}
    return body
