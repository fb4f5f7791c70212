"""Small Keras layers that travel inside tftransfer models.

They are registered with Keras under the package name ``tftransfer`` so that a
`.keras` file that contains them loads with `safe_mode=True` once
`import tftransfer` has run. An exported SavedModel does not need them: it
holds the traced graph.
"""


import keras
from keras import ops

# ImageNet statistics used by the "torch" and "caffe" preprocessing modes of
# keras.applications (keras/src/applications/imagenet_utils.py).
_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)


_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


PREPROCESSING_MODES = ("none", "unit", "tf", "torch", "caffe")
"""Preprocessing modes of `PixelPreprocessing`, from raw pixels in [0, 255]:

- ``"none"``: pass through (the network rescales by itself).
- ``"unit"``: scale to [0, 1].
- ``"tf"``: scale to [-1, 1] (MobileNetV2, ResNetV2, Xception, Inception).
- ``"torch"``: scale to [0, 1], then normalize each channel with the
  ImageNet mean and standard deviation (DenseNet).
- ``"caffe"``: RGB to BGR, then subtract the ImageNet mean (ResNet50).
"""


@keras.saving.register_keras_serializable(package="tftransfer")
class PixelPreprocessing(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to the range a backbone was trained on.

    Putting this layer inside the model means callers (and TF Serving
    clients) always feed raw pixels, whichever backbone is behind it.

    Args:
        mode: one of `"none"`, `"unit"`, `"tf"`, `"torch"`, `"caffe"`.

    Example:

    >>> import numpy as np
    >>> layer = PixelPreprocessing(mode="tf")
    >>> [float(v) for v in layer(np.array([[0.0, 127.5, 255.0]]))[0]]
    [-1.0, 0.0, 1.0]
    """

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"`mode` must be one of {PREPROCESSING_MODES}. "
                f"Received: mode={mode!r}"
            )
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN_RGB, self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD_RGB, self.compute_dtype)
            return (x / 255.0 - mean) / std
        # "caffe"
        mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, self.compute_dtype)
        return ops.flip(x, axis=-1) - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


class InferenceModeCall(keras.layers.Layer):
    """Calls `layer` with ``training=False``, whatever the outer call says.

    In a Keras 3 functional model, a ``training=False`` written into the graph
    is overridden when the model itself is called with ``training=True``
    (in `fit`): the outer value is passed to every layer that takes a
    `training` argument (keras#20285). This layer takes none, so the layer
    inside it runs in inference mode (Dropout off, BatchNormalization on its
    moving statistics) in `fit` too, while its trainable weights still get
    gradients. The classifiers call their backbone through it, and the
    feature cache calls the layers it replays above a cut through it.

    Not serialized: a model that holds one rebuilds it in its own `__init__`.

    Args:
        layer: the layer (or model) to call.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    >>> dropout = keras.layers.Dropout(0.5)
    >>> x = np.ones((1, 4), "float32")
    >>> InferenceModeCall(dropout)(x, training=True).numpy().tolist()
    [[1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, *args, **kwargs):
        return self.layer(*args, training=False, **kwargs)
