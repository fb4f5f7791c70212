"""Non-neural baselines, against scikit-learn and NumPy computed here."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tftransfer.baselines import DEFAULT_C_VALUES
from tftransfer.baselines import MAX_ITER
from tftransfer.baselines import ONE_SHOT_C
from tftransfer.baselines import baseline_accuracy
from tftransfer.baselines import logistic_regression
from tftransfer.baselines import nearest_neighbour


def digits(per_class, *, seed=0, test=200):
    """`per_class` training digits of each class (8x8 images, as images),
    and `test` other digits."""
    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 8, 8, 1)
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                             for c in range(10)])
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), chosen))[:test]
    return (x[chosen], y[chosen]), (x[rest], y[rest])


def reference_probe(c):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER))


def accuracy(model, x, y):
    return float(np.mean(model.predict(x.reshape(len(x), -1)) == y))


def test_cross_validated_c_is_scikit_learns_grid_search_choice():
    (x, y), (x_test, y_test) = digits(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convergence (or other) warnings
        model = logistic_regression(x, y, seed=3)
    flat = x.reshape(len(x), -1)
    search = GridSearchCV(
        reference_probe(1.0), {"logisticregression__C": list(DEFAULT_C_VALUES)},
        cv=StratifiedKFold(4, shuffle=True, random_state=3), scoring="accuracy").fit(flat, y)
    assert model[-1].C == search.best_params_["logisticregression__C"]
    # Refitted on all the data: the same predictions as scikit-learn's refit.
    np.testing.assert_array_equal(model.predict(x_test.reshape(len(x_test), -1)),
                                  search.predict(x_test.reshape(len(x_test), -1)))
    assert baseline_accuracy("logistic_regression", (x, y), (x_test, y_test), seed=3) == (
        accuracy(search, x_test, y_test))
    assert accuracy(model, x_test, y_test) > 0.7  # 4 digits per class: far above chance


def imbalanced_line():
    """One feature that separates the classes, 30 examples of class 0 and
    10 of class 1: a tiny C shrinks the weight to ~0 and predicts the
    majority class, a large C separates."""
    x = np.concatenate([np.linspace(0, 1, 30), np.linspace(2, 3, 10)])[:, None]
    y = np.array([0] * 30 + [1] * 10)
    x_val = np.array([[0.2], [0.4], [0.6], [2.2], [2.5], [2.8]])
    return x, y, x_val, np.array([0, 0, 0, 1, 1, 1])


def validation_accuracies(x, y, x_val, y_val):
    return {c: float(np.mean(reference_probe(c).fit(x, y).predict(x_val) == y_val))
            for c in DEFAULT_C_VALUES}


def expected_choice(scores):
    best = max(scores.values())
    return min(c for c, s in scores.items() if s == best)


def test_c_is_chosen_by_validation_accuracy():
    x, y, x_val, y_val = imbalanced_line()
    right = validation_accuracies(x, y, x_val, y_val)
    flipped = validation_accuracies(x, y, x_val, 1 - y_val)
    assert min(right.values()) == 0.5 and max(right.values()) == 1.0  # C matters here
    assert expected_choice(right) > expected_choice(flipped)
    chosen = logistic_regression(x, y, validation_data=(x_val, y_val))[-1].C
    assert chosen == expected_choice(right)
    # The same training data with other validation labels: another C, so
    # the validation data, not the training data, decided.
    chosen_flipped = logistic_regression(x, y, validation_data=(x_val, 1 - y_val))[-1].C
    assert chosen_flipped == expected_choice(flipped) == min(DEFAULT_C_VALUES)
    assert baseline_accuracy("logistic_regression", (x, y), (x_val, y_val),
                             validation_data=(x_val, y_val)) == 1.0


def test_one_example_per_class_uses_the_fixed_c():
    (x, y), (x_test, _) = digits(1)
    model = logistic_regression(x, y)
    assert model[-1].C == ONE_SHOT_C == 1.0
    reference = reference_probe(1.0).fit(x.reshape(len(x), -1), y)
    np.testing.assert_allclose(model.predict_proba(x_test.reshape(len(x_test), -1)),
                               reference.predict_proba(x_test.reshape(len(x_test), -1)),
                               rtol=1e-6, atol=1e-9)
    assert logistic_regression(x, y, c_values=(0.1,))[-1].C == 0.1  # one value: as given


def test_folds_follow_the_smallest_class():
    # 3 examples in the smallest class: 3 folds (not 5), as GridSearchCV with 3.
    (x, y), _ = digits(3)
    flat = x.reshape(len(x), -1)
    search = GridSearchCV(
        reference_probe(1.0), {"logisticregression__C": list(DEFAULT_C_VALUES)},
        cv=StratifiedKFold(3, shuffle=True, random_state=0), scoring="accuracy").fit(flat, y)
    assert logistic_regression(x, y)[-1].C == search.best_params_["logisticregression__C"]


def test_nearest_neighbour_against_numpy():
    (x, y), (x_test, y_test) = digits(5)
    a, b = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    distances = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    expected = y[distances.argmin(1)]
    model = nearest_neighbour(x, y)
    np.testing.assert_array_equal(model.predict(b), expected)
    assert baseline_accuracy("nearest_neighbour", (x, y), (x_test, y_test)) == pytest.approx(
        float(np.mean(expected == y_test)))
    # validation_data is accepted and has nothing to choose.
    assert baseline_accuracy("nearest_neighbour", (x, y), (x_test, y_test),
                             validation_data=(x_test, y_test)) == pytest.approx(
        float(np.mean(expected == y_test)))


def test_inputs_of_any_shape_are_flattened():
    (x, y), (x_test, y_test) = digits(3)
    as_images = baseline_accuracy("logistic_regression", (x, y), (x_test, y_test))
    flat = baseline_accuracy("logistic_regression", (x.reshape(len(x), -1), list(y)),
                             (x_test.reshape(len(x_test), -1), y_test))
    assert as_images == flat


# --------------------------------------------------------------------------
# Errors


def test_unknown_kind():
    with pytest.raises(ValueError, match=r"`kind` must be one of .*Received: kind='svm'"):
        baseline_accuracy("svm", ([[0.0], [1.0]], [0, 1]), ([[0.0]], [0]))


def test_mismatched_lengths():
    with pytest.raises(ValueError, match=r"`x` and `y` must have one row per example; they "
                                         r"have 3 and 2"):
        logistic_regression(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match=r"`train\[0\]` and `train\[1\]` .* 2 and 3"):
        baseline_accuracy("nearest_neighbour", (np.zeros((2, 2)), [0, 1, 1]),
                          (np.zeros((1, 2)), [0]))
    with pytest.raises(ValueError, match=r"`test\[0\]` and `test\[1\]` .* 1 and 2"):
        baseline_accuracy("nearest_neighbour", (np.zeros((2, 2)), [0, 1]),
                          (np.zeros((1, 2)), [0, 1]))
    with pytest.raises(ValueError, match=r"`validation_data\[0\]` and `validation_data\[1\]`"):
        logistic_regression(np.zeros((4, 2)), [0, 1, 0, 1],
                            validation_data=(np.zeros((2, 2)), [0]))


def test_fewer_than_two_classes():
    with pytest.raises(ValueError, match=r"`y` must hold at least 2 classes.*Received: y with "
                                         r"classes \[1\]"):
        logistic_regression(np.zeros((3, 2)), [1, 1, 1])
    with pytest.raises(ValueError, match=r"`y` must hold at least 2 classes"):
        nearest_neighbour(np.zeros((3, 2)), [0, 0, 0])
    with pytest.raises(ValueError, match=r"`train\[1\]` must hold at least 2 classes"):
        baseline_accuracy("logistic_regression", (np.zeros((2, 2)), [0, 0]),
                          (np.zeros((1, 2)), [0]))


def test_inputs_of_another_size():
    with pytest.raises(ValueError, match=r"`test` must have inputs of the training inputs' "
                                         r"size \(4 values each\).*shape \(1, 3\)"):
        baseline_accuracy("nearest_neighbour", (np.zeros((2, 2, 2)), [0, 1]),
                          (np.zeros((1, 3)), [0]))
    with pytest.raises(ValueError, match=r"`validation_data` must have inputs"):
        logistic_regression(np.zeros((4, 2)), [0, 1, 0, 1],
                            validation_data=(np.zeros((2, 3)), [0, 1]))


def test_bad_arguments():
    x, y = np.zeros((4, 2)), [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"`c_values` must be a non-empty tuple of positive "
                                         r"numbers.*Received: c_values=\(\)"):
        logistic_regression(x, y, c_values=())
    with pytest.raises(ValueError, match=r"Received: c_values=\(1.0, -1.0\)"):
        logistic_regression(x, y, c_values=(1.0, -1.0))
    with pytest.raises(TypeError, match=r"`seed` must be an integer. Received: seed=0.5"):
        logistic_regression(x, y, seed=0.5)
    with pytest.raises(ValueError, match=r"`validation_data` must be a tuple \(x, y\).*"
                                         r"Received: validation_data of type ndarray"):
        logistic_regression(x, y, validation_data=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"`train` must be a tuple \(x, y\).*type ndarray"):
        baseline_accuracy("nearest_neighbour", x, (x, y))
    with pytest.raises(ValueError, match=r"`x` must be a non-empty numeric array.*dtype <U1"):
        nearest_neighbour(["a", "b"], [0, 1])
    with pytest.raises(ValueError, match=r"`y` must be a 1-D array of integer labels.*"
                                         r"shape \(4, 2\)"):
        logistic_regression(x, np.eye(2)[[0, 1, 0, 1]])


def test_near_constant_features_are_centred_not_scaled():
    # A dead feature (float noise around zero, as all-MiniLM-L6-v2 has three)
    # must not be blown up to unit variance: folded into a head, its weight
    # coef / scale would be astronomically large, and fine-tuning turns it to NaN.
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = np.stack([y + rng.normal(0, 0.5, 40), rng.normal(0, 1e-30, 40)], axis=1)
    model = logistic_regression(x, y, c_values=(1.0,))
    scale = model[0].scale_
    assert scale[1] == 1.0 and scale[0] == pytest.approx(x[:, 0].std())
    folded = model[-1].coef_ / scale  # what fit_linear_probe writes into the kernel
    assert np.all(np.isfinite(folded)) and np.abs(folded[:, 1]).max() < 1e-6
    assert model.score(x, y) > 0.8
