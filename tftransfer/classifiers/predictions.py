"""Predictions a person can use: `Classifier.classify` and its result.

``model.classify("photo.jpg")`` decodes the file as training did, runs the
model and gives back class names with their probabilities, one `Prediction`
per input, in a printable `Predictions` list.
"""

import dataclasses
import os

import numpy as np
from PIL import Image

from tftransfer.data.decode import load_image
from tftransfer.data.images import IMAGE_EXTENSIONS
from tftransfer.data.images import decode_image_bytes
from tftransfer.data.images import resize_image
from tftransfer.data.images import to_rgb


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One input's classes.

    Attributes:
        source: what was classified: a file path, ``"<bytes 0>"``, ``"<array 3>"``,
            or (text) the string.
        class_name: the most probable class.
        probability: its probability.
        top_k: ``[(class name, probability), ...]``, best first.
    """

    source: str
    class_name: str
    probability: float
    top_k: tuple

    def __str__(self):
        others = ", ".join(f"{name} {p:.3f}" for name, p in self.top_k[1:])
        return (f"{self.source}: {self.class_name} ({self.probability:.3f})"
                + (f"; then {others}" if others else ""))


class Predictions(list):
    """A list of `Prediction`s that prints as one line each."""

    @property
    def class_names(self):
        return [p.class_name for p in self]

    def __str__(self):
        return "\n".join(str(p) for p in self)

    def to_json(self):
        """JSON-ready dicts, for scripts."""
        return [{"source": p.source, "class_name": p.class_name,
                 "probability": p.probability,
                 "top_k": [{"class_name": n, "probability": q} for n, q in p.top_k]}
                for p in self]


def predictions(class_names, sources, probabilities, top_k):
    """`Predictions` from a batch of probabilities."""
    result = Predictions()
    for source, row in zip(sources, np.asarray(probabilities, "float64")):
        order = np.argsort(-row, kind="stable")[:top_k]
        best = tuple((class_names[i], float(row[i])) for i in order)
        result.append(Prediction(str(source), best[0][0], best[0][1], best))
    return result


def check_top_k(top_k, num_classes):
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_classes:
        raise ValueError(
            f"`top_k` must be an integer from 1 to the number of classes ({num_classes}). "
            f"Received: top_k={top_k!r}")
    return top_k


def is_classify_input(x):
    """Whether `x` is one of `classify`'s own kinds of input (file paths,
    folders, encoded bytes, PIL images, or a list of them), not an array or
    a dataset."""
    items = x if isinstance(x, (list, tuple)) else [x]
    return bool(items) and all(
        isinstance(i, (str, bytes, os.PathLike, Image.Image)) for i in items)


def image_inputs(inputs, shape):
    """``(sources, float32 batch)`` from paths, folders, encoded bytes, PIL
    images and arrays (one image ``(h, w[, c])`` or a batch), decoded and
    resized as the loaders do; `shape` is the model's ``(h, w, c)``."""
    if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
        return [f"<array {i}>" for i in range(len(inputs))], _sized(inputs, shape)
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    sources, images = [], []
    for index, item in enumerate(inputs):
        for source, image in _expand(item, index):
            sources.append(source)
            images.append(_image(image, source, shape))
    if not images:
        raise ValueError(
            "`inputs` holds no image (an empty list, or folders without JPEG, PNG, GIF, BMP or "
            f"WebP files). Received: inputs={inputs!r}")
    return sources, np.stack(images).astype("float32")


def _expand(item, index):
    if isinstance(item, (str, os.PathLike)) and os.path.isdir(item):
        files = sorted(
            os.path.join(root, name) for root, _, names in os.walk(item) for name in names
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."))
        return [(path, path) for path in files]
    if isinstance(item, (str, os.PathLike)):
        if not os.path.exists(item):
            raise ValueError(f"There is no file or folder at {os.fspath(item)!r}. "
                             f"Received: inputs[{index}]={item!r}")
        return [(os.fspath(item), item)]
    if isinstance(item, (bytes, bytearray)):
        return [(f"<bytes {index}>", bytes(item))]
    if isinstance(item, Image.Image):
        return [(f"<image {index}>", item)]
    return [(f"<array {index}>", item)]


def _image(item, source, shape):
    height, width, channels = shape
    if isinstance(item, (str, os.PathLike)):
        rgb = load_image(item, image_size=(height, width))
    elif isinstance(item, bytes):
        try:
            rgb = decode_image_bytes(item)
        except ValueError as err:
            raise ValueError(f"{source}: {err} Pass an encoded JPEG, PNG, GIF, BMP or WebP "
                             "image.") from None
        rgb = resize_image(rgb, (height, width))
    elif isinstance(item, Image.Image):
        rgb = resize_image(np.asarray(to_rgb(item)), (height, width))
    else:
        array = np.asarray(item)
        if array.ndim not in (2, 3):
            raise ValueError(
                f"An image array must be (height, width) or (height, width, channels). "
                f"Received: {source} of shape {array.shape}")
        return _sized(array[None], shape)[0]
    if channels == 1:
        rgb = np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
    return rgb.astype("float32")


def _sized(batch, shape):
    batch = np.asarray(batch, "float32")
    if batch.ndim == 3:
        batch = batch[..., None]
    if tuple(batch.shape[1:]) != tuple(shape):
        raise ValueError(
            f"The arrays are images of shape {tuple(batch.shape[1:])} but the model takes "
            f"{tuple(shape)}: resize them (or pass files, which are resized as in training). "
            f"Received: inputs of shape {batch.shape}")
    return batch
