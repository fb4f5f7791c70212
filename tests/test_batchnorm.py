"""`tft.adapt_batchnorm`: exact BatchNormalization statistics on given data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer as tft
from helpers import tiny_backbone


def _two_bn_model():
    inputs = keras.Input((4,))
    x = keras.layers.BatchNormalization(name="bn1")(inputs)
    x = keras.layers.Dense(3, name="dense")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def test_statistics_are_exact_and_taken_in_order():
    model = _two_bn_model()
    x = np.random.default_rng(0).normal(3.0, 2.0, (50, 4)).astype("float32")
    before = {w.path: w.numpy().copy() for w in model.weights}
    assert tft.adapt_batchnorm(model, x, batch_size=7) == 2  # batches of unequal size
    bn1, dense, bn2 = (model.get_layer(n) for n in ("bn1", "dense", "bn2"))
    np.testing.assert_allclose(bn1.moving_mean.numpy(), x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), x.var(0), rtol=1e-4)
    # bn2 sees dense's outputs with bn1 already normalizing by the new statistics.
    normalized = (x - x.mean(0)) / np.sqrt(x.var(0) + bn1.epsilon)
    normalized = normalized * bn1.gamma.numpy() + bn1.beta.numpy()
    h = normalized @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(bn2.moving_mean.numpy(), h.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn2.moving_variance.numpy(), h.var(0), rtol=1e-4, atol=1e-5)
    statistics = {v.path for layer in (bn1, bn2)
                  for v in (layer.moving_mean, layer.moving_variance)}
    for w in model.weights:  # nothing else changed
        if w.path not in statistics:
            assert np.array_equal(w.numpy(), before[w.path]), w.path


def test_a_classifier_s_frozen_backbone_is_updated_through_its_nesting():
    model = tft.build_classifier(tiny_backbone(), class_names=["a", "b"])
    layers = model.layers + model.backbone.layers
    trainable = [layer.trainable for layer in layers]
    bns = [layer for layer in model.backbone.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns
    x = np.random.default_rng(1).uniform(0, 255, (12, 32, 32, 3)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(12) % 2)).batch(5)
    assert tft.adapt_batchnorm(model, dataset) == len(bns)
    first = bns[0]
    probe = keras.Model(model.backbone.input, first.input)
    inputs = probe.predict(x, verbose=0)
    axes = tuple(range(inputs.ndim - 1))
    np.testing.assert_allclose(first.moving_mean.numpy(), inputs.mean(axes), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(first.moving_variance.numpy(), inputs.var(axes), rtol=1e-3,
                               atol=1e-4)
    assert [layer.trainable for layer in layers] == trainable


def test_errors():
    model = _two_bn_model()
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer. "
                                         r"Received: batch_size=0"):
        tft.adapt_batchnorm(model, np.zeros((2, 4)), batch_size=0)
    with pytest.raises(TypeError, match=r"`model` must be a functional keras.Model. "
                                        r"Received: model of type str"):
        tft.adapt_batchnorm("model", np.zeros((2, 4)))
    with pytest.raises(TypeError, match=r"`data` must be an array .* Received: data of type "
                                        r"dict"):
        tft.adapt_batchnorm(model, {"x": 1})
    with pytest.raises(ValueError, match=r"`data` holds no examples"):
        tft.adapt_batchnorm(model, np.zeros((0, 4), "float32"))
    inputs = keras.Input((4,))
    shared = keras.layers.BatchNormalization(name="shared")
    twice = keras.Model(inputs, shared(shared(inputs)))
    with pytest.raises(ValueError, match=r"'shared' runs more than once"):
        tft.adapt_batchnorm(twice, np.zeros((2, 4), "float32"))
