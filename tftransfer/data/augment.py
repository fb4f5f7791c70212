"""Data augmentation presets: Keras preprocessing layers for the training data.

The layers work on raw pixels in [0, 255] (what tftransfer's pipelines and
models use) and run on the CPU inside the `tf.data` pipeline, so the model
itself stays free of them: `predict`, the export and TF Serving see no
augmentation. The loaders in `tftransfer.data` apply them to the training
split only.
"""

import keras

PRESETS = {
    "default": {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "contrast": 0.1},
    "light": {"flip": "horizontal", "rotation": 0.05, "zoom": 0.05, "contrast": 0.05},
}
"""The presets of `augmentation`: a horizontal flip, a random rotation (as a
fraction of a full turn: 0.1 is up to +-36 degrees), a random zoom (0.1 is up
to 10% in or out) and a random contrast change (0.1 is a factor in
[0.9, 1.1])."""


_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


def _check_factor(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"`{name}` must be a number in [0, 1) (0 turns the layer off). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def augmentation(preset="default", *, flip=None, rotation=None, zoom=None, contrast=None,
                 seed=None, name="augmentation"):
    """A `keras.Sequential` of random preprocessing layers for training images.

    Start from a preset and override single layers: a value of ``0`` (or
    ``False`` for `flip`) turns that layer off, `None` keeps the preset's.

    Args:
        preset: ``"default"`` (flip, rotation 0.1, zoom 0.1, contrast 0.1),
            ``"light"`` (flip, and 0.05 for the others), or `None` for no
            preset (only the layers you pass).
        flip: ``"horizontal"``, ``"vertical"``, ``"horizontal_and_vertical"``
            or ``False``.
        rotation: maximal rotation as a fraction of a full turn, in [0, 1).
        zoom: maximal zoom in or out as a fraction of the size, in [0, 1).
        contrast: maximal contrast change, in [0, 1).
        seed: seed of the random layers. Layers seeded alike repeat the same
            sequence of transformations; inside a parallel `tf.data.map` the
            order is reproducible once op determinism is on
            (`tf.config.experimental.enable_op_determinism`).
        name: name of the returned model.

    Returns:
        A `keras.Sequential`. Call it with ``training=True`` to augment; with
        ``training=False`` it returns its input.

    Example:

    >>> import numpy as np
    >>> augment = augmentation("light", contrast=0, seed=1)
    >>> [layer.__class__.__name__ for layer in augment.layers]
    ['RandomFlip', 'RandomRotation', 'RandomZoom']
    >>> augment(np.zeros((2, 32, 32, 3)), training=True).shape
    TensorShape([2, 32, 32, 3])
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(
            f"`preset` must be one of {sorted(PRESETS)} or None. Received: preset={preset!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"`seed` must be an integer or None. Received: seed={seed!r}")
    settings = dict(PRESETS.get(preset, {"flip": False, "rotation": 0, "zoom": 0, "contrast": 0}))
    overrides = {"flip": flip, "rotation": rotation, "zoom": zoom, "contrast": contrast}
    settings.update({key: value for key, value in overrides.items() if value is not None})

    if settings["flip"] not in (False, *_FLIP_MODES):
        raise ValueError(
            f"`flip` must be one of {_FLIP_MODES} or False. Received: flip={settings['flip']!r}"
        )
    factors = {key: _check_factor(key, settings[key]) for key in ("rotation", "zoom", "contrast")}

    def layer_seed(i):
        return None if seed is None else seed + i

    layers = []
    if settings["flip"]:
        layers.append(keras.layers.RandomFlip(settings["flip"], seed=layer_seed(0)))
    if factors["rotation"]:
        layers.append(keras.layers.RandomRotation(factors["rotation"], seed=layer_seed(1)))
    if factors["zoom"]:
        layers.append(keras.layers.RandomZoom(factors["zoom"], seed=layer_seed(2)))
    if factors["contrast"]:
        layers.append(
            keras.layers.RandomContrast(factors["contrast"], value_range=(0, 255),
                                        seed=layer_seed(3))
        )
    if not layers:
        raise ValueError(
            "Every augmentation layer is off. To train without augmentation, pass "
            "`augmentation=None` to the loader instead. Received: "
            f"preset={preset!r}, flip={flip!r}, rotation={rotation!r}, zoom={zoom!r}, "
            f"contrast={contrast!r}"
        )
    return keras.Sequential(layers, name=name)
