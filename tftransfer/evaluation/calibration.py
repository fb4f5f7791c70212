"""Calibration: reliability bins and the expected calibration error (numpy only).

A classifier is calibrated when, of the examples it predicts with confidence
0.8 (the probability of its predicted class), 80% are right. The examples are
grouped by confidence into `num_bins` equal-width bins on [0, 1]; bin ``b``
holds the confidences in ``(b / num_bins, (b + 1) / num_bins]`` (the first
also holds 0). The expected calibration error (ECE, Guo et al. 2017, "On
Calibration of Modern Neural Networks") is the gap between accuracy and mean
confidence of each bin, weighted by the bin's share of the examples:
``ECE = sum_b (n_b / n) * |accuracy_b - confidence_b|``.
"""

import dataclasses

import numpy as np

DEFAULT_NUM_BINS = 15


def check_num_bins(num_bins):
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(
            f"`num_bins` must be a positive integer (e.g. 15). Received: num_bins={num_bins!r}")
    return int(num_bins)


@dataclasses.dataclass
class ReliabilityBins:
    """Examples grouped by confidence, with their accuracy.

    Attributes:
        edges: the ``num_bins + 1`` bin edges, ``b / num_bins``.
        confidence: the mean confidence of each bin's examples (NaN for an
            empty bin).
        accuracy: the fraction of each bin's examples predicted right (NaN
            for an empty bin).
        count: the examples in each bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @classmethod
    def from_confidences(cls, confidence, correct, *, num_bins=DEFAULT_NUM_BINS):
        """Bins examples by `confidence` (each in [0, 1]); `correct` says
        which were predicted right.

        Example:

        >>> bins = ReliabilityBins.from_confidences([0.95, 0.9, 0.55], [True, False, True],
        ...                                         num_bins=2)
        >>> bins.count.tolist(), bins.accuracy.tolist()
        ([0, 3], [nan, 0.6666666666666666])
        """
        num_bins = check_num_bins(num_bins)
        confidence = np.asarray(confidence, np.float64).reshape(-1)
        correct = np.asarray(correct).reshape(-1)
        if len(confidence) != len(correct):
            raise ValueError(
                "`confidence` and `correct` must have one value per example. Received: "
                f"{len(confidence)} confidences and {len(correct)} correct flags")
        if not len(confidence):
            raise ValueError("Calibration needs at least one example. Received: 0 examples")
        if not np.all(np.isfinite(confidence)) or confidence.min() < 0 or confidence.max() > 1:
            raise ValueError(
                "`confidence` must hold probabilities in [0, 1]. Received: values from "
                f"{np.nanmin(confidence)} to {np.nanmax(confidence)}")
        edges = np.arange(num_bins + 1) / num_bins
        # (edges[b], edges[b + 1]] is bin b: a confidence equal to an edge goes below it.
        index = np.searchsorted(edges[1:-1], confidence, side="left")
        count = np.bincount(index, minlength=num_bins)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_confidence = np.bincount(index, confidence, minlength=num_bins) / count
            accuracy = np.bincount(index, correct.astype(np.float64), minlength=num_bins) / count
        return cls(edges=edges, confidence=mean_confidence, accuracy=accuracy, count=count)

    @property
    def num_bins(self):
        return len(self.count)

    @property
    def expected_calibration_error(self):
        """``sum_b (n_b / n) * |accuracy_b - confidence_b|`` over the bins."""
        full = self.count > 0
        gaps = np.abs(self.accuracy[full] - self.confidence[full])
        return float(np.sum(self.count[full] / self.count.sum() * gaps))

    def to_dict(self):
        """A JSON-serializable dict (``None`` for the means of empty bins)."""

        def values(array):
            return [None if np.isnan(v) else float(v) for v in array]

        return {"edges": [float(e) for e in self.edges], "confidence": values(self.confidence),
                "accuracy": values(self.accuracy), "count": [int(c) for c in self.count]}


def _confidences(probabilities, labels):
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(
            "`probabilities` must be (examples, classes >= 2). "
            f"Received: probabilities of shape {probabilities.shape}")
    if labels.ndim == 2:  # one-hot
        labels = labels.argmax(axis=-1)
    labels = labels.reshape(-1)
    if len(labels) != len(probabilities):
        raise ValueError(
            "`labels` must hold one label per row of `probabilities`. Received: "
            f"{len(labels)} labels for {len(probabilities)} rows")
    predicted = probabilities.argmax(axis=-1)
    return probabilities.max(axis=-1), predicted == labels


def reliability_bins(probabilities, labels, *, num_bins=DEFAULT_NUM_BINS):
    """`ReliabilityBins` of a classifier's probabilities.

    Args:
        probabilities: ``(examples, classes)`` class probabilities.
        labels: the true classes, integers (or one-hot rows).
        num_bins: equal-width confidence bins on [0, 1].

    Returns:
        `ReliabilityBins` on the confidence (the largest probability) of
        each example.

    Example:

    >>> from tftransfer.evaluation.calibration import reliability_bins
    >>> bins = reliability_bins([[0.9, 0.1], [0.15, 0.85], [0.3, 0.7]], [0, 0, 1],
    ...                         num_bins=5)
    >>> bins.count.tolist(), round(bins.expected_calibration_error, 4)
    ([0, 0, 0, 1, 2], 0.35)
    """
    num_bins = check_num_bins(num_bins)
    confidence, correct = _confidences(probabilities, labels)
    return ReliabilityBins.from_confidences(confidence, correct, num_bins=num_bins)


def expected_calibration_error(probabilities, labels, *, num_bins=DEFAULT_NUM_BINS):
    """The expected calibration error (see the module's notes) of a
    classifier's probabilities.

    Args:
        probabilities: ``(examples, classes)`` class probabilities.
        labels: the true classes, integers (or one-hot rows).
        num_bins: equal-width confidence bins on [0, 1].

    Returns:
        The ECE, a float in [0, 1]; 0 for a calibrated classifier.

    Example:

    >>> from tftransfer.evaluation.calibration import expected_calibration_error
    >>> probabilities = [[0.95, 0.05], [0.85, 0.15], [0.25, 0.75], [0.65, 0.35]]
    >>> round(expected_calibration_error(probabilities, [0, 1, 1, 1], num_bins=10), 4)
    0.45
    """
    return reliability_bins(probabilities, labels, num_bins=num_bins).expected_calibration_error
