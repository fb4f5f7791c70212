"""Shifted domains of the bundled digits, for transfer across domains, offline.

- `digits_m`: the digits blended with random patches of colour photos, the
  way MNIST-M was built from MNIST (Ganin & Lempitsky, ICML 2015: each pixel
  the absolute difference between the patch and the digit). The photos are
  the two scikit-learn ships (`sklearn.datasets.load_sample_images`: a
  Chinese temple and a flower), so the shift is reproducible without a
  download.
- `shift_digits`: simple shifts: ``"inverted"`` (white background),
  ``"noisy"`` (Gaussian pixel noise) and ``"thick"`` (strokes dilated).

All take raw pixels in [0, 255] of shape ``(n, h, w, 1)`` (as
`tftransfer.data.digits.load_digits` returns them), are seeded, and return
float32 pixels in [0, 255].
"""

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_sample_images

SHIFTS = ("inverted", "noisy", "thick")
NOISE_STD = 64.0  # of "noisy", in pixel levels


def _digits(images):
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 1 or len(images) == 0:
        raise ValueError(
            "`images` must be grayscale digits of shape (n, height, width, 1), as "
            f"`load_digits` returns them. Received: images of shape {images.shape}")
    return images


def digits_m(images, *, seed=0, photos=None):
    """The digits on patches of colour photos, as MNIST-M (see the module).

    Args:
        images: grayscale digits ``(n, h, w, 1)`` in [0, 255].
        seed: chooses each image's photo and patch position.
        photos: uint8 RGB photos to cut patches from, each at least
            ``h x w``. Default: scikit-learn's two sample photos.

    Returns:
        float32 ``(n, h, w, 3)``: ``|patch - digit|`` per channel.

    Example:

    >>> digits = np.zeros((2, 8, 8, 1), "float32")
    >>> digits[:, 2:6, 3:5] = 255.0
    >>> photo = np.full((20, 20, 3), 100, "uint8")
    >>> blended = digits_m(digits, photos=[photo])
    >>> blended.shape, float(blended[0, 0, 0, 0]), float(blended[0, 3, 3, 0])
    ((2, 8, 8, 3), 100.0, 155.0)
    """
    images = _digits(images)
    height, width = images.shape[1:3]
    photos = load_sample_images().images if photos is None else photos
    photos = [np.asarray(p) for p in photos]
    if not photos or any(p.ndim != 3 or p.shape[2] != 3 or p.shape[0] < height
                         or p.shape[1] < width for p in photos):
        raise ValueError(
            f"`photos` must be RGB images of at least {height}x{width} pixels. Received: "
            f"photos of shapes {[p.shape for p in photos]}")
    rng = np.random.default_rng(seed)
    out = np.empty(images.shape[:3] + (3,), np.float32)
    for i, digit in enumerate(images):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(0, photo.shape[0] - height + 1)
        left = rng.integers(0, photo.shape[1] - width + 1)
        patch = photo[top:top + height, left:left + width].astype(np.float32)
        out[i] = np.abs(patch - digit)
    return out


def shift_digits(images, shift, *, seed=0):
    """A simple domain shift of the digits (see the module).

    Args:
        images: grayscale digits ``(n, h, w, 1)`` in [0, 255].
        shift: ``"inverted"``, ``"noisy"`` or ``"thick"``.
        seed: for ``"noisy"``.

    Returns:
        float32 ``(n, h, w, 1)`` in [0, 255].

    Example:

    >>> digits = np.zeros((1, 4, 4, 1), "float32")
    >>> digits[0, 1, 1] = 200.0
    >>> float(shift_digits(digits, "inverted")[0, 0, 0, 0])
    255.0
    >>> int((shift_digits(digits, "thick") > 0).sum())
    4
    """
    images = _digits(images)
    if shift not in SHIFTS:
        raise ValueError(f"`shift` must be one of {SHIFTS}. Received: shift={shift!r}")
    if shift == "inverted":
        return 255.0 - images
    if shift == "noisy":
        noise = np.random.default_rng(seed).normal(0.0, NOISE_STD, images.shape)
        return np.clip(images + noise, 0.0, 255.0).astype(np.float32)
    # "thick": a 2x2 maximum filter, which widens every stroke by a pixel.
    return tf.nn.max_pool2d(images, ksize=2, strides=1, padding="SAME").numpy()
