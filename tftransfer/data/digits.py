"""Small real data shipped with tftransfer, so the demo and tests run offline."""

import importlib.resources

import numpy as np
import tensorflow as tf


def load_digits(*, image_size=16):
    """The handwritten digits bundled with scikit-learn, shipped here as is.

    1,797 grayscale images of the digits 0-9 (the test set of the UCI
    "Optical Recognition of Handwritten Digits" data, E. Alpaydin and
    C. Kaynak, 1998, CC BY 4.0). The 8x8 originals hold counts 0-16; they
    are returned as raw pixels in [0, 255], resized bilinearly to
    `image_size`.

    Args:
        image_size: height and width of the returned images.

    Returns:
        ``(images, labels)``: float32 ``(1797, image_size, image_size, 1)``
        and int32 ``(1797,)``.

    Example:

    >>> images, labels = load_digits(image_size=16)
    >>> images.shape, labels.shape, float(images.max()) <= 255.0
    ((1797, 16, 16, 1), (1797,), True)
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(
            f"`image_size` must be an integer of at least 8. Received: image_size={image_size!r}"
        )
    path = importlib.resources.files("tftransfer") / "assets" / "digits.npz"
    with path.open("rb") as f, np.load(f) as data:
        images = data["images"].astype("float32") * (255.0 / 16.0)
        labels = data["labels"].astype("int32")
    images = images[..., None]
    if image_size != 8:
        images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    return np.clip(images, 0.0, 255.0), labels
