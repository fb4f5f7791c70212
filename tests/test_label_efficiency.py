"""`tft.label_efficiency`: accuracy by labels per class and seed, the same
labelled examples for every method."""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

import tftransfer as tft
from tftransfer.evaluation.label_efficiency import labelled_subset


def _blobs(n_per_class=30, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.normal(size=(len(y), 6)) + 2.5 * np.eye(classes, 6)[y]
    return x.astype("float32"), y


def test_subsets_are_balanced_nested_and_seeded():
    _, y = _blobs()
    one, three = labelled_subset(y, 1, seed=4), labelled_subset(y, 3, seed=4)
    assert np.bincount(y[three]).tolist() == [3, 3, 3]
    assert set(one) <= set(three)
    assert not np.array_equal(three, labelled_subset(y, 3, seed=5))
    with pytest.raises(ValueError, match=r"Class 0 has 30 examples in the pool, fewer than "
                                         r"labels_per_class=31"):
        labelled_subset(y, 31, seed=0)


def test_every_method_gets_the_same_examples_and_is_scored_on_the_test_set():
    x, y = _blobs()
    test = _blobs(seed=1)
    seen = []

    def recording(x_, y_, *, seed):
        seen.append((seed, x_.copy(), y_.copy()))
        return KNeighborsClassifier(1).fit(x_, y_)

    curve = tft.label_efficiency(
        {"a": recording, "b": recording, "1-NN": tft.pixel_baseline("nearest_neighbour", scale=1)},
        (x, y), test, labels_per_class=(2, 1), seeds=(0, 1), report=lambda line: None)
    assert curve.labels_per_class == [1, 2] and curve.seeds == [0, 1]
    assert len(seen) == 8  # 2 methods x 2 counts x 2 seeds
    for first, second in zip(seen[::2], seen[1::2]):  # "a" then "b" on one draw
        assert first[0] == second[0] and np.array_equal(first[1], second[1])
    # An independent 1-NN on the same draws gives the same accuracies.
    for j, seed in enumerate((0, 1)):
        for i, count in enumerate((1, 2)):
            chosen = labelled_subset(y, count, seed=seed)
            expected = KNeighborsClassifier(1).fit(x[chosen], y[chosen]).score(*test)
            assert curve.accuracy["a"][i, j] == pytest.approx(expected)
            assert curve.accuracy["1-NN"][i, j] == pytest.approx(expected)
    assert curve.test_size == len(test[1])
    np.testing.assert_allclose(curve.mean("a"), curve.accuracy["a"].mean(axis=1))
    np.testing.assert_allclose(curve.spread("a"), curve.accuracy["a"].std(axis=1))


def test_keras_scores_are_argmaxed_and_the_outputs_read():
    import keras

    x, y = _blobs()

    def linear(x_, y_, *, seed):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
        model.compile(keras.optimizers.Adam(0.05),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x_, y_, epochs=100, verbose=0)
        return model

    curve = tft.label_efficiency({"linear": linear,
                                  "logistic regression": tft.pixel_baseline(
                                      "logistic_regression", scale=1)},
                                 (x, y), _blobs(seed=2), labels_per_class=(5,), seeds=(0,))
    assert curve.accuracy["linear"][0, 0] > 0.6  # well above chance (1/3)
    table = curve.table().splitlines()
    assert table[0] == "| method | 5 |" and table[2].startswith("| linear | ")
    assert "±" in table[2]
    data = curve.to_dict()
    assert data["mean"]["linear"] == curve.mean("linear").tolist()
    assert data["summary"] == curve.summary()
    best, names = curve.best_other("linear")
    assert names == ["logistic regression"]
    assert best[0] == curve.mean("logistic regression")[0]
    figure = curve.plot(title="t")
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and axes.get_title() == "t"
    assert [line.get_label() for line in axes.get_lines()] == ["linear", "logistic regression"]


def test_summary_names_where_the_method_leads():
    x, y = _blobs()
    curve = tft.label_efficiency({"1-NN": tft.pixel_baseline("nearest_neighbour", scale=1)},
                                 (x, y), _blobs(seed=1), labels_per_class=(1, 3), seeds=(0,))
    curve.accuracy["other"] = np.array([[0.0], [1.0]])
    curve.seconds["other"] = 0.0
    assert curve.summary().startswith("1-NN is ahead at 1 label(s) per class")
    curve.accuracy["other"] = np.array([[0.0], [0.0]])
    assert curve.summary().startswith("1-NN is ahead at every label count")


def test_errors():
    x, y = _blobs()
    method = {"1-NN": tft.pixel_baseline("nearest_neighbour")}
    with pytest.raises(TypeError, match=r"`methods` must be a non-empty dict"):
        tft.label_efficiency({}, (x, y), (x, y))
    with pytest.raises(ValueError, match=r"`train` must be a tuple \(x, y\)"):
        tft.label_efficiency(method, x, (x, y))
    with pytest.raises(ValueError, match=r"`test` must hold as many labels as inputs"):
        tft.label_efficiency(method, (x, y), (x, y[:3]))
    with pytest.raises(ValueError, match=r"`train` labels must be integers"):
        tft.label_efficiency(method, (x, y.astype(float)), (x, y))
    with pytest.raises(ValueError, match=r"`labels_per_class` must be positive integers. "
                                         r"Received: labels_per_class=\(0,\)"):
        tft.label_efficiency(method, (x, y), (x, y), labels_per_class=0)
    with pytest.raises(ValueError, match=r"`seeds` must be non-negative integers"):
        tft.label_efficiency(method, (x, y), (x, y), seeds=(-1,))
    with pytest.raises(ValueError, match=r"smallest class of `train` has 30 examples, fewer "
                                         r"than the largest labels_per_class \(40\)"):
        tft.label_efficiency(method, (x, y), (x, y), labels_per_class=(1, 40))
    with pytest.raises(ValueError, match=r"`kind` must be one of .* Received: kind='svm'"):
        tft.pixel_baseline("svm")
