"""`fit_linear_probe`, against a probe fitted here with scikit-learn on features computed here."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_without_tftransfer
from helpers import tiny_backbone
from helpers import weights_by_path
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tftransfer as tft
from tftransfer.backbones.text import tiny_preset
from tftransfer.baselines import DEFAULT_C_VALUES
from tftransfer.baselines import MAX_ITER
from tftransfer.baselines import logistic_regression
from tftransfer.classifiers.text import build_text_classifier
from tftransfer.training.linear_probe import PHASE
from tftransfer.training.linear_probe import LinearProbeResult
from tftransfer.training.linear_probe import fit_linear_probe


def digits(num_classes, n=60, seed=0):
    """`n` scikit-learn digits of the first `num_classes` classes as 32x32 RGB
    images in [0, 255] (each pixel of the 8x8 digit a 4x4 square)."""
    data = load_digits(n_class=num_classes)
    rows = np.random.default_rng(seed).permutation(len(data.target))[:n]
    x = np.kron(data.images[rows], np.ones((4, 4))) * (255.0 / 16.0)
    return np.repeat(x[..., None], 3, axis=-1).astype("float32"), data.target[rows]


def classifier(num_classes, **kwargs):
    return tft.build_classifier(tiny_backbone(), class_names=[f"c{i}" for i in range(num_classes)],
                                **kwargs)


def features(model, x):
    """The head's input computed here: the backbone's feature map, averaged in NumPy."""
    return np.asarray(model.backbone.predict(x, verbose=0), np.float64).mean(axis=(1, 2))


def probe(c, x, y):
    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=c, max_iter=MAX_ITER, random_state=0)).fit(x, y)


def best_c(train, validation, c_values=DEFAULT_C_VALUES):
    """The C of the best validation accuracy, ties to the smaller C."""
    scores = {c: probe(c, *train).score(*validation) for c in sorted(c_values)}
    return min(c for c, score in scores.items() if score == max(scores.values()))


def softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def probed():
    """A 3-class classifier probed on digits, its data and the backbone's weights before."""
    model = classifier(3)
    x, y = digits(3, n=60)
    before = weights_by_path(model.backbone)
    result = fit_linear_probe(model, x[:40], y[:40], validation_data=(x[40:], y[40:]))
    return model, x, y, before, result


def test_three_classes_match_scikit_learn_on_the_features(probed):
    model, x, y, _, result = probed
    train, validation = (features(model, x[:40]), y[:40]), (features(model, x[40:]), y[40:])
    assert result.c == best_c(train, validation)
    assert result.c_selection == "validation"
    reference = probe(result.c, *train)
    outputs = model.predict(x, verbose=0)  # logits
    np.testing.assert_allclose(softmax(outputs), reference.predict_proba(features(model, x)),
                               atol=1e-4)
    np.testing.assert_allclose(outputs, reference.decision_function(features(model, x)),
                               rtol=1e-4, atol=1e-3)
    assert result.train_accuracy == reference.score(*train)
    assert result.validation_accuracy == reference.score(*validation)
    assert (result.num_train, result.num_validation, result.feature_dim) == (40, 20, 12)
    assert result.seconds >= result.extraction_seconds > 0


def test_the_backbone_is_untouched_and_the_result_is_recorded(probed):
    model, _, _, before, result = probed
    after = weights_by_path(model.backbone)
    assert before.keys() == after.keys() and any("moving_mean" in k for k in after)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    assert not model.backbone.trainable
    entry = model.training_summary[-1]
    assert entry == {"phase": PHASE, **result.to_dict()}
    json.dumps(entry)


def test_two_classes_are_written_as_symmetric_logits():
    model = classifier(2)
    x, y = digits(2, n=40, seed=1)
    result = fit_linear_probe(model, x[:28], y[:28], validation_data=(x[28:], y[28:]))
    train = (features(model, x[:28]), y[:28])
    assert result.c == best_c(train, (features(model, x[28:]), y[28:]))
    reference = probe(result.c, *train)
    logits = model.predict(x, verbose=0)
    np.testing.assert_allclose(logits[:, 0], -logits[:, 1], atol=1e-5)
    np.testing.assert_allclose(softmax(logits), reference.predict_proba(features(model, x)),
                               atol=1e-4)
    kernel = model.head.output_dense.kernel.numpy()
    np.testing.assert_allclose(kernel[:, 0], -kernel[:, 1])


def test_a_softmax_head_outputs_the_probabilities():
    model = classifier(3, activation="softmax")
    x, y = digits(3, n=36, seed=2)
    result = fit_linear_probe(model, x, y, c_values=(0.5,))
    assert (result.c, result.c_selection, result.validation_accuracy) == (0.5, "fixed", None)
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               probe(0.5, features(model, x), y).predict_proba(features(model, x)),
                               atol=1e-4)


def test_without_validation_data_c_is_cross_validated():
    model = classifier(3)
    x, y = digits(3, n=36, seed=3)
    result = fit_linear_probe(model, x, y)
    assert result.c_selection == "cross_validation" and result.num_validation == 0
    assert result.c == logistic_regression(features(model, x), y)[-1].C


def test_a_shuffled_dataset_with_one_hot_labels_gives_the_arrays_probe():
    x, y = digits(3, n=48, seed=4)
    by_arrays, by_dataset = classifier(3), classifier(3)
    expected = fit_linear_probe(by_arrays, x[:36], y[:36], validation_data=(x[36:], y[36:]))
    dataset = tf.data.Dataset.from_tensor_slices((x[:36], np.eye(3)[y[:36]])).shuffle(
        36, seed=0, reshuffle_each_iteration=True).batch(8)
    unbatched = tf.data.Dataset.from_tensor_slices((x[36:], np.eye(3)[y[36:]]))
    result = fit_linear_probe(by_dataset, dataset, validation_data=unbatched, batch_size=5)
    assert (result.num_train, result.num_validation, result.c) == (36, 12, expected.c)
    assert result.validation_accuracy == expected.validation_accuracy
    np.testing.assert_allclose(by_dataset.predict(x, verbose=0), by_arrays.predict(x, verbose=0),
                               atol=1e-3)


def test_data_splits_use_their_validation_split():
    x, y = digits(3, n=60, seed=5)
    data = tft.dataset_from_arrays(x, y, validation_split=0.3, batch_size=8, seed=0)
    model = tft.build_classifier(tiny_backbone(), data=data)
    result = fit_linear_probe(model, data)
    train, validation = data.indices["train"], data.indices["validation"]
    assert (result.num_train, result.num_validation) == (len(train), len(validation))
    train_features = (features(model, x[train]), y[train])
    assert result.c == best_c(train_features, (features(model, x[validation]), y[validation]))
    np.testing.assert_allclose(
        model.predict_proba(x, verbose=0),
        probe(result.c, *train_features).predict_proba(features(model, x)), atol=1e-4)


# Keras warns that the saved optimizer (compiled, never stepped) has fewer variables.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_the_probed_model_saves_and_fine_tunes(probed, tmp_path):
    model, x, y, _, result = probed
    path = str(tmp_path / "probed.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
    # LP-FT: fine-tuning starts from the probe's accuracy.
    assert np.mean(expected[:40].argmax(1) == y[:40]) == result.train_accuracy
    history = tft.fine_tune(loaded, x[:40], y=y[:40], epochs=1, unfreeze_blocks=1,
                            batch_size=8, verbose=0)
    assert history.history["phase"] == [2] and np.isfinite(history.history["loss"][0])
    assert not np.array_equal(weights_by_path(loaded.backbone)["block3_conv/kernel"],
                              weights_by_path(model.backbone)["block3_conv/kernel"])


SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[1]).signatures["serving_pixels"]
print(json.dumps(signature(images=tf.constant(np.load(sys.argv[2])))["probabilities"]
                 .numpy().tolist()))
"""


@pytest.mark.slow
def test_the_probed_model_exports_like_any_classifier(probed, tmp_path):
    model, x, _, _, result = probed
    path = tft.export_saved_model(model, tmp_path / "serving", warmup=False)
    np.save(tmp_path / "x.npy", x[:6])
    served = run_without_tftransfer(SERVE, path, tmp_path / "x.npy")
    np.testing.assert_allclose(served, model.predict_proba(x[:6], verbose=0), atol=1e-5)
    with open(os.path.join(path, "assets.extra", "tftransfer.json")) as f:
        assert json.load(f)["training"][0]["c"] == result.c


@pytest.mark.slow
def test_a_text_classifier_is_probed_on_its_pooled_tokens(tmp_path):
    pytest.importorskip("keras_hub", reason='keras-hub is not installed: pip install '
                                            '"tftransfer[text]"')
    texts = ["a good film", "great book", "the film is good", "a great film",
             "bad book", "an awful film", "the book is bad", "awful , bad"] * 2
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0] * 2)
    model = build_text_classifier(tiny_preset(str(tmp_path / "bert")), class_names=["neg", "pos"],
                                  sequence_length=8)
    result = fit_linear_probe(model, texts, labels, c_values=(1.0,))
    pooled = keras.Model(model.inputs, model.head.dropout_layers[0].input)
    x = np.asarray(pooled.predict(tf.constant(texts), verbose=0), np.float64)
    assert result.feature_dim == x.shape[1]
    np.testing.assert_allclose(model.predict_proba(texts, verbose=0),
                               probe(1.0, x, labels).predict_proba(x), atol=1e-4)


# --------------------------------------------------------------------------
# Errors, before any work


@pytest.fixture(scope="module")
def small():
    return classifier(3), *digits(3, n=12, seed=6)


def test_models_it_cannot_probe():
    x, y = digits(2, n=8)
    with pytest.raises(TypeError, match="`model` must be a tftransfer classifier.*Functional"):
        fit_linear_probe(tiny_backbone(), x, y)
    with pytest.raises(ValueError, match=r"hidden layers.*hidden_units=\[4\]"):
        fit_linear_probe(classifier(2, hidden_units=[4]), x, y)
    with pytest.raises(ValueError, match="multi_label=True"):
        fit_linear_probe(classifier(2, multi_label=True), x, y)


@pytest.mark.parametrize("options, match", [
    ({"c_values": ()}, r"`c_values` must be .* Received: c_values=\(\)"),
    ({"c_values": (1.0, -1.0)}, r"Received: c_values=\(1.0, -1.0\)"),
    ({"c_values": 1.0}, "Received: c_values=1.0"),
    ({"batch_size": 0}, "`batch_size` must be a positive integer. Received: batch_size=0"),
    ({"seed": 0.5}, "`seed` must be an integer. Received: seed=0.5"),
    ({"verbose": 3}, "`verbose` must be 0 or 1. Received: verbose=3"),
])
def test_bad_options(small, options, match):
    model, x, y = small
    with pytest.raises((ValueError, TypeError), match=match):
        fit_linear_probe(model, x, y, **options)


def test_bad_data(small):
    model, x, y = small
    unlabelled = tf.data.Dataset.from_tensor_slices(x).batch(4)
    labelled = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    cases = [
        ((x,), {}, ValueError, "`x` needs labels.*no labels"),
        ((unlabelled,), {}, ValueError, "`x` must yield \\(inputs, labels\\)"),
        ((labelled, y), {}, ValueError, "Pass labels inside the dataset `x`"),
        ((x, y[:5]), {}, ValueError, "one label per input.*labels of shape \\(5,\\)"),
        ((x, y.astype("float32")), {}, ValueError, "integer class indices or one-hot"),
        ((x, y + 1), {}, ValueError, "labels go from 1 to 3"),
        ((x, y % 2), {}, ValueError, r"Every class .* \['c2'\]"),
        ((labelled.take(0),), {}, ValueError, "`x` is empty"),
        ((x, y), {"validation_data": [x]}, TypeError, "validation_data of type list"),
        ((x, y), {"validation_data": (x, None)}, ValueError, "`validation_data` needs labels"),
        ((x, y), {"validation_data": (x, y + 5)}, ValueError, "validation labels go from 5"),
        ((x[:, :16], y), {}, ValueError, "training images are 16x32x3"),
    ]
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            fit_linear_probe(model, *args, **kwargs)


def test_bad_data_splits(small):
    model, x, y = small
    data = tft.dataset_from_arrays(x, y, validation_split=0.25, batch_size=4,
                                   class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="The data's classes .* are not the model's"):
        fit_linear_probe(model, data)
    named = tft.build_classifier(tiny_backbone(), data=data)
    with pytest.raises(ValueError, match="A DataSplits carries its labels"):
        fit_linear_probe(named, data, y)
    with pytest.raises(TypeError, match="pass a DataSplits as `x`"):
        fit_linear_probe(named, x, y, validation_data=data)


def test_result_is_a_frozen_dataclass(probed):
    result = probed[-1]
    assert isinstance(result, LinearProbeResult)
    with pytest.raises(AttributeError):
        result.c = 2.0
