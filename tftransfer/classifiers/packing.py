"""Packing one text's word pieces into an encoder's fixed-length inputs, with core TensorFlow ops.

keras-hub's text classifier preprocessors tokenize, then pack with a
``MultiSegmentPacker``, whose default trimmer, TensorFlow Text's
``RoundRobinTrimmer``, runs the op ``TFText>RoundRobinTrim``, added after
TensorFlow Text 2.12. Stock TF Serving images embed TensorFlow Text 2.12.1
(tensorflow/serving PR #4057), so a SavedModel holding it fails there with "Op
type not registered 'TFText>RoundRobinTrim'".

For a single text per example, which is all a `TextClassifier` packs, both
trimmers keep the first ``sequence_length - len(start) - len(end)`` word
pieces, so the packing here does the same with a ragged slice, adds the start
and end tokens, pads with ``RaggedTensor.to_tensor`` and derives the padding
mask and segment ids: core ops only, the same numbers as keras-hub's packer
(tests/test_text_serving.py compares them). The word pieces still come from
the keras-hub tokenizer, whose WordPiece ops (``NormalizeUTF8``,
``CaseFoldUTF8``, ``RegexSplitWithOffsets``, ``FastWordpieceTokenizeWithOffsets``)
TensorFlow Text 2.12.1 has.
"""

import dataclasses

import tensorflow as tf

_PACKERS = ("MultiSegmentPacker", "StartEndPacker")


@dataclasses.dataclass(frozen=True)
class TextPacking:
    """How one text's word pieces become an encoder's inputs.

    Attributes:
        sequence_length: tokens per text, special tokens included.
        start_ids: token ids put before the word pieces (BERT: ``[CLS]``).
        end_ids: token ids put after them (BERT: ``[SEP]``).
        pad_id: the id that fills the positions after the text; the padding
            mask is 0 where a token equals it (as keras-hub computes it).
        padding_side: ``"right"`` (keras-hub's default) or ``"left"``.
    """

    sequence_length: int
    start_ids: tuple
    end_ids: tuple
    pad_id: int
    padding_side: str = "right"

    @property
    def max_pieces(self):
        """Word pieces kept per text: the first this many."""
        return self.sequence_length - len(self.start_ids) - len(self.end_ids)


def _ids(value):
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def packing_of(preprocessor):
    """The `TextPacking` of a keras-hub text classifier preprocessor, read
    from its packer (built first, if the preprocessor has not run yet: its
    packer is made in ``build``, once the vocabulary is there)."""
    if getattr(preprocessor, "packer", None) is None:
        preprocessor.build(None)
    packer = preprocessor.packer
    if type(packer).__name__ not in _PACKERS:
        raise ValueError(
            f"The text preprocessor {type(preprocessor).__name__} packs with a "
            f"{type(packer).__name__}; tftransfer packs single texts itself and knows the "
            f"settings of keras-hub's {' and '.join(_PACKERS)} only. Received: "
            f"preprocessor with packer={type(packer).__name__}")
    pad_id = packer.pad_value if packer.pad_value is not None else 0
    return TextPacking(
        sequence_length=int(packer.sequence_length),
        start_ids=_ids(packer.start_value),
        end_ids=_ids(packer.end_value),
        pad_id=int(pad_id),
        padding_side=getattr(packer, "padding_side", "right"),
    )


def pack_text(pieces, packing):
    """Packs word pieces, one row per text, into fixed-length features.

    Example:

    >>> packing = TextPacking(sequence_length=6, start_ids=(2,), end_ids=(3,), pad_id=0)
    >>> features = pack_text(tf.ragged.constant([[7, 8], [5, 6, 7, 8, 9]]), packing)
    >>> features["token_ids"].numpy().tolist()
    [[2, 7, 8, 3, 0, 0], [2, 5, 6, 7, 8, 3]]
    >>> features["padding_mask"].numpy().tolist()
    [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]

    Args:
        pieces: int word piece ids ``[batch, (pieces)]``, a `tf.RaggedTensor`
            (or a dense tensor, every row full).
        packing: a `TextPacking`.

    Returns:
        ``{"token_ids", "padding_mask", "segment_ids"}``, int32
        ``[batch, sequence_length]``.
    """
    if not isinstance(pieces, tf.RaggedTensor):
        pieces = tf.RaggedTensor.from_tensor(pieces)
    pieces = tf.cast(pieces, tf.int32)[:, : packing.max_pieces]
    batch = pieces.nrows(out_type=tf.int32)
    parts = [pieces]
    if packing.start_ids:
        parts.insert(0, tf.tile(tf.constant([packing.start_ids], tf.int32), [batch, 1]))
    if packing.end_ids:
        parts.append(tf.tile(tf.constant([packing.end_ids], tf.int32), [batch, 1]))
    tokens = tf.concat(parts, axis=1) if len(parts) > 1 else pieces
    shape = [None, packing.sequence_length]
    if packing.padding_side == "left":
        token_ids = tokens[:, ::-1].to_tensor(packing.pad_id, shape=shape)[:, ::-1]
    else:
        token_ids = tokens.to_tensor(packing.pad_id, shape=shape)
    return {
        "token_ids": token_ids,
        "padding_mask": tf.cast(tf.not_equal(token_ids, packing.pad_id), tf.int32),
        # One text per example: every token is segment 0, padding too.
        "segment_ids": tf.zeros_like(token_ids),
    }
