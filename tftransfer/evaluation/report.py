"""Classification reports: per-class precision, recall, F1 and the confusion matrix.

Also the reading of a model's scores over labelled data, one pass batch by
batch (`read_scores`), that `classification_report` and `tftransfer.evaluate`
share.
"""

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

    @classmethod
    def from_labels(cls, true, predicted, *, class_names):
        """The report of integer labels `true` against `predicted`.

        Example:

        >>> report = ClassificationReport.from_labels([0, 1, 1, 1], [0, 0, 1, 1],
        ...                                           class_names=["cat", "dog"])
        >>> report.confusion_matrix.tolist(), report.recall.tolist()
        ([[1, 0], [1, 2]], [1.0, 0.6666666666666666])
        """
        num_classes = len(class_names)
        true = np.asarray(true, np.int64).reshape(-1)
        predicted = np.asarray(predicted, np.int64).reshape(-1)
        if len(true) != len(predicted):
            raise ValueError(
                "`true` and `predicted` must hold one label per example. Received: "
                f"{len(true)} true and {len(predicted)} predicted labels")
        for name, labels in (("true", true), ("predicted", predicted)):
            if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
                raise ValueError(
                    f"`{name}` labels must lie in [0, {num_classes}) for {num_classes} "
                    f"classes. Received: {name} labels from {labels.min()} to {labels.max()}")
        matrix = np.bincount(true * num_classes + predicted,
                             minlength=num_classes * num_classes).reshape(num_classes,
                                                                          num_classes)
        correct = np.diag(matrix).astype(np.float64)
        predicted_per_class, support = matrix.sum(axis=0), matrix.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted_per_class > 0, correct / predicted_per_class, 0.0)
            recall = np.where(support > 0, correct / support, 0.0)
            f1 = np.where(precision + recall > 0,
                          2 * precision * recall / (precision + recall), 0.0)
        return cls(class_names=list(class_names), precision=precision, recall=recall, f1=f1,
                   support=support, confusion_matrix=matrix)

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


def labelled_batches(data, *, batch_size=256):
    """Yields the ``(inputs, labels)`` batches of `data`.

    Args:
        data: a `tf.data.Dataset` of ``(inputs, labels)`` or ``(inputs,
            labels, weights)`` batches (weights dropped), or a tuple ``(x,
            y)`` of arrays, cut into batches of `batch_size`.
        batch_size: for a tuple.

    Example:

    >>> from tftransfer.evaluation.report import labelled_batches
    >>> [y.tolist() for _, y in labelled_batches((np.zeros((5, 2)), np.arange(5)),
    ...                                          batch_size=2)]
    [[0, 1], [2, 3], [4]]
    """
    if isinstance(data, tf.data.Dataset):
        for batch in data:
            yield batch[0], batch[1]
        return
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        for start in range(0, len(y), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        return
    raise TypeError(
        "`data` must be a tf.data.Dataset of (inputs, labels) batches or a tuple "
        f"(x, y). Received: data of type {type(data).__name__}"
    )


def read_scores(model, data, *, batch_size=256, max_misclassified=0):
    """Reads `data` once through `model`: its scores, the labels, and the
    inputs of the first misclassified examples (argmax of the scores).

    Args:
        model: a model with one output, a score per class.
        data: as for `labelled_batches`; integer or one-hot labels.
        batch_size: for a tuple ``(x, y)``.
        max_misclassified: how many misclassified inputs to keep.

    Returns:
        ``(scores, labels, misclassified)``: float64 ``(examples, classes)``
        scores, int64 labels, and ``[(index, input)]`` of the first
        misclassified examples in reading order (images as arrays, strings
        as `str`).

    Example:

    >>> import keras
    >>> from tftransfer.evaluation.report import read_scores
    >>> inputs = keras.Input((2,))
    >>> model = keras.Model(inputs, keras.layers.Dense(
    ...     2, use_bias=False, kernel_initializer="identity")(inputs))
    >>> scores, labels, wrong = read_scores(model, (np.eye(2), [1, 1]), max_misclassified=5)
    >>> scores.tolist(), labels.tolist(), wrong
    ([[1.0, 0.0], [0.0, 1.0]], [1, 1], [(0, array([1., 0.]))])
    """
    scores, labels, kept, seen = [], [], [], 0
    for x, y in labelled_batches(data, batch_size=batch_size):
        outputs = model.predict_on_batch(x)
        if isinstance(outputs, (dict, list, tuple)):
            raise TypeError(
                "`model` must have one output, a score per class. "
                f"Received: outputs of type {type(outputs).__name__}")
        outputs = np.asarray(outputs, np.float64)
        if outputs.ndim != 2 or outputs.shape[1] < 2:
            raise ValueError(
                "`model` must output one score per class, (batch, classes >= 2). "
                f"Received: outputs of shape {outputs.shape}")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot
            y = y.argmax(axis=-1)
        y = y.reshape(-1)
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise ValueError("The labels of `data` must be class indices or one-hot rows. "
                             f"Received: labels such as {float(y[y != np.round(y)][0])!r}")
        y = y.astype(np.int64)
        wrong = np.flatnonzero(outputs.argmax(axis=-1) != y)[:max_misclassified - len(kept)]
        if len(wrong):
            arrays = tf.nest.map_structure(np.asarray, x)
            kept += [(seen + int(i), tf.nest.map_structure(lambda a, i=i: _one(a, i), arrays))
                     for i in wrong]
        scores.append(outputs)
        labels.append(y)
        seen += len(y)
    if not seen:
        raise ValueError("`data` holds no examples to evaluate. Received: an empty dataset")
    return np.concatenate(scores), np.concatenate(labels), kept


def _one(batch, i):
    value = batch[i]
    if isinstance(value, bytes):  # also np.bytes_ (TF's strings)
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):  # also np.str_
        return str(value)
    return np.array(value)


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
    scores, true, _ = read_scores(model, data)
    num_classes = scores.shape[1]
    if class_names is None:
        class_names = list(getattr(model, "class_names", None) or map(str, range(num_classes)))
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names for a model with {num_classes} "
            f"outputs. Received: class_names={class_names!r}"
        )
    return ClassificationReport.from_labels(true, scores.argmax(axis=-1),
                                            class_names=class_names)
