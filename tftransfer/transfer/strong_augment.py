"""The two views of FixMatch: a weak and a strong (RandAugment-style) augmentation.

FixMatch (Sohn et al. 2020) takes its pseudo-label from a *weakly*
augmented image (a small shift) and trains the model to predict it on a
*strongly* augmented one (RandAugment: two random operations at random
magnitudes, then Cutout). Both views here are Keras layers on raw pixels in
`value_range` ([0, 255], what tftransfer's models take), with their own
seeded `keras.random.SeedGenerator`s, so a resumed run draws the same
transformations as an uninterrupted one (`tftransfer.training.checkpoints`
saves the generators' states).

Neither view flips: a flip changes the class of digits and letters. For
photographs, pass ``weak_augmentation=tft.augmentation("light")`` (a flip,
small rotation, zoom and contrast change: `tftransfer.data.augment`).
"""

import keras
from keras import ops

from tftransfer.data.augment import augmentation

STRONG_OPS = ("translate", "rotate", "shear", "contrast", "brightness", "noise")
"""The operations `StrongAugmentation` draws from, each at a random magnitude
up to: a shift of 20% of the size, a rotation of 30 degrees, a shear of 0.3,
a contrast factor in [0.5, 1.5], a brightness change of 30% of the range,
Gaussian noise of a standard deviation up to 10% of the range."""

_MAGNITUDES = {"translate": 0.2, "rotate": 30 / 360, "shear": 0.3, "contrast": 0.5,
               "brightness": 0.3, "noise": 0.1}


def _check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"`seed` must be an integer or None. Received: seed={seed!r}")


def _seed(seed, offset):
    return None if seed is None else seed + offset


def weak_augmentation(*, seed=None, name="weak_augmentation"):
    """FixMatch's weak view without the flip: a random shift of up to 1/8 of
    the image size (FixMatch's), a rotation of up to 0.02 turns (7 degrees)
    and a zoom of up to 5% (`tftransfer.augmentation`).

    Example:

    >>> weak = weak_augmentation(seed=0)
    >>> [layer.__class__.__name__ for layer in weak.layers]
    ['RandomTranslation', 'RandomRotation', 'RandomZoom']
    >>> weak(np.zeros((2, 16, 16, 1)), training=True).shape
    TensorShape([2, 16, 16, 1])
    """
    _check_seed(seed)
    small = augmentation(None, rotation=0.02, zoom=0.05, seed=_seed(seed, 1))
    shift = keras.layers.RandomTranslation(0.125, 0.125, seed=seed)
    return keras.Sequential([shift, *small.layers], name=name)


class StrongAugmentation(keras.layers.Layer):
    """RandAugment-style strong view: per image, `num_ops` operations drawn
    at random from `STRONG_OPS`, each at a random magnitude, then Cutout.

    Each image draws its own operations (a different pair for each image of
    a batch); the chosen ones are applied in the order of `STRONG_OPS`.
    Cutout then fills a square of side up to `cutout` of the image size, at
    a random place, with the middle of `value_range` (FixMatch's grey).

    Args:
        num_ops: operations per image, in [0, 6]. FixMatch's RandAugment: 2.
        cutout: the largest side of the Cutout square, as a fraction of the
            image size, in [0, 1) (0 turns it off). FixMatch: 0.5.
        value_range: the pixel range, ``(low, high)``.
        seed: seed of the random draws.

    Example:

    >>> strong = StrongAugmentation(seed=0)
    >>> images = np.full((4, 16, 16, 1), 200.0, "float32")
    >>> out = strong(images, training=True)
    >>> out.shape, bool((out.numpy() != images).any())
    (TensorShape([4, 16, 16, 1]), True)
    >>> bool((strong(images, training=False).numpy() == images).all())
    True
    """

    def __init__(self, *, num_ops=2, cutout=0.5, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or not (
                0 <= num_ops <= len(STRONG_OPS)):
            raise ValueError(f"`num_ops` must be an integer in [0, {len(STRONG_OPS)}]. "
                             f"Received: num_ops={num_ops!r}")
        if isinstance(cutout, bool) or not isinstance(cutout, (int, float)) or not (
                0 <= cutout < 1):
            raise ValueError(f"`cutout` must be a number in [0, 1) (0 turns it off). "
                             f"Received: cutout={cutout!r}")
        if (not isinstance(value_range, (tuple, list)) or len(value_range) != 2
                or not value_range[0] < value_range[1]):
            raise ValueError("`value_range` must be a pair (low, high) with low < high. "
                             f"Received: value_range={value_range!r}")
        _check_seed(seed)
        self.num_ops = num_ops
        self.cutout = float(cutout)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.seed = seed
        low, high = self.value_range
        m = _MAGNITUDES
        self.ops = [
            keras.layers.RandomTranslation(m["translate"], m["translate"], seed=_seed(seed, 1)),
            keras.layers.RandomRotation(m["rotate"], seed=_seed(seed, 2)),
            keras.layers.RandomShear(m["shear"], m["shear"], seed=_seed(seed, 3)),
            keras.layers.RandomContrast(m["contrast"], value_range=(low, high),
                                        seed=_seed(seed, 4)),
            keras.layers.RandomBrightness(m["brightness"], value_range=(low, high),
                                          seed=_seed(seed, 5)),
        ]
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        images = ops.convert_to_tensor(images, "float32")
        shape = ops.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        low, high = self.value_range
        # Each image's operations: the `num_ops` smallest of uniform scores.
        scores = keras.random.uniform((batch, len(STRONG_OPS)), seed=self.generator)
        if self.num_ops:
            kth = ops.sort(scores, axis=-1)[:, self.num_ops - 1:self.num_ops]
            chosen = ops.cast(scores <= kth, "bool")
        else:
            chosen = ops.zeros_like(scores, "bool")
        for i, layer in enumerate(self.ops):
            moved = layer(images, training=True)
            images = ops.where(ops.reshape(chosen[:, i], (-1, 1, 1, 1)), moved, images)
        std = keras.random.uniform((batch, 1, 1, 1), maxval=_MAGNITUDES["noise"],
                                   seed=self.generator) * (high - low)
        noisy = images + std * keras.random.normal(shape, seed=self.generator)
        images = ops.where(ops.reshape(chosen[:, len(self.ops)], (-1, 1, 1, 1)), noisy, images)
        images = ops.clip(images, low, high)
        if self.cutout:
            images = self._cutout(images, batch, height, width)
        return images

    def _cutout(self, images, batch, height, width):
        h, w = ops.cast(height, "float32"), ops.cast(width, "float32")
        side = keras.random.uniform((batch, 1, 1), maxval=self.cutout,
                                    seed=self.generator) * ops.minimum(h, w)
        cy = keras.random.uniform((batch, 1, 1), seed=self.generator) * h
        cx = keras.random.uniform((batch, 1, 1), seed=self.generator) * w
        rows = ops.reshape(ops.arange(height, dtype="float32") + 0.5, (1, -1, 1))
        cols = ops.reshape(ops.arange(width, dtype="float32") + 0.5, (1, 1, -1))
        inside = (ops.abs(rows - cy) <= side / 2) & (ops.abs(cols - cx) <= side / 2)
        grey = (self.value_range[0] + self.value_range[1]) / 2
        return ops.where(ops.expand_dims(inside, -1), ops.full_like(images, grey), images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_ops": self.num_ops, "cutout": self.cutout,
                "value_range": list(self.value_range), "seed": self.seed}
