"""Per-task options of a multi-task model, resolved against its heads.

- `task_top_k`: the export's ``top_k`` as ``{task: k}`` (an integer applies
  to every classification head, a dict names the tasks).
- `balanced_class_weights`: the weights of the heads built with
  ``class_weight="balanced"``, from the training labels, the missing ones
  (-1) left out of the counts.

Example:

>>> from tftransfer.classifiers import heads
>>> tasks = {"digit": heads.classification(10), "even": heads.binary()}
>>> task_top_k(tasks, 3), task_top_k(tasks, {"even": 2})
({'digit': 3}, {'even': 2})
>>> balanced_class_weights({"even": heads.binary(class_weight="balanced")},
...                        {"even": np.array([0, 0, 0, 1, -1])})
{'even': (0.6666666666666666, 2.0)}
"""

import numpy as np
import tensorflow as tf

from tftransfer.data.class_weights import compute_class_weight

_TOP_K_KINDS = ("classification", "binary")


def task_top_k(tasks, top_k):
    """``{task: k}`` for the tasks whose export returns its `k` > 1 best
    classes.

    Args:
        tasks: ``{task: HeadSpec}``.
        top_k: 1 (none); an integer k > 1 for every classification head
            (each must have at least k classes); or a dict ``{task: k}`` of
            classification or binary tasks.
    """
    if isinstance(top_k, dict):
        chosen = dict(top_k)
    elif isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(
            "`top_k` of a multi-task export must be a positive integer (for every "
            "classification task) or a dict {task: k}, e.g. {'digit': 3}. "
            f"Received: top_k={top_k!r}")
    elif top_k == 1:
        return {}
    else:
        chosen = {name: top_k for name, head in tasks.items() if head.kind == "classification"}
        if not chosen:
            raise ValueError(
                "An integer `top_k` applies to the classification tasks, and this model has "
                f"none (its tasks: { {n: h.kind for n, h in tasks.items()} }); give a dict "
                f"for a binary task, e.g. {{'task': 2}}. Received: top_k={top_k!r}")
    resolved = {}
    for name, k in chosen.items():
        head = tasks.get(name)
        if head is None or head.kind not in _TOP_K_KINDS:
            raise ValueError(
                f"`top_k` names classification or binary tasks of the model "
                f"({[n for n, h in tasks.items() if h.kind in _TOP_K_KINDS]}). "
                f"Received: top_k={top_k!r} with {name!r}"
                + ("" if head is None else f", a {head.kind} task"))
        classes = len(head.labels)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= classes:
            raise ValueError(
                f"`top_k` of task {name!r} must be an integer from 1 to its number of "
                f"classes ({classes}); pass a dict to set it per task. "
                f"Received: top_k={top_k!r}")
        if k > 1:
            resolved[name] = k
    return resolved


def balanced_class_weights(tasks, labels):
    """``{task: weights}`` (a tuple in class order) for every head of
    `tasks` built with ``class_weight="balanced"``: each class weighs
    ``n / (classes * count)`` over the task's labelled examples (see
    `tftransfer.compute_class_weight`).

    Args:
        tasks: ``{task: HeadSpec}``.
        labels: ``{task: labels}`` (a model with one task: its labels).
    """
    balanced = [name for name, head in tasks.items() if head.class_weight == "balanced"]
    if not isinstance(labels, dict):
        labels = {next(iter(tasks)): labels}
    weights = {}
    for name in balanced:
        head = tasks[name]
        values = np.asarray(labels[name]).reshape(-1)
        values = values[values >= 0].astype(np.int64)
        classes = 2 if head.kind == "binary" else len(head.labels)
        try:
            found = compute_class_weight(values, num_classes=classes)
        except ValueError as error:
            raise ValueError(
                f"Task {name!r} has class_weight='balanced' but its training labels do not "
                f"allow it: {error}") from None
        weights[name] = tuple(found[i] for i in range(classes))
    return weights


def training_labels(x, y):
    """The training labels: `y`, or those of a `tf.data.Dataset` `x` of
    ``(inputs, labels)`` batches, read once (a dict stays a dict)."""
    if y is not None:
        return y
    if not isinstance(x, tf.data.Dataset):
        raise ValueError(
            "class_weight='balanced' needs the training labels: pass `y` with arrays, or a "
            "tf.data.Dataset of (inputs, labels). Or give the head its weights, e.g. "
            "tft.heads.binary(class_weight=[1.0, 3.0]). "
            f"Received: x of type {type(x).__name__}")
    batches = [batch[1] for batch in x.as_numpy_iterator()]
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *batches)
