"""Losses the classifiers' `"auto"` compile picks that Keras lacks."""

import keras


@keras.saving.register_keras_serializable(package="tftransfer")
class SparseCategoricalCrossentropyWithSmoothing(keras.losses.Loss):
    """Categorical cross-entropy on integer labels with label smoothing.

    Keras's `SparseCategoricalCrossentropy` has no `label_smoothing`; this is
    `keras.losses.CategoricalCrossentropy(label_smoothing=...)` on the one-hot
    labels: the true class gets ``1 - label_smoothing + label_smoothing / k``,
    every other class ``label_smoothing / k``.

    Example:

    >>> loss = SparseCategoricalCrossentropyWithSmoothing(0.1, from_logits=True)
    >>> round(float(loss(np.array([0]), np.array([[2.0, 0.0, 0.0]]))), 4)
    0.3729
    """

    def __init__(self, label_smoothing=0.1, *, from_logits=False, name="sparse_cce_smoothed",
                 **kwargs):
        if isinstance(label_smoothing, bool) or not isinstance(
                label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                "`label_smoothing` must be a number in [0, 1), e.g. 0.1. "
                f"Received: label_smoothing={label_smoothing!r}")
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "from_logits": self.from_logits}
