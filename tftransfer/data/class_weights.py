"""Class weights from label counts."""

import numpy as np


def compute_class_weight(labels=None, *, counts=None, num_classes=None, mode="balanced"):
    """Class weights for ``fit(..., class_weight=...)`` on imbalanced data.

    ``"balanced"`` weighs class ``c`` by ``n_samples / (n_classes *
    count_c)`` (scikit-learn's formula): every class then contributes the
    same total weight to the loss, and a uniformly distributed data set gets
    weights of 1.

    Args:
        labels: integer labels ``(n,)``, or one-hot labels ``(n, classes)``.
        counts: instead of `labels`: examples per class, as a list (index =
            class) or a dict ``{class_index: count}``.
        num_classes: number of classes (for `labels`). Default: the largest
            label + 1.
        mode: ``"balanced"``.

    Returns:
        ``{class_index: weight}`` for every class.

    Example:

    >>> compute_class_weight([0, 0, 0, 1])
    {0: 0.6666666666666666, 1: 2.0}
    >>> compute_class_weight(counts=[90, 10])
    {0: 0.5555555555555556, 1: 5.0}
    """
    if mode != "balanced":
        raise ValueError(f"`mode` must be 'balanced'. Received: mode={mode!r}")
    if (labels is None) == (counts is None):
        raise ValueError(
            "Pass exactly one of `labels` and `counts`. "
            f"Received: labels={labels!r}, counts={counts!r}"
        )
    if labels is not None:
        y = np.asarray(labels)
        if y.ndim == 2:
            if not np.all(np.isin(y, (0, 1))) or not np.all(y.sum(axis=1) == 1):
                raise ValueError(
                    "2-D `labels` must be one-hot (a single 1 a row); multi-label data "
                    f"have no single class per example. Received: labels of shape {y.shape}"
                )
            num_classes = num_classes or y.shape[1]
            y = y.argmax(axis=1)
        if y.ndim != 1 or (y.size and (y.dtype.kind not in "iu" or y.min() < 0)):
            raise ValueError(
                "`labels` must be non-negative integer class indices (n,) or one-hot (n, "
                f"classes). Received: labels of shape {y.shape} and dtype {y.dtype}"
            )
        if num_classes is None:
            num_classes = int(y.max()) + 1 if y.size else 0
        counts = np.bincount(y, minlength=num_classes)
    elif isinstance(counts, dict):
        size = max(counts) + 1 if counts else 0
        counts = np.array([counts.get(i, 0) for i in range(size)])
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0):
        raise ValueError(
            "`counts` must be a non-empty list of example counts per class. "
            f"Received: counts={counts.tolist()!r}"
        )
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        raise ValueError(
            f"Class(es) {empty} have no examples, so no finite balanced weight. Drop them "
            f"from the data (and the class names). Received: counts={counts.tolist()!r}"
        )
    total, n = float(counts.sum()), len(counts)
    return {i: total / (n * float(c)) for i, c in enumerate(counts)}
