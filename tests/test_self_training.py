"""Self-training in the FixMatch style: `tft.fit_self_training`, its step and its views."""

import logging
import os
import shutil

import keras
import numpy as np
import pytest
from helpers import labelled
from helpers import tiny_backbone
from helpers import weights_by_path

import tftransfer as tft
from tftransfer.transfer.fixmatch import FixMatchTrainer
from tftransfer.transfer.fixmatch import align_distribution
from tftransfer.transfer.fixmatch import epoch_indices
from tftransfer.transfer.strong_augment import StrongAugmentation
from tftransfer.transfer.strong_augment import weak_augmentation

SHAPE = (16, 16, 3)
FAST = {"epochs": 1, "batch_size": 4, "unlabelled_ratio": 2, "verbose": 0}


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return tft.build_classifier(tiny_backbone(SHAPE, seed=seed), num_classes=3)


@pytest.fixture(scope="module")
def data():
    x, y = labelled(n=30, shape=SHAPE, seed=0)
    return (x[:6], y[:6]), x[6:], y[6:]


@pytest.fixture(scope="module")
def start(data):
    """A model whose head is trained on the labelled images, and its weights."""
    model = _model()
    tft.fit_head(model, *data[0][:1], y=data[0][1], epochs=3, verbose=0)
    return model, model.get_weights()


def _fresh(start):
    model, weights = start
    model.set_weights(weights)
    tft.freeze_backbone(model)
    return model


def test_trains_the_head_and_top_block_only_and_reports(start, data, caplog):
    model = _fresh(start)
    before = weights_by_path(model)
    with caplog.at_level(logging.INFO, logger="tftransfer.transfer.self_training"):
        history = tft.fit_self_training(model, data[0], data[1], data[0], unfreeze_blocks=1,
                                        seed=0, **dict(FAST, epochs=2))
    assert "runs uncached" in caplog.text and "augmentations" in caplog.text
    assert history.epoch == [0, 1]
    for key in ("loss", "labelled_loss", "unlabelled_loss", "mask_rate", "accuracy",
                "val_loss", "val_accuracy"):
        assert len(history.history[key]) == 2, key
    assert all(0.0 <= v <= 1.0 for v in history.history["mask_rate"])
    # validation is the final model scored on validation_data
    assert history.history["val_accuracy"][-1] == pytest.approx(
        tft.evaluate(model, data[0], top_k=1).accuracy)
    after = weights_by_path(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    assert changed, "nothing trained"
    # the head and block3's convolution; BatchNormalization (its statistics too) and the
    # blocks below stay frozen
    assert changed == {"block3_conv/kernel", "block3_conv/bias", "predictions/kernel",
                       "predictions/bias"}
    summary = model.training_summary[-1]
    assert summary["phase"] == "self_training" and summary["unfrozen_blocks"] == ["block3"]


def test_threshold_sets_the_mask(start, data):
    model = _fresh(start)
    low = tft.fit_self_training(model, data[0], data[1], threshold=1e-6, unfreeze_blocks=0,
                                seed=0, **FAST)
    assert low.history["mask_rate"] == [1.0]
    assert low.history["unlabelled_loss"][0] > 0
    model = _fresh(start)
    high = tft.fit_self_training(model, data[0], data[1], threshold=1.0, unfreeze_blocks=0,
                                 seed=0, class_balance=None, **FAST)
    assert high.history["mask_rate"] == [0.0] and high.history["unlabelled_loss"] == [0.0]


def test_unlabelled_labels_are_monitored_never_trained_on(start, data):
    (x, y), unlabelled, hidden = data
    model = _fresh(start)
    seen = tft.fit_self_training(model, (x, y), unlabelled, unlabelled_labels=hidden,
                                 threshold=0.3, seed=3, **FAST)
    with_labels = model.get_weights()
    accuracy = seen.history["unlabelled_accuracy"][0]
    assert 0.0 <= seen.history["pseudo_label_accuracy"][0] <= 1.0 and 0.0 <= accuracy <= 1.0
    model = _fresh(start)
    wrong = tft.fit_self_training(model, (x, y), unlabelled, unlabelled_labels=(hidden + 1) % 3,
                                  threshold=0.3, seed=3, **FAST)
    assert wrong.history["unlabelled_accuracy"][0] != accuracy
    for a, b in zip(with_labels, model.get_weights()):  # same seed: the same run
        np.testing.assert_array_equal(a, b)
    model = _fresh(start)
    tft.fit_self_training(model, (x, y), unlabelled, threshold=0.3, seed=4, **FAST)
    assert any(not np.array_equal(a, b) for a, b in zip(with_labels, model.get_weights()))


def test_distribution_alignment_moves_pseudo_labels_towards_the_prior():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3)) + np.array([2.0, 0.0, 0.0])  # favours class 0
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    aligned = np.asarray(align_distribution(p, [1 / 3] * 3, p.mean(0)))
    np.testing.assert_allclose(aligned.sum(-1), 1.0, rtol=1e-5)
    before = np.bincount(p.argmax(-1), minlength=3) / 200
    after = np.bincount(aligned.argmax(-1), minlength=3) / 200
    assert before[0] > 0.7 and abs(after - 1 / 3).max() < abs(before - 1 / 3).max() / 2
    # a prediction equal to the running mean becomes the prior
    prior = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(align_distribution(p[:1], prior, p[0]), prior[None], rtol=1e-5)


def test_trainer_aligns_a_biased_model(start, data):
    model = _fresh(start)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel, bias + np.array([5.0, 0.0, 0.0], "float32")])
    images = data[1]
    mean = np.asarray(model.probabilities(model.predict(images, verbose=0))).mean(0)
    views = {"weak": keras.layers.Identity(), "strong": keras.layers.Identity()}
    counts = {}
    for balance in ("distribution_alignment", None):
        trainer = FixMatchTrainer(model, **views, threshold=0.0, unlabelled_weight=1.0,
                                  prior=[1 / 3] * 3, class_balance=balance)
        trainer.prediction_mean.assign(mean)
        probabilities, _ = trainer.pseudo_labels(images)
        counts[balance] = np.bincount(np.asarray(probabilities).argmax(-1), minlength=3)
    assert counts[None][0] == len(images)  # the bias: every pseudo-label is class 0
    assert counts["distribution_alignment"][0] < len(images) * 0.7
    assert (counts["distribution_alignment"] > 0).sum() >= 2


def test_epochs_depend_on_seed_and_epoch_only():
    first = epoch_indices(1, 3, num_labelled=5, num_unlabelled=21, batch_size=4,
                          unlabelled_ratio=2)
    again = epoch_indices(1, 3, num_labelled=5, num_unlabelled=21, batch_size=4,
                          unlabelled_ratio=2)
    assert first[0].shape == (3, 4) and first[1].shape == (3, 8)
    assert set(first[1].ravel()) == set(range(21))  # every unlabelled image each epoch
    np.testing.assert_array_equal(first[0], again[0])
    other = epoch_indices(1, 4, num_labelled=5, num_unlabelled=21, batch_size=4,
                          unlabelled_ratio=2)
    assert not np.array_equal(first[1], other[1])


def test_strong_augmentation_is_seeded_per_image_and_in_range():
    images = np.tile(np.linspace(0, 255, 16, dtype="float32")[None, :, None, None],
                     (8, 1, 16, 3))
    a = StrongAugmentation(seed=5)(images, training=True).numpy()
    b = StrongAugmentation(seed=5)(images, training=True).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, StrongAugmentation(seed=6)(images, training=True).numpy())
    assert a.min() >= 0 and a.max() <= 255
    assert len({a[i].tobytes() for i in range(8)}) == 8  # each image its own
    flat = np.full((4, 16, 16, 1), 0.0, "float32")
    cut = StrongAugmentation(num_ops=0, cutout=0.9, seed=0)(flat, training=True).numpy()
    assert set(np.unique(cut)) <= {0.0, 127.5} and (cut == 127.5).any()
    none = StrongAugmentation(num_ops=0, cutout=0, seed=0)(flat, training=True).numpy()
    np.testing.assert_array_equal(none, flat)
    assert weak_augmentation(seed=0)(images, training=True).shape == images.shape


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


class _Interrupt(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if self.params and getattr(self, "epoch", 0) == 1:
            raise KeyboardInterrupt("interrupted")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


def test_interrupted_run_resumes_to_the_uninterrupted_weights(start, data, tmp_path):
    kwargs = dict(FAST, epochs=3, threshold=0.3, unfreeze_blocks=1)  # seed: the directory's
    model = _fresh(start)
    reference = tft.fit_self_training(model, data[0], data[1],
                                      checkpoint_dir=tmp_path / "reference", **kwargs)
    expected = _weights(model)
    os.makedirs(tmp_path / "run")  # the same shuffle seed as the reference
    shutil.copy(tmp_path / "reference" / "run.json", tmp_path / "run" / "run.json")
    model = _fresh(start)
    with pytest.raises(KeyboardInterrupt):
        tft.fit_self_training(model, data[0], data[1], checkpoint_dir=tmp_path / "run",
                              callbacks=[_Interrupt()], **kwargs)
    assert os.path.exists(tmp_path / "run" / "phase1" / "latest.json")
    # the interrupted model is not the reference; another process would start from scratch
    model = _fresh(start)
    resumed = tft.fit_self_training(model, data[0], data[1], checkpoint_dir=tmp_path / "run",
                                    **kwargs)
    assert resumed.epoch == [0, 1, 2]
    np.testing.assert_allclose(resumed.history["loss"][0], reference.history["loss"][0],
                               rtol=1e-6)
    for a, b in zip(expected, _weights(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # finished: restored, not trained again
    model = _fresh(start)
    again = tft.fit_self_training(model, data[0], data[1], checkpoint_dir=tmp_path / "run",
                                  **kwargs)
    assert again.history["loss"] == resumed.history["loss"]
    for a, b in zip(expected, _weights(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"holds a run with other settings \(threshold: "
                                         r"0.3 there, 0.5 now\)"):
        tft.fit_self_training(model, data[0], data[1], checkpoint_dir=tmp_path / "run",
                              **dict(kwargs, threshold=0.5))


def test_errors_before_any_work(start, data):
    model = _fresh(start)
    (x, y), unlabelled, _ = data
    before = weights_by_path(model)

    def fails(error, match, *args, **kwargs):
        call = {"model": model, "labelled": (x, y), "unlabelled": unlabelled, **kwargs}
        with pytest.raises(error, match=match):
            tft.fit_self_training(*args, **call)

    for threshold in (0, 1.5, True, "0.9"):
        fails(ValueError, rf"`threshold` must be a confidence in \(0, 1\].*Received: "
                          rf"threshold={threshold!r}", threshold=threshold)
    fails(ValueError, r"`unlabelled` holds no images.*Received: unlabelled of shape "
                      r"\(0, 16, 16, 3\)", unlabelled=unlabelled[:0])
    fails(ValueError, r"unlabelled images are \(8, 8, 3\) but the labelled ones \(16, 16, "
                      r"3\)", unlabelled=unlabelled[:, :8, :8])
    fails(ValueError, r"The labelled labels go from 0 to 3 but model .* num_classes=3",
          labelled=(x, np.array([0, 1, 2, 3, 0, 1])))
    fails(ValueError, r"The labelled images are 8x8x3 but model", labelled=(x[:, :8, :8], y))
    fails(ValueError, r"`labelled` must hold at least one image and one integer label per "
                      r"image.*labels of shape \(5,\)", labelled=(x, y[:5]))
    fails(ValueError, r"integer label.*dtype float", labelled=(x, y.astype("float32")))
    fails(TypeError, r"`labelled` must be a pair \(images, labels\).*Received: labelled of "
                     r"type ndarray", labelled=x)
    fails(TypeError, r"`unlabelled` must be an array of images.*type list",
          unlabelled=[1, 2])
    fails(TypeError, r"`model` must be a single-label image classifier.*type Functional",
          model=keras.Model(model.input, model.output))
    for error, name, value, match in [
            (ValueError, "epochs", 0, r"`epochs` must be a positive integer. Received: epochs=0"),
            (ValueError, "batch_size", 2.0, r"`batch_size` must be a positive integer"),
            (ValueError, "unlabelled_ratio", 0, r"`unlabelled_ratio` must be a positive integer"),
            (ValueError, "unlabelled_weight", -1,
             r"`unlabelled_weight` must be a non-negative number"),
            (ValueError, "learning_rate", 0, r"`learning_rate` must be a positive number"),
            (ValueError, "class_balance", "flexmatch",
             r"`class_balance` must be one of \('distribution_alignment', None\).*flexmatch"),
            (ValueError, "weak_augmentation", "strong",
             r"`weak_augmentation` must be 'auto' or a Keras layer.*weak_augmentation='strong'"),
            (ValueError, "strong_augmentation", np.zeros(2),
             r"`strong_augmentation` must be 'auto'"),
            (ValueError, "seed", -1, r"`seed` must be a non-negative integer or None"),
            (ValueError, "unlabelled_labels", np.zeros(3, "int32"),
             r"`unlabelled_labels` must hold one label per unlabelled image.*24 unlabelled"),
            (ValueError, "unlabelled_labels", np.full(24, 5, "int32"),
             r"The unlabelled labels go from 5 to 5"),
            (ValueError, "unfreeze_blocks", 9, r"Cannot unfreeze 9 blocks: backbone .* has 3"),
            (ValueError, "from_layer", "nope", r"has no layer named 'nope'"),
            (TypeError, "validation_data", x, r"`validation_data` must be a pair"),
            (TypeError, "checkpoint_dir", 3, r"`checkpoint_dir` must be a directory path")]:
        fails(error, match, **{name: value})
    multi = tft.build_classifier(tiny_backbone(SHAPE), num_classes=3, multi_label=True)
    fails(TypeError, r"single-label image classifier.*multi_label=True", model=multi)
    after = weights_by_path(model)
    assert all(np.array_equal(before[p], after[p]) for p in before)


def test_strong_augmentation_errors():
    with pytest.raises(ValueError, match=r"`num_ops` must be an integer in \[0, 6\]. "
                                         r"Received: num_ops=7"):
        StrongAugmentation(num_ops=7)
    with pytest.raises(ValueError, match=r"`cutout` must be a number in \[0, 1\).*cutout=1"):
        StrongAugmentation(cutout=1)
    with pytest.raises(ValueError, match=r"`value_range` must be a pair.*\(1, 0\)"):
        StrongAugmentation(value_range=(1, 0))
    with pytest.raises(TypeError, match=r"`seed` must be an integer or None.*seed='1'"):
        weak_augmentation(seed="1")
