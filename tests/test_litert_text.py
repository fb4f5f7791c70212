"""LiteRT export of text classifiers: token ids in (LiteRT has no tokenizer ops),
the WordPiece vocabulary and the tokenizer's settings beside the model.

On the real all-MiniLM-L6-v2 with a head trained on topic sentences, the
`ai-edge-litert` interpreter, fed the token ids the model's own
`TextPreprocessing` makes, gives Keras's probabilities: float32 within 1e-5
(measured: 3.3e-7, on the 12 held-out topic sentences and the 10 hard texts of
test_text_serving.py), float16 within 2e-3 (measured: 1.5e-4 on the held-out
sentences), dynamic-range int8 weights within 0.05 (measured: 0.013), both with
the same top class on every held-out sentence.
"""

import json
import os

import numpy as np
import pytest

keras_hub = pytest.importorskip(
    "keras_hub", reason='keras-hub is not installed: pip install "tftransfer[text]"'
)
litert = pytest.importorskip("ai_edge_litert.interpreter",
                             reason="ai-edge-litert is not installed: pip install ai-edge-litert")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert import schema_py_generated as schema  # noqa: E402

import tftransfer as tft  # noqa: E402
from test_text import TOPICS  # noqa: E402
from test_text import TOPICS_HELD_OUT  # noqa: E402
from test_text_serving import TEXTS as HARD_TEXTS  # noqa: E402
from test_text_serving import tiny_roberta  # noqa: E402
from tftransfer.backbones.text import tiny_preset  # noqa: E402
from tftransfer.classifiers.packing import TextPacking  # noqa: E402
from tftransfer.classifiers.packing import pack_text  # noqa: E402
from tftransfer.classifiers.text import build_text_classifier  # noqa: E402
from tftransfer.demos import text as text_demo  # noqa: E402

SEQUENCE_LENGTH = 32
INPUTS = ["padding_mask", "segment_ids", "token_ids"]


def topic_arrays(topics):
    names = list(TOPICS)
    texts = np.array([t for name in names for t in topics[name]], dtype=object)
    return texts, np.array([i for i, name in enumerate(names) for _ in topics[name]])


@pytest.fixture(scope="module")
def trained():
    """all-MiniLM-L6-v2 with a head trained on its frozen features."""
    try:
        directory = text_demo.minilm_directory()
    except text_demo.MiniLMUnavailableError as err:
        pytest.skip(str(err))
    (x, y), (x_test, y_test) = topic_arrays(TOPICS), topic_arrays(TOPICS_HELD_OUT)
    keras.utils.set_random_seed(0)
    model = build_text_classifier(directory, class_names=list(TOPICS),
                                  sequence_length=SEQUENCE_LENGTH)
    tft.fit_head(model, x, y=y, epochs=20, learning_rate=1e-2, batch_size=6, verbose=0)
    assert np.mean(model.predict_proba(x_test, verbose=0).argmax(-1) == y_test) >= 11 / 12
    return model, list(x_test)


def read_metadata(path):
    with open(os.path.join(path, "tftransfer.json"), encoding="utf-8") as f:
        return json.load(f)


def _custom_ops(path):
    with open(path, "rb") as f:
        model = schema.Model.GetRootAsModel(f.read(), 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    return [c.CustomCode().decode() for c in codes if c.CustomCode()]


def _run(path, model, texts):
    """The file's probabilities on the token ids the model's tokenizer makes."""
    interpreter = litert.Interpreter(model_path=os.path.join(path, "model.tflite"))
    run = interpreter.get_signature_runner("serving_default")
    features = model.text_preprocessing(tf.constant(texts))
    return run(**{key: value.numpy() for key, value in features.items()})["probabilities"]


@pytest.mark.slow
def test_float_export_takes_token_ids_and_gives_keras_probabilities(trained, tmp_path, capsys):
    model, held_out = trained
    path = tft.export_litert(model, tmp_path / "float", verbose=1)
    assert capsys.readouterr().out.startswith(f"Exporting {model.name} to LiteRT (float32)")
    assert sorted(os.listdir(path)) == ["labels.txt", "model.tflite", "tftransfer.json",
                                        "vocab.txt"]
    assert _custom_ops(os.path.join(path, "model.tflite")) == []  # no Flex, no TF Text ops
    interpreter = litert.Interpreter(model_path=os.path.join(path, "model.tflite"))
    signature = interpreter.get_signature_list()["serving_default"]
    assert sorted(signature["inputs"]) == INPUTS and signature["outputs"] == ["probabilities"]
    for detail in interpreter.get_input_details():
        assert detail["dtype"] == np.int32 and detail["shape"][-1] == SEQUENCE_LENGTH
    texts = held_out + HARD_TEXTS
    expected = model.predict_proba(np.array(texts, dtype=object), verbose=0)
    np.testing.assert_allclose(_run(path, model, texts), expected, atol=1e-5)
    with open(os.path.join(path, "labels.txt")) as f:
        assert f.read().splitlines() == model.class_names


@pytest.mark.slow
def test_vocabulary_and_settings_are_enough_to_tokenize(trained, tmp_path):
    """A tokenizer made from the directory alone (vocab.txt and the settings in
    tftransfer.json) gives the model's token ids: what a device must do."""
    model, held_out = trained
    path = tft.export_litert(model, tmp_path / "float")
    metadata = read_metadata(path)
    assert [i["name"] for i in metadata["inputs"]] == INPUTS
    assert metadata["output"]["shape"] == [None, 3] and metadata["quantization"] is None
    settings = metadata["tokenizer"]
    assert settings["type"] == "WordPiece" and settings["vocabulary_file"] == "vocab.txt"
    assert settings["start_token_ids"] == [101] and settings["end_token_ids"] == [102]
    assert settings["pad_token_id"] == 0 and settings["lowercase"] is True
    with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as f:
        vocabulary = f.read().splitlines()
    assert vocabulary == model.preprocessor.tokenizer.get_vocabulary()
    assert len(vocabulary) == settings["vocabulary_size"] == 30522
    assert vocabulary[101] == "[CLS]" and vocabulary[settings["unknown_token_id"]] == "[UNK]"

    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=os.path.join(path, "vocab.txt"), lowercase=settings["lowercase"],
        strip_accents=settings["strip_accents"], split=settings["split_on_punctuation"],
        split_on_cjk=settings["split_on_cjk"], suffix_indicator=settings["suffix_indicator"],
        oov_token=settings["unknown_token"])
    packing = TextPacking(
        sequence_length=settings["sequence_length"],
        start_ids=tuple(settings["start_token_ids"]), end_ids=tuple(settings["end_token_ids"]),
        pad_id=settings["pad_token_id"], padding_side=settings["padding_side"])
    texts = tf.constant(held_out + HARD_TEXTS)
    from_files = pack_text(tf.function(tokenizer)(texts), packing)
    for key, value in model.text_preprocessing(texts).items():
        np.testing.assert_array_equal(from_files[key], value, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("quantization, atol", [("float16", 2e-3), ("dynamic", 0.05)])
def test_quantized_exports_stay_close_to_keras(trained, tmp_path, quantization, atol):
    model, held_out = trained
    path = tft.export_litert(model, tmp_path / quantization, quantization=quantization)
    assert _custom_ops(os.path.join(path, "model.tflite")) == []
    expected = model.predict_proba(np.array(held_out, dtype=object), verbose=0)
    got = _run(path, model, held_out)
    np.testing.assert_allclose(got, expected, atol=atol)
    np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
    assert read_metadata(path)["quantization"] == quantization


def test_tiny_bert_export_gives_keras_probabilities(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_text_classifier(tiny_preset(str(tmp_path / "bert")), class_names=["a", "b"],
                                  sequence_length=8)
    path = tft.export_litert(model, tmp_path / "tiny")
    texts = ["a good film", "", "the book is awful , the film is great ."]
    np.testing.assert_allclose(_run(path, model, texts),
                               model.predict_proba(texts, verbose=0), atol=1e-5)


# --------------------------------------------------------------------------
# Errors


def test_int8_is_refused_for_text_with_the_alternatives(tmp_path):
    model = build_text_classifier(tiny_preset(str(tmp_path / "bert")), num_classes=2,
                                  sequence_length=8)
    with pytest.raises(ValueError, match=r"quantization='int8' is not offered for text "
                                         r"classifiers.*quantization='dynamic'.*'float16'.*"
                                         r"Received: quantization='int8'"):
        tft.export_litert(model, tmp_path / "a", quantization="int8",
                          representative_data=["a good film"])
    assert not (tmp_path / "a").exists()


def test_a_tokenizer_other_than_wordpiece_is_refused(tmp_path):
    model = tiny_roberta(tmp_path / "roberta")
    with pytest.raises(ValueError, match=r"WordPiece tokenizer.*export_saved_model.*Received: "
                                         r"a model with tokenizer RobertaTokenizer"):
        tft.export_litert(model, tmp_path / "a")


def test_a_model_that_is_not_a_classifier_is_refused(tmp_path):
    inputs = keras.Input((4,))
    with pytest.raises(TypeError, match=r"image classifier .* or a text classifier .*"
                                        r"Received: model of type Functional"):
        tft.export_litert(keras.Model(inputs, keras.layers.Dense(2)(inputs)), tmp_path / "a")
