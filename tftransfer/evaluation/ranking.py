"""Backbone ranking before training: score candidates from one pass of frozen features.

`rank_backbones` runs each candidate backbone once over the data, in
inference mode, up to the input of its classification head (what the head
phase of `tftransfer.fit_two_phase` trains on), and scores those features:

- ``"linear_probe"`` (default): a logistic regression
  (`tftransfer.baselines.logistic_regression`, C chosen by
  cross-validation on the training features) scored by its accuracy on
  held-out features: a direct estimate of the frozen-phase accuracy.
- ``"knn"``: the accuracy on held-out features of a `KNN_NEIGHBOURS`-nearest-
  neighbour vote (Euclidean, on features standardized with the training
  features' statistics).
- ``"logme"``: `tftransfer.evaluation.logme.logme` of the training features
  (the evidence of a Bayesian linear model; no held-out data, no
  hyperparameters).

How well each score's order agrees with the accuracy after `fit_two_phase`
was measured in ``benchmarks/rank_backbones_benchmark.py`` (results in
``benchmarks/results/rank_backbones.md``): low to moderate on 8 small digit
CNNs over 3 tasks (mean Kendall tau 0.2-0.3 for the linear probe, 0.4-0.6
for kNN and LogME). All three scores are blind to the features' scale, which
the head `fit_two_phase` trains is not: use a ranking to shortlist
candidates, then train the few best.
"""

import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tftransfer.baselines import logistic_regression
from tftransfer.classifiers.base import Classifier
from tftransfer.classifiers.image import build_classifier
from tftransfer.classifiers.inputs import check_backbone_input
from tftransfer.data.checks import class_indices
from tftransfer.data.splits import DataSplits
from tftransfer.evaluation.logme import logme
from tftransfer.evaluation.ranking_table import BackboneRanking
from tftransfer.evaluation.ranking_table import RankedBackbone

logger = logging.getLogger(__name__)

METHODS = ("linear_probe", "knn", "logme")
"""The scores `rank_backbones` computes."""

KNN_NEIGHBOURS = 5
"""Neighbours of the ``"knn"`` score (fewer when the training split is smaller)."""

HOLDOUT_FRACTION = 0.25
"""The share of the training split held out (stratified) when the data has
no validation split and the method needs held-out features."""


def _check_options(method, batch_size, max_examples, seed, verbose):
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    for name, value, allow_none in (("batch_size", batch_size, False),
                                    ("max_examples", max_examples, True)):
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer{' or None' if allow_none else ''}. "
                f"Received: {name}={value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an integer. Received: seed={seed!r}")
    if verbose not in (0, 1, 2, "auto"):
        raise ValueError(f"`verbose` must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")


def _candidate_name(candidate):
    if isinstance(candidate, keras.Model):
        return candidate.name
    if isinstance(candidate, (str, os.PathLike)):
        text = os.fspath(candidate)
        return os.path.basename(os.path.normpath(text)) if os.path.exists(text) else text
    return type(candidate).__name__


def _named_candidates(candidates):
    if isinstance(candidates, dict):
        pairs = list(candidates.items())
        bad = [name for name, _ in pairs if not isinstance(name, str) or not name]
        if bad:
            raise TypeError(f"The names (keys) of `candidates` must be non-empty strings. "
                            f"Received: names {bad!r}")
    elif isinstance(candidates, (list, tuple)):
        pairs = [(_candidate_name(c), c) for c in candidates]
    else:
        raise TypeError(
            "`candidates` must be a dict {name: candidate} or a list of candidates "
            "(backbone names, `.keras` paths, SavedModel directories, `keras.Model`s or "
            f"built classifiers). Received: candidates of type {type(candidates).__name__}")
    if not pairs:
        raise ValueError("`candidates` must hold at least one candidate to rank. "
                         f"Received: candidates={candidates!r}")
    names = [name for name, _ in pairs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"The candidates' names must be unique; {duplicates} appear more than once. "
            "Pass a dict {name: candidate} to name them. "
            f"Received: candidates named {names}")
    return pairs


def _as_inputs(x):
    x = np.asarray(x)
    return x.astype(object) if x.dtype.kind in "US" else x


def _read_split(dataset, split, max_examples, batch_size):
    """(inputs, labels) arrays of one split of a `DataSplits`, in pipeline order."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(
            f"`data` must carry labels: its {split} split must yield (inputs, labels) "
            f"batches. Received: a {split} split of elements {spec!r}")
    if spec[1].shape.rank == 0:  # unbatched (batch_size=None in the loader)
        dataset = dataset.batch(batch_size)
    inputs, labels, count = [], [], 0
    for batch in dataset:
        inputs.append(batch[0].numpy())
        labels.append(batch[1].numpy())
        count += len(labels[-1])
        if max_examples is not None and count >= max_examples:
            break
    if not count:
        raise ValueError(f"The {split} split of `data` is empty: there is nothing to score. "
                         f"Received: a DataSplits with an empty {split} split")
    return (np.concatenate(inputs)[:max_examples],
            class_indices(np.concatenate(labels)[:max_examples], f"the {split} split"))


def _read_data(data, *, method, max_examples, batch_size, seed):
    """``(train, held_out, class_names)``: ``(x, y)`` arrays of the examples
    to fit on and of those to score on (None for LogME), and the class names
    the data knows (None for arrays)."""
    if isinstance(data, DataSplits):
        train = _read_split(data.train, "train", max_examples, batch_size)
        held_out = None
        if data.validation is not None and method != "logme":
            held_out = _read_split(data.validation, "validation", max_examples, batch_size)
        names = list(data.class_names)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if y is None:
            raise ValueError("`data` must carry labels: pass (x, y) with labels y, or a "
                             "DataSplits. Received: data=(x, None)")
        x, y = _as_inputs(x), class_indices(y, "`data`")
        if len(x) != len(y):
            raise ValueError(
                f"`data` must be (x, y) with one label per input; it has {len(x)} inputs and "
                f"{len(y)} labels. Received: x of shape {x.shape}, y of shape {y.shape}")
        train, held_out, names = (x[:max_examples], y[:max_examples]), None, None
    else:
        raise TypeError(
            "`data` must be a `tftransfer.DataSplits` or a tuple (x, y) of inputs and labels "
            "(a dataset without labels cannot rank backbones). "
            f"Received: data of type {type(data).__name__}")
    if held_out is None and method != "logme":
        train, held_out = _hold_out(train, seed)
    return train, held_out, names


def _hold_out(train, seed):
    x, y = train
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        raise ValueError(
            "Without a validation split, a stratified hold-out of the training data is "
            "scored: every class needs at least 2 examples, and there must be 2 classes. "
            "Add examples, pass a DataSplits with a validation split, or use "
            "method='logme'. Received: class counts "
            f"{dict(zip(classes.tolist(), counts.tolist()))}")
    size = max(len(classes), round(HOLDOUT_FRACTION * len(y)))
    size = min(size, len(y) - len(classes))
    split = StratifiedShuffleSplit(n_splits=1, test_size=size, random_state=seed)
    kept, held = next(split.split(np.zeros(len(y)), y))
    return (x[kept], y[kept]), (x[held], y[held])


def _resolve_class_names(class_names, data_names, labels):
    names = data_names if class_names is None else list(class_names)
    if names is None:
        names = [str(i) for i in range(int(labels.max()) + 1)]
    if labels.min() < 0 or labels.max() >= len(names):
        raise ValueError(
            f"The labels run from {labels.min()} to {labels.max()}, outside the "
            f"{len(names)} classes. Pass `class_names` with one name per class. "
            f"Received: class_names={class_names!r}")
    if len(set(labels.tolist())) < 2:
        raise ValueError(
            "`data` must hold at least 2 classes to rank backbones on. "
            f"Received: labels of class {labels[0]} only")
    return names


def _all_layers(model):
    """The model and its (nested) layers, parents before children."""
    found, pending = [], [model]
    while pending:
        layer = pending.pop(0)
        found.append(layer)
        pending.extend(getattr(layer, "layers", ()))
    return found


def _trainable_flags(candidate):
    """The trainable flags of a `keras.Model` candidate's layers, which the
    classifier built on it sets to False, to restore afterwards."""
    if isinstance(candidate, keras.Model) and not isinstance(candidate, Classifier):
        return [(layer, layer.trainable) for layer in _all_layers(candidate)]
    return []


def _feature_model(candidate, *, data, x, class_names, input_shape, pooling, weights):
    """A model from the inputs to the candidate's head input."""
    if isinstance(candidate, Classifier):
        if x.ndim == 4:
            check_backbone_input(candidate, input_shape or x.shape[1:], source=(
                "`input_shape` asks for" if input_shape else "the data has"))
        elif x.dtype == object and candidate.inputs[0].dtype != "string":
            raise ValueError(
                f"The classifier {candidate.name!r} takes {candidate.inputs[0].dtype} inputs "
                "but the data holds strings. Received: a candidate with inputs of shape "
                f"{tuple(candidate.inputs[0].shape)}")
        model = candidate
    else:
        shape = input_shape or (tuple(x.shape[1:]) if x.ndim == 4 else None)
        if isinstance(data, DataSplits) and input_shape is None:
            model = build_classifier(candidate, data=data, class_names=class_names,
                                     pooling=pooling, weights=weights)
        else:
            model = build_classifier(candidate, class_names=class_names, input_shape=shape,
                                     pooling=pooling, weights=weights)
    features = model.head.dropout_layers[0].input
    return keras.Model(model.inputs, features, name=f"{model.name}_features")


def _features(extractor, x, batch_size, verbose):
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
    features = np.asarray(extractor.predict(dataset, verbose=verbose))
    return features.reshape(len(features), -1)


def _score(method, train, held_out, seed):
    (x, y) = train
    if method == "logme":
        return logme(x, y)
    if method == "linear_probe":
        model = logistic_regression(x, y, seed=seed)
    else:
        model = make_pipeline(StandardScaler(), KNeighborsClassifier(
            n_neighbors=min(KNN_NEIGHBOURS, len(y)), metric="euclidean")).fit(x, y)
    return float(np.mean(model.predict(held_out[0]) == held_out[1]))


def rank_backbones(
    candidates,
    data,
    *,
    method="linear_probe",
    class_names=None,
    input_shape=None,
    pooling="avg",
    weights="imagenet",
    batch_size=32,
    max_examples=None,
    seed=0,
    verbose=0,
):
    """Ranks candidate backbones for a task before training any of them.

    Each candidate runs once (in inference mode) over the training split
    and, for the held-out methods, the validation split; its features are
    the input of the classification head a classifier built on it has (the
    pooled backbone outputs: what the frozen phase of `fit_two_phase`
    trains on). Every candidate is built and checked against the data
    before any features are extracted, so a candidate that does not fit
    fails at once. The inputs of the examples used are read once and held
    in memory (bound them with `max_examples`); an augmented training
    pipeline is read as it comes (load the data without augmentation).

    Args:
        candidates: a dict ``{name: candidate}``, or a list of candidates
            (then named by their model name, their string, or the base name
            of their path). A candidate is anything `build_classifier` takes
            as its backbone (a Keras Applications name, a `.keras` file, a
            TF-Hub-format SavedModel directory or URL, a `keras.Model`), or a
            built `tftransfer.Classifier` (an `ImageClassifier` or a
            `TextClassifier`: its own head input is used, so text encoders
            with different poolings are candidates too). A `keras.Model`
            candidate keeps its layers' trainable flags.
        data: a `tftransfer.DataSplits` (the training split is scored
            against the validation split; without one, a stratified
            `HOLDOUT_FRACTION` of the training split is held out with
            `seed`), or ``(x, y)`` arrays (the same hold-out). Integer or
            one-hot labels.
        method: ``"linear_probe"``, ``"knn"`` or ``"logme"`` (see the
            module's docstring).
        class_names: the class names, for candidates built here. Default:
            the data's, else ``"0"``, ``"1"``...
        input_shape: the image size to build named backbones at. Default:
            the data's.
        pooling: for candidates built here: ``"avg"``, ``"max"`` or
            ``"flatten"`` (see `build_classifier`).
        weights: for named backbones (see `build_classifier`).
        batch_size: for feature extraction.
        max_examples: use at most this many examples of each split (in
            pipeline order). Default: all.
        seed: for the hold-out and the linear probe's folds.
        verbose: `predict`'s progress bar; each candidate's result is also
            logged (INFO) on this module's logger.

    Returns:
        A `BackboneRanking`: rows best first with name, score, method,
        seconds (feature extraction and scoring) and feature dimension;
        ``print(ranking)`` shows a table, `plot()` draws it.

    Example:

    >>> import keras, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(40) % 2
    >>> x = rng.uniform(0, 255, (40, 4, 4, 3)).astype("float32")
    >>> x[y == 1, :2] = 255.0  # the label shows in the top two rows only
    >>> def rows(name, top):
    ...     inputs = keras.Input((4, 4, 3))
    ...     crop = keras.layers.Cropping2D(((0, 2), (0, 0)) if top else ((2, 0), (0, 0)))
    ...     return keras.Model(inputs, keras.layers.Flatten()(crop(inputs)), name=name)
    >>> ranking = rank_backbones([rows("bottom", False), rows("top", True)], (x, y))
    >>> ranking.names, ranking.rows[0].score
    (['top', 'bottom'], 1.0)
    """
    _check_options(method, batch_size, max_examples, seed, verbose)
    pairs = _named_candidates(candidates)
    train, held_out, data_names = _read_data(data, method=method, max_examples=max_examples,
                                             batch_size=batch_size, seed=seed)
    class_names = _resolve_class_names(class_names, data_names, train[1])
    # All flags first: candidates may share layers (cuts of one model).
    restore = [flag for _, candidate in pairs for flag in _trainable_flags(candidate)]
    built, rows = [], []
    try:
        for name, candidate in pairs:
            start = time.perf_counter()
            extractor = _feature_model(
                candidate, data=data, x=train[0], class_names=class_names,
                input_shape=input_shape, pooling=pooling, weights=weights)
            built.append((name, extractor, time.perf_counter() - start))
        for name, extractor, load_seconds in built:
            start = time.perf_counter()
            train_features = (_features(extractor, train[0], batch_size, verbose), train[1])
            held_features = None if held_out is None else (
                _features(extractor, held_out[0], batch_size, verbose), held_out[1])
            extracted = time.perf_counter()
            score = _score(method, train_features, held_features, seed)
            end = time.perf_counter()
            rows.append(RankedBackbone(
                name=name, score=float(score), method=method, seconds=end - start,
                feature_dim=int(train_features[0].shape[1]),
                extraction_seconds=extracted - start, load_seconds=load_seconds))
            logger.info("%s: %s %.4f (%d features, %.2f s)", name, method, score,
                        rows[-1].feature_dim, rows[-1].seconds)
    finally:
        for layer, trainable in restore:
            layer.trainable = trainable
    rows.sort(key=lambda row: -row.score)
    return BackboneRanking(method=method, rows=rows, num_train=len(train[1]),
                           num_held_out=0 if held_out is None else len(held_out[1]))
