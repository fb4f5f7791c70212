"""Domain-adversarial training: `tft.fit_domain_adversarial`, `tft.GradientReversal`, the schedules."""

import logging
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import labelled
from helpers import tiny_backbone
from helpers import weights_by_path

import tftransfer as tft
from tftransfer.transfer.adversarial_step import AnnealedLearningRate
from tftransfer.transfer.adversarial_step import epoch_indices

SHAPE = (16, 16, 3)
FAST = {"epochs": 2, "batch_size": 4, "verbose": 0}


@pytest.fixture(scope="module")
def data():
    x, y = labelled(n=16, shape=SHAPE, seed=0)
    target = np.clip(255.0 - x * 0.7, 0, 255).astype("float32")  # a shifted domain
    return (x, y), target


@pytest.fixture(scope="module")
def start(data):
    """A classifier whose head is trained on the source, and its weights."""
    keras.utils.set_random_seed(0)
    model = tft.build_classifier(tiny_backbone(SHAPE, seed=0), num_classes=3)
    tft.fit_head(model, data[0][0], y=data[0][1], epochs=2, verbose=0)
    return model, model.get_weights()


def _fresh(start):
    model, weights = start
    model.set_weights(weights)
    tft.freeze_backbone(model)
    return model


def _batchnorms(model):
    return [layer for layer in model.backbone.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def test_gradient_reversal_is_the_identity_with_the_gradient_reversed(tmp_path):
    layer = tft.GradientReversal(scale=2.0)
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x) * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_allclose(tape.gradient(y, x), [[-2.0, -4.0, -6.0]])
    layer.scale.assign(0.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x))
    np.testing.assert_array_equal(tape.gradient(y, x), [[0.0, 0.0, 0.0]])
    # serializable: config round trip and a .keras file that holds one
    layer.scale.assign(0.25)
    again = tft.GradientReversal.from_config(layer.get_config())
    assert float(again.scale.numpy()) == 0.25
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(tft.GradientReversal(0.5)(inputs)))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.layers[1], tft.GradientReversal)
    np.testing.assert_allclose(loaded.predict(np.ones((2, 3)), verbose=0),
                               model.predict(np.ones((2, 3)), verbose=0))
    with pytest.raises(ValueError, match=r"`scale` must be a non-negative number. Received: "
                                         r"scale=-1"):
        tft.GradientReversal(-1)


def test_schedules_are_the_papers():
    for p in (0.0, 0.3, 1.0):
        expected = 2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0
        assert tft.dann_lambda(p) == pytest.approx(expected)
        assert tft.dann_lambda(p, lambda_max=0.5) == pytest.approx(0.5 * expected)
        assert float(tft.dann_lambda(tf.constant(p))) == pytest.approx(expected, rel=1e-6)
    schedule = AnnealedLearningRate(0.01, total_steps=10)
    for step in (0, 5, 10, 20):  # capped at progress 1
        p = min(step / 10, 1.0)
        assert float(schedule(step)) == pytest.approx(0.01 / (1 + 10 * p) ** 0.75, rel=1e-6)
    assert AnnealedLearningRate(**schedule.get_config()).get_config() == schedule.get_config()


def test_batches_depend_on_seed_and_epoch_only():
    source, target = epoch_indices(3, 1, num_source=10, num_target=7, batch_size=4)
    assert source.shape == target.shape == (2, 4)  # the last partial source batch dropped
    assert len(set(source.ravel())) == 8 and set(target.ravel()) <= set(range(7))
    again = epoch_indices(3, 1, num_source=10, num_target=7, batch_size=4)
    assert all(np.array_equal(a, b) for a, b in zip((source, target), again))
    other = epoch_indices(3, 2, num_source=10, num_target=7, batch_size=4)
    assert not np.array_equal(source, other[0])
    small = epoch_indices(0, 0, num_source=3, num_target=7, batch_size=4)
    assert small[0].shape == (1, 3)  # fewer images than a batch: one batch of all


def test_trains_reports_and_ends_on_the_target_statistics(start, data, caplog, tmp_path):
    model = _fresh(start)
    (x, y), target = data
    before = weights_by_path(model)
    with caplog.at_level(logging.INFO, logger="tftransfer.transfer.adversarial"):
        history = tft.fit_domain_adversarial(model, (x, y), target, validation_data=(target, y),
                                             seed=0, **dict(FAST, epochs=3))
    assert "uncached" in caplog.text
    assert history.epoch == [0, 1, 2]
    for key in ("loss", "label_loss", "domain_loss", "domain_accuracy", "accuracy", "lambda",
                "val_loss", "val_accuracy"):
        assert len(history.history[key]) == 3 and all(np.isfinite(history.history[key])), key
    steps = len(x) // 4
    expected = [tft.dann_lambda(((e + 1) * steps - 1) / (3 * steps)) for e in range(3)]
    np.testing.assert_allclose(history.history["lambda"], expected, rtol=1e-5)
    for loss, label, domain in zip(*(history.history[k] for k in
                                     ("loss", "label_loss", "domain_loss"))):
        assert loss == pytest.approx(label + domain, rel=1e-4)
    summary = model.training_summary[-1]
    assert summary["phase"] == "domain_adversarial" and summary["epochs"] == 3
    assert summary["unfrozen_blocks"] == ["block1", "block2", "block3"]
    after = weights_by_path(model)
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert any("block1_conv" in p for p in changed) and any("block3_conv" in p for p in changed)
    assert any("predictions" in p for p in changed)
    for layer in _batchnorms(model):  # scale and offset fixed; statistics the target's
        for variable in (layer.gamma, layer.beta):
            assert variable.path not in changed
        assert not layer.trainable
    statistics = [v.numpy() for layer in _batchnorms(model)
                  for v in (layer.moving_mean, layer.moving_variance)]
    tft.adapt_batchnorm(model, target)
    for a, layer in zip(statistics[::2], _batchnorms(model)):
        np.testing.assert_allclose(a, layer.moving_mean, rtol=1e-5, atol=1e-6)
    # An ordinary classifier again: the same weights, no domain classifier; saves and loads.
    assert isinstance(model, tft.ImageClassifier)
    assert sorted(after) == sorted(before)
    model.save(tmp_path / "adapted.keras")
    loaded = keras.saving.load_model(tmp_path / "adapted.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(target, verbose=0), model.predict(target, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_top_blocks_only_and_the_reversal_is_the_only_way_to_the_features(start, data):
    (x, y), target = data
    kwargs = dict(FAST, epochs=2, unfreeze_blocks=1, seed=1)
    model = _fresh(start)
    before = weights_by_path(model)
    history = tft.fit_domain_adversarial(model, (x, y), target, lambda_max=0.0, **kwargs)
    assert history.history["lambda"] == [0.0] * 2
    after = weights_by_path(model)
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert any("block3_conv" in p for p in changed)
    assert not any("block1_conv" in p or "block2_conv" in p for p in changed)
    assert [layer.name for layer in model.backbone.layers if layer.trainable_weights] == [
        "block3_conv"]  # as fine_tune leaves it
    # With lambda_max=0 the domain classifier does not reach the features: another domain
    # classifier (here a custom one) gives the same model. With the reversal on, it does.
    results = {}
    for lambda_max in (0.0, 1.0):
        model = _fresh(start)
        head = keras.Sequential([keras.layers.Dense(5, activation="relu"),
                                 keras.layers.Dense(1)], name="small_domain_head")
        history = tft.fit_domain_adversarial(model, (x, y), target, lambda_max=lambda_max,
                                             domain_head=head, **kwargs)
        assert head.layers[0].kernel.shape == (12, 5)  # built on the pooled features
        assert np.isfinite(history.history["domain_loss"]).all()
        results[lambda_max] = weights_by_path(model)
    for path, value in after.items():
        np.testing.assert_allclose(results[0.0][path], value, rtol=1e-6, atol=1e-7)
    assert not all(np.allclose(results[1.0][p], after[p]) for p in after)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("interrupted")


def test_interrupted_run_resumes_to_the_uninterrupted_weights(start, data, tmp_path):
    (x, y), target = data
    kwargs = dict(FAST, epochs=3)  # the seed: the directory's
    model = _fresh(start)
    reference = tft.fit_domain_adversarial(model, (x, y), target,
                                           checkpoint_dir=tmp_path / "reference", **kwargs)
    expected = [np.array(w) for w in model.get_weights()]
    os.makedirs(tmp_path / "run")  # the same shuffle seed as the reference
    shutil.copy(tmp_path / "reference" / "run.json", tmp_path / "run" / "run.json")
    model = _fresh(start)
    with pytest.raises(KeyboardInterrupt):
        tft.fit_domain_adversarial(model, (x, y), target, checkpoint_dir=tmp_path / "run",
                                   callbacks=[_Interrupt()], **kwargs)
    assert os.path.exists(tmp_path / "run" / "phase1" / "latest.json")
    assert not any(layer.trainable for layer in _batchnorms(model))  # left as fine_tune leaves it
    model = _fresh(start)  # another process would start from the source model
    resumed = tft.fit_domain_adversarial(model, (x, y), target, checkpoint_dir=tmp_path / "run",
                                         **kwargs)
    assert resumed.epoch == [0, 1, 2]
    np.testing.assert_allclose(resumed.history["loss"], reference.history["loss"], rtol=1e-5)
    for a, b in zip(expected, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    model = _fresh(start)  # finished: restored, not trained again
    again = tft.fit_domain_adversarial(model, (x, y), target, checkpoint_dir=tmp_path / "run",
                                       **kwargs)
    assert again.history["loss"] == resumed.history["loss"]
    for a, b in zip(expected, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"holds a run with other settings \(lambda_max: "
                                         r"1.0 there, 0.5 now\)"):
        tft.fit_domain_adversarial(model, (x, y), target, checkpoint_dir=tmp_path / "run",
                                   lambda_max=0.5, **kwargs)


def test_errors_before_any_work(start, data):
    model = _fresh(start)
    (x, y), target = data
    before = weights_by_path(model)

    def fails(error, match, **kwargs):
        call = {"model": model, "source": (x, y), "unlabelled_target": target, **kwargs}
        with pytest.raises(error, match=match):
            tft.fit_domain_adversarial(**call)

    fails(TypeError, r"`model` must be a single-label image classifier.*type Functional",
          model=keras.Model(model.input, model.output))
    multi = tft.build_classifier(tiny_backbone(SHAPE), num_classes=3, multi_label=True)
    fails(TypeError, r"single-label image classifier.*multi_label=True", model=multi)
    fails(TypeError, r"`source` must be a pair \(images, labels\) of arrays.*type ndarray",
          source=x)
    fails(ValueError, r"`source` must hold one integer label per image.*labels of shape "
                      r"\(5,\)", source=(x, y[:5]))
    fails(ValueError, r"integer label per image.*dtype float32", source=(x, y.astype("float32")))
    fails(ValueError, r"The source labels go from 0 to 3 but model .* num_classes=3",
          source=(x, np.where(y == 2, 3, y)))
    fails(ValueError, r"The source images are 8x8x3 but model", source=(x[:, :8, :8], y))
    fails(ValueError, r"`source` holds no images.*shape \(0, 16, 16, 3\)", source=(x[:0], y[:0]))
    fails(ValueError, r"`unlabelled_target` holds no images: DANN needs images of both "
                      r"domains. Received: unlabelled_target of shape \(0, 16, 16, 3\)",
          unlabelled_target=target[:0])
    fails(ValueError, r"The unlabelled_target images are \(8, 8, 3\) but the source ones "
                      r"\(16, 16, 3\)", unlabelled_target=target[:, :8, :8])
    fails(TypeError, r"`unlabelled_target` must be an array of images.*type list",
          unlabelled_target=[1, 2])
    for name, value, error, match in [
            ("epochs", 0, ValueError, r"`epochs` must be a positive integer. Received: epochs=0"),
            ("batch_size", 2.0, ValueError, r"`batch_size` must be a positive integer"),
            ("learning_rate", 0, ValueError, r"`learning_rate` must be a positive number"),
            ("lambda_max", -1, ValueError, (r"`lambda_max` must be a non-negative number. "
                                            r"Received: lambda_max=-1")),
            ("seed", -1, ValueError, r"`seed` must be a non-negative integer or None"),
            ("unfreeze_blocks", 0, ValueError, (r"DANN trains the feature extractor.*"
                                                r"unfreeze_blocks=0")),
            ("unfreeze_blocks", 9, ValueError, r"Cannot unfreeze 9 blocks: backbone .* has 3"),
            ("from_layer", "nope", ValueError, r"has no layer named 'nope'"),
            ("validation_data", x, TypeError, r"`validation_data` must be a pair"),
            ("domain_head", "mlp", TypeError, (r"`domain_head` must be a Keras layer or model"
                                               r".*type str")),
            ("domain_head", keras.layers.Dense(2, name="two"), ValueError,
             r"`domain_head` must return one logit per example.*output shape \(None, 2\)"),
            ("domain_head", keras.Sequential([keras.Input((7,)), keras.layers.Dense(1)],
                                             name="seven"), ValueError,
             r"`domain_head` must take the model's features, a batch of 12 values.*seven"),
            ("checkpoint_dir", 3, TypeError, r"`checkpoint_dir` must be a directory path")]:
        fails(error, match, **{name: value})
    after = weights_by_path(model)
    assert all(np.array_equal(before[p], after[p]) for p in before)
