"""Classification reports: per-class precision, recall, F1 and the confusion matrix."""

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class ClassificationReport:
    """Per-class precision, recall, F1 and support, and the confusion matrix.

    ``confusion_matrix[i, j]`` counts examples of true class ``i`` predicted
    as ``j``. A class never predicted has precision 0; a class without
    examples has recall 0.
    """

    class_names: list
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion_matrix: np.ndarray

    @property
    def accuracy(self):
        total = self.confusion_matrix.sum()
        return float(np.trace(self.confusion_matrix) / total) if total else 0.0

    @property
    def macro_f1(self):
        return float(np.mean(self.f1))

    def to_dict(self):
        """A JSON-serializable dict."""
        return {
            "classes": {
                name: {"precision": float(p), "recall": float(r), "f1": float(f),
                       "support": int(s)}
                for name, p, r, f, s in zip(self.class_names, self.precision, self.recall,
                                            self.f1, self.support)
            },
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "confusion_matrix": self.confusion_matrix.tolist(),
        }

    def __str__(self):
        width = max(12, *(len(n) for n in self.class_names))
        lines = [f"{'':>{width}}  precision  recall     f1  support"]
        for name, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1,
                                    self.support):
            lines.append(f"{name:>{width}}  {p:9.3f}  {r:6.3f}  {f:5.3f}  {s:7d}")
        lines.append(f"{'accuracy':>{width}}  {'':9}  {'':6}  {self.accuracy:5.3f}  "
                     f"{int(self.support.sum()):7d}")
        lines.append(f"{'macro avg':>{width}}  {np.mean(self.precision):9.3f}  "
                     f"{np.mean(self.recall):6.3f}  {self.macro_f1:5.3f}  "
                     f"{int(self.support.sum()):7d}")
        return "\n".join(lines)


def _batches(data):
    if isinstance(data, tf.data.Dataset):
        yield from data
        return
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        for start in range(0, len(y), 256):
            yield x[start:start + 256], y[start:start + 256]
        return
    raise TypeError(
        "`data` must be a tf.data.Dataset of (inputs, labels) batches or a tuple "
        f"(x, y). Received: data of type {type(data).__name__}"
    )


def classification_report(model, data, *, class_names=None):
    """Evaluates a single-label classifier class by class.

    The data are read once, predictions and labels batch by batch, so a
    shuffled dataset is fine.

    Args:
        model: a classifier returning one score (logit or probability) per
            class.
        data: a `tf.data.Dataset` of ``(inputs, labels)`` (or
            ``(inputs, labels, weights)``, weights ignored) batches, or a
            tuple ``(x, y)``; integer or one-hot labels.
        class_names: default: ``model.class_names``, else ``"0"``, ``"1"``...

    Returns:
        A `ClassificationReport`; ``print(report)`` shows a table.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((2,))  # a model whose scores are its inputs
    >>> model = keras.Model(inputs, keras.layers.Dense(
    ...     2, use_bias=False, kernel_initializer="identity")(inputs))
    >>> scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    >>> report = classification_report(model, (scores, [0, 1, 1, 1]),
    ...                                class_names=["cat", "dog"])
    >>> report.confusion_matrix.tolist()
    [[1, 0], [1, 2]]
    >>> print(report)
                  precision  recall     f1  support
             cat      0.500   1.000  0.667        1
             dog      1.000   0.667  0.800        3
        accuracy                     0.750        4
       macro avg      0.750   0.833  0.733        4
    """
    if getattr(model, "multi_label", False):
        raise TypeError(
            "`classification_report` is for single-label classifiers. "
            f"Received: model={model.name!r} with multi_label=True"
        )
    true, predicted = [], []
    for batch in _batches(data):
        x, y = batch[0], batch[1]
        scores = np.asarray(model.predict_on_batch(x))
        if scores.ndim != 2 or scores.shape[1] < 2:
            raise ValueError(
                "`model` must output one score per class, (batch, classes >= 2). "
                f"Received: outputs of shape {scores.shape}"
            )
        y = np.asarray(y)
        true.append(y.argmax(axis=-1) if y.ndim == 2 else y.reshape(-1))
        predicted.append(scores.argmax(axis=-1))
    num_classes = scores.shape[1]
    if class_names is None:
        class_names = list(getattr(model, "class_names", None) or map(str, range(num_classes)))
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names for a model with {num_classes} "
            f"outputs. Received: class_names={class_names!r}"
        )
    true = np.concatenate(true).astype(np.int64)
    predicted = np.concatenate(predicted).astype(np.int64)
    matrix = np.bincount(true * num_classes + predicted,
                         minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    correct = np.diag(matrix).astype(np.float64)
    predicted_per_class, support = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_per_class > 0, correct / predicted_per_class, 0.0)
        recall = np.where(support > 0, correct / support, 0.0)
        f1 = np.where(precision + recall > 0,
                      2 * precision * recall / (precision + recall), 0.0)
    return ClassificationReport(
        class_names=list(class_names), precision=precision, recall=recall, f1=f1,
        support=support, confusion_matrix=matrix,
    )
