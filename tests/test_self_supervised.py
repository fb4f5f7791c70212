"""`tft.pretrain_self_supervised` (SimCLR), `tft.nt_xent_loss` and `tft.ContrastiveViews`."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer as tft
from helpers import tiny_backbone
from helpers import weights_by_path

SHAPE = (8, 8, 1)


def _backbone(seed=0):
    return tiny_backbone(SHAPE, blocks=2, seed=seed)


def _images(n=16, seed=0):
    """Bright squares at random places on a dark ground: what a view keeps."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 40, (n, *SHAPE))
    for i in range(n):
        r, c = rng.integers(0, 5, 2)
        x[i, r:r + 3, c:c + 3] = 220
    return x.astype("float32")


def _pretrain(backbone, images=None, **kwargs):
    kwargs = {"epochs": 2, "batch_size": 8, "seed": 3, "verbose": 0, **kwargs}
    return tft.pretrain_self_supervised(backbone, _images() if images is None else images,
                                        **kwargs)


# ---------------------------------------------------------------------------- the loss


def _reference_nt_xent(z1, z2, temperature):
    z = np.concatenate([z1, z2]).astype("float64")
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    sim = z @ z.T / temperature
    losses = []
    for i in range(2 * n):
        others = [j for j in range(2 * n) if j != i]
        positive = (i + n) % (2 * n)
        losses.append(np.log(np.exp(sim[i, others]).sum()) - sim[i, positive])
    return float(np.mean(losses))


def test_nt_xent_is_the_cross_entropy_of_finding_the_partner():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    for temperature in (0.1, 0.5, 1.0):
        np.testing.assert_allclose(
            float(tft.nt_xent_loss(z1.astype("float32"), z2.astype("float32"),
                                   temperature=temperature)),
            _reference_nt_xent(z1, z2, temperature), rtol=1e-5)
    aligned = z1 + 0.01 * rng.normal(size=z1.shape)  # partners nearly equal: a lower loss
    assert float(tft.nt_xent_loss(z1, aligned)) < float(tft.nt_xent_loss(z1, z2))
    # Scaling a projection does not change its cosine similarities.
    np.testing.assert_allclose(float(tft.nt_xent_loss(3 * z1, z2)),
                               float(tft.nt_xent_loss(z1, z2)), rtol=1e-5)


# ---------------------------------------------------------------------------- the views


def test_views_are_random_seeded_and_in_range():
    images = _images(6)
    views = tft.ContrastiveViews(seed=1)
    first, second = (np.asarray(views(images, training=True)) for _ in range(2))
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 255
    assert not np.allclose(first, second)  # each call draws anew
    assert not np.allclose(first, images)
    again = np.asarray(tft.ContrastiveViews(seed=1)(images, training=True))
    np.testing.assert_array_equal(again, first)  # seeded
    np.testing.assert_array_equal(np.asarray(views(images, training=False)), images)
    rgb = np.repeat(images, 3, -1)
    assert tft.ContrastiveViews(seed=2)(rgb, training=True).shape == rgb.shape


def test_views_with_every_step_off_give_the_image_back():
    images = _images(4)
    identity = tft.ContrastiveViews(crop_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0), rotation=0,
                                    jitter_probability=0, blur_probability=0, noise=0, seed=0)
    np.testing.assert_allclose(np.asarray(identity(images, training=True)), images, atol=1e-3)
    config = identity.get_config()
    assert tft.ContrastiveViews.from_config(config).get_config() == config


# ---------------------------------------------------------------------------- pretraining


def test_pretraining_trains_the_backbone_and_it_transfers(caplog):
    backbone = _backbone()
    backbone.trainable = False
    backbone.get_layer("block1_conv").trainable = True
    before = weights_by_path(backbone)
    images = _images(32)
    with caplog.at_level(logging.INFO, logger="tftransfer.transfer.self_supervised"):
        returned, history = _pretrain(backbone, images, epochs=12, batch_size=16,
                                      learning_rate=3e-3, return_history=True)
    assert returned is backbone and "runs uncached" in caplog.text
    assert len(history.history["loss"]) == 12 and history.epoch == list(range(12))
    assert np.mean(history.history["loss"][-3:]) < np.mean(history.history["loss"][:3])
    after = weights_by_path(backbone)
    assert not np.allclose(after["block2_conv/kernel"], before["block2_conv/kernel"])
    # The trainable flags are the user's again.
    assert not backbone.trainable and backbone.get_layer("block1_conv").trainable
    assert not backbone.get_layer("block2_conv").trainable
    # The first BatchNormalization holds the exact statistics of the plain images.
    conv = keras.Model(backbone.input, backbone.get_layer("block1_conv").output)
    values = np.asarray(conv(images, training=False), "float64")
    bn = backbone.get_layer("block1_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), values.mean((0, 1, 2)), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), values.var((0, 1, 2)), rtol=1e-3,
                               atol=1e-5)
    model = tft.build_classifier(backbone, class_names=["a", "b"])
    tft.fit_two_phase(model, images, y=np.arange(32) % 2, head_epochs=1, fine_tune_epochs=1,
                      unfreeze_blocks=1, verbose=0)


def test_a_dataset_of_labelled_batches_is_read_without_its_labels():
    images = _images(20)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(20, "int32"))).batch(6)
    _, history = _pretrain(_backbone(), dataset, return_history=True)
    assert len(history.history["loss"]) == 2
    with pytest.raises(ValueError, match=r"fewer images than one batch of `batch_size`=32"):
        _pretrain(_backbone(), dataset, batch_size=32)


def test_the_same_seed_gives_the_same_weights():
    first = weights_by_path(_pretrain(_backbone(), epochs=1))
    second = weights_by_path(_pretrain(_backbone(), epochs=1))
    for path in first:
        np.testing.assert_array_equal(first[path], second[path], err_msg=path)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("interrupted")


class _NoTraining(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise AssertionError("a finished run trained again")


@pytest.mark.parametrize("own_views", [False, True])
def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, own_views):
    def views():  # made anew for each call, as a restarted program would
        return {"augmentation": tft.ContrastiveViews(crop_scale=(0.6, 1.0), seed=7)} if (
            own_views) else {}

    reference, expected = _pretrain(_backbone(), epochs=4, checkpoint_dir=tmp_path / "a",
                                    return_history=True, **views())
    with pytest.raises(KeyboardInterrupt):
        _pretrain(_backbone(), epochs=4, checkpoint_dir=tmp_path / "b",
                  callbacks=[_Interrupt()], **views())
    assert (tmp_path / "b" / "phase1" / "latest.json").exists()
    resumed, history = _pretrain(_backbone(), epochs=4, checkpoint_dir=tmp_path / "b",
                                 return_history=True, **views())
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)
    want, got = weights_by_path(reference), weights_by_path(resumed)
    for path in want:
        np.testing.assert_allclose(got[path], want[path], rtol=1e-5, atol=1e-6, err_msg=path)
    # A finished run is restored, not trained again.
    restored = _pretrain(_backbone(seed=5), epochs=4, checkpoint_dir=tmp_path / "b",
                         callbacks=[_NoTraining()], **views())
    for path, value in weights_by_path(restored).items():
        np.testing.assert_allclose(value, want[path], rtol=1e-5, atol=1e-6, err_msg=path)
    with pytest.raises(ValueError, match=r"holds a run with other settings \(epochs: 4 there, "
                                         r"5 now\)"):
        _pretrain(_backbone(), epochs=5, checkpoint_dir=tmp_path / "b", **views())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"method": "byol"}, ValueError, r"`method` must be one of \['simclr'\]. "
                                     r"Received: method='byol'"),
    ({"temperature": 0}, ValueError, r"`temperature` must be a positive number.*"
                                     r"Received: temperature=0"),
    ({"temperature": -0.5}, ValueError, r"Received: temperature=-0.5"),
    ({"batch_size": 1}, ValueError, r"`batch_size` must be an integer >= 2\. NT-Xent.*"
                                    r"Received: batch_size=1"),
    ({"batch_size": 64}, ValueError, r"holds 16 images, fewer than one batch of "
                                     r"`batch_size`=64.*Pass a smaller `batch_size`"),
    ({"epochs": 0}, ValueError, r"`epochs` must be an integer >= 1. Received: epochs=0"),
    ({"projection_units": ()}, ValueError, r"`projection_units` must be a non-empty tuple"),
    ({"learning_rate": -1}, ValueError, r"Received: learning_rate=-1"),
    ({"warmup": 1.0}, ValueError, r"`warmup` must be in \[0, 1\). Received: warmup=1.0"),
    ({"optimizer": "adam"}, TypeError, r"`optimizer` must be a keras.optimizers.Optimizer"),
    ({"augmentation": "strong"}, TypeError, r"`augmentation` must be a Keras layer"),
    ({"seed": 1.5}, TypeError, r"`seed` must be an integer or None. Received: seed=1.5"),
    ({"checkpoint_dir": 3}, TypeError, r"`checkpoint_dir` must be a directory path"),
])
def test_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        _pretrain(_backbone(), **kwargs)


def test_errors_on_the_backbone_and_the_images():
    with pytest.raises(TypeError, match=r"`backbone` must be a functional keras.Model.*"
                                        r"Received: backbone of type str"):
        tft.pretrain_self_supervised("resnet50", _images())
    flat = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten()])
    pooled = keras.Model(flat.inputs, flat.outputs)
    with pytest.raises(ValueError, match=r"give one 4-D feature map.*outputs \[\(None, 64\)\]"):
        tft.pretrain_self_supervised(pooled, _images())
    inputs = keras.Input(SHAPE)
    shared = keras.layers.BatchNormalization()
    twice = keras.Model(inputs, shared(shared(inputs)), name="twice")
    with pytest.raises(ValueError, match=r"Backbone 'twice' runs a BatchNormalization layer "
                                         r"more than once"):
        tft.pretrain_self_supervised(twice, _images())
    with pytest.raises(ValueError, match=r"The unlabelled images have shape \(16, 16, 1\) but "
                                         r"backbone 'tiny_backbone' takes \(8, 8, 1\)"):
        _pretrain(_backbone(), np.zeros((16, 16, 16, 1), "float32"))
    with pytest.raises(ValueError, match=r"an array of images \(count, height, width, "
                                         r"channels\). Received: unlabelled of shape \(16, 64\)"):
        _pretrain(_backbone(), np.zeros((16, 64), "float32"))
    with pytest.raises(TypeError, match=r"`unlabelled` must be an array of images or a "
                                        r"tf.data.Dataset.*Received: unlabelled of type dict"):
        _pretrain(_backbone(), {"images": 1})
    with pytest.raises(ValueError, match=r"`crop_scale` must be a pair \(low, high\).*"
                                         r"Received: crop_scale=\(0.5, 0.2\)"):
        tft.ContrastiveViews(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"`noise` must be a number in \[0, 1\].*noise=2"):
        tft.ContrastiveViews(noise=2)
    with pytest.raises(ValueError, match=r"`temperature` must be a positive number"):
        tft.nt_xent_loss(np.ones((2, 2)), np.ones((2, 2)), temperature=0.0)
