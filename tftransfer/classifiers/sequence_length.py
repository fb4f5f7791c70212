"""Choosing a text classifier's sequence length from the texts it will see.

A transformer's cost grows with the tokens per text at least linearly, and
mean pooling ignores padding, so padding every text to a fixed 128 tokens
spends time on nothing when the texts are short: the definitions of
``wordnet_glosses`` (benchmarks/results/text_sets.md) have at most 54
all-MiniLM-L6-v2 tokens. `build_text_classifier(..., sequence_length="auto",
texts=...)` tokenizes the given texts and takes the length that holds
`AUTO_COVERAGE` of them whole (special tokens included), rounded up to a
multiple of `AUTO_MULTIPLE`, at most the encoder's maximum.
"""

import numpy as np
import tensorflow as tf

from tftransfer.classifiers.packing import packing_of

AUTO_COVERAGE = 0.99
"""The share of the texts ``sequence_length="auto"`` keeps whole."""

AUTO_MULTIPLE = 8
"""``sequence_length="auto"`` is a multiple of this."""

_CHUNK = 1024


def check_texts(texts):
    """`texts` as a list of `str`, or a ValueError naming the argument."""
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, (list, tuple)) or not texts or not all(
            isinstance(t, str) for t in texts):
        raise ValueError(
            "`texts` must be a non-empty list of strings (e.g. the training texts) for "
            "sequence_length='auto', which measures their token lengths. Received: "
            f"texts of type {type(texts).__name__}")
    return list(texts)


def token_lengths(preprocessor, texts):
    """Tokens per text, start and end tokens included, before any cut."""
    packing = packing_of(preprocessor)
    tokenize = tf.function(preprocessor.tokenizer, reduce_retracing=True)  # the model's path
    lengths = [tokenize(tf.constant(texts[i:i + _CHUNK])).row_lengths().numpy()
               for i in range(0, len(texts), _CHUNK)]
    return np.concatenate(lengths) + len(packing.start_ids) + len(packing.end_ids)


def sequence_length_from_texts(preprocessor, texts, *, maximum=None):
    """The sequence length that keeps `AUTO_COVERAGE` of `texts` whole.

    Example (a tiny BERT; "a good film" is 3 word pieces, 5 tokens with
    ``[CLS]`` and ``[SEP]``):

    >>> from tftransfer.backbones.text import load_text_backbone, tiny_preset
    >>> _, preprocessor = load_text_backbone(tiny_preset(), sequence_length=8)
    >>> sequence_length_from_texts(preprocessor, ["a good film", "bad"])
    8
    """
    lengths = token_lengths(preprocessor, check_texts(texts))
    needed = int(np.ceil(np.quantile(lengths, AUTO_COVERAGE)))
    length = -(-needed // AUTO_MULTIPLE) * AUTO_MULTIPLE
    return length if maximum is None else min(length, int(maximum))
