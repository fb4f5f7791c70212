"""The learning-rate finder: the sweep's numbers against hand computations,
the cached path, the model left as it was, the plot, and every error."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import labelled
from helpers import tiny_classifier

import tftransfer as tft
from tftransfer.training.lr_finder import LearningRateFinder
from tftransfer.training.lr_finder import find_learning_rate

SWEEP = {"batch_size": 8, "verbose": 0}


def _hand_smoothed(losses, beta):
    out, average = [], 0.0
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (i + 1)))
    return np.array(out)


@pytest.fixture(scope="module")
def data():
    return labelled(24)


def test_learning_rates_are_geometric_and_the_data_repeats(data):
    x, y = data  # 3 batches of 8: 12 steps run 4 epochs
    finder = find_learning_rate(tiny_classifier(), x, y, min_learning_rate=1e-6,
                                max_learning_rate=1e-2, num_steps=12, **SWEEP)
    assert isinstance(finder, LearningRateFinder)
    assert not finder.stopped_early
    assert len(finder.learning_rates) == len(finder.losses) == 12
    expected = 1e-6 * (1e-2 / 1e-6) ** (np.arange(12) / 11)
    np.testing.assert_allclose(finder.learning_rates, expected, rtol=1e-6)
    ratios = finder.learning_rates[1:] / finder.learning_rates[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)
    assert finder.phase == "head"


def test_smoothed_loss_is_the_bias_corrected_moving_average(data):
    x, y = data
    finder = find_learning_rate(tiny_classifier(), x, y, num_steps=10, smoothing=0.9,
                                max_learning_rate=1e-2, **SWEEP)
    np.testing.assert_allclose(finder.smoothed_losses, _hand_smoothed(finder.losses, 0.9),
                               rtol=1e-10)
    assert finder.smoothed_losses[0] == finder.losses[0]
    unsmoothed = find_learning_rate(tiny_classifier(), x, y, num_steps=5, smoothing=0.0,
                                    max_learning_rate=1e-2, **SWEEP)
    np.testing.assert_array_equal(unsmoothed.smoothed_losses, unsmoothed.losses)


def test_divergence_stops_the_sweep_by_fastais_rule(data):
    x, y = data
    finder = find_learning_rate(tiny_classifier(), x, y, min_learning_rate=1e-3,
                                max_learning_rate=1e8, num_steps=40, **SWEEP)
    assert finder.stopped_early
    assert len(finder.losses) < 40
    smoothed = finder.smoothed_losses
    # The rule fires at the last step, and at no step before it.
    assert not np.isfinite(smoothed[-1]) or smoothed[-1] > 4 * smoothed[:-1].min()
    for i in range(1, len(smoothed) - 1):
        assert smoothed[i] <= 4 * smoothed[:i].min()
    assert "stopped early" in str(finder)


def test_the_rates_reach_the_optimizer_that_trains_on_cached_features(data):
    """The head trains on cached features, in a top model sharing the sweep's
    optimizer: tiny rates leave the loss where it started, huge ones blow it up."""
    x, y = data
    gentle = find_learning_rate(tiny_classifier(), x, y, min_learning_rate=1e-7,
                                max_learning_rate=1e-6, num_steps=9, **SWEEP)
    # The same first rate: only the rates set by the sweep tell the two apart.
    wild = find_learning_rate(tiny_classifier(), x, y, min_learning_rate=1e-7,
                              max_learning_rate=1e8, num_steps=9, **SWEEP)
    assert gentle.cache_info is not None and wild.cache_info is not None
    # The same model, data order and dropout draws: the first batch's loss is the same.
    np.testing.assert_allclose(gentle.losses[0], wild.losses[0], rtol=1e-5)
    assert np.ptp(gentle.losses) < 0.5
    assert not gentle.stopped_early
    assert wild.stopped_early
    assert np.max(wild.losses) > 10 * wild.losses[0]


def test_head_phase_runs_on_cached_features_and_matches_the_uncached_sweep(data):
    x, y = data
    cached = find_learning_rate(tiny_classifier(), x, y, num_steps=8,
                                max_learning_rate=1e-1, **SWEEP)
    assert cached.cache_info["examples"] == 24
    assert cached.cache_info["boundary"] == "pooling:0"  # the backbone runs once, not per step
    uncached = find_learning_rate(tiny_classifier(), x, y, num_steps=8, cache=False,
                                  max_learning_rate=1e-1, **SWEEP)
    assert uncached.cache_info is None
    # Same seed, same order, same dropout: the two paths train the same.
    np.testing.assert_allclose(cached.losses, uncached.losses, rtol=1e-4, atol=1e-5)


def test_suggestions_follow_their_rules(data):
    x, y = data
    finder = find_learning_rate(tiny_classifier(), x, y, min_learning_rate=1e-4,
                                max_learning_rate=1e3, num_steps=40, smoothing=0.7, **SWEEP)
    rates, smoothed = finder.learning_rates, finder.smoothed_losses
    finite = np.isfinite(smoothed)
    usable = len(smoothed) if finite.all() else int(np.argmin(finite))
    lowest = int(np.argmin(smoothed[:usable]))
    assert lowest >= 2, "the loss should fall on learnable data"
    # Central differences over the finite curve, before the minimum.
    log_rates = np.log10(rates[:usable])
    slopes = [(smoothed[min(i + 1, usable - 1)] - smoothed[max(i - 1, 0)])
              / (log_rates[min(i + 1, usable - 1)] - log_rates[max(i - 1, 0)])
              for i in range(lowest)]
    assert finder.suggested_learning_rate == rates[int(np.argmin(slopes))]
    assert finder.suggested_learning_rate < rates[lowest]
    assert 1e-4 <= finder.suggested_learning_rate <= 1e3
    assert "steepest descent" in finder.rule
    assert finder.alternative_learning_rate == pytest.approx(rates[lowest] / 10)
    assert "tenth" in finder.alternative_rule
    text = str(finder)
    assert f"{finder.suggested_learning_rate:.3g}" in text
    assert f"{finder.alternative_learning_rate:.3g}" in text


def _state(model):
    return {
        "variables": [np.array(v.numpy()) for v in model.variables],
        "variable_trainable": [v.trainable for v in model.variables],
        "layers": [(layer.name, layer.trainable) for layer in model.backbone.layers]
        + [(layer.name, layer.trainable) for layer in model.layers],
        "optimizer": model.optimizer,
        "optimizer_variables": [np.array(v.numpy()) for v in model.optimizer.variables]
        if model.optimizer is not None else None,
        "loss": model.loss,
        "metrics": list(model.metrics),
        "compiled": model.compiled,
        "compile_config": model.get_compile_config(),
    }


def _assert_same_state(before, after):
    assert len(before["variables"]) == len(after["variables"])
    for i, (a, b) in enumerate(zip(before["variables"], after["variables"])):
        assert np.array_equal(a, b), f"variable {i} changed"
    assert before["variable_trainable"] == after["variable_trainable"]
    assert before["layers"] == after["layers"]
    assert after["optimizer"] is before["optimizer"]
    if before["optimizer_variables"] is not None:
        for a, b in zip(before["optimizer_variables"], after["optimizer_variables"]):
            assert np.array_equal(a, b)
    assert after["loss"] is before["loss"]
    assert len(after["metrics"]) == len(before["metrics"])
    assert all(a is b for a, b in zip(after["metrics"], before["metrics"]))
    assert after["compiled"] == before["compiled"]
    assert after["compile_config"] == before["compile_config"]


@pytest.mark.parametrize("phase", ["head", "fine_tune"])
def test_model_is_left_exactly_as_it_was(data, phase):
    x, y = data
    model = tiny_classifier()
    tft.fit_head(model, x, y=y, epochs=1, batch_size=8, verbose=0)  # compiled, optimizer built
    predictions = model.predict(x, verbose=0)
    before = _state(model)
    finder = find_learning_rate(model, x, y, phase=phase, unfreeze_blocks=2,
                                min_learning_rate=1e-2, max_learning_rate=1e6, num_steps=20,
                                **SWEEP)
    assert len(finder.losses) >= 2  # the weights did move during the sweep
    _assert_same_state(before, _state(model))
    np.testing.assert_array_equal(model.predict(x, verbose=0), predictions)
    history = tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1,
                                unfreeze_blocks=1, batch_size=8, verbose=0)
    assert history.history["phase"] == [1, 2]
    assert np.isfinite(history.history["loss"]).all()


def test_fine_tune_sweep_unfreezes_the_top_blocks_only_while_it_runs(data):
    x, y = data
    model = tiny_classifier()
    finder = find_learning_rate(model, x, y, phase="fine_tune", unfreeze_blocks=1,
                                num_steps=6, max_learning_rate=1e-2, **SWEEP)
    assert finder.phase == "fine_tune"
    # Cut below block3, the one unfrozen block: blocks 1-2 ran once over the data.
    assert finder.cache_info["boundary"] == "tiny_backbone/block2_pool:0"
    assert not model.backbone.trainable
    assert not model.backbone.trainable_weights


def test_an_uncompiled_model_stays_uncompiled(data):
    x, y = data
    built = tiny_classifier()  # build_classifier compiles; a model from its config is not
    model = type(built).from_config(built.get_config())
    assert not model.compiled
    config = model.get_compile_config()
    weights = [np.array(v.numpy()) for v in model.variables]
    find_learning_rate(model, x, y, num_steps=6, max_learning_rate=1e4, **SWEEP)
    assert not model.compiled
    assert getattr(model, "optimizer", None) is None
    assert model.get_compile_config() == config
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(weights, model.variables))
    model.compile()
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_datasets_and_data_splits(data):
    x, y = data
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    finder = find_learning_rate(tiny_classifier(), dataset, num_steps=6,
                                max_learning_rate=1e-2, verbose=0)
    assert len(finder.losses) == 6 and finder.cache_info["examples"] == 24
    splits = tft.dataset_from_arrays(x, y, batch_size=4, validation_split=0.25,
                                     class_names=["class_0", "class_1", "class_2"])
    finder = find_learning_rate(tiny_classifier(), splits, num_steps=6,
                                max_learning_rate=1e-2, verbose=0)
    assert finder.cache_info["examples"] == len(splits.indices["train"])


def test_plot_has_a_log_axis_and_marks_the_suggestion(data, tmp_path):
    x, y = data
    finder = find_learning_rate(tiny_classifier(), x, y, num_steps=8, max_learning_rate=1.0,
                                **SWEEP)
    figure = finder.plot()
    axes = figure.axes[0]
    assert axes.get_xscale() == "log"
    marks = [list(line.get_xdata()) for line in axes.get_lines()]
    assert [finder.suggested_learning_rate] * 2 in marks
    assert any("suggested" in text.get_text() for text in axes.get_legend().get_texts())
    np.testing.assert_allclose(axes.get_lines()[1].get_ydata(), finder.smoothed_losses)
    path = tmp_path / "lr.png"
    figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kwargs, match", [
    ({"phase": "tail"}, r"`phase` must be one of 'head', 'fine_tune'. Received: phase='tail'"),
    ({"min_learning_rate": 0.0}, (r"`min_learning_rate` must be a positive number.*"
                                 r"Received: min_learning_rate=0.0")),
    ({"max_learning_rate": -1}, (r"`max_learning_rate` must be a positive.*"
                                r"max_learning_rate=-1")),
    ({"max_learning_rate": float("inf")}, r"max_learning_rate=inf"),
    ({"min_learning_rate": 1.0, "max_learning_rate": 1.0},
     (r"`min_learning_rate` must be below `max_learning_rate`.*min_learning_rate=1.0, "
     r"max_learning_rate=1.0")),
    ({"num_steps": 4}, r"`num_steps` must be an integer of at least 5.*num_steps=4"),
    ({"num_steps": 10.0}, r"num_steps=10.0"),
    ({"smoothing": 1.0}, r"`smoothing` must be a number in \[0, 1\).*smoothing=1.0"),
    ({"smoothing": -0.1}, r"smoothing=-0.1"),
    ({"divergence_threshold": 1.0}, (r"`divergence_threshold` must be a number above 1.*"
                                    r"divergence_threshold=1.0")),
    ({"batch_size": 0}, r"`batch_size` must be a positive integer.*batch_size=0"),
    ({"seed": -1}, r"`seed` must be a non-negative integer.*seed=-1"),
    ({"label_smoothing": 1.5}, r"label_smoothing=1.5"),
    ({"cache": "somewhere"}, r"cache='somewhere'"),
    ({"optimizer": 3}, r"`optimizer` must be a Keras optimizer.*optimizer=3"),
    ({"phase": "fine_tune", "unfreeze_blocks": 9}, r"Cannot unfreeze 9 blocks"),
])
def test_bad_arguments_fail_before_any_work(data, kwargs, match):
    x, y = data
    model = tiny_classifier()
    weights = [np.array(v.numpy()) for v in model.weights]
    with pytest.raises(ValueError, match=match):
        find_learning_rate(model, x, y, **kwargs)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(weights, model.weights))


def test_a_model_that_is_not_a_classifier_is_refused(data):
    x, y = data
    inputs = keras.Input((32, 32, 3))
    plain = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    with pytest.raises(TypeError, match=r"`model` must be a tftransfer classifier.*"
                                        r"Received: model of type Functional"):
        find_learning_rate(plain, x, y)


def test_data_without_labels_is_refused(data):
    x, y = data
    model = tiny_classifier()
    with pytest.raises(ValueError, match=r"`y` must be the labels of `x`.*Received: y=None"):
        find_learning_rate(model, x)
    with pytest.raises(ValueError, match=r"one label per example of `x` \(24\).*length 23"):
        find_learning_rate(model, x, y[:-1])
    images_only = tf.data.Dataset.from_tensor_slices(x).batch(8)
    with pytest.raises(ValueError, match=r"Dataset of \(inputs, labels\) batches.*"
                                         r"Received: a dataset of TensorSpec"):
        find_learning_rate(model, images_only)
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match=r"`batch_size` is for array inputs.*batch_size=8"):
        find_learning_rate(model, batched, batch_size=8)
    with pytest.raises(ValueError, match=r"`y` is for array inputs.*Received: y of type"):
        find_learning_rate(model, batched, y)
    with pytest.raises(TypeError, match=r"`x` must be an array.*Received: x of type str"):
        find_learning_rate(model, "images/", y)


def test_an_optimizer_is_a_template_the_sweep_copies(data):
    x, y = data
    template = keras.optimizers.SGD(learning_rate=0.5, momentum=0.9)
    finder = find_learning_rate(tiny_classifier(), x, y, optimizer=template, num_steps=6,
                                max_learning_rate=1e-2, **SWEEP)
    np.testing.assert_allclose(finder.learning_rates, np.geomspace(1e-7, 1e-2, 6), rtol=1e-6)
    assert not template.built and int(template.iterations.numpy()) == 0
    assert float(template.learning_rate.numpy()) == 0.5
