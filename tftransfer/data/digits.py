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


def place_on_canvas(images, canvas_size, *, seed=0):
    """Each image pasted at a random position of a black square canvas.

    The bundled digits are centred and size-normalized (the UCI
    preprocessing), which makes raw pixels an unusually good representation:
    1-nearest-neighbour on them scores 0.73 on digits 5-9 from one labelled
    image per class. Photos are not aligned like that. Placed at random on a
    canvas larger than the digit, the same digits need what a convolutional
    network learns on a source task (strokes, wherever they are): 1-NN on
    pixels falls to about 0.26 on a 24-pixel canvas.

    Args:
        images: ``(n, h, w, channels)``.
        canvas_size: the canvas's height and width, at least the images'.
        seed: the positions' seed.

    Returns:
        float32 ``(n, canvas_size, canvas_size, channels)``.

    Example:

    >>> images = np.ones((2, 8, 8, 1), "float32")
    >>> placed = place_on_canvas(images, 12, seed=0)
    >>> placed.shape, float(placed.sum(axis=(1, 2, 3))[0])
    ((2, 12, 12, 1), 64.0)
    """
    images = np.asarray(images, np.float32)
    height, width = images.shape[1:3]
    if (isinstance(canvas_size, bool) or not isinstance(canvas_size, int)
            or canvas_size < max(height, width)):
        raise ValueError(
            f"`canvas_size` must be an integer of at least the images' size ({height}x{width}). "
            f"Received: canvas_size={canvas_size!r}")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, canvas_size - height + 1, len(images))
    cols = rng.integers(0, canvas_size - width + 1, len(images))
    canvas = np.zeros((len(images), canvas_size, canvas_size, images.shape[3]), np.float32)
    for i, (r, c) in enumerate(zip(rows, cols)):
        canvas[i, r:r + height, c:c + width] = images[i]
    return canvas
