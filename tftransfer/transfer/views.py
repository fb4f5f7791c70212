"""Random views of an image for contrastive pretraining (SimCLR's augmentation).

`ContrastiveViews` draws one random view of each image per call: a random
resized crop with a small rotation (one affine transform), a colour jitter
(brightness, contrast; saturation and a random grayscale on RGB images), a
random blur and Gaussian noise. SimCLR (Chen et al. 2020) showed that the
crop and the colour distortion together matter most: with either alone,
two views of an image are told apart from the others by low-level cues
(position, colour histogram) and the network learns little else.

Unlike `tftransfer.augmentation` (mild, label-preserving augmentation of the
labelled training data, in the `tf.data` pipeline), these views are strong
and run inside the training step, on the accelerator, drawn from the layer's
`keras.random.SeedGenerator`: its state is saved with a resumable run's
checkpoints, so a resumed run draws the same views as an uninterrupted one.
Pixels are raw, in [0, 255], as everywhere in tftransfer.
"""

import math

import keras
from keras import ops


def _check_range(name, value, low, high):
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
            or not low <= value[0] <= value[1] <= high):
        raise ValueError(
            f"`{name}` must be a pair (low, high) with {low} <= low <= high <= {high}. "
            f"Received: {name}={value!r}")
    return (float(value[0]), float(value[1]))


def _check_factor(name, value, high=1.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise ValueError(
            f"`{name}` must be a number in [0, {high:g}] (0 turns it off). "
            f"Received: {name}={value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="tftransfer")
class ContrastiveViews(keras.layers.Layer):
    """A random view of each image, for contrastive pretraining.

    Called with ``training=True`` (as `tftransfer.pretrain_self_supervised`
    calls it, twice per batch), every image gets its own draw of:

    1. a random resized crop: a box of a random fraction `crop_scale` of the
       image's area and aspect ratio `aspect_ratio`, at a random position,
       turned by up to `rotation` of a full turn and resized back to the
       image's size (bilinear, the outside filled with 0);
    2. with probability `jitter_probability`, a colour jitter: brightness
       shifted by up to ``brightness * 255``, contrast scaled by a factor in
       ``[1 - contrast, 1 + contrast]`` around the image's mean, and on RGB
       images the saturation scaled by ``[1 - saturation, 1 + saturation]``;
       RGB images then turn gray with probability `grayscale_probability`;
    3. with probability `blur_probability`, a blur: the image blended with
       its 3x3 Gaussian blur by a random weight in [0, 1];
    4. Gaussian noise of a random standard deviation in
       ``[0, noise * 255]``;

    then clipped to [0, 255]. With ``training=False`` it returns its input.

    Args:
        crop_scale: the crop's fraction of the image's area, ``(low, high)``
            in (0, 1].
        aspect_ratio: the crop's width over height, ``(low, high)``, drawn
            log-uniformly.
        rotation: the largest rotation, as a fraction of a full turn (0.05
            is 18 degrees).
        brightness, contrast, saturation: the colour jitter's strengths.
        jitter_probability, grayscale_probability, blur_probability: how
            often each step applies.
        noise: the largest noise standard deviation, as a fraction of 255.
        seed: seed of the layer's random draws.

    Example:

    >>> import numpy as np
    >>> views = ContrastiveViews(seed=0)
    >>> images = np.full((2, 16, 16, 1), 128.0, "float32")
    >>> out = views(images, training=True)
    >>> out.shape, bool(np.all((out >= 0) & (out <= 255)))
    (TensorShape([2, 16, 16, 1]), True)
    >>> bool(np.all(views(images, training=False) == images))
    True
    """

    def __init__(self, *, crop_scale=(0.4, 1.0), aspect_ratio=(3 / 4, 4 / 3), rotation=0.04,
                 brightness=0.3, contrast=0.4, saturation=0.4, jitter_probability=0.8,
                 grayscale_probability=0.2, blur_probability=0.5, noise=0.05, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.crop_scale = _check_range("crop_scale", crop_scale, 1e-3, 1.0)
        self.aspect_ratio = _check_range("aspect_ratio", aspect_ratio, 1e-2, 1e2)
        self.rotation = _check_factor("rotation", rotation, 0.5)
        self.brightness = _check_factor("brightness", brightness)
        self.contrast = _check_factor("contrast", contrast)
        self.saturation = _check_factor("saturation", saturation)
        self.jitter_probability = _check_factor("jitter_probability", jitter_probability)
        self.grayscale_probability = _check_factor("grayscale_probability",
                                                   grayscale_probability)
        self.blur_probability = _check_factor("blur_probability", blur_probability)
        self.noise = _check_factor("noise", noise)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, shape, low=0.0, high=1.0):
        return keras.random.uniform(shape, low, high, seed=self.seed_generator)

    def _chance(self, n, probability):
        return ops.cast(self._uniform((n, 1, 1, 1)) < probability, self.compute_dtype)

    def call(self, images, training=False):
        if not training:
            return images
        images = ops.cast(images, self.compute_dtype)
        n = ops.shape(images)[0]
        images = self._crop(images, n)
        images = self._jitter(images, n)
        channels = images.shape[-1]
        if self.blur_probability:
            blurred = _blur(images, channels)
            weight = self._uniform((n, 1, 1, 1)) * self._chance(n, self.blur_probability)
            images = images + weight * (blurred - images)
        if self.noise:
            std = self._uniform((n, 1, 1, 1), 0.0, self.noise * 255.0)
            images = images + std * keras.random.normal(ops.shape(images),
                                                        seed=self.seed_generator)
        return ops.clip(images, 0.0, 255.0)

    def _crop(self, images, n):
        """One affine transform per image: output pixel -> input pixel."""
        height, width = ops.cast(ops.shape(images)[1], "float32"), ops.cast(
            ops.shape(images)[2], "float32")
        area = self._uniform((n,), *self.crop_scale)
        log_ratio = self._uniform((n,), math.log(self.aspect_ratio[0]),
                                  math.log(self.aspect_ratio[1]))
        ratio = ops.exp(log_ratio)
        scale_x = ops.minimum(ops.sqrt(area * ratio), 1.0)  # box width / image width
        scale_y = ops.minimum(ops.sqrt(area / ratio), 1.0)
        shift_x = (self._uniform((n,)) - 0.5) * (1.0 - scale_x) * width
        shift_y = (self._uniform((n,)) - 0.5) * (1.0 - scale_y) * height
        angle = self._uniform((n,), -1.0, 1.0) * self.rotation * 2.0 * math.pi
        cos, sin = ops.cos(angle), ops.sin(angle)
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        a0, a1 = cos * scale_x, -sin * scale_y
        b0, b1 = sin * scale_x, cos * scale_y
        a2 = cx + shift_x - a0 * cx - a1 * cy
        b2 = cy + shift_y - b0 * cx - b1 * cy
        zeros = ops.zeros_like(a0)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear",
                                          fill_mode="constant", fill_value=0)

    def _jitter(self, images, n):
        if not self.jitter_probability:
            return images
        rgb = images.shape[-1] == 3
        apply = self._chance(n, self.jitter_probability)
        jittered = images
        if self.brightness:
            jittered = jittered + self._uniform((n, 1, 1, 1), -1.0, 1.0) * self.brightness * 255.0
        if self.contrast:
            mean = ops.mean(jittered, axis=(1, 2, 3), keepdims=True)
            factor = self._uniform((n, 1, 1, 1), 1.0 - self.contrast, 1.0 + self.contrast)
            jittered = mean + factor * (jittered - mean)
        if rgb and self.saturation:
            gray = ops.mean(jittered, axis=-1, keepdims=True)
            factor = self._uniform((n, 1, 1, 1), 1.0 - self.saturation, 1.0 + self.saturation)
            jittered = gray + factor * (jittered - gray)
        images = images + apply * (jittered - images)
        if rgb and self.grayscale_probability:
            gray = ops.repeat(ops.mean(images, axis=-1, keepdims=True), 3, axis=-1)
            images = images + self._chance(n, self.grayscale_probability) * (gray - images)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            crop_scale=self.crop_scale, aspect_ratio=self.aspect_ratio, rotation=self.rotation,
            brightness=self.brightness, contrast=self.contrast, saturation=self.saturation,
            jitter_probability=self.jitter_probability,
            grayscale_probability=self.grayscale_probability,
            blur_probability=self.blur_probability, noise=self.noise, seed=self.seed)
        return config


def _blur(images, channels):
    """A 3x3 Gaussian blur (sigma about 0.85), edges reflected."""
    kernel_1d = ops.convert_to_tensor([0.25, 0.5, 0.25], dtype=images.dtype)
    kernel = ops.reshape(ops.outer(kernel_1d, kernel_1d), (3, 3, 1, 1))
    kernel = ops.tile(kernel, (1, 1, channels, 1))
    padded = ops.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
    return ops.depthwise_conv(padded, kernel, padding="valid")
