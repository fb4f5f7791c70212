"""`evaluate_tasks`: a multi-task model's evaluation, one report per task.

`tftransfer.evaluate` hands a `tftransfer.MultiTaskModel` here. The data are
read once through the model (the backbone runs once per example for all the
tasks); each task's outputs and labels are kept, and every task is scored on
its labelled examples only: a label of -1 (NaN for a regression target; per
entry of a multi-label row) is left out, as in training
(`tftransfer.classifiers.masked`). Per task:

- classification and binary: the `EvaluationReport` that `tftransfer.evaluate`
  gives a classifier (accuracy, top-k accuracy, per-class table, confusion
  matrix, calibration, the first misclassified examples with their index in
  the data);
- multi-label: a `MultiLabelReport` (per label: precision, recall, F1 at the
  0.5 threshold, over the labelled entries);
- regression: a `RegressionReport` (MAE, RMSE and R² per output value).
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from tftransfer.classifiers.multitask import check_targets
from tftransfer.evaluation.calibration import check_num_bins
from tftransfer.evaluation.evaluation_report import report_from_scores
from tftransfer.evaluation.plots import history_dict
from tftransfer.evaluation.report import ClassificationReport
from tftransfer.files import write_atomically


def _nan_to_none(value):
    return None if value is None or np.isnan(value) else float(value)


@dataclasses.dataclass
class RegressionReport:
    """A regression task's errors over its labelled targets.

    Attributes:
        names: one name per output value.
        mae, rmse, r2: one per output value; R² is 1 - (squared error sum) /
            (sum of squares about the targets' mean), NaN when the targets
            do not vary.
        count: labelled targets per output value.
    """

    names: list
    mae: np.ndarray
    rmse: np.ndarray
    r2: np.ndarray
    count: np.ndarray

    @classmethod
    def from_values(cls, true, predicted, *, names):
        """The report of `predicted` against `true` (``(examples, outputs)``;
        NaN targets skipped).

        Example:

        >>> report = RegressionReport.from_values(np.array([[1.0], [3.0], [np.nan]]),
        ...                                       np.array([[2.0], [3.0], [9.0]]),
        ...                                       names=["age"])
        >>> report.mae.tolist(), report.r2.tolist(), report.count.tolist()
        ([0.5], [0.5], [2])
        """
        true = np.asarray(true, np.float64).reshape(len(predicted), -1)
        predicted = np.asarray(predicted, np.float64).reshape(true.shape)
        present = ~np.isnan(true)
        count = present.sum(axis=0)
        error = np.where(present, predicted - np.nan_to_num(true), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mae = np.abs(error).sum(axis=0) / count
            mse = (error ** 2).sum(axis=0) / count
            mean = np.where(present, true, 0.0).sum(axis=0) / count
            spread = np.where(present, (np.nan_to_num(true) - mean) ** 2, 0.0).sum(axis=0)
            r2 = np.where(spread > 0, 1.0 - (error ** 2).sum(axis=0) / spread, np.nan)
        return cls(names=list(names), mae=mae, rmse=np.sqrt(mse), r2=r2, count=count)

    @property
    def num_examples(self):
        return int(self.count.max()) if self.count.size else 0

    def to_dict(self):
        return {"outputs": {name: {"mae": _nan_to_none(m), "rmse": _nan_to_none(r),
                                   "r2": _nan_to_none(q), "count": int(c)}
                            for name, m, r, q, c in zip(self.names, self.mae, self.rmse,
                                                        self.r2, self.count)}}

    def __str__(self):
        return "\n".join(f"  {name}: MAE {m:.4g}  RMSE {r:.4g}  R² {q:.3f}  ({c} targets)"
                         for name, m, r, q, c in zip(self.names, self.mae, self.rmse, self.r2,
                                                     self.count))


@dataclasses.dataclass
class MultiLabelReport:
    """A multi-label task's scores, thresholded at 0.5, over its labelled
    entries.

    Attributes:
        accuracy: the fraction of labelled entries on the right side of 0.5.
        labels: ``{label: ClassificationReport}`` of the label's entries
            (classes ``"no"`` and ``"yes"``: its ``precision[1]``,
            ``recall[1]`` and ``f1[1]`` are the label's).
    """

    accuracy: float
    labels: dict

    @classmethod
    def from_scores(cls, true, scores, *, names):
        """The report of `scores` (``(examples, labels)`` in [0, 1]) against
        multi-hot `true` (-1 skipped)."""
        true = np.asarray(true).reshape(scores.shape)
        present = true >= 0
        predicted = (scores >= 0.5).astype(np.int64)
        per_label = {name: ClassificationReport.from_labels(
            true[present[:, j], j], predicted[present[:, j], j], class_names=["no", "yes"])
            for j, name in enumerate(names)}
        hits = (predicted == true) & present
        return cls(accuracy=float(hits.sum() / max(1, present.sum())), labels=per_label)

    @property
    def num_examples(self):
        return max((int(r.support.sum()) for r in self.labels.values()), default=0)

    def to_dict(self):
        return {"accuracy": self.accuracy, "labels": {
            name: {"precision": float(r.precision[1]), "recall": float(r.recall[1]),
                   "f1": float(r.f1[1]), "positives": int(r.support[1]),
                   "count": int(r.support.sum())} for name, r in self.labels.items()}}

    def __str__(self):
        rows = [f"  {name}: precision {r['precision']:.3f}  recall {r['recall']:.3f}  "
                f"F1 {r['f1']:.3f}  ({r['positives']} of {r['count']} positive)"
                for name, r in self.to_dict()["labels"].items()]
        return "\n".join([f"  accuracy {self.accuracy:.3f}"] + rows)


@dataclasses.dataclass
class MultiTaskReport:
    """What `tftransfer.evaluate` finds for a `MultiTaskModel`.

    Attributes:
        tasks: ``{task: report}`` in the model's task order: an
            `EvaluationReport` (classification, binary), a `MultiLabelReport`
            or a `RegressionReport`.
        kinds: ``{task: kind}`` of the heads.
        num_examples: the examples read.
        history: the ``history`` dict of the `History` given, or None.

    ``report["digit"]`` is ``report.tasks["digit"]``.
    """

    tasks: dict
    kinds: dict
    num_examples: int
    history: dict = None

    def __getitem__(self, task):
        return self.tasks[task]

    def to_dict(self):
        """A JSON-serializable dict: ``num_examples``, and per task its kind,
        its labelled examples and its report's `to_dict`."""
        return {"num_examples": self.num_examples, "tasks": {
            name: {"kind": self.kinds[name], "labelled": report.num_examples,
                   **report.to_dict()} for name, report in self.tasks.items()},
            "history": None if self.history is None else {
                k: [None if v is None or np.isnan(v) else v for v in values]
                for k, values in self.history.items()}}

    def __str__(self):
        lines = [f"Evaluation of {len(self.tasks)} tasks on {self.num_examples} examples"]
        for name, report in self.tasks.items():
            lines += ["", f"{name} ({self.kinds[name]}, {report.num_examples} labelled)",
                      str(report)]
        return "\n".join(lines)

    def to_markdown(self):
        """The report as Markdown: a section per task."""
        lines = ["# Evaluation report", "",
                 f"{len(self.tasks)} tasks, {self.num_examples} examples.", ""]
        for name, report in self.tasks.items():
            lines += [f"## {name} ({self.kinds[name]}, {report.num_examples} labelled)", ""]
            if hasattr(report, "to_markdown"):
                body = report.to_markdown().splitlines()[2:]  # its own title dropped
                lines += [("#" + line) if line.startswith("#") else line for line in body]
            else:
                lines += ["```text", str(report), "```"]
            lines.append("")
        return "\n".join(lines)

    def save(self, directory):
        """Writes ``report.json`` and ``report.md`` into `directory`, and the
        full report of each classification or binary task (figures
        included) into ``directory/<task>/`` (see `EvaluationReport.save`).

        Returns:
            ``{file name: path}`` of the files written (a task's under
            ``<task>/<file name>``).
        """
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"`directory` must be a path. Received: directory={directory!r}")
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        paths = {}
        for name, report in self.tasks.items():
            if hasattr(report, "save"):
                for file, path in report.save(os.path.join(directory, name)).items():
                    paths[f"{name}/{file}"] = path
        for file, text in (("report.json", json.dumps(self.to_dict(), indent=1,
                                                      allow_nan=False)),
                           ("report.md", self.to_markdown())):
            paths[file] = os.path.join(directory, file)
            write_atomically(paths[file], text.encode("utf-8"))
        return paths


def _check_count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        what = "a positive integer" if low else "a non-negative integer"
        raise ValueError(f"`{name}` must be {what}. Received: {name}={value!r}")


def _batches(model, data, batch_size):
    """``(inputs, labels)`` batches of a tuple ``(x, {task: y})`` or a dataset."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise TypeError("`data` must be a tf.data.Dataset of (inputs, {task: labels}). "
                            f"Received: a dataset of {spec!r}")
        check_targets(model, "evaluation", spec[1])  # one entry per task
        rank = len(model.inputs[0].shape)
        if isinstance(spec[0], tf.TensorSpec) and spec[0].shape.rank == rank - 1:
            data = data.batch(batch_size)
        for batch in data:
            yield batch[0], batch[1]
        return
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        check_targets(model, "evaluation", y)  # one entry per task, labels in range
        named = model.named_outputs(y)
        sizes = {task: len(labels) for task, labels in named.items()}
        if any(size != len(x) for size in sizes.values()):
            raise ValueError(
                "`data` must hold as many labels per task as inputs. Received: "
                f"{len(x)} inputs and labels {sizes}")
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], {
                task: np.asarray(labels)[start:start + batch_size]
                for task, labels in named.items()}
        return
    raise TypeError(
        "`data` of a multi-task model must be a tuple (x, {task: labels}) or a "
        f"tf.data.Dataset of (inputs, {{task: labels}}). Received: data of type "
        f"{type(data).__name__}")


def _read(model, data, *, batch_size, max_misclassified):
    """``(outputs, labels, kept, seen)``: per task the concatenated
    predictions and labels, and the inputs of its first misclassified
    labelled examples (classification and binary tasks)."""
    outputs = {task: [] for task in model.tasks}
    labels = {task: [] for task in model.tasks}
    kept = {task: [] for task, head in model.tasks.items()
            if head.kind in ("classification", "binary")}
    seen = 0
    for x, y in _batches(model, data, batch_size):
        predicted = model.predictions(model.predict_on_batch(x))
        named = model.named_outputs(y)
        for task in model.tasks:
            values = np.asarray(predicted[task], np.float64)
            truth = np.asarray(named[task])
            outputs[task].append(values)
            labels[task].append(truth)
            if task in kept and len(kept[task]) < max_misclassified:
                truth = truth.reshape(-1)
                wrong = np.flatnonzero((truth >= 0) & (values.argmax(-1) != truth))
                arrays = tf.nest.map_structure(np.asarray, x)
                kept[task] += [(seen + int(i), tf.nest.map_structure(lambda a, i=i: a[i],
                                                                     arrays))
                               for i in wrong[:max_misclassified - len(kept[task])]]
        seen += len(values)
    if not seen:
        raise ValueError("`data` holds no examples to evaluate. Received: an empty dataset")
    return ({t: np.concatenate(v) for t, v in outputs.items()},
            {t: np.concatenate(v) for t, v in labels.items()}, kept, seen)


def evaluate_tasks(model, data, *, class_names=None, top_k=5, history=None, num_bins=10,
                   max_misclassified=25, batch_size=32):
    """Evaluates a `MultiTaskModel`: one report per task, missing labels
    skipped. Called by `tftransfer.evaluate` (its arguments), where the
    heads name the classes (so `class_names` must be None).

    Returns:
        A `MultiTaskReport`.

    Example:

    >>> from tftransfer.classifiers import heads
    >>> model = build_multitask("mobilenet_v3_small", tasks={
    ...     "digit": heads.classification(3), "size": heads.regression()},
    ...     input_shape=(32, 32, 3), weights=None)
    >>> x = np.zeros((4, 32, 32, 3))
    >>> y = {"digit": np.array([0, 1, -1, 2]), "size": np.array([1.0, np.nan, 2.0, 3.0])}
    >>> report = evaluate_tasks(model, (x, y))
    >>> report["digit"].num_examples, report["size"].count.tolist()
    (3, [3])
    """
    if class_names is not None:
        raise ValueError(
            "A multi-task model's heads name their classes; `class_names` does not apply. "
            f"Received: class_names={class_names!r}")
    _check_count("top_k", top_k, 1)
    num_bins = check_num_bins(num_bins)
    _check_count("max_misclassified", max_misclassified, 0)
    _check_count("batch_size", batch_size, 1)
    history = None if history is None else history_dict(history)
    outputs, labels, kept, seen = _read(model, data, batch_size=batch_size,
                                        max_misclassified=max_misclassified)
    if not isinstance(data, (tuple, list)):
        check_targets(model, "evaluation", labels)
    reports = {}
    for task, head in model.tasks.items():
        values, truth = outputs[task], labels[task]
        if head.kind == "regression":
            reports[task] = RegressionReport.from_values(truth, values, names=head.labels)
        elif head.kind == "multi_label":
            reports[task] = MultiLabelReport.from_scores(truth, values, names=head.labels)
        else:
            truth = truth.reshape(-1).astype(np.int64)
            index = np.flatnonzero(truth >= 0)
            if not index.size:
                raise ValueError(
                    f"Task {task!r} has no labelled example in `data` (all -1): nothing to "
                    "score it on. Received: labels of -1 only")
            position = {int(i): n for n, i in enumerate(index)}  # among the labelled
            report = report_from_scores(values[index], truth[index], values[index],
                                        class_names=list(head.labels), top_k=top_k,
                                        num_bins=num_bins,
                                        kept=[(position[i], value) for i, value in kept[task]])
            for example in report.misclassified:  # its index in the data
                example.index = int(index[example.index])
            reports[task] = report
    return MultiTaskReport(tasks=reports, kinds={t: h.kind for t, h in model.tasks.items()},
                           num_examples=seen, history=history)

