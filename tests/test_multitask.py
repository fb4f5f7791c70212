"""Multi-task models: heads, masked losses and metrics, the recipe, saving, export."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer as tft
from helpers import labelled
from helpers import run_without_tftransfer
from helpers import tiny_backbone
from helpers import weights_by_path
from tftransfer.classifiers.masked import MaskedLoss
from tftransfer.classifiers.masked import MaskedMetric

TASKS = {"kind": lambda: tft.heads.classification(class_names=["a", "b", "c"]),
         "even": lambda: tft.heads.binary(class_names=["odd", "even"]),
         "tags": lambda: tft.heads.multi_label(["x", "y"]),
         "size": lambda: tft.heads.regression()}


def make_model(dropout=0.2, **kwargs):
    tasks = {"kind": tft.heads.classification(class_names=["a", "b", "c"], dropout=dropout),
             "even": tft.heads.binary(class_names=["odd", "even"], dropout=dropout),
             "tags": tft.heads.multi_label(["x", "y"], dropout=dropout),
             "size": tft.heads.regression()}
    return tft.build_multitask(tiny_backbone(), tasks, **kwargs)


def targets(y, missing=True):
    """Labels for the four tasks from class labels, some missing."""
    kind = y.astype("int32").copy()
    even = (y % 2 == 0).astype("int32")
    tags = np.stack([y == 0, y >= 1], axis=1).astype("int32")
    size = y.astype("float32") / 2.0
    if missing:
        kind[:4] = -1
        even[4:9] = -1
        tags[9:11, 0] = -1
        size[2:6] = np.nan
    return {"kind": kind, "even": even, "tags": tags, "size": size}


# -- masked losses and metrics, against hand computations -------------------------

def _softmax_ce(logits, label):
    logits = np.asarray(logits, "float64")
    return float(np.log(np.exp(logits).sum()) - logits[label])


def _sigmoid_ce(logit, label):
    p = 1.0 / (1.0 + np.exp(-logit))
    return float(-(label * np.log(p) + (1 - label) * np.log(1 - p)))


def test_classification_loss_ignores_missing_labels_and_weighs_classes():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    labels = np.array([0, -1, 1, 2])
    expected = (_softmax_ce(logits[0], 0) + _softmax_ce(logits[2], 1)
                + _softmax_ce(logits[3], 2)) / 3
    assert float(MaskedLoss("classification")(labels, logits)) == pytest.approx(expected, 1e-5)
    weighted = MaskedLoss("classification", class_weight=[2.0, 1.0, 0.5])(labels, logits)
    expected = (2 * _softmax_ce(logits[0], 0) + _softmax_ce(logits[2], 1)
                + 0.5 * _softmax_ce(logits[3], 2)) / 3
    assert float(weighted) == pytest.approx(expected, 1e-5)


def test_binary_multi_label_and_regression_losses_ignore_missing_entries():
    logits = np.array([[1.0], [-2.0], [0.5]])
    loss = MaskedLoss("binary", class_weight=[1.0, 3.0])(np.array([[1], [-1], [0]]), logits)
    assert float(loss) == pytest.approx((3 * _sigmoid_ce(1.0, 1) + _sigmoid_ce(0.5, 0)) / 2,
                                        1e-5)
    logits = np.array([[1.0, -1.0], [2.0, 0.0]])
    labels = np.array([[1, -1], [0, 1]])
    expected = (_sigmoid_ce(1.0, 1) + _sigmoid_ce(2.0, 0) + _sigmoid_ce(0.0, 1)) / 3
    assert float(MaskedLoss("multi_label")(labels, logits)) == pytest.approx(expected, 1e-5)
    values = np.array([[1.0], [5.0], [2.0]])
    loss = MaskedLoss("regression")(np.array([[0.0], [np.nan], [4.0]]), values)
    assert float(loss) == pytest.approx((1.0 + 4.0) / 2)
    loss = MaskedLoss("regression", regression_loss="mae")(np.array([0.0, np.nan, 4.0]), values)
    assert float(loss) == pytest.approx((1.0 + 2.0) / 2)


@pytest.mark.parametrize("kind,labels,outputs", [
    ("classification", [-1, -1], np.zeros((2, 3))),
    ("binary", [[-1], [-1]], np.zeros((2, 1))),
    ("multi_label", [[-1, -1], [-1, -1]], np.zeros((2, 2))),
    ("regression", [[np.nan], [np.nan]], np.ones((2, 1))),
])
def test_a_batch_without_labels_gives_zero_loss_not_nan(kind, labels, outputs):
    assert float(MaskedLoss(kind)(np.array(labels, "float32"), outputs)) == 0.0
    metric = MaskedMetric(kind, "mae" if kind == "regression" else "accuracy")
    metric.update_state(np.array(labels, "float32"), outputs)
    assert float(metric.result()) == 0.0


def test_metrics_count_labelled_entries_only():
    metric = MaskedMetric("classification")
    metric.update_state(np.array([0, -1, 2]), np.array([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]]))
    metric.update_state(np.array([1]), np.array([[0.0, 1.0, 0]]))
    assert float(metric.result()) == pytest.approx(2 / 3)
    metric = MaskedMetric("multi_label")
    metric.update_state(np.array([[1, -1], [0, 1]]), np.array([[1.0, 1.0], [1.0, 1.0]]))
    assert float(metric.result()) == pytest.approx(2 / 3)
    metric = MaskedMetric("regression", "mse")
    metric.update_state(np.array([1.0, np.nan, 3.0]), np.array([[2.0], [9.0], [1.0]]))
    assert float(metric.result()) == pytest.approx((1 + 4) / 2)


def test_loss_and_metric_configs_round_trip():
    loss = MaskedLoss("binary", class_weight=[1.0, 2.0], label_smoothing=0.1)
    assert MaskedLoss.from_config(json.loads(json.dumps(loss.get_config()))).get_config() == (
        loss.get_config())
    metric = MaskedMetric("regression", "mse", name="size_mse")
    again = MaskedMetric.from_config(json.loads(json.dumps(metric.get_config())))
    assert again.get_config() == metric.get_config()


# -- the model ------------------------------------------------------------------

def test_build_multitask_has_one_output_per_task_and_a_frozen_backbone():
    model = make_model()
    assert list(model.tasks) == ["kind", "even", "tags", "size"]
    shapes = {k: tuple(v.shape) for k, v in model.output.items()}
    assert shapes == {"kind": (None, 3), "even": (None, 1), "tags": (None, 2),
                      "size": (None, 1)}
    assert model.backbone.trainable is False
    out = model.predict_tasks(labelled(4)[0], verbose=0)
    assert out["even"].shape == (4, 2) and np.allclose(out["even"].sum(-1), 1)
    assert np.allclose(out["kind"].sum(-1), 1)


def test_config_round_trips_through_json():
    model = make_model()
    config = json.loads(json.dumps(model.get_config()))
    again = tft.MultiTaskModel.from_config(config)
    assert json.loads(json.dumps(again.get_config())) == config
    assert again.tasks == model.tasks


def test_fit_head_trains_the_heads_on_cached_features_with_missing_labels():
    model = make_model()
    x, y = labelled(24, 3)
    before = weights_by_path(model.backbone)
    history = tft.fit_head(model, x, y=targets(y), validation_data=(x, targets(y)), epochs=2,
                           verbose=0)
    summary = model.training_summary[-1]
    assert summary["cache"]["boundary"] == "pooling:0"
    for key in ("loss", "kind_loss", "even_accuracy", "tags_accuracy", "size_mae",
                "val_size_loss", "val_kind_accuracy"):
        assert np.all(np.isfinite(history.history[key])), key
    after = weights_by_path(model.backbone)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # BN statistics too


def test_cached_and_uncached_training_agree():
    x, y = labelled(24, 3)
    results = []
    for cache in (True, False):
        model = make_model(dropout=0.0)
        tft.fit_head(model, x, y=targets(y), epochs=2, cache=cache, shuffle=False,
                     early_stopping=False, verbose=0)
        assert (model.training_summary[-1]["cache"] is not None) is cache
        results.append(weights_by_path(model))
    for key, value in results[0].items():
        np.testing.assert_allclose(value, results[1][key], atol=1e-5, err_msg=key)


def test_fit_two_phase_on_a_dataset_unfreezes_the_top_block():
    model = make_model()
    x, y = labelled(24, 3)
    data = tf.data.Dataset.from_tensor_slices((x, targets(y))).batch(8)
    before = weights_by_path(model.backbone)
    history = tft.fit_two_phase(model, data, validation_data=data, head_epochs=1,
                                fine_tune_epochs=1, unfreeze_blocks=1, verbose=0)
    assert history.history["phase"] == [1, 2]
    assert [s["cache"] is not None for s in model.training_summary] == [True, True]
    after = weights_by_path(model.backbone)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed and all(k.split("/")[-2].startswith("block3") for k in changed), changed
    assert not any("_bn/" in k for k in changed)  # BatchNormalization stays frozen


def test_a_resumed_run_restores_the_finished_phases(tmp_path):
    x, y = labelled(24, 3)
    first = make_model()
    tft.fit_two_phase(first, x, y=targets(y), head_epochs=2, fine_tune_epochs=1,
                      unfreeze_blocks=1, checkpoint_dir=tmp_path, verbose=0)
    again = make_model()
    history = tft.fit_two_phase(again, x, y=targets(y), head_epochs=2, fine_tune_epochs=1,
                                unfreeze_blocks=1, checkpoint_dir=tmp_path, verbose=0)
    assert history.history["phase"] == [1, 1, 2]
    expected = weights_by_path(first)
    for key, value in weights_by_path(again).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_keras_file_round_trip(tmp_path):
    model = make_model()
    x, y = labelled(12, 3)
    tft.fit_head(model, x, y=targets(y), epochs=1, verbose=0)
    path = tmp_path / "multitask.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, tft.MultiTaskModel) and loaded.tasks == model.tasks
    expected, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for task in model.tasks:
        np.testing.assert_allclose(got[task], expected[task], atol=1e-5)
    logs = loaded.evaluate(x, targets(y), return_dict=True, verbose=0)
    assert np.isfinite(logs["kind_accuracy"]) and np.isfinite(logs["size_loss"])


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


def test_export_returns_named_outputs_per_task(tmp_path):
    model = make_model()
    x, y = labelled(12, 3)
    tft.fit_head(model, x, y=targets(y), epochs=1, verbose=0)
    path = tft.export_saved_model(model, tmp_path / "serving")
    np.save(tmp_path / "x.npy", x[:5])
    served = run_without_tftransfer(SERVE, path, tmp_path / "x.npy")
    assert served["dtypes"] == {
        "kind_probabilities": "float32", "kind_class_ids": "int64", "kind_class_names": "string",
        "even_probabilities": "float32", "even_class_ids": "int64", "even_class_names": "string",
        "tags_scores": "float32", "tags_labels": "int64", "size": "float32"}
    expected = model.predict_tasks(x[:5], verbose=0)
    values = served["values"]
    np.testing.assert_allclose(values["kind_probabilities"], expected["kind"], atol=1e-5)
    assert values["kind_class_names"] == [["a", "b", "c"][i] for i in expected["kind"].argmax(-1)]
    np.testing.assert_allclose(values["even_probabilities"], expected["even"], atol=1e-5)
    assert set(values["even_class_names"]) <= {"odd", "even"}
    np.testing.assert_allclose(values["tags_scores"], expected["tags"], atol=1e-5)
    np.testing.assert_allclose(values["size"], expected["size"][:, 0], atol=1e-5)
    assert served["modules"] == []
    metadata = tft.read_metadata(path)
    assert metadata["tasks"]["kind"] == {
        "kind": "classification", "labels": ["a", "b", "c"],
        "outputs": model.tasks["kind"].describe_outputs("kind")}
    assert metadata["tasks"]["size"]["kind"] == "regression"
    assert sorted(metadata["signatures"]) == ["serving_default", "serving_pixels"]
    assert metadata["training"][0]["phase"] == 1


def test_regressor_trains_on_plain_targets_and_exports_its_value(tmp_path):
    model = tft.build_regressor(tiny_backbone(), task="age")
    assert model.name == "tiny_backbone_regressor"
    x, y = labelled(24, 3)
    target = y.astype("float32")
    target[:3] = np.nan
    history = tft.fit_head(model, x, y=target, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert "mae" in history.history
    path = tft.export_saved_model(model, tmp_path / "serving", inputs="pixels")
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x[:3]))
    assert sorted(served) == ["age"]
    np.testing.assert_allclose(served["age"].numpy(), model.predict(x[:3], verbose=0)[:, 0],
                               atol=1e-5)


# -- errors ----------------------------------------------------------------------

def test_bad_tasks_are_refused_with_the_value_received():
    with pytest.raises(ValueError, match="Task names must start with a letter.*'2nd'"):
        tft.build_multitask(tiny_backbone(), {"2nd": tft.heads.binary()})
    with pytest.raises(ValueError, match="non-empty dict"):
        tft.build_multitask(tiny_backbone(), {})
    with pytest.raises(TypeError, match=r"tasks\['a'\]=3 of type int"):
        tft.build_multitask(tiny_backbone(), {"a": 3})
    with pytest.raises(ValueError, match="binary head must be two names"):
        tft.heads.binary(class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="must hold 3 non-negative weights"):
        tft.heads.classification(3, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\).*\[5\]"):
        tft.heads.binary(class_weight={5: 1.0})
    with pytest.raises(ValueError, match="applies to classification and binary heads"):
        tft.heads.HeadSpec("multi_label", ["a"], class_weight=[1.0])
    with pytest.raises(ValueError, match="reports the metrics"):
        tft.heads.regression(metrics=["accuracy"])
    with pytest.raises(ValueError, match="must be a regression head"):
        tft.build_regressor(tiny_backbone(), head=tft.heads.binary())


def test_bad_labels_and_options_are_refused_before_training(tmp_path):
    model = make_model()
    x, y = labelled(12, 3)
    partial = targets(y)
    del partial["size"]
    with pytest.raises(ValueError, match=r"one entry per task.*missing \['size'\]"):
        tft.fit_head(model, x, y=partial, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="must be a dict"):
        tft.fit_head(model, x, y=y, epochs=1, verbose=0)
    wrong = targets(y)
    wrong["kind"] = wrong["kind"] + 5
    with pytest.raises(ValueError, match=r"Task 'kind' \(classification\) takes labels in "
                                         r"\[0, 3\)"):
        tft.fit_head(model, x, y=wrong, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="give each task's head its own"):
        tft.fit_head(model, x, y=targets(y), epochs=1, class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"`top_k` of task 'kind' must be an integer from 1 "
                                         r"to its number of classes \(3\)"):
        tft.export_saved_model(model, tmp_path / "serving", top_k=4)
