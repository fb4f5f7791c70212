"""`EvaluationReport`: what `tftransfer.evaluate` finds, and how it is built
from a single-label task's scores (`report_from_scores`).

`tftransfer.evaluate` reads a classifier's scores over the data and hands them
here; a multi-task model's evaluation (`tftransfer.evaluation.multitask_report`)
builds one report per classification task from the same pass over the data.
"""

import dataclasses

import numpy as np

from tftransfer.evaluation.calibration import ReliabilityBins
from tftransfer.evaluation.plots import figure_to_png
from tftransfer.evaluation.plots import is_image
from tftransfer.evaluation.plots import plot_confusion_matrix
from tftransfer.evaluation.plots import plot_learning_curves
from tftransfer.evaluation.plots import plot_misclassified
from tftransfer.evaluation.plots import plot_reliability
from tftransfer.evaluation.render import save_report
from tftransfer.evaluation.render import summary_text
from tftransfer.evaluation.render import to_html
from tftransfer.evaluation.render import to_markdown
from tftransfer.evaluation.report import ClassificationReport


@dataclasses.dataclass
class MisclassifiedExample:
    """One misclassified example.

    Attributes:
        index: its position in the evaluated data (0-based, in reading order).
        true_class, predicted_class: class names.
        confidence: the probability of the predicted class.
        file: its image file, for data from `image_dataset_from_folder`;
            else `None`.
        input: its input as the model received it (an image array, a
            string); not part of `to_dict` (except for strings).
    """

    index: int
    true_class: str
    predicted_class: str
    confidence: float
    file: str = None
    input: object = dataclasses.field(default=None, repr=False)

    def to_dict(self):
        record = {"index": self.index, "file": self.file, "true_class": self.true_class,
                  "predicted_class": self.predicted_class, "confidence": self.confidence}
        if isinstance(self.input, str):
            record["text"] = self.input
        return record


@dataclasses.dataclass
class EvaluationReport:
    """What `evaluate` found.

    Attributes:
        accuracy: the fraction of examples whose top class is right.
        top_k_accuracy: ``{k: fraction whose true class is among the k
            highest scores}`` for k = 1 .. min(top_k, classes); ties are
            broken towards the lower class index, as the argmax does, so
            ``top_k_accuracy[1] == accuracy``.
        classification: the `ClassificationReport` (per-class precision,
            recall, F1, support, and the confusion matrix).
        expected_calibration_error: the ECE of `reliability`.
        reliability: `ReliabilityBins` of the examples' confidences.
        misclassified: a `MisclassifiedExample` for each of the first
            `max_misclassified` misclassified examples, in reading order.
        history: the ``history`` dict of the `History` given to `evaluate`,
            or `None`.
        split: the split of a `DataSplits` evaluated (``"test"`` or
            ``"validation"``), else `None`.
    """

    accuracy: float
    top_k_accuracy: dict
    classification: ClassificationReport
    expected_calibration_error: float
    reliability: ReliabilityBins
    misclassified: list
    history: dict = None
    split: str = None

    class_names = property(lambda self: self.classification.class_names)
    confusion_matrix = property(lambda self: self.classification.confusion_matrix)
    num_examples = property(lambda self: int(self.classification.confusion_matrix.sum()))

    @property
    def num_misclassified(self):
        """All misclassified examples (`misclassified` lists the first ones)."""
        return self.num_examples - int(np.trace(self.classification.confusion_matrix))

    def to_dict(self):
        """A JSON-serializable dict (lists and numbers, no arrays)."""
        return {
            "split": self.split,
            "num_examples": self.num_examples,
            "accuracy": self.accuracy,
            "top_k_accuracy": {str(k): v for k, v in self.top_k_accuracy.items()},
            "expected_calibration_error": self.expected_calibration_error,
            "classification": self.classification.to_dict(),
            "reliability": self.reliability.to_dict(),
            "num_misclassified": self.num_misclassified,
            "misclassified": [m.to_dict() for m in self.misclassified],
            "history": None if self.history is None else {
                k: [None if np.isnan(v) else v for v in values]
                for k, values in self.history.items()},
        }

    def figures(self):
        """``{name: matplotlib Figure}``: ``confusion_matrix``,
        ``reliability``, ``misclassified`` (when the misclassified inputs
        are images) and ``learning_curves`` (when there is a history)."""
        result = {"confusion_matrix": plot_confusion_matrix(self.classification),
                  "reliability": plot_reliability(self.reliability)}
        if any(is_image(m.input) for m in self.misclassified):
            result["misclassified"] = plot_misclassified(self.misclassified)
        if self.history is not None:
            result["learning_curves"] = plot_learning_curves(self.history)
        return result

    def to_markdown(self, *, images=None):
        """The report as Markdown; `images` maps figure names (see
        `figures`) to image paths to link (as `save` does)."""
        return to_markdown(self.to_dict(), images=images)

    def to_html(self):
        """One self-contained HTML page: the summary, the per-class table,
        the misclassified examples, and the figures inlined as PNGs."""
        return to_html(self.to_dict(), images=self._pngs())

    def save(self, directory):
        """Writes ``report.json``, ``report.md``, ``report.html`` and a PNG
        per figure (see `figures`) into `directory` (created if needed),
        each atomically (a temporary file, then a rename).

        Returns:
            ``{file name: path}`` of the files written.
        """
        return save_report(directory, self.to_dict(), images=self._pngs())

    def _pngs(self):
        return {name: figure_to_png(figure) for name, figure in self.figures().items()}

    def __str__(self):
        return summary_text(self.to_dict(), str(self.classification))


def report_from_scores(scores, true, probabilities, *, class_names, top_k, num_bins,
                       kept=(), files=None, history=None, split=None):
    """The `EvaluationReport` of one single-label task, from arrays.

    Args:
        scores: ``(examples, classes)`` scores (logits or probabilities);
            the prediction is their argmax.
        true: ``(examples,)`` integer labels in ``[0, classes)``.
        probabilities: ``(examples, classes)`` probabilities of `scores`.
        class_names, top_k, num_bins: as for `tftransfer.evaluate`.
        kept: ``[(index, input)]`` of the misclassified examples to list.
        files: a file per example, or None.
        history, split: stored in the report as they are.

    Example:

    >>> scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    >>> report_from_scores(scores, np.array([0, 1, 1]), scores, class_names=["a", "b"],
    ...                    top_k=2, num_bins=5).top_k_accuracy
    {1: 0.6666666666666666, 2: 1.0}
    """
    num_classes = scores.shape[1]
    predicted = scores.argmax(axis=-1)
    confidence = np.clip(probabilities[np.arange(len(true)), predicted], 0.0, 1.0)
    order = np.argsort(-scores, axis=-1, kind="stable")  # ties: lower index first, as argmax
    rank = np.argmax(order == true[:, None], axis=-1)
    reliability = ReliabilityBins.from_confidences(confidence, predicted == true,
                                                   num_bins=num_bins)
    misclassified = [
        MisclassifiedExample(index=i, true_class=class_names[true[i]],
                             predicted_class=class_names[predicted[i]],
                             confidence=float(confidence[i]),
                             file=None if files is None else files[i], input=value)
        for i, value in kept]
    return EvaluationReport(
        accuracy=float(np.mean(predicted == true)),
        top_k_accuracy={k: float(np.mean(rank < k)) for k in range(1, min(top_k, num_classes)
                                                                     + 1)},
        classification=ClassificationReport.from_labels(true, predicted,
                                                        class_names=class_names),
        expected_calibration_error=reliability.expected_calibration_error,
        reliability=reliability, misclassified=misclassified, history=history, split=split)

