"""The text side of `export_litert`: token ids in, the tokenizer beside the model.

LiteRT's builtin ops have no strings and no tokenizer: TensorFlow Text's ops are
not builtins, and as TensorFlow ("Flex") ops the `ai-edge-litert` interpreter and
LiteRT on a device without the Flex delegate cannot run them. So, as the
on-device route for BERT classifiers does (LiteRT Task Library's
``BertNLClassifier`` takes a model of int32 token ids, mask and segment ids, and
the WordPiece vocabulary beside it), the file holds the model from token ids to
probabilities, and the directory holds what a device tokenizer needs:
``vocab.txt`` and the tokenizer's settings in ``tftransfer.json``. In Python,
the model's own `TextPreprocessing` makes the token ids (``model.text_preprocessing``);
tests/test_litert_text.py checks that the file then gives Keras's probabilities.
"""

import warnings

import keras

from tftransfer.backbones.text import import_keras_hub
from tftransfer.classifiers.packing import packing_of

VOCABULARY_FILE = "vocab.txt"

_INPUT_DESCRIPTIONS = {
    "token_ids": "WordPiece token ids: start token, the text's first word pieces, end "
                 "token, then the padding id",
    "padding_mask": "1 for a token of the text (start and end included), 0 for padding",
    "segment_ids": "0 everywhere (one text per example)",
}


INT8_REFUSED = (
    "quantization='int8' is not offered for text classifiers: full int8 quantization of a "
    "transformer encoder (layer norms, softmax, GELU in int8) lost too much (on "
    "all-MiniLM-L6-v2, probabilities moved by up to 0.67 from the float model's; see "
    "docs/text.md). Use quantization='dynamic' (int8 weights, float activations, a quarter "
    "of the size) or 'float16' (half). Received: quantization='int8'")
"""The error for ``quantization="int8"`` of a text classifier; measured in
docs/text.md (LiteRT section)."""


def check_text_model(model, quantization):
    """Refuses text models whose tokenizer a device cannot be told how to
    run, and int8 quantization (see `INT8_REFUSED`)."""
    if quantization == "int8":
        raise ValueError(INT8_REFUSED)
    keras_hub = import_keras_hub()
    tokenizer = getattr(model.preprocessor, "tokenizer", None)
    if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        raise ValueError(
            "`export_litert` exports text classifiers with a WordPiece tokenizer (BERT, "
            "MiniLM, DistilBERT, ...): LiteRT has no tokenizer ops, so the file takes token "
            "ids and the directory holds the WordPiece vocabulary (vocab.txt) that device "
            "tokenizers read. For other tokenizers, export a SavedModel "
            "(`export_saved_model`), which tokenizes inside the graph. Received: a model "
            f"with tokenizer {type(tokenizer).__name__}")


def input_names(model):
    """The LiteRT signature's inputs, in their order: the features the
    encoder and the pooling need."""
    return list(model.text_preprocessing.output_keys)


def token_ids_model(model):
    """The classifier after its tokenizer: ``{name: int32 [batch,
    sequence_length]}`` in, ``{"probabilities": ...}`` out, sharing its
    weights."""
    layer = model.text_preprocessing
    features = keras.tree.pack_sequence_as({key: 0 for key in layer.output_keys}, layer.output)
    with warnings.catch_warnings():
        # Keras warns that the dict keys are not the intermediate tensors' names;
        # the named inputs below are what the file's signature shows.
        warnings.simplefilter("ignore", UserWarning)
        after_tokenizer = keras.Model(features, model.probabilities(model.outputs[0]),
                                      name=f"{model.name}_after_tokenizer")
    inputs = {key: keras.Input((model.sequence_length,), dtype="int32", name=key)
              for key in layer.output_keys}
    return keras.Model(inputs, {"probabilities": after_tokenizer(inputs)},
                       name=f"{model.name}_token_ids")


def write_vocabulary(directory, model):
    """``vocab.txt``: the WordPiece vocabulary, one token a line, line i
    being token id i (the format of BERT checkpoints and device tokenizers)."""
    vocabulary = model.preprocessor.tokenizer.get_vocabulary()
    with open(f"{directory}/{VOCABULARY_FILE}", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{token}\n" for token in vocabulary)


def text_metadata(model):
    """The text-specific part of a LiteRT export's ``tftransfer.json``."""
    tokenizer = model.preprocessor.tokenizer
    packing = packing_of(model.preprocessor)
    shape = [None, model.sequence_length]
    return {
        "inputs": [{"name": name, "dtype": "int32", "shape": shape,
                    "description": _INPUT_DESCRIPTIONS.get(name, "")}
                   for name in input_names(model)],
        "tokenizer": {
            "type": "WordPiece",
            "keras_hub_class": type(tokenizer).__name__,
            "vocabulary_file": VOCABULARY_FILE,
            "vocabulary_size": int(tokenizer.vocabulary_size()),
            "lowercase": bool(tokenizer.lowercase),
            "strip_accents": bool(tokenizer.strip_accents),
            "split_on_punctuation": bool(tokenizer.split),
            "split_on_cjk": bool(tokenizer.split_on_cjk),
            "suffix_indicator": tokenizer.suffix_indicator,
            "unknown_token": tokenizer.oov_token,
            "unknown_token_id": int(tokenizer.token_to_id(tokenizer.oov_token)),
            "max_bytes_per_word": 100,
            "sequence_length": packing.sequence_length,
            "max_word_pieces": packing.max_pieces,
            "start_token_ids": list(packing.start_ids),
            "end_token_ids": list(packing.end_ids),
            "pad_token_id": packing.pad_id,
            "padding_side": packing.padding_side,
            "truncation": f"the first {packing.max_pieces} word pieces of the text",
        },
        "pooling": model.pooling,
    }
