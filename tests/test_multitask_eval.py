"""Multi-task models: `tft.evaluate` per task, balanced class weights per head,
`top_k` in the export."""

import json

import numpy as np
import pytest
import tensorflow as tf
from helpers import labelled
from helpers import run_without_tftransfer
from helpers import tiny_backbone
from sklearn import metrics

import tftransfer as tft
from tftransfer.data.class_weights import compute_class_weight
from tftransfer.evaluation.multitask_report import MultiLabelReport
from tftransfer.evaluation.multitask_report import MultiTaskReport
from tftransfer.evaluation.multitask_report import RegressionReport


def make_model(**heads):
    tasks = {"kind": tft.heads.classification(class_names=["a", "b", "c"]),
             "even": tft.heads.binary(class_names=["odd", "even"]),
             "tags": tft.heads.multi_label(["x", "y"]),
             "size": tft.heads.regression()}
    tasks.update(heads)
    return tft.build_multitask(tiny_backbone(), tasks)


def targets(y):
    """Labels for the four tasks, some missing (-1, NaN)."""
    kind = y.astype("int32").copy()
    even = (y % 2 == 0).astype("int32")
    tags = np.stack([y == 0, y >= 1], axis=1).astype("int32")
    size = y.astype("float32") / 2.0 + np.linspace(0, 0.3, len(y), dtype="float32")
    kind[:4] = -1
    even[4:9] = -1
    tags[9:11, 0] = -1
    size[2:6] = np.nan
    return {"kind": kind, "even": even, "tags": tags, "size": size}


@pytest.fixture(scope="module")
def trained():
    model = make_model()
    x, y = labelled(24, 3)
    tft.fit_head(model, x, y=targets(y), epochs=2, verbose=0)
    return model, x, targets(y)


# -- tft.evaluate: one report per task --------------------------------------------

def test_evaluate_reports_each_task_on_its_labelled_examples(trained):
    model, x, y = trained
    report = tft.evaluate(model, (x, y), top_k=2, max_misclassified=50)
    assert isinstance(report, MultiTaskReport) and list(report.tasks) == list(model.tasks)
    assert report.num_examples == 24
    predicted = model.predict_tasks(x, verbose=0)

    for task in ("kind", "even"):
        labelled_ = y[task] >= 0
        truth, scores = y[task][labelled_], predicted[task][labelled_]
        task_report = report[task]
        assert task_report.num_examples == labelled_.sum()
        assert task_report.accuracy == pytest.approx(np.mean(scores.argmax(-1) == truth))
        np.testing.assert_array_equal(task_report.confusion_matrix, metrics.confusion_matrix(
            truth, scores.argmax(-1), labels=range(len(model.tasks[task].labels))))
        assert task_report.class_names == list(model.tasks[task].labels)
        # Misclassified examples carry their index in the data, and their input.
        wrong = np.flatnonzero(labelled_ & (predicted[task].argmax(-1) != y[task]))
        assert [m.index for m in task_report.misclassified] == wrong.tolist()
        for example in task_report.misclassified:
            np.testing.assert_array_equal(example.input, x[example.index])
            assert example.true_class == model.tasks[task].labels[y[task][example.index]]
    assert sorted(report["kind"].top_k_accuracy) == [1, 2]

    present = ~np.isnan(y["size"])
    truth, values = y["size"][present], predicted["size"][present, 0]
    size = report["size"]
    assert isinstance(size, RegressionReport) and size.count.tolist() == [present.sum()]
    assert size.mae[0] == pytest.approx(metrics.mean_absolute_error(truth, values), 1e-5)
    assert size.rmse[0] == pytest.approx(np.sqrt(metrics.mean_squared_error(truth, values)),
                                         1e-5)
    assert size.r2[0] == pytest.approx(metrics.r2_score(truth, values), 1e-5)

    tags = report["tags"]
    assert isinstance(tags, MultiLabelReport)
    for j, name in enumerate(["x", "y"]):
        entries = y["tags"][:, j] >= 0
        guess = (predicted["tags"][entries, j] >= 0.5).astype(int)
        row = tags.to_dict()["labels"][name]
        assert row["count"] == entries.sum()
        assert row["recall"] == pytest.approx(
            metrics.recall_score(y["tags"][entries, j], guess, zero_division=0))
        assert row["precision"] == pytest.approx(
            metrics.precision_score(y["tags"][entries, j], guess, zero_division=0))


def test_a_dataset_gives_the_same_report_as_arrays_and_it_saves(trained, tmp_path):
    model, x, y = trained
    arrays = tft.evaluate(model, (x, y), batch_size=5).to_dict()  # the same batches:
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)  # the same floats
    assert tft.evaluate(model, batched).to_dict() == arrays
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    assert tft.evaluate(model, unbatched, batch_size=5).to_dict() == arrays
    report = tft.evaluate(model, (x, y))
    assert json.loads(json.dumps(report.to_dict()))["tasks"]["size"]["kind"] == "regression"
    text = str(report)
    assert all(task in text for task in model.tasks) and "R²" in text
    paths = report.save(tmp_path / "report")
    assert {"report.json", "report.md", "kind/report.json", "even/report.html"} <= set(paths)
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == json.loads(
        json.dumps(report.to_dict()))
    assert "## size (regression" in (tmp_path / "report" / "report.md").read_text()


def test_a_regressor_is_evaluated_on_plain_targets():
    model = tft.build_regressor(tiny_backbone(), task="age")
    x, _ = labelled(10, 3)
    target = np.linspace(-1, 1, 10).astype("float32")
    target[0] = np.nan
    report = tft.evaluate(model, (x, target))
    values = model.predict(x, verbose=0)[1:, 0]
    assert list(report.tasks) == ["age"] and report["age"].count.tolist() == [9]
    assert report["age"].mae[0] == pytest.approx(np.abs(values - target[1:]).mean(), 1e-5)


def test_regression_report_of_constant_targets_has_no_r2():
    report = RegressionReport.from_values(np.ones((3, 1)), np.zeros((3, 1)), names=["v"])
    assert np.isnan(report.r2[0]) and report.to_dict()["outputs"]["v"]["r2"] is None


def test_bad_evaluation_data_is_refused(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="heads name their classes.*class_names=\\['a'\\]"):
        tft.evaluate(model, (x, y), class_names=["a"])
    partial = dict(y)
    del partial["tags"]
    with pytest.raises(ValueError, match=r"one entry per task.*missing \['tags'\]"):
        tft.evaluate(model, (x, partial))
    with pytest.raises(ValueError, match=r"missing \['tags'\]"):
        tft.evaluate(model, tf.data.Dataset.from_tensor_slices((x, partial)).batch(4))
    with pytest.raises(TypeError, match="tuple \\(x, \\{task: labels\\}\\).*of type str"):
        tft.evaluate(model, "images/")
    unlabelled = dict(y, even=np.full(24, -1, "int32"))
    with pytest.raises(ValueError, match="Task 'even' has no labelled example"):
        tft.evaluate(model, (x, unlabelled))
    with pytest.raises(ValueError, match="as many labels per task as inputs"):
        tft.evaluate(model, (x[:5], y))
    with pytest.raises(ValueError, match="`top_k` must be a positive integer. Received: top_k=0"):
        tft.evaluate(model, (x, y), top_k=0)


# -- class_weight="balanced" per head --------------------------------------------

def test_balanced_heads_weigh_classes_by_their_labelled_counts():
    model = make_model(kind=tft.heads.classification(class_names=["a", "b", "c"],
                                                     class_weight="balanced"),
                       even=tft.heads.binary(class_names=["odd", "even"],
                                             class_weight="balanced"))
    x, y = labelled(24, 3)
    y = y.copy()
    y[:6] = 0  # imbalanced: 10 a, 6 b, 8 c
    labels = targets(y)
    tft.fit_head(model, x, y=labels, epochs=1, verbose=0)
    expected = {task: tuple(compute_class_weight(labels[task][labels[task] >= 0],
                                                 num_classes=n).values())
                for task, n in (("kind", 3), ("even", 2))}
    assert model.resolved_class_weight == expected
    assert expected["kind"][0] < 1 < expected["kind"][1]
    assert model.loss["kind"].class_weight == pytest.approx(list(expected["kind"]))
    assert model.loss["tags"].class_weight is None
    assert model.tasks["kind"].class_weight == "balanced"  # the spec keeps what was asked
    again = tft.MultiTaskModel.from_config(json.loads(json.dumps(model.get_config())))
    assert again.tasks == model.tasks

    other = make_model(even=tft.heads.binary(class_weight="balanced"))
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)
    tft.fit_head(other, dataset, epochs=1, verbose=0)
    assert other.resolved_class_weight == {"even": expected["even"]}


def test_balanced_heads_are_refused_where_they_cannot_apply():
    with pytest.raises(ValueError, match="must be 'balanced', a dict.*class_weight='auto'"):
        tft.heads.binary(class_weight="auto")
    with pytest.raises(ValueError, match="applies to classification and binary heads"):
        tft.heads.HeadSpec("regression", ["v"], class_weight="balanced")
    model = make_model(even=tft.heads.binary(class_weight="balanced"))
    x, y = labelled(24, 3)
    labels = targets(y)
    labels["even"] = np.where(labels["even"] == 1, 1, -1).astype("int32")  # no class 0
    with pytest.raises(ValueError, match=r"Task 'even' has class_weight='balanced'.*\[0\]"):
        tft.fit_head(model, x, y=labels, epochs=1, verbose=0)


# -- top_k in the export ------------------------------------------------------------

SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["serving_pixels"](images=tf.constant(np.load(sys.argv[2])))
print(json.dumps({
    "dtypes": {k: v.dtype.name for k, v in out.items()},
    "values": {k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist()
               for k, v in out.items()},
    "modules": sorted(m for m in sys.modules if m.split(".")[0] == "tftransfer"),
}))
"""


def test_export_returns_the_top_k_classes_of_the_tasks_asked(trained, tmp_path):
    model, x, _ = trained
    path = tft.export_saved_model(model, tmp_path / "serving", top_k={"kind": 3, "even": 2})
    np.save(tmp_path / "x.npy", x[:6])
    served = run_without_tftransfer(SERVE, path, tmp_path / "x.npy")
    assert served["modules"] == []
    expected = model.predict_tasks(x[:6], verbose=0)
    values = served["values"]
    for task, k in (("kind", 3), ("even", 2)):
        names = model.tasks[task].labels
        order = np.argsort(-expected[task], axis=-1, kind="stable")[:, :k]
        assert served["dtypes"][f"{task}_top_k_class_ids"] == "int64"
        assert values[f"{task}_top_k_class_ids"] == order.tolist()
        assert values[f"{task}_top_k_class_names"] == [[names[i] for i in row] for row in order]
        np.testing.assert_allclose(values[f"{task}_top_k_probabilities"],
                                   np.take_along_axis(expected[task], order, -1), atol=1e-5)
    assert not any(key.startswith(("tags_top", "size_top")) for key in values)
    metadata = tft.read_metadata(path)
    assert metadata["tasks"]["kind"]["outputs"]["kind_top_k_class_ids"] == "int64 [batch, 3]"
    assert "kind_top_k_class_names" in metadata["signatures"]["serving_default"]["outputs"]

    # An integer applies to every classification task (not the binary one).
    path = tft.export_saved_model(model, tmp_path / "serving", top_k=2, warmup=False)
    outputs = tft.read_metadata(path)["signatures"]["serving_pixels"]["outputs"]
    assert "kind_top_k_class_ids" in outputs and "even_top_k_class_ids" not in outputs


def test_bad_top_k_of_a_multitask_export_is_refused(trained, tmp_path):
    model, _, _ = trained
    base = tmp_path / "serving"
    with pytest.raises(ValueError, match=r"`top_k` of task 'kind' must be an integer from 1 "
                                         r"to its number of classes \(3\)"):
        tft.export_saved_model(model, base, top_k=4)
    with pytest.raises(ValueError, match=r"names classification or binary tasks.*'size', a "
                                         r"regression task"):
        tft.export_saved_model(model, base, top_k={"size": 2})
    with pytest.raises(ValueError, match=r"names classification or binary tasks.*'nope'"):
        tft.export_saved_model(model, base, top_k={"nope": 2})
    with pytest.raises(ValueError, match="positive integer.*Received: top_k=0"):
        tft.export_saved_model(model, base, top_k=0)
    binary_only = tft.build_multitask(tiny_backbone(), {"even": tft.heads.binary()})
    with pytest.raises(ValueError, match="this model has none"):
        tft.export_saved_model(binary_only, base, top_k=2)
    assert not base.exists()  # refused before any work
