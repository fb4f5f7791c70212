"""The layers a text classifier adds around its encoder: tokenizing and pooling."""

import copy

import keras
import tensorflow as tf

from tftransfer.backbones.text import import_keras_hub
from tftransfer.classifiers.head import check_head_options
from tftransfer.classifiers.packing import pack_text
from tftransfer.classifiers.packing import packing_of

POOLING_MODES = ("mean", "cls")
"""How `TextClassifier` turns token vectors into one vector per text:
``"mean"`` averages the non-padding tokens (what sentence-embedding models
such as all-MiniLM-L6-v2 are trained for), ``"cls"`` takes the first
(``[CLS]``) token."""


TRANSFORMER_BLOCK_PATTERN = r"^([a-z_]*layer_\d+)$"
"""Block pattern of text encoders: keras-hub names its transformer layers
``transformer_layer_0``, ``transformer_layer_1``, ... (``f_net_layer_0`` ...
for FNet); the embedding layers below them join the first block."""


@keras.saving.register_keras_serializable(package="tftransfer")
class TextPreprocessing(keras.layers.Layer):
    """Tokenizes strings with a keras-hub preprocessor's tokenizer and packs
    them, as a layer of a functional model: strings in, integer features out.

    The word pieces come from the preprocessor's tokenizer; the packing
    (cut to the sequence length, start and end tokens, padding, padding mask,
    segment ids) is `tftransfer.classifiers.packing.pack_text`, with the
    settings of the preprocessor's packer. It gives the numbers keras-hub's
    preprocessor gives for one text per example, with core TensorFlow ops
    only, where keras-hub's packer trims with ``TFText>RoundRobinTrim``, an
    op that the TensorFlow Text inside stock TF Serving images (2.12.1) lacks.
    `fit`, `predict`, the SavedModel export and the token ids a LiteRT export
    takes all come from this one code path.

    The tokenizer only runs on real strings. For symbolic inputs the output
    spec is known without it (``(batch, sequence_length)`` integers per key),
    so the model can be rebuilt from its config before the tokenizer's
    vocabulary is restored from a `.keras` file's assets.

    Args:
        preprocessor: a keras-hub ``TextClassifierPreprocessor``.
        output_keys: the features to pass on, e.g. ``["token_ids",
            "segment_ids", "padding_mask"]``; all come out as int32.
    """

    def __init__(self, preprocessor, output_keys, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.preprocessor = preprocessor
        self.output_keys = list(output_keys)
        self.sequence_length = preprocessor.sequence_length

    def build(self, input_shape=None):
        self.built = True

    def call(self, text):
        if tf.executing_eagerly():
            # keras-hub tokenizes eagerly with a Python implementation and in
            # graphs with TensorFlow Text ops, which can disagree (e.g. on
            # characters outside a BPE vocabulary); always take the graph path,
            # the one `fit`, `predict` and the export take.
            return _tokenize_in_graph(self, tf.convert_to_tensor(text, tf.string))
        return self._tokenize(text)

    def _tokenize(self, text):
        packing = packing_of(self.preprocessor)
        scalar = text.shape.rank == 0
        pieces = self.preprocessor.tokenizer(text[None] if scalar else text)
        features = pack_text(pieces, packing)
        return {key: features[key][0] if scalar else features[key] for key in self.output_keys}

    def compute_output_spec(self, text):
        shape = (text.shape[0], self.sequence_length)
        return {key: keras.KerasTensor(shape, dtype="int32") for key in self.output_keys}

    def get_config(self):
        config = super().get_config()
        config.update(
            preprocessor=keras.layers.serialize(self.preprocessor),
            output_keys=self.output_keys,
        )
        return config

    @classmethod
    def from_config(cls, config):
        import_keras_hub()
        config = copy.deepcopy(config)  # deserializing consumes nested configs
        config["preprocessor"] = keras.layers.deserialize(config["preprocessor"])
        return cls(**config)


@tf.function(reduce_retracing=True)
def _tokenize_in_graph(layer, text):
    return layer._tokenize(text)


@keras.saving.register_keras_serializable(package="tftransfer")
class TokenPooling(keras.layers.Layer):
    """Pools token vectors ``(batch, tokens, features)`` into text vectors
    ``(batch, features)``: the mean over non-padding tokens, or the first
    token.

    Example:

    >>> tokens = np.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    >>> mask = np.array([[1, 1, 0]])
    >>> TokenPooling("mean")(tokens, mask).numpy().tolist()
    [[2.0, 3.0]]
    >>> TokenPooling("cls")(tokens, mask).numpy().tolist()
    [[1.0, 2.0]]
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        _check_pooling(mode)
        self.mode = mode

    def call(self, tokens, padding_mask):
        if self.mode == "cls":
            return tokens[:, 0, :]
        mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, tokens.dtype), -1)
        count = keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
        return keras.ops.sum(tokens * mask, axis=1) / count

    def compute_output_shape(self, tokens_shape, padding_mask_shape=None):
        return (tokens_shape[0], tokens_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _check_pooling(pooling):
    if pooling not in POOLING_MODES:
        raise ValueError(
            f"`pooling` must be one of {POOLING_MODES} for a text classifier "
            "('mean' for sentence-embedding models such as MiniLM, 'cls' for the "
            f"first token). Received: pooling={pooling!r}"
        )


def check_text_head_options(*, pooling, **head_options):
    """Validates a text classifier's pooling and head options."""
    _check_pooling(pooling)
    check_head_options(**head_options)
