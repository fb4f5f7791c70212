"""Label efficiency: accuracy against the number of labelled examples per class.

Transfer learning's claim is "better results from fewer labels". The
evidence is a curve: for each number of labels per class and each seed, draw
that many labelled examples per class from a pool, train every method on the
same examples, and score all of them on the same held-out set. The seed
chooses the examples (and each method's initialization); the subsets of one
seed are nested (the 2-label set holds the 1-label set), so a curve moves by
the labels added, not by a new draw.

A *method* is any callable ``method(x, y, *, seed)`` that trains on the
labelled examples and returns something with ``predict(x)``: class labels
(scikit-learn) or one score per class (Keras). `pixel_baseline` makes the
non-neural ones.
"""

import dataclasses
import logging
import time

import keras
import numpy as np
import tensorflow as tf

from tftransfer.baselines import BASELINES
from tftransfer.baselines import logistic_regression
from tftransfer.baselines import nearest_neighbour

logger = logging.getLogger(__name__)

DEFAULT_LABELS_PER_CLASS = (1, 2, 3, 5, 10)
DEFAULT_SEEDS = (0, 1, 2)


def labelled_subset(y, labels_per_class, *, seed):
    """The indices of `labels_per_class` examples of each class of `y`,
    drawn with `seed`: the labelled subsets that `label_efficiency` trains
    on, for a few-label experiment of your own. For one seed, a smaller
    count's subset is inside a larger one's.

    Args:
        y: integer class labels of the pool, shape ``(n,)``.
        labels_per_class: how many examples of each class to take.
        seed: the draw's seed.

    Returns:
        The chosen indices into `y`, sorted.

    Raises:
        ValueError: a class has fewer than `labels_per_class` examples.

    Example:

    >>> y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    >>> one = labelled_subset(y, 1, seed=0)
    >>> two = labelled_subset(y, 2, seed=0)
    >>> y[one].tolist(), set(one) <= set(two)
    ([0, 1, 2], True)
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < labels_per_class:
            raise ValueError(
                f"Class {c} has {len(members)} examples in the pool, fewer than "
                f"labels_per_class={labels_per_class}. Use a larger pool or fewer labels per "
                f"class. Received: labels_per_class={labels_per_class}")
        chosen.append(rng.permutation(members)[:labels_per_class])
    return np.sort(np.concatenate(chosen))


def pixel_baseline(kind, *, scale=1 / 255):
    """A label-efficiency method that fits a non-neural baseline on the
    flattened inputs (scaled by `scale`).

    Args:
        kind: ``"logistic_regression"`` (C chosen by cross-validation on the
            labelled examples, see `tftransfer.baselines`) or
            ``"nearest_neighbour"`` (1-NN, Euclidean).
        scale: the inputs are multiplied by it (pixels in [0, 255] to [0, 1]).
    """
    if kind not in BASELINES:
        raise ValueError(f"`kind` must be one of {BASELINES}. Received: kind={kind!r}")

    def method(x, y, *, seed):
        flat = np.asarray(x, np.float32).reshape(len(x), -1) * scale
        if kind == "logistic_regression":
            return _Flattened(logistic_regression(flat, y, seed=seed), scale)
        return _Flattened(nearest_neighbour(flat, y), scale)

    method.__name__ = kind
    return method


class _Flattened:
    def __init__(self, estimator, scale):
        self.estimator, self.scale = estimator, scale

    def predict(self, x):
        return self.estimator.predict(np.asarray(x, np.float32).reshape(len(x), -1) * self.scale)


@dataclasses.dataclass
class LabelEfficiency:
    """What `label_efficiency` measured.

    Attributes:
        labels_per_class: the label counts, ascending.
        seeds: the seeds.
        accuracy: ``{method: array [len(labels_per_class), len(seeds)]}`` of
            held-out accuracies.
        seconds: ``{method: training and scoring time over all runs}``.
        test_size: held-out examples each run is scored on.
    """

    labels_per_class: list
    seeds: list
    accuracy: dict
    seconds: dict
    test_size: int

    def mean(self, method):
        return self.accuracy[method].mean(axis=1)

    def spread(self, method):
        """The standard deviation over seeds (0 for one seed)."""
        return self.accuracy[method].std(axis=1)

    def best_other(self, method):
        """Per label count, the best seed mean among the other methods, and
        which method has it."""
        others = [m for m in self.accuracy if m != method]
        means = np.stack([self.mean(m) for m in others])
        return means.max(axis=0), [others[i] for i in means.argmax(axis=0)]

    def summary(self, method=None, *, versus=None):
        """One sentence: how `method` (default: the first) compares with the
        best of the others at the smallest and the largest label counts."""
        method = method or next(iter(self.accuracy))
        if len(self.accuracy) < 2:
            return f"{method}: " + ", ".join(
                f"{m:.3f} at {k}" for k, m in zip(self.labels_per_class, self.mean(method)))
        best, names = self.best_other(method)
        mine = self.mean(method)
        gaps = mine - best
        ahead = [k for k, g in zip(self.labels_per_class, gaps) if g > 0]
        first, last = 0, len(self.labels_per_class) - 1
        phrase = (f"with {self.labels_per_class[first]} label(s) per class {method} scores "
                  f"{mine[first]:.3f} against {best[first]:.3f} for the best other method "
                  f"({names[first]}), and with {self.labels_per_class[last]} "
                  f"{mine[last]:.3f} against {best[last]:.3f} ({names[last]})")
        if len(ahead) == len(gaps):
            lead = f"{method} is ahead at every label count"
        elif not ahead:
            lead = f"{method} is ahead at no label count"
        else:
            lead = f"{method} is ahead at {', '.join(map(str, ahead))} label(s) per class"
        return (f"{lead} (means over {len(self.seeds)} seeds, {self.test_size} held-out "
                f"examples): {phrase}.")

    def table(self):
        """A Markdown table: the seed mean and standard deviation per method
        and label count."""
        header = "| method | " + " | ".join(str(k) for k in self.labels_per_class) + " |"
        lines = [header, "|" + " --- |" * (len(self.labels_per_class) + 1)]
        for method in self.accuracy:
            cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(self.mean(method), self.spread(method))]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self):
        return {
            "labels_per_class": list(self.labels_per_class),
            "seeds": list(self.seeds),
            "test_size": self.test_size,
            "accuracy": {m: a.tolist() for m, a in self.accuracy.items()},
            "mean": {m: self.mean(m).tolist() for m in self.accuracy},
            "std": {m: self.spread(m).tolist() for m in self.accuracy},
            "seconds": {m: round(s, 2) for m, s in self.seconds.items()},
            "summary": self.summary(),
        }

    def plot(self, *, title=None):
        """A `matplotlib.figure.Figure`: the seed mean per method against
        labels per class (log scale), with a band from the worst to the best
        seed."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 4.2))
        ax = figure.add_subplot()
        for method in self.accuracy:
            values = self.accuracy[method]
            line, = ax.plot(self.labels_per_class, values.mean(axis=1), marker="o", label=method)
            if values.shape[1] > 1:
                ax.fill_between(self.labels_per_class, values.min(axis=1), values.max(axis=1),
                                color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.set_xticks(self.labels_per_class, [str(k) for k in self.labels_per_class])
        ax.minorticks_off()
        ax.set(xlabel="labelled examples per class", ylabel="held-out accuracy",
               ylim=(0, 1.02), title=title or "Label efficiency")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right",
                  title=f"mean of {len(self.seeds)} seeds; band: min-max" if len(self.seeds) > 1
                  else None)
        figure.tight_layout()
        return figure


def label_efficiency(methods, train, test, *, labels_per_class=DEFAULT_LABELS_PER_CLASS,
                     seeds=DEFAULT_SEEDS, report=None):
    """Measures each method's held-out accuracy over label counts and seeds.

    For each seed and each count in `labels_per_class`, the same
    `labelled_subset` of the pool `train` is given to every method, and
    every method is scored on all of `test`.

    Args:
        methods: ``{name: method}``; a method is a callable
            ``method(x, y, *, seed)`` returning a trained model with
            ``predict(x)`` (class labels, or one score per class).
            `pixel_baseline` makes the non-neural baselines.
        train: ``(x, y)``: the pool the labelled examples are drawn from.
        test: ``(x, y)``: held-out examples, never used for training.
        labels_per_class: the counts, positive integers.
        seeds: the seeds (one draw of examples each).
        report: called with a line of progress per run; default: logged.

    Returns:
        A `LabelEfficiency`: ``.table()``, ``.summary()``, ``.plot()``,
        ``.to_dict()``.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> x = rng.normal(size=(40, 4)) + 3 * y[:, None]
    >>> curve = label_efficiency(
    ...     {"1-NN": pixel_baseline("nearest_neighbour", scale=1)},
    ...     (x[::2], y[::2]), (x[1::2], y[1::2]), labels_per_class=(1, 5), seeds=(0, 1))
    >>> curve.accuracy["1-NN"].shape
    (2, 2)
    """
    if not isinstance(methods, dict) or not methods or not all(
            callable(m) for m in methods.values()):
        raise TypeError(
            "`methods` must be a non-empty dict {name: method(x, y, *, seed)}. Received: "
            f"methods={methods!r}")
    x, y = _pair(train, "train")
    x_test, y_test = _pair(test, "test")
    counts = _positive_ints(labels_per_class, "labels_per_class")
    seeds = _seeds(seeds)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if counts[-1] > smallest:
        raise ValueError(
            f"The smallest class of `train` has {smallest} examples, fewer than the largest "
            f"labels_per_class ({counts[-1]}). Received: labels_per_class={list(counts)}")
    report = report or logger.info
    accuracy = {name: np.zeros((len(counts), len(seeds))) for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for j, seed in enumerate(seeds):
        for i, count in enumerate(counts):
            chosen = labelled_subset(y, count, seed=seed)
            for name, method in methods.items():
                start = time.perf_counter()
                model = method(x[chosen], y[chosen], seed=seed)
                accuracy[name][i, j] = _accuracy(model, x_test, y_test)
                seconds[name] += time.perf_counter() - start
                report(f"      seed {seed}, {count} per class: {name} "
                       f"{accuracy[name][i, j]:.3f}")
    return LabelEfficiency(labels_per_class=list(counts), seeds=list(seeds), accuracy=accuracy,
                           seconds=seconds, test_size=len(y_test))


def _accuracy(model, x, y):
    keras_model = isinstance(model, keras.Model)
    if keras_model and x.dtype.kind in "UO":  # texts: Keras takes string tensors
        x = tf.constant([str(t) for t in x])
    predicted = np.asarray(model.predict(x, verbose=0) if keras_model else model.predict(x))
    if predicted.ndim == 2:
        predicted = predicted.argmax(axis=-1)
    return float(np.mean(predicted == y))


def _pair(data, name):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"`{name}` must be a tuple (x, y) of inputs and integer labels. "
                         f"Received: {name} of type {type(data).__name__}")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"`{name}` must hold as many labels as inputs, at least one. "
                         f"Received: {len(x)} inputs and {len(y)} labels")
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise ValueError(f"`{name}` labels must be integers, one per example. Received: labels "
                         f"of dtype {y.dtype} and shape {y.shape}")
    return x, y


def _positive_ints(values, name):
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                         for v in values):
        raise ValueError(f"`{name}` must be positive integers. Received: {name}={values!r}")
    return tuple(sorted({int(v) for v in values}))


def _seeds(seeds):
    seeds = tuple(seeds) if isinstance(seeds, (tuple, list)) else (seeds,)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0
                        for s in seeds):
        raise ValueError(f"`seeds` must be non-negative integers. Received: seeds={seeds!r}")
    return tuple(int(s) for s in seeds)
