"""Non-neural baselines: logistic regression and 1-nearest-neighbour on flat inputs.

They answer "how much does the network add?": on raw pixels they are the
floor a transferred model must beat, and on frozen features the logistic
regression is a linear probe, which estimates what the head phase of
`tftransfer.fit_two_phase` can reach (`tftransfer.evaluation.ranking` uses it
that way). Inputs of any shape are flattened to ``(examples, -1)``.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

BASELINES = ("logistic_regression", "nearest_neighbour")
"""The kinds `baseline_accuracy` takes."""

DEFAULT_C_VALUES = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
"""The inverse regularization strengths `logistic_regression` chooses from."""

ONE_SHOT_C = 1.0
"""The C `logistic_regression` uses when a class has a single example (no
validation data, nothing to cross-validate on): scikit-learn's default."""

MAX_FOLDS = 5
"""Cross-validation folds at most (fewer when the smallest class is smaller)."""

MAX_ITER = 10_000
"""L-BFGS iterations at most: enough for standardized inputs to converge."""

CONSTANT_FEATURE_STD = 1e-6
"""A feature whose standard deviation is below this share of the median
feature's is treated as constant (not scaled), as scikit-learn treats an
exactly constant one."""


class FeatureScaler(StandardScaler):
    """`StandardScaler` that leaves near-constant features unscaled.

    scikit-learn leaves a feature unscaled only when its variance is exactly
    zero (or tiny against its mean). A pretrained network can have dead
    features whose values are float noise around zero (all-MiniLM-L6-v2 has
    three, with standard deviations down to 1e-9 against a median of 0.26):
    standardized, their noise becomes a feature like any other, and a probe
    folded into a head (`tftransfer.fit_linear_probe`) gets kernel entries
    near 1e19 there, which turn the logits to NaN once fine-tuning moves
    those features. Here a feature with a standard deviation below
    `CONSTANT_FEATURE_STD` times the median's keeps scale 1 (it is only
    centred), which makes it near zero after scaling.

    Example:

    >>> x = np.array([[0.0, 1e-33], [1.0, -1e-33], [2.0, 3e-33]])
    >>> FeatureScaler().fit(x).scale_.tolist()
    [0.816496580927726, 1.0]
    """

    def fit(self, X, y=None, sample_weight=None):
        super().fit(X, y, sample_weight)
        if self.scale_ is not None and self.scale_.size:
            floor = CONSTANT_FEATURE_STD * np.median(self.scale_)
            self.scale_ = np.where(self.scale_ < floor, 1.0, self.scale_)
        return self


def _flat(x, name):
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0 or x.dtype.kind not in "biuf":
        raise ValueError(
            f"`{name}` must be a non-empty numeric array with one row per example (pixels or "
            f"features). Received: {name} of shape {x.shape} and dtype {x.dtype}")
    return x.reshape(len(x), -1).astype(np.float64)


def _labels(y, x, name, x_name):
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "biu":
        raise ValueError(
            f"`{name}` must be a 1-D array of integer labels. "
            f"Received: {name} of shape {y.shape} and dtype {y.dtype}")
    if len(y) != len(x):
        raise ValueError(
            f"`{x_name}` and `{name}` must have one row per example; they have {len(x)} and "
            f"{len(y)}. Received: {x_name} of shape {np.shape(x)}, {name} of shape {y.shape}")
    return y


def _check_training(x, y, x_name="x", y_name="y"):
    flat = _flat(x, x_name)
    y = _labels(y, flat, y_name, x_name)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(
            f"`{y_name}` must hold at least 2 classes to train a classifier. "
            f"Received: {y_name} with classes {classes.tolist()}")
    return flat, y


def _check_pair(data, name, dimension):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"`{name}` must be a tuple (x, y) of inputs and integer labels. "
            f"Received: {name} of type {type(data).__name__}")
    flat = _flat(data[0], f"{name}[0]")
    y = _labels(data[1], flat, f"{name}[1]", f"{name}[0]")
    if flat.shape[1] != dimension:
        raise ValueError(
            f"`{name}` must have inputs of the training inputs' size ({dimension} values "
            f"each). Received: {name}[0] of shape {np.shape(data[0])}")
    return flat, y


def check_c_values(c_values):
    """`c_values` sorted, or a ValueError naming it."""
    values = list(c_values) if isinstance(c_values, (tuple, list)) else []
    if not values or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 for c in values):
        raise ValueError(
            "`c_values` must be a non-empty tuple of positive numbers (inverse "
            f"regularization strengths). Received: c_values={c_values!r}")
    return sorted(float(c) for c in values)


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an integer. Received: seed={seed!r}")


def _probe(c, seed):
    return make_pipeline(FeatureScaler(),
                         LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed))


def _accuracy(model, x, y):
    return float(np.mean(model.predict(x) == y))


def _best(scores):
    """The C with the highest accuracy; ties go to the smaller C (the
    stronger regularization)."""
    best = max(scores.values())
    return min(c for c, score in scores.items() if score == best)


def logistic_regression(x, y, *, validation_data=None, c_values=DEFAULT_C_VALUES, seed=0):
    """Fits a logistic regression on flattened inputs, choosing its C.

    The model is a scikit-learn pipeline: `FeatureScaler` (a
    `StandardScaler` with statistics of `x`, near-constant features
    unscaled) then multinomial `LogisticRegression` (L2, L-BFGS). Its C comes
    from `c_values`:

    - with `validation_data`: the C with the best accuracy on it (the model
      is fitted on `x` alone);
    - else, when every class has at least 2 examples: the best mean accuracy
      of stratified k-fold cross-validation on ``(x, y)``, ``k = min(5,
      smallest class count)`` (folds shuffled with `seed`), then refitted on
      all of ``(x, y)``;
    - else (a class with one example): ``C = ONE_SHOT_C`` (1.0).

    A single value in `c_values` is used as it is. Ties go to the smaller C. The chosen C is the fitted estimator's own
    parameter: ``model[-1].C``.

    Args:
        x: inputs of any shape ``(examples, ...)``: pixels or features.
        y: integer labels, at least 2 classes.
        validation_data: ``(x_val, y_val)`` to choose C on.
        c_values: the inverse regularization strengths to choose from.
        seed: for the folds and the solver.

    Returns:
        The fitted `sklearn.pipeline.Pipeline`.

    Example:

    >>> import numpy as np
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]])
    >>> model = logistic_regression(x, [0, 0, 0, 0, 1, 1, 1, 1])
    >>> model.predict([[1.5], [11.5]]).tolist(), model[-1].C
    ([0, 1], 0.001)
    """
    x, y = _check_training(x, y)
    values = check_c_values(c_values)
    _check_seed(seed)
    if validation_data is not None:
        validation_data = _check_pair(validation_data, "validation_data", x.shape[1])
    return fit_choosing_c(lambda c: _probe(c, seed), x, y, validation_data=validation_data,
                          c_values=values, seed=seed)


def fit_choosing_c(build, x, y, *, validation_data, c_values, seed):
    """Fits ``build(C)`` on ``(x, y)`` with the C of `c_values` chosen as
    `logistic_regression` documents (on `validation_data` when given, else
    by stratified cross-validation, else `ONE_SHOT_C`). `x` is an array
    indexable by rows (numbers, or strings for a text pipeline), `y` integer
    labels; both checked by the caller."""
    values = sorted(c_values)
    if validation_data is not None:
        x_val, y_val = validation_data
        scores = {c: _accuracy(build(c).fit(x, y), x_val, y_val) for c in values}
        chosen = _best(scores)
    else:
        smallest = int(np.min(np.unique(y, return_counts=True)[1]))
        if smallest >= 2 and len(values) > 1:
            folds = StratifiedKFold(min(MAX_FOLDS, smallest), shuffle=True, random_state=seed)
            splits = list(folds.split(x, y))
            scores = {c: np.mean([_accuracy(build(c).fit(x[a], y[a]), x[b], y[b])
                                  for a, b in splits]) for c in values}
            chosen = _best(scores)
        elif len(values) == 1:
            chosen = values[0]
        else:
            chosen = ONE_SHOT_C
    return build(chosen).fit(x, y)


def nearest_neighbour(x, y):
    """Fits a 1-nearest-neighbour classifier (Euclidean) on flattened inputs.

    Args:
        x: inputs of any shape ``(examples, ...)``.
        y: integer labels, at least 2 classes.

    Returns:
        The fitted `sklearn.neighbors.KNeighborsClassifier`; it expects
        flattened inputs, ``x.reshape(len(x), -1)``.

    Example:

    >>> model = nearest_neighbour([[0.0, 0.0], [5.0, 5.0]], [0, 1])
    >>> model.predict([[1.0, 0.5], [4.0, 6.0]]).tolist()
    [0, 1]
    """
    x, y = _check_training(x, y)
    return KNeighborsClassifier(n_neighbors=1, metric="euclidean").fit(x, y)


def baseline_accuracy(kind, train, test, *, validation_data=None, seed=0):
    """Trains a baseline on `train` and returns its accuracy on `test`.

    Args:
        kind: ``"logistic_regression"`` (see `logistic_regression`) or
            ``"nearest_neighbour"`` (see `nearest_neighbour`).
        train: ``(x, y)``: inputs of any shape and integer labels.
        test: ``(x, y)`` to score on, inputs of the same size.
        validation_data: ``(x, y)`` to choose the logistic regression's C on
            (default: cross-validation on `train`); the nearest neighbour
            has nothing to choose and ignores it.
        seed: for the logistic regression's folds and solver.

    Returns:
        The accuracy on `test`, a float in [0, 1].

    Example:

    >>> train = ([[0.0], [1.0], [10.0], [11.0]], [0, 0, 1, 1])
    >>> baseline_accuracy("nearest_neighbour", train, ([[2.0], [9.0]], [0, 0]))
    0.5
    """
    if kind not in BASELINES:
        raise ValueError(f"`kind` must be one of {BASELINES}. Received: kind={kind!r}")
    if not isinstance(train, (tuple, list)) or len(train) != 2:
        raise ValueError(
            "`train` must be a tuple (x, y) of inputs and integer labels. "
            f"Received: train of type {type(train).__name__}")
    x, y = _check_training(train[0], train[1], "train[0]", "train[1]")
    x_test, y_test = _check_pair(test, "test", x.shape[1])
    if kind == "logistic_regression":
        model = logistic_regression(x, y, validation_data=validation_data, seed=seed)
    else:
        model = nearest_neighbour(x, y)
    return _accuracy(model, x_test, y_test)
