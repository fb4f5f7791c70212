"""`evaluate`, its `EvaluationReport`, calibration, plots and rendered pages."""

import base64
import json
import os
import re

import helpers
import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn import metrics

import tftransfer as tft
from tftransfer.evaluation.calibration import ReliabilityBins
from tftransfer.evaluation.calibration import expected_calibration_error
from tftransfer.evaluation.calibration import reliability_bins
from tftransfer.evaluation.evaluate import EvaluationReport
from tftransfer.evaluation.evaluate import MisclassifiedExample
from tftransfer.evaluation.evaluate import evaluate
from tftransfer.evaluation.plots import plot_confusion_matrix
from tftransfer.evaluation.plots import plot_learning_curves
from tftransfer.evaluation.plots import plot_misclassified
from tftransfer.evaluation.plots import plot_reliability
from tftransfer.evaluation.report import ClassificationReport

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def score_model(num_classes, *, softmax=False):
    """A model whose outputs are its inputs (or their softmax)."""
    inputs = keras.Input((num_classes,))
    outputs = keras.layers.Dense(num_classes, use_bias=False,
                                 kernel_initializer="identity")(inputs)
    if softmax:
        outputs = keras.layers.Softmax()(outputs)
    return keras.Model(inputs, outputs)


def color_model(channel_of_class):
    """Scores each class by the mean of one colour channel of the image."""
    kernel = np.zeros((3, len(channel_of_class)), "float32")
    for c, channel in enumerate(channel_of_class):
        kernel[channel, c] = 1 / 25.5
    inputs = keras.Input(helpers.IMAGE_SHAPE)
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(len(channel_of_class), use_bias=False,
                                 kernel_initializer=keras.initializers.Constant(kernel))(pooled)
    return keras.Model(inputs, outputs)


def colored(channels, seed=0):
    """32x32 images, each bright in its channel, float32 in [0, 255]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 40, (len(channels), *helpers.IMAGE_SHAPE))
    x[np.arange(len(channels)), :, :, channels] += 200
    return x.astype("float32")


def scores_and_labels(n=60, num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, num_classes)), rng.integers(0, num_classes, n)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ece_by_loop(confidence, correct, num_bins):
    """The ECE written out bin by bin, independently of calibration.py."""
    total = 0.0
    for b in range(num_bins):
        low, high = b / num_bins, (b + 1) / num_bins
        members = [i for i, c in enumerate(confidence)
                   if (low < c <= high) or (b == 0 and c == 0)]
        if members:
            gap = abs(np.mean([correct[i] for i in members])
                      - np.mean([confidence[i] for i in members]))
            total += len(members) / len(confidence) * gap
    return total


# Metrics ------------------------------------------------------------------------------

def test_metrics_match_scikit_learn():
    scores, y = scores_and_labels()
    report = evaluate(score_model(4), (scores, y), top_k=3, batch_size=7)
    predicted = scores.argmax(axis=1)
    assert report.accuracy == pytest.approx(metrics.accuracy_score(y, predicted))
    assert sorted(report.top_k_accuracy) == [1, 2, 3]
    for k in (1, 2, 3):
        assert report.top_k_accuracy[k] == pytest.approx(
            metrics.top_k_accuracy_score(y, scores, k=k, labels=range(4)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, predicted, labels=range(4), zero_division=0)
    np.testing.assert_allclose(report.classification.precision, precision)
    np.testing.assert_allclose(report.classification.recall, recall)
    np.testing.assert_allclose(report.classification.f1, f1)
    np.testing.assert_array_equal(report.classification.support, support)
    np.testing.assert_array_equal(report.confusion_matrix,
                                  metrics.confusion_matrix(y, predicted, labels=range(4)))
    assert report.class_names == ["0", "1", "2", "3"]
    assert report.num_examples == 60
    assert report.num_misclassified == int(np.sum(predicted != y))
    assert report.split is None


def test_top_k_is_capped_at_the_number_of_classes():
    scores, y = scores_and_labels(num_classes=3)
    report = evaluate(score_model(3), (scores, y))
    assert sorted(report.top_k_accuracy) == [1, 2, 3]
    assert report.top_k_accuracy[3] == 1.0
    assert report.top_k_accuracy[1] == report.accuracy


def test_one_hot_labels_weights_and_datasets_give_the_same_report():
    scores, y = scores_and_labels()
    expected = evaluate(score_model(4), (scores, y))
    one_hot = np.eye(4)[y]
    weights = np.ones(len(y))
    dataset = tf.data.Dataset.from_tensor_slices((scores, one_hot, weights)).batch(16)
    report = evaluate(score_model(4), dataset)
    assert report.to_dict() == expected.to_dict()


def test_confidence_is_the_softmax_of_logits_and_probabilities_stay():
    scores, y = scores_and_labels(n=40, num_classes=3, seed=1)
    from_logits = evaluate(score_model(3), (scores, y), max_misclassified=100)
    from_probabilities = evaluate(score_model(3, softmax=True), (scores, y),
                                  max_misclassified=100)
    probabilities = softmax(scores)
    wrong = np.flatnonzero(scores.argmax(axis=1) != y)
    for report in (from_logits, from_probabilities):
        assert [m.index for m in report.misclassified] == wrong.tolist()
        np.testing.assert_allclose([m.confidence for m in report.misclassified],
                                   probabilities[wrong].max(axis=1), rtol=1e-5)
        assert report.expected_calibration_error == pytest.approx(
            ece_by_loop(probabilities.max(axis=1), scores.argmax(axis=1) == y, 15), abs=1e-5)


def test_a_classifier_maps_its_logits_with_its_own_probabilities():
    model = helpers.tiny_classifier(num_classes=3)
    x, y = helpers.labelled(n=12)
    report = evaluate(model, (x, y), max_misclassified=12)
    probabilities = model.predict_proba(x, verbose=0)
    assert report.class_names == ["class_0", "class_1", "class_2"]
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != y)
    assert [m.index for m in report.misclassified] == wrong.tolist()
    np.testing.assert_allclose([m.confidence for m in report.misclassified],
                               probabilities[wrong].max(axis=1), rtol=1e-4)
    assert all(m.input.shape == helpers.IMAGE_SHAPE for m in report.misclassified)
    np.testing.assert_array_equal(report.misclassified[0].input, x[wrong[0]])


def test_max_misclassified_keeps_the_first_ones():
    scores, y = scores_and_labels()
    report = evaluate(score_model(4), (scores, y), max_misclassified=3, batch_size=4)
    wrong = np.flatnonzero(scores.argmax(axis=1) != y)
    assert [m.index for m in report.misclassified] == wrong[:3].tolist()
    assert report.num_misclassified == len(wrong)
    assert evaluate(score_model(4), (scores, y), max_misclassified=0).misclassified == []


def test_text_inputs_are_kept_as_strings():
    inputs = keras.Input((), dtype="string")
    outputs = keras.layers.StringLookup(vocabulary=["good", "bad"], output_mode="one_hot")(
        inputs)  # scores: [unknown, good, bad]
    model = keras.Model(inputs, outputs)
    texts = np.array(["good", "bad", "good", "meh"])
    report = evaluate(model, (texts, [1, 2, 2, 0]), class_names=["other", "pos", "neg"])
    assert [(m.index, m.input) for m in report.misclassified] == [(2, "good")]
    assert type(report.misclassified[0].input) is str
    assert report.to_dict()["misclassified"][0]["text"] == "good"


# DataSplits and files -----------------------------------------------------------------

def test_data_splits_use_test_then_validation_and_index_their_rows():
    channels = np.arange(30) % 3
    x = colored(channels)
    y = channels.copy()
    y[[0, 1, 2, 3, 4, 5]] = (y[[0, 1, 2, 3, 4, 5]] + 1) % 3  # mislabelled rows
    model = color_model([0, 1, 2])
    for test_split, split in ((0.4, "test"), (0.0, "validation")):
        data = tft.dataset_from_arrays(x, y, validation_split=0.3, test_split=test_split,
                                       batch_size=4)
        report = evaluate(model, data, max_misclassified=30)
        assert report.split == split
        assert report.num_examples == sum(data.counts[split])
        rows = data.indices[split]
        expected = [i for i, row in enumerate(rows) if row < 6]
        assert [m.index for m in report.misclassified] == expected
        assert all(m.file is None for m in report.misclassified)


def test_an_unbatched_pipeline_is_batched():
    x = colored(np.arange(12) % 3)
    data = tft.dataset_from_arrays(x, np.arange(12) % 3, validation_split=0.5, batch_size=None)
    report = evaluate(color_model([0, 1, 2]), data, batch_size=4)
    assert report.num_examples == sum(data.counts["validation"])
    assert report.accuracy == 1.0


def test_folder_data_name_the_files_of_misclassified_examples(tmp_path):
    colors = {"blue": (0, 0, 230), "green": (0, 230, 0), "red": (230, 0, 0)}
    planted = set()
    for name, color in colors.items():
        (tmp_path / name).mkdir()
        for i in range(8):
            path = tmp_path / name / f"{i}.png"
            if name == "red" and i % 2:  # blue images filed as red
                color_i = colors["blue"]
                planted.add(str(path))
            else:
                color_i = color
            Image.new("RGB", (36, 32), color_i).save(path)
    data = tft.image_dataset_from_folder(tmp_path, image_size=32, validation_split=0.5,
                                         batch_size=3, verbose=0)
    assert data.class_names == ["blue", "green", "red"]
    model = color_model([2, 1, 0])
    report = evaluate(model, data)
    assert report.split == "validation"
    expected = planted & set(data.files["validation"])
    assert expected  # the seed puts some planted files in validation
    assert {m.file for m in report.misclassified} == expected
    for m in report.misclassified:
        pixels = np.asarray(Image.open(m.file))
        assert pixels[..., 2].mean() > 200 and pixels[..., 0].mean() < 10  # really blue
        assert (m.true_class, m.predicted_class) == ("red", "blue")
        np.testing.assert_allclose(m.input[..., 2], 230, atol=1)
        assert data.files["validation"][m.index] == m.file


# Calibration -------------------------------------------------------------------------

def test_ece_by_hand():
    # confidences 0.95 (right), 0.85 and 0.75 (wrong, right), 0.35 -> 0.65 (wrong); 5 bins:
    # bin 4: {0.95, 0.85}: acc 0.5, conf 0.9; bin 3: {0.75, 0.65}: acc 0.5, conf 0.7.
    probabilities = [[0.95, 0.05], [0.85, 0.15], [0.25, 0.75], [0.35, 0.65]]
    bins = reliability_bins(probabilities, [0, 1, 1, 0], num_bins=5)
    assert bins.count.tolist() == [0, 0, 0, 2, 2]
    np.testing.assert_allclose(bins.accuracy[3:], [0.5, 0.5])
    np.testing.assert_allclose(bins.confidence[3:], [0.7, 0.9])
    assert np.isnan(bins.accuracy[:3]).all()
    expected = 0.5 * 0.2 + 0.5 * 0.4
    assert bins.expected_calibration_error == pytest.approx(expected)
    assert expected_calibration_error(probabilities, [0, 1, 1, 0], num_bins=5) == (
        pytest.approx(expected))


def test_a_calibrated_case_has_no_error_and_an_overconfident_one_its_gap():
    calibrated = [[0.8, 0.2]] * 10
    labels = [0] * 8 + [1] * 2  # 80% right at confidence 0.8
    assert expected_calibration_error(calibrated, labels) == pytest.approx(0.0, abs=1e-12)
    overconfident = [[0.05, 0.95]] * 10
    labels = [1] * 6 + [0] * 4  # 60% right at confidence 0.95
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.35)


def test_ece_matches_a_loop_on_random_data():
    scores, y = scores_and_labels(n=200, num_classes=5, seed=3)
    probabilities = softmax(2 * scores)
    for num_bins in (1, 7, 15):
        assert expected_calibration_error(probabilities, y, num_bins=num_bins) == (
            pytest.approx(ece_by_loop(probabilities.max(axis=1),
                                      probabilities.argmax(axis=1) == y, num_bins)))


def test_a_confidence_on_an_edge_goes_to_the_bin_below():
    bins = ReliabilityBins.from_confidences([0.5, 1.0, 0.0], [True, True, False], num_bins=2)
    assert bins.count.tolist() == [2, 1]


def test_calibration_errors():
    with pytest.raises(ValueError, match=r"`num_bins` must be a positive integer.*num_bins=0"):
        reliability_bins([[0.5, 0.5]], [0], num_bins=0)
    with pytest.raises(ValueError, match=r"one label per row.*1 labels for 2 rows"):
        reliability_bins([[0.5, 0.5], [0.1, 0.9]], [0])
    with pytest.raises(ValueError, match=r"`probabilities` must be \(examples, classes >= 2\)"):
        reliability_bins([0.5, 0.5], [0])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*from 0.5 to 2.0"):
        ReliabilityBins.from_confidences([2.0, 0.5], [True, False])
    with pytest.raises(ValueError, match="at least one example"):
        ReliabilityBins.from_confidences([], [])
    with pytest.raises(ValueError, match=r"2 confidences and 1 correct"):
        ReliabilityBins.from_confidences([0.2, 0.5], [True])


def test_classification_report_from_labels_errors():
    with pytest.raises(ValueError, match=r"one label per example.*3 true and 2 predicted"):
        ClassificationReport.from_labels([0, 1, 1], [0, 1], class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"`predicted` labels must lie in \[0, 2\).*to 2"):
        ClassificationReport.from_labels([0, 1], [0, 2], class_names=["a", "b"])


# Report: dict, text, files -----------------------------------------------------------

NASTY = ["<b>red</b>", "a&b", 'say "hi"']


def nasty_report(**kwargs):
    channels = np.arange(12) % 3
    y = channels.copy()
    y[:2] = (y[:2] + 1) % 3
    return evaluate(color_model([0, 1, 2]), (colored(channels), y), class_names=NASTY,
                    **kwargs)


def test_to_dict_is_json_and_str_summarizes():
    report = nasty_report()
    summary = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert summary["accuracy"] == pytest.approx(10 / 12)
    assert summary["top_k_accuracy"]["1"] == summary["accuracy"]
    assert [m["index"] for m in summary["misclassified"]] == [0, 1]
    assert summary["classification"]["confusion_matrix"] == report.confusion_matrix.tolist()
    assert summary["reliability"]["count"] == report.reliability.count.tolist()
    text = str(report)
    assert "accuracy 0.833" in text and "top-3 accuracy 1.000" in text
    assert f"expected calibration error (15 bins) {report.expected_calibration_error:.3f}" in text
    assert all(name in text for name in NASTY) and "2 misclassified" in text


def test_save_writes_pngs_html_markdown_and_json(tmp_path):
    history = {"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, float("nan")], "phase": [1, 1, 2]}
    report = nasty_report(history=history)
    paths = report.save(tmp_path / "out")
    names = {"report.json", "report.md", "report.html", "confusion_matrix.png",
             "reliability.png", "misclassified.png", "learning_curves.png"}
    assert set(paths) == names
    assert sorted(os.listdir(tmp_path / "out")) == sorted(names)  # no temporary files left
    umask = os.umask(0)
    os.umask(umask)
    for path in paths.values():  # readable as files written with open()
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, path
    for name in names - {"report.json", "report.md", "report.html"}:
        with open(paths[name], "rb") as f:
            assert f.read(8) == PNG_SIGNATURE
        assert matplotlib.image.imread(paths[name]).ndim == 3
    with open(paths["report.json"]) as f:
        summary = json.load(f)
    assert summary["accuracy"] == report.accuracy
    assert summary["history"]["val_loss"] == [1.1, 0.9, None]
    with open(paths["report.html"], encoding="utf-8") as f:
        page = f.read()
    assert "&lt;b&gt;red&lt;/b&gt;" in page and "a&amp;b" in page and "say &quot;hi&quot;" in page
    assert "<b>red" not in page and 'say "hi"' not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(i)[:8] == PNG_SIGNATURE for i in images)
    with open(paths["report.md"], encoding="utf-8") as f:
        markdown = f.read()
    assert r"\<b\>red\</b\>" in markdown
    assert "![Confusion matrix](confusion_matrix.png)" in markdown
    assert "![Learning curves](learning_curves.png)" in markdown


def test_save_leaves_out_plots_without_images_or_history(tmp_path):
    scores, y = scores_and_labels()
    paths = evaluate(score_model(4), (scores, y)).save(tmp_path)
    assert set(paths) == {"report.json", "report.md", "report.html", "confusion_matrix.png",
                          "reliability.png"}


def test_to_html_is_one_page():
    page = nasty_report().to_html()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 3
    assert "<script" not in page and "http" not in page


def test_save_refuses_a_file_as_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"`directory` must be a folder.*directory="):
        nasty_report().save(tmp_path / "file")


# Plots --------------------------------------------------------------------------------

def test_confusion_matrix_is_row_normalized_with_values_in_few_cells():
    matrix = np.array([[3, 1, 0], [0, 4, 4], [0, 0, 0]])
    figure = plot_confusion_matrix(matrix, class_names=["a", "b", "c"])
    ax = figure.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(),
                               [[0.75, 0.25, 0], [0, 0.5, 0.5], [0, 0, 0]])
    assert len(ax.texts) == 9 and ax.texts[0].get_text() == "0.75"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]


def test_confusion_matrix_is_readable_at_50_classes():
    names = [f"class_{i:02d}" for i in range(50)]
    rng = np.random.default_rng(0)
    figure = plot_confusion_matrix(rng.integers(0, 9, (50, 50)), class_names=names)
    small = plot_confusion_matrix(np.eye(3), class_names=["a", "b", "c"])
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert not ax.texts  # no cell values at 50 classes
    assert ax.get_xticklabels()[0].get_rotation() == 90
    assert ax.get_xticklabels()[0].get_fontsize() < small.axes[0].get_xticklabels()[0].get_fontsize()
    assert figure.get_size_inches()[0] > 2 * small.get_size_inches()[0]


def _vertical_lines(ax):
    return [line.get_xdata()[0] for line in ax.get_lines()
            if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2]


def test_learning_curves_mark_the_phase_boundary():
    history = keras.callbacks.History()
    history.history = {"loss": [1.0, 0.8, 0.7, 0.5, 0.4], "accuracy": [0.5, 0.6, 0.6, 0.7, 0.8],
                       "val_loss": [1.1, 0.9, 0.8, 0.6, 0.6], "phase": [1, 1, 1, 2, 2],
                       "learning_rate": [1e-3] * 5}
    figure = plot_learning_curves(history)
    assert [ax.get_title() for ax in figure.axes] == ["loss", "accuracy"]
    loss, accuracy = figure.axes
    assert _vertical_lines(loss) == [3.5] and _vertical_lines(accuracy) == [3.5]
    assert [line.get_label() for line in loss.get_lines()] == [
        "training", "validation", "fine-tuning starts"]
    assert len(accuracy.get_lines()) == 2  # no val_accuracy recorded
    assert not _vertical_lines(plot_learning_curves({"loss": [1.0, 0.5]}).axes[0])


def test_learning_curves_of_fit_two_phase():
    model = helpers.tiny_classifier(num_classes=2)
    x, y = helpers.labelled(n=16, num_classes=2)
    history = tft.fit_two_phase(model, x, y=y, validation_data=(x, y), head_epochs=2,
                                fine_tune_epochs=1, early_stopping=False, verbose=0)
    assert history.history["phase"] == [1, 1, 2]
    report = evaluate(model, (x, y), history=history)
    figure = report.figures()["learning_curves"]
    assert _vertical_lines(figure.axes[0]) == [2.5]
    assert report.history["phase"] == [1.0, 1.0, 2.0]


def test_misclassified_grid_scales_pixels_and_shows_gray_in_gray():
    def example(image, index=0):
        return MisclassifiedExample(index=index, true_class="cat", predicted_class="dog",
                                    confidence=0.875, input=image)

    gray = example(np.full((8, 8, 1), 255.0))
    rgb = example(np.full((8, 8, 3), 51.0), index=1)
    text = example("not an image", index=2)
    figure = plot_misclassified([gray, rgb, text])
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 2 and shown[0].get_title() == "cat / dog (88%)"
    assert shown[0].images[0].get_cmap().name == "gray"
    np.testing.assert_allclose(shown[0].images[0].get_array(), 1.0)
    np.testing.assert_allclose(shown[1].images[0].get_array(), 0.2)
    unit = plot_misclassified([example(np.full((8, 8, 3), 0.5))])
    np.testing.assert_allclose(unit.axes[0].images[0].get_array(), 0.5)
    with pytest.raises(ValueError, match=r"holds no images.*Received: 1 examples"):
        plot_misclassified([text])


def test_reliability_diagram_shows_bins_and_ece():
    probabilities = [[0.95, 0.05], [0.85, 0.15], [0.25, 0.75], [0.35, 0.65]]
    bins = reliability_bins(probabilities, [0, 1, 1, 0], num_bins=5)
    figure = plot_reliability(bins)
    top, bottom = figure.axes
    assert top.get_title() == "Reliability diagram (ECE = 0.300)"
    heights = [p.get_height() for p in top.patches[:2]]
    np.testing.assert_allclose(heights, [0.5, 0.5])
    assert [p.get_height() for p in bottom.patches] == [0, 0, 0, 2, 2]
    with pytest.raises(TypeError, match=r"`bins` must be ReliabilityBins.*list"):
        plot_reliability([1, 2])


def test_plot_errors():
    with pytest.raises(ValueError, match=r"square.*shape \(2, 3\)"):
        plot_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"`class_names` has 1 names for a 2x2"):
        plot_confusion_matrix(np.eye(2), class_names=["a"])
    with pytest.raises(ValueError, match=r"`metrics` must name recorded.*metrics=\['acc'\]"):
        plot_learning_curves({"loss": [1.0]}, metrics=["acc"])
    with pytest.raises(TypeError, match=r"`history` must be a keras.callbacks.History.*str"):
        plot_learning_curves("history")
    with pytest.raises(ValueError, match=r"`columns` must be a positive integer.*columns=0"):
        plot_misclassified([], columns=0)


# Errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"top_k": 0}, r"`top_k` must be a positive integer.*top_k=0"),
    ({"top_k": True}, r"`top_k` must be a positive integer.*top_k=True"),
    ({"top_k": 1.5}, r"`top_k` must be a positive integer.*top_k=1.5"),
    ({"num_bins": 0}, r"`num_bins` must be a positive integer.*num_bins=0"),
    ({"max_misclassified": -1}, r"`max_misclassified` must be a non-negative.*=-1"),
    ({"batch_size": 0}, r"`batch_size` must be a positive integer.*batch_size=0"),
    ({"class_names": ["a", "b"]}, r"`class_names` has 2 names for a model with 4 outputs"),
])
def test_bad_options(kwargs, message):
    scores, y = scores_and_labels()
    with pytest.raises(ValueError, match=message):
        evaluate(score_model(4), (scores, y), **kwargs)


def test_bad_inputs():
    scores, y = scores_and_labels()
    model = score_model(4)
    with pytest.raises(TypeError, match=r"`class_names` must be a list of strings"):
        evaluate(model, (scores, y), class_names="abcd")
    with pytest.raises(TypeError, match=r"`history` must be a keras.callbacks.History.*list"):
        evaluate(model, (scores, y), history=[1, 2])
    with pytest.raises(ValueError, match=r"`history` records no epochs.*history=\{\}"):
        evaluate(model, (scores, y), history=keras.callbacks.History())
    with pytest.raises(TypeError, match=r"`data` must be a DataSplits.*of type dict"):
        evaluate(model, {"x": scores})
    with pytest.raises(TypeError, match=r"for a folder of images, load it first: "
                                        r"`tft.image_dataset_from_folder.*of type str"):
        evaluate(model, "photos/")
    with pytest.raises(ValueError, match=r"as many labels as inputs.*60 inputs and 3 labels"):
        evaluate(model, (scores, y[:3]))
    with pytest.raises(ValueError, match=r"labels of `data` must lie in \[0, 4\).*to 7"):
        evaluate(model, (scores, y + 4))
    with pytest.raises(ValueError, match=r"class indices or one-hot rows.*0.5"):
        evaluate(model, (scores, np.full(60, 0.5)))
    with pytest.raises(ValueError, match=r"holds no examples"):
        evaluate(model, tf.data.Dataset.from_tensor_slices((scores[:0], y[:0])).batch(4))
    with pytest.raises(ValueError, match=r"one score per class.*shape \(32, 1\)"):
        evaluate(score_model(1), (scores[:, :1], y))
    with pytest.raises(TypeError, match=r"`model` must be a Keras model.*function"):
        evaluate(lambda x: x, (scores, y))


def test_data_splits_without_test_or_validation():
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2)), [0, 1, 0, 1])).batch(2)
    data = tft.DataSplits(train=dataset, validation=None, test=None, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"no test and no validation split.*test_split=0.2"):
        evaluate(score_model(2), data)


def test_model_and_data_class_names_must_agree():
    model = helpers.tiny_classifier(num_classes=3)
    x = colored(np.arange(12) % 3)
    data = tft.dataset_from_arrays(x, np.arange(12) % 3, class_names=["x", "y", "z"],
                                   validation_split=0.25)
    with pytest.raises(ValueError, match=r"The model's classes \['class_0'.*are not the data's"):
        evaluate(model, data)
    renamed = evaluate(model, data, class_names=["x", "y", "z"])
    assert renamed.class_names == ["x", "y", "z"]
    unnamed = tft.build_classifier(helpers.tiny_backbone(), num_classes=3)  # "0", "1", "2"
    assert evaluate(unnamed, data).class_names == ["x", "y", "z"]
    with pytest.raises(ValueError, match=r"The data has 3 classes but the model 2 outputs"):
        evaluate(tft.build_classifier(helpers.tiny_backbone(), num_classes=2), data)


def test_a_multi_label_model_is_refused():
    model = helpers.tiny_classifier(num_classes=3, multi_label=True)
    x, y = helpers.labelled(n=6)
    with pytest.raises(TypeError, match=r"single-label classifiers.*predict_proba.*"
                                        r"multi_label=True"):
        evaluate(model, (x, y))


def test_report_type():
    assert isinstance(nasty_report(), EvaluationReport)
