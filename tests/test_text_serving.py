"""A text export that stock TF Serving runs: the ops it needs, its tokens, its predictions.

Stock TF Serving images embed an old TensorFlow Text, 2.12.1 (tensorflow/serving
PR #4057, "Update tf-text to 2.18.1", still open): a SavedModel using an op that
a later release added, such as ``TFText>RoundRobinTrim`` (TF Text 2.16), fails
there with "Op type not registered". `TextPreprocessing` therefore packs with
core TensorFlow ops and calls keras-hub only for the word pieces; these tests
read every op type of the export (graph and function library) and fail on any
outside core TensorFlow and TensorFlow Text 2.12.1's list,
``tests/fixtures/tensorflow_text_2_12_1_ops.txt`` (made from the 2.12.1 wheel
by ``tests/fixtures/make_tensorflow_text_ops.py``; its header says how).
"""

import json
import os
import types

import pytest

keras_hub = pytest.importorskip(
    "keras_hub", reason='keras-hub is not installed: pip install "tftransfer[text]"'
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

import tftransfer as tft  # noqa: E402
from helpers import minilm_dir  # noqa: E402, F401 (a fixture)
from helpers import run_without_tftransfer  # noqa: E402
from tftransfer.backbones.text import tiny_preset  # noqa: E402
from tftransfer.classifiers.packing import TextPacking  # noqa: E402
from tftransfer.classifiers.packing import pack_text  # noqa: E402
from tftransfer.classifiers.packing import packing_of  # noqa: E402
from tftransfer.classifiers.text import build_text_classifier  # noqa: E402

OPS_FILE = os.path.join(os.path.dirname(__file__), "fixtures", "tensorflow_text_2_12_1_ops.txt")

# Texts shorter and longer than the sequence lengths below, empty, blank,
# accented, emoji, CJK, punctuation only, mixed case, and words the tiny
# vocabulary lacks.
TEXTS = [
    "a good film",
    "",
    "   ",
    "the book is awful , the film is great .",
    "A GOOD film, a great book. The film is bad, the book is awful; good good good!",
    "Ünïcödé ÀCCENTS: café, naïve, résumé, Ångström, façade",
    "emoji 😀👍🏽 and 🇫🇷 flags ❤️",
    "中文字符和日本語のテキスト",
    "?!...,;:",
    "tokenizers don't always agree, do they? " * 12,
]

# The op types of a SavedModel: read in a process that imports TensorFlow
# only, as a model server has. `run_without_tftransfer` runs it.
CORE_OPS = r"""
import json
import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session as c_api
assert "tensorflow_text" not in sys.modules and "keras_hub" not in sys.modules
buffer = c_api.TF_GetAllOpList()
ops = op_def_pb2.OpList()
ops.ParseFromString(c_api.TF_GetBuffer(buffer))
c_api.TF_DeleteBuffer(buffer)
print(json.dumps(sorted(op.name for op in ops.op)))
"""

# Serves the export and the tokenizer-only SavedModel from a process with
# TensorFlow and TensorFlow Text only (no tftransfer, no keras-hub).
SERVE = r"""
import json
import tensorflow as tf
import tensorflow_text  # registers the tokenizer's ops
texts = tf.constant(json.loads(sys.argv[3]))
out = tf.saved_model.load(sys.argv[1]).signatures["serving_default"](text=texts)
tokens = tf.saved_model.load(sys.argv[2]).signatures["serving_default"](text=texts)
print(json.dumps({
    "probabilities": out["probabilities"].numpy().tolist(),
    "class_ids": out["class_ids"].numpy().tolist(),
    "tokens": {k: v.numpy().tolist() for k, v in tokens.items()},
    "keras_hub_imported": "keras_hub" in sys.modules,
}))
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_preset(str(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="module")
def served_ops():
    """Op types a stock TF Serving knows: core TensorFlow's (registered by
    `import tensorflow` alone) and TensorFlow Text 2.12.1's."""
    with open(OPS_FILE, encoding="utf-8") as f:
        tf_text = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    return set(run_without_tftransfer(CORE_OPS)), tf_text


def tiny(tiny_dir, **kwargs):
    kwargs.setdefault("class_names", ["neg", "pos", "other"])
    kwargs.setdefault("sequence_length", 8)
    keras.utils.set_random_seed(0)
    return build_text_classifier(tiny_dir, **kwargs)


def tiny_roberta(directory, sequence_length=8):
    """A tiny random RoBERTa (a byte-pair tokenizer, no segment ids) as a
    keras-hub preset directory, and its classifier."""
    vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "a": 5, "Ġgood": 6,
                  "Ġfilm": 7, "Ġ": 8, "g": 9, "o": 10, "d": 11, "Ġg": 12, "Ġgo": 13, "od": 14}
    merges = ["Ġ g", "Ġg o", "o d", "Ġgo od"]
    keras.utils.set_random_seed(0)
    keras_hub.models.RobertaBackbone(
        vocabulary_size=len(vocabulary), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32).save_to_preset(str(directory))
    keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges).save_to_preset(
        str(directory))
    return build_text_classifier(str(directory), class_names=["neg", "pos"],
                                 sequence_length=sequence_length)


def op_types(saved_model_dir):
    """Every op type in a SavedModel: its graphs' nodes and the nodes of
    every function in their libraries (calls of library functions left out)."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    found = set()
    for meta_graph in saved_model.meta_graphs:
        library = meta_graph.graph_def.library
        functions = {function.signature.name for function in library.function}
        found |= {node.op for node in meta_graph.graph_def.node}
        for function in library.function:
            found |= {node.op for node in function.node_def}
        found -= functions
    return found


def unserved(saved_model_dir, served_ops):
    core, tf_text = served_ops
    return sorted(op_types(saved_model_dir) - core - tf_text)


def tokenizer_saved_model(model, path):
    """The model's `TextPreprocessing` alone as a SavedModel: strings in,
    its int32 features out."""
    archive = keras.export.ExportArchive()
    archive.track(model.text_preprocessing)
    archive.add_endpoint(name="serving_default", fn=model.text_preprocessing,
                         input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    archive.write_out(str(path), verbose=False)
    return str(path)


def keras_hub_features(model, texts):
    """What the keras-hub preprocessor gives, in a graph (its TF path)."""
    features = tf.function(model.preprocessor)(tf.constant(texts))
    keys = model.text_preprocessing.output_keys
    return {key: np.asarray(features[key]).astype("int32") for key in keys}


# --------------------------------------------------------------------------
# The ops


def test_op_list_fixture_is_tensorflow_text_2_12_1(served_ops):
    core, tf_text = served_ops
    assert len(tf_text) == 35 and not tf_text & core
    assert {"CaseFoldUTF8", "NormalizeUTF8", "RegexSplitWithOffsets",
            "FastWordpieceTokenizeWithOffsets", "SentencepieceTokenizeOp"} <= tf_text
    assert "TFText>RoundRobinTrim" not in tf_text | core  # added in TF Text 2.16


def test_the_check_catches_keras_hubs_packer(tiny_dir, tmp_path, served_ops):
    """keras-hub's own preprocessor trims with `TFText>RoundRobinTrim`: what
    tftransfer 0.2's export held, and what the check must refuse."""
    model = tiny(tiny_dir)
    module = tf.Module()
    module.preprocessor = model.preprocessor
    module.serve = tf.function(lambda text: model.preprocessor(text)["token_ids"],
                               input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "keras_hub"))
    assert "TFText>RoundRobinTrim" in unserved(tmp_path / "keras_hub", served_ops)


@pytest.mark.slow
def test_export_uses_core_and_tensorflow_text_2_12_1_ops_only(tiny_dir, tmp_path, served_ops):
    model = tiny(tiny_dir)
    export_dir = tft.export_saved_model(model, tmp_path / "serving")
    assert unserved(export_dir, served_ops) == []
    # The BERT tokenizer's ops (NormalizeUTF8 too where it strips accents).
    assert op_types(export_dir) & served_ops[1] == {
        "CaseFoldUTF8", "RegexSplitWithOffsets", "FastWordpieceTokenizeWithOffsets"}


def test_a_bpe_tokenizers_export_needs_no_other_ops(tmp_path, served_ops):
    model = tiny_roberta(tmp_path / "roberta")
    export_dir = tft.export_saved_model(model, tmp_path / "serving")
    assert unserved(export_dir, served_ops) == []
    assert op_types(export_dir) & served_ops[1] == {"RegexSplitWithOffsets"}


# --------------------------------------------------------------------------
# The packing: keras-hub's numbers, with core ops


@pytest.mark.parametrize("encoder, sequence_length", [
    ("tiny", 8), ("tiny", 32), ("roberta", 8), ("minilm", 16), ("minilm", 128)])
def test_packing_gives_keras_hubs_features(request, tmp_path, encoder, sequence_length):
    if encoder == "roberta":
        model = tiny_roberta(tmp_path, sequence_length=sequence_length)
    else:
        directory = request.getfixturevalue("minilm_dir" if encoder == "minilm" else "tiny_dir")
        model = build_text_classifier(directory, num_classes=2, sequence_length=sequence_length)
    ours = model.text_preprocessing(tf.constant(TEXTS))
    theirs = keras_hub_features(model, TEXTS)
    assert sorted(ours) == sorted(theirs) == model.text_preprocessing.output_keys
    for key, value in ours.items():
        assert value.dtype == tf.int32 and value.shape == (len(TEXTS), sequence_length)
        np.testing.assert_array_equal(value.numpy(), theirs[key], err_msg=key)
    lengths = ours["padding_mask"].numpy().sum(axis=1)
    assert lengths[1] == 2 and lengths.max() == sequence_length  # empty, and cut


def test_pack_text_cuts_adds_special_tokens_and_pads():
    pieces = tf.ragged.constant([[7, 8], [], [5, 6, 7, 8, 9]], dtype=tf.int64)
    packing = TextPacking(sequence_length=5, start_ids=(2,), end_ids=(3, 3), pad_id=1)
    assert packing.max_pieces == 2
    features = pack_text(pieces, packing)
    assert features["token_ids"].numpy().tolist() == [[2, 7, 8, 3, 3], [2, 3, 3, 1, 1],
                                                      [2, 5, 6, 3, 3]]
    assert features["padding_mask"].numpy().tolist() == [[1] * 5, [1, 1, 1, 0, 0], [1] * 5]
    assert features["segment_ids"].numpy().tolist() == [[0] * 5] * 3
    dense = pack_text(tf.constant([[4, 4, 4, 4]]), packing)
    assert dense["token_ids"].numpy().tolist() == [[2, 4, 4, 3, 3]]


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("truncate", ["round_robin", "waterfall"])
def test_pack_text_is_keras_hubs_packer_for_one_segment(padding_side, truncate):
    rng = np.random.default_rng(0)
    pieces = tf.ragged.constant([list(rng.integers(5, 99, size=n)) for n in (0, 1, 3, 6, 7, 20)],
                                dtype=tf.int32)
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=8, start_value=101, end_value=[102, 103], pad_value=0,
        truncate=truncate, padding_side=padding_side)
    token_ids, segment_ids = tf.function(packer)(pieces)
    packing = TextPacking(sequence_length=8, start_ids=(101,), end_ids=(102, 103), pad_id=0,
                          padding_side=padding_side)
    ours = pack_text(pieces, packing)
    np.testing.assert_array_equal(ours["token_ids"], token_ids)
    np.testing.assert_array_equal(ours["segment_ids"], segment_ids)


def test_unknown_packer_is_refused():
    preprocessor = types.SimpleNamespace(packer=keras.layers.Identity())
    with pytest.raises(ValueError, match=r"packs with a Identity.*MultiSegmentPacker and "
                                         r"StartEndPacker.*Received: preprocessor with "
                                         r"packer=Identity"):
        packing_of(preprocessor)


def test_layer_config_is_unchanged_and_keras_file_round_trips(tiny_dir, tmp_path):
    model = tiny(tiny_dir)
    config = model.text_preprocessing.get_config()
    assert set(config) == {"name", "trainable", "dtype", "preprocessor", "output_keys"}
    assert config["preprocessor"]["class_name"] == "BertTextClassifierPreprocessor"
    path = tmp_path / "text.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for key, value in loaded.text_preprocessing(tf.constant(TEXTS)).items():
        np.testing.assert_array_equal(value, keras_hub_features(model, TEXTS)[key])
    np.testing.assert_allclose(loaded.predict(TEXTS, verbose=0), model.predict(TEXTS, verbose=0),
                               atol=1e-6)


# --------------------------------------------------------------------------
# Served from TensorFlow and TensorFlow Text only: Keras's tokens and predictions


def check_served(model, tmp_path, served_ops, atol):
    export_dir = tft.export_saved_model(model, tmp_path / "serving")
    assert unserved(export_dir, served_ops) == []
    tokens_dir = tokenizer_saved_model(model, tmp_path / "tokenizer")
    assert unserved(tokens_dir, served_ops) == []
    served = run_without_tftransfer(SERVE, export_dir, tokens_dir, json.dumps(TEXTS))
    assert served["keras_hub_imported"] is False
    for key, value in model.text_preprocessing(tf.constant(TEXTS)).items():
        np.testing.assert_array_equal(served["tokens"][key], value.numpy(), err_msg=key)
    probabilities = model.predict_proba(np.array(TEXTS, dtype=object), verbose=0)
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=atol)
    assert served["class_ids"] == probabilities.argmax(-1).tolist()


@pytest.mark.slow
def test_served_tokens_and_predictions_are_keras_ones(tiny_dir, tmp_path, served_ops):
    model = tiny(tiny_dir)
    rng = np.random.default_rng(0)  # a random head: probabilities not all equal
    model.head.output_dense.set_weights(
        [rng.normal(size=w.shape) * 3 for w in model.head.output_dense.get_weights()])
    check_served(model, tmp_path, served_ops, atol=1e-6)


@pytest.mark.slow
def test_minilm_served_tokens_and_predictions_are_keras_ones(minilm_dir, tmp_path, served_ops):
    keras.utils.set_random_seed(0)
    model = build_text_classifier(minilm_dir, class_names=["a", "b", "c"], sequence_length=32)
    rng = np.random.default_rng(0)
    model.head.output_dense.set_weights(
        [rng.normal(size=w.shape) for w in model.head.output_dense.get_weights()])
    check_served(model, tmp_path, served_ops, atol=1e-5)
