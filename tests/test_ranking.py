"""Backbone ranking and LogME, against computations made here (NumPy, SciPy, scikit-learn)."""

import json

import keras
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf
from matplotlib.figure import Figure
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tftransfer as tft
from tftransfer.backbones.text import tiny_preset
from tftransfer.classifiers.text import build_text_classifier
from tftransfer.evaluation.logme import logme
from tftransfer.evaluation.ranking import HOLDOUT_FRACTION
from tftransfer.evaluation.ranking import KNN_NEIGHBOURS
from tftransfer.evaluation.ranking import METHODS
from tftransfer.evaluation.ranking import rank_backbones
from tftransfer.evaluation.ranking_table import BackboneRanking

SHAPE = (8, 8, 3)


def tiny_data(n=36, num_classes=3, seed=0):
    """8x8 RGB images whose class brightens one channel of the top half
    only; the bottom half is noise for every class."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % num_classes).astype("int32")
    x = rng.uniform(0, 120, (n, *SHAPE)).astype("float32")
    for c in range(num_classes):
        x[y == c, :4, :, c] += 100.0
    return x, y


def half(name, top):
    """A backbone whose feature map is the top (informative) or the bottom
    (noise) half of the image: avg pooling gives the channel means there."""
    inputs = keras.Input(SHAPE, name="images")
    crop = keras.layers.Cropping2D(((0, 4), (0, 0)) if top else ((4, 0), (0, 0)), name="crop")
    return keras.Model(inputs, crop(inputs), name=name)


def candidates():
    return {"bottom": half("bottom", False), "top": half("top", True)}


# --------------------------------------------------------------------------
# LogME


def log_evidence(features, target, log_alpha, log_beta):
    """The closed-form log evidence L(alpha, beta) of the Bayesian linear model."""
    alpha, beta = np.exp(log_alpha), np.exp(log_beta)
    n, d = features.shape
    a = alpha * np.eye(d) + beta * features.T @ features
    m = beta * np.linalg.solve(a, features.T @ target)
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * np.sum((features @ m - target) ** 2) - alpha / 2 * m @ m
            - 0.5 * np.linalg.slogdet(a)[1])


def reference_logme(features, labels):
    """Maximizes L over (log alpha, log beta) with SciPy, class by class."""
    values = []
    for c in np.unique(labels):
        target = (labels == c).astype(float)
        best = min((scipy.optimize.minimize(
            lambda p, target=target: -log_evidence(features, target, *p), start, method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
            for start in [(0.0, 0.0), (3.0, 3.0), (-3.0, 1.0)]), key=lambda r: r.fun)
        values.append(-best.fun / len(target))
    return float(np.mean(values))


@pytest.mark.parametrize("n, d", [(30, 5), (12, 20)])  # more examples than dimensions, and fewer
def test_logme_is_the_maximized_closed_form_evidence(n, d):
    rng = np.random.default_rng(n)
    labels = rng.integers(0, 3, n)
    features = rng.normal(size=(n, d))
    features[:, 0] += labels
    assert logme(features, labels) == pytest.approx(reference_logme(features, labels),
                                                    abs=1e-6)


def test_logme_prefers_informative_features_and_ignores_their_scale():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    informative = np.eye(3)[labels] + 0.3 * rng.normal(size=(60, 3))
    noise = rng.normal(size=(60, 3))
    assert logme(informative, labels) > logme(noise, labels) + 0.3
    assert logme(10.0 * informative, labels) == pytest.approx(logme(informative, labels),
                                                              abs=1e-8)


def test_logme_bad_inputs():
    with pytest.raises(ValueError, match=r"`features` must be a numeric array of shape "
                                         r"\(examples >= 2, dimensions >= 1\).*shape \(4,\)"):
        logme(np.zeros(4), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"`features` and `labels` must have one row per "
                                         r"example: 4 and 3"):
        logme(np.zeros((4, 2)), [0, 1, 0])
    with pytest.raises(ValueError, match=r"`labels` must hold at least 2 classes.*\[1\]"):
        logme(np.zeros((4, 2)), [1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"`labels` must be a 1-D array of integer class "
                                         r"indices.*dtype float64"):
        logme(np.zeros((4, 2)), np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"`features` must be finite.*1 non-finite"):
        logme(np.array([[0.0], [np.nan], [1.0]]), [0, 1, 0])


# --------------------------------------------------------------------------
# Ranking


@pytest.mark.parametrize("method", METHODS)
def test_the_informative_candidate_ranks_first(method):
    ranking = rank_backbones(candidates(), tiny_data(), method=method)
    assert isinstance(ranking, BackboneRanking)
    assert ranking.names == ["top", "bottom"] and ranking.best == "top"
    assert [row.method for row in ranking.rows] == [method, method]
    assert [row.feature_dim for row in ranking.rows] == [3, 3]  # avg-pooled RGB
    assert all(row.seconds > 0 for row in ranking.rows)
    top, bottom = ranking.rows
    if method != "logme":
        assert top.score == 1.0 and bottom.score < 0.7  # chance is 1/3


def test_scores_match_an_independent_computation():
    x, y = tiny_data(n=48)
    data = tft.dataset_from_arrays(x, y, validation_split=0.25, batch_size=8)
    train, validation = data.indices["train"], data.indices["validation"]
    features = {"top": x[:, :4].mean(axis=(1, 2)), "bottom": x[:, 4:].mean(axis=(1, 2))}
    by_logme = rank_backbones(candidates(), data, method="logme").scores
    by_knn = rank_backbones(candidates(), data, method="knn").scores
    by_probe = rank_backbones(candidates(), data).scores
    for name, f in features.items():
        assert by_logme[name] == pytest.approx(logme(f[train], y[train]), abs=1e-4)
        knn = make_pipeline(StandardScaler(), KNeighborsClassifier(KNN_NEIGHBOURS))
        knn.fit(f[train], y[train])
        assert by_knn[name] == pytest.approx(np.mean(knn.predict(f[validation]) == y[validation]))
    assert by_probe["top"] == 1.0 and by_probe["bottom"] < 0.7


def test_hold_out_without_a_validation_split():
    x, y = tiny_data(n=40)
    ranking = rank_backbones(candidates(), (x, y), method="knn")
    assert ranking.num_held_out == round(HOLDOUT_FRACTION * 40) == 10
    assert ranking.num_train == 30
    logme_ranking = rank_backbones(candidates(), (x, y), method="logme")
    assert (logme_ranking.num_train, logme_ranking.num_held_out) == (40, 0)
    limited = rank_backbones(candidates(), (x, y), method="logme", max_examples=24)
    assert limited.num_train == 24


def test_pooling_and_one_hot_labels():
    x, y = tiny_data()
    ranking = rank_backbones(candidates(), (x, np.eye(3)[y]), method="logme",
                             pooling="flatten")
    assert [row.feature_dim for row in ranking.rows] == [4 * 8 * 3] * 2
    assert ranking.scores["top"] == pytest.approx(
        logme(x[:, :4].reshape(len(x), -1), y), abs=1e-4)


def test_a_built_classifier_is_scored_on_its_head_input():
    x, y = tiny_data()
    classifier = tft.build_classifier(half("top", True), class_names=["a", "b"],
                                      hidden_units=[5], pooling="max")
    ranking = rank_backbones({"classifier": classifier, "model": half("plain", True)}, (x, y),
                             method="logme")
    assert [row.feature_dim for row in ranking.rows] == [3, 3]  # not the hidden layer's 5
    assert ranking.scores["classifier"] == pytest.approx(
        logme(x[:, :4].max(axis=(1, 2)), y), abs=1e-4)  # its own pooling, not "avg"
    assert ranking.scores["model"] == pytest.approx(logme(x[:, :4].mean(axis=(1, 2)), y),
                                                    abs=1e-4)


def test_a_keras_model_candidate_keeps_its_trainable_flags():
    model = half("top", True)
    model.get_layer("crop").trainable = False
    flags = [layer.trainable for layer in model.layers]
    rank_backbones([model], tiny_data(), method="logme")
    assert [layer.trainable for layer in model.layers] == flags == [True, False]
    assert model.trainable
    # Also when a later candidate fails.
    small = keras.Model(inputs := keras.Input((4, 4, 3)), keras.layers.Flatten()(inputs),
                        name="small")
    with pytest.raises(ValueError, match="takes 4x4x3 images"):
        rank_backbones([model, small], tiny_data(), method="logme")
    assert [layer.trainable for layer in model.layers] == flags and model.trainable


def test_file_and_named_candidates(tmp_path):
    x, y = tiny_data()
    path = tmp_path / "top_half.keras"
    half("top_model", True).save(path)
    big = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)  # 32x32 for the named backbone
    ranking = rank_backbones([str(path)], (x, y), method="logme")
    assert ranking.names == ["top_half.keras"]
    assert ranking.rows[0].score == pytest.approx(logme(x[:, :4].mean(axis=(1, 2)), y),
                                                  abs=1e-4)
    named = rank_backbones(["mobilenet_v3_small"], (big, y), method="logme", weights=None)
    assert named.names == ["mobilenet_v3_small"] and named.rows[0].feature_dim == 576


def test_text_classifiers_with_different_poolings_are_candidates(tmp_path):
    pytest.importorskip("keras_hub", reason='keras-hub is not installed: pip install '
                                            '"tftransfer[text]"')
    directory = tiny_preset(str(tmp_path / "tiny-bert"))
    texts = ["a good film", "great book", "the film is good", "a great film",
             "bad book", "an awful film", "the book is bad", "awful , bad"] * 2
    labels = [1, 1, 1, 1, 0, 0, 0, 0] * 2
    models = {pooling: build_text_classifier(directory, class_names=["neg", "pos"],
                                             pooling=pooling, sequence_length=8)
              for pooling in ("mean", "cls")}
    ranking = rank_backbones(models, (texts, labels), method="logme")
    assert sorted(ranking.names) == ["cls", "mean"]
    assert [row.feature_dim for row in ranking.rows] == [8, 8]  # the encoder's width
    assert ranking.scores["mean"] != ranking.scores["cls"]


def test_table_dict_and_plot(tmp_path):
    ranking = rank_backbones(candidates(), tiny_data(), method="knn")
    table = str(ranking).splitlines()
    assert table[0].split() == ["rank", "candidate", "knn", "features", "seconds"]
    assert table[1].split()[:4] == ["1", "top", "1.0000", "3"]
    assert table[2].split()[:2] == ["2", "bottom"]
    as_dict = json.loads(json.dumps(ranking.to_dict()))
    assert as_dict["method"] == "knn" and as_dict["num_held_out"] == 9
    assert [(row["rank"], row["name"]) for row in as_dict["rows"]] == [(1, "top"),
                                                                       (2, "bottom")]
    assert set(as_dict["rows"][0]) >= {"score", "method", "seconds", "feature_dim"}
    figure = ranking.plot()
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["top", "bottom"]
    assert [p.get_width() for p in axes.patches] == pytest.approx(
        [row.score for row in ranking.rows])
    texts = [t.get_text() for t in axes.texts]
    assert any("1.000" in t and " s)" in t for t in texts)
    figure.savefig(tmp_path / "ranking.png")
    assert (tmp_path / "ranking.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    negative = rank_backbones(candidates(), tiny_data(), method="logme").plot()
    assert len(negative.axes[0].patches) == 2


# --------------------------------------------------------------------------
# Errors


def test_bad_options():
    data = tiny_data()
    with pytest.raises(ValueError, match=r"`method` must be one of \('linear_probe', 'knn', "
                                         r"'logme'\). Received: method='hscore'"):
        rank_backbones(candidates(), data, method="hscore")
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer. "
                                         r"Received: batch_size=0"):
        rank_backbones(candidates(), data, batch_size=0)
    with pytest.raises(ValueError, match=r"`max_examples` must be a positive integer or None"):
        rank_backbones(candidates(), data, max_examples=-1)
    with pytest.raises(TypeError, match=r"`seed` must be an integer. Received: seed='0'"):
        rank_backbones(candidates(), data, seed="0")
    with pytest.raises(ValueError, match=r"`verbose` must be 0, 1, 2 or 'auto'"):
        rank_backbones(candidates(), data, verbose=5)
    with pytest.raises(ValueError, match=r"`pooling` must be one of"):
        rank_backbones(candidates(), data, pooling="sum")


def test_bad_candidates():
    data = tiny_data()
    with pytest.raises(ValueError, match=r"`candidates` must hold at least one candidate.*"
                                         r"Received: candidates=\[\]"):
        rank_backbones([], data)
    with pytest.raises(ValueError, match=r"Received: candidates=\{\}"):
        rank_backbones({}, data)
    with pytest.raises(ValueError, match=r"names must be unique; \['top'\] appear more than "
                                         r"once. Pass a dict"):
        rank_backbones([half("top", True), half("top", False)], data)
    with pytest.raises(TypeError, match=r"`candidates` must be a dict \{name: candidate\} or "
                                        r"a list.*of type str"):
        rank_backbones("mobilenet_v2", data)
    with pytest.raises(TypeError, match=r"names \(keys\) of `candidates` must be non-empty "
                                        r"strings. Received: names \[3\]"):
        rank_backbones({3: half("top", True)}, data)


def test_a_candidate_whose_input_does_not_fit_the_data():
    small = keras.Model(inputs := keras.Input((4, 4, 3)), keras.layers.Flatten()(inputs),
                        name="small")
    with pytest.raises(ValueError, match=r"The backbone 'small' takes 4x4x3 images but "
                                         r"`input_shape` / `image_size` ask for 8x8x3"):
        rank_backbones([small], tiny_data())
    data = tft.dataset_from_arrays(*tiny_data(), batch_size=8)
    with pytest.raises(ValueError, match=r"takes 4x4x3 images but the data has 8x8x3"):
        rank_backbones([small], data)
    classifier = tft.build_classifier(small, num_classes=2)
    with pytest.raises(ValueError, match=r"takes 4x4x3 images but the data has 8x8x3"):
        rank_backbones([classifier], tiny_data())
    with pytest.raises(ValueError, match=r"takes float32 inputs but the data holds strings"):
        rank_backbones([classifier], (["a", "b", "c", "d"], [0, 1, 0, 1]), method="logme")


def test_data_without_labels():
    x, y = tiny_data()
    unlabelled = tft.dataset_from_arrays(x, y, batch_size=8)
    unlabelled.train = unlabelled.train.map(lambda images, labels: images)
    with pytest.raises(ValueError, match=r"`data` must carry labels: its train split must "
                                         r"yield \(inputs, labels\) batches"):
        rank_backbones(candidates(), unlabelled)
    with pytest.raises(ValueError, match=r"`data` must carry labels.*Received: data=\(x, None\)"):
        rank_backbones(candidates(), (x, None))
    with pytest.raises(TypeError, match=r"`data` must be a `tftransfer.DataSplits` or a tuple "
                                        r"\(x, y\).*of type ndarray"):
        rank_backbones(candidates(), x)
    with pytest.raises(TypeError, match=r"of type _BatchDataset"):
        rank_backbones(candidates(), tf.data.Dataset.from_tensor_slices(x).batch(4))


def test_bad_labels():
    x, y = tiny_data()
    with pytest.raises(ValueError, match=r"one label per input; it has 36 inputs and 35"):
        rank_backbones(candidates(), (x, y[:-1]))
    with pytest.raises(ValueError, match=r"at least 2 classes.*Received: labels of class 0"):
        rank_backbones(candidates(), (x, np.zeros(len(x), int)), method="logme")
    with pytest.raises(ValueError, match=r"every class needs at least 2 examples.*"
                                         r"\{0: 18, 1: 17, 2: 1\}"):
        rank_backbones(candidates(), (x, np.r_[np.arange(35) % 2, 2]))
    with pytest.raises(ValueError, match=r"The labels run from 0 to 2, outside the 2 classes. "
                                         r"Pass `class_names`"):
        rank_backbones(candidates(), (x, y), class_names=["a", "b"])
    multi_hot = np.ones((len(x), 3), "float32")
    with pytest.raises(ValueError, match=r"integer class indices or one-hot rows.*shape "
                                         r"\(36, 3\) and dtype float32"):
        rank_backbones(candidates(), (x, multi_hot))
