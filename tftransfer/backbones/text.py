"""Text encoders from keras-hub presets, handles and local Hugging Face directories."""

import difflib
import json
import logging
import os
import tempfile

import keras

from tftransfer.errors import WeightsUnavailableError

logger = logging.getLogger(__name__)


_INSTALL_HINT = 'pip install "tftransfer[text]" (or: pip install keras-hub)'


def import_keras_hub():
    """Imports keras-hub (which also registers its layers for loading)."""
    try:
        import keras_hub
    except ImportError as err:
        raise ImportError(
            f"Text classification needs keras-hub, which is not installed: {_INSTALL_HINT}"
        ) from err
    return keras_hub


def _looks_like_path(spec):
    return (
        os.path.isabs(spec)
        or spec.startswith(("./", "../", "~"))
        or os.sep in spec
        or (os.altsep is not None and os.altsep in spec)
    )


def _text_preprocessor_class(keras_hub, backbone_cls):
    """The keras-hub ``TextClassifierPreprocessor`` subclass for a backbone
    class, or None."""
    pending = [keras_hub.models.TextClassifierPreprocessor]
    while pending:
        cls = pending.pop()
        if getattr(cls, "backbone_cls", None) is backbone_cls:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def _wordpiece_from_tokenizer_json(keras_hub, directory, tokenizer_cls):
    """A WordPiece tokenizer from a Hugging Face ``tokenizer.json`` (for a
    directory that has it but no ``vocab.txt``), or None."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path) or not issubclass(
        tokenizer_cls, keras_hub.tokenizers.WordPieceTokenizer
    ):
        return None
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    model = spec.get("model") or {}
    if model.get("type") != "WordPiece" or not model.get("vocab"):
        return None
    vocabulary = [token for token, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    normalizer = spec.get("normalizer") or {}
    return tokenizer_cls(vocabulary=vocabulary, lowercase=bool(normalizer.get("lowercase")))


def _no_tokenizer_error(spec, err):
    return ValueError(
        f"No tokenizer found for the text backbone {spec!r} ({err}). A Hugging Face "
        "directory needs its tokenizer files beside config.json and "
        "model.safetensors: vocab.txt and tokenizer_config.json for BERT-style "
        "models (or a tokenizer.json with a WordPiece model), as `huggingface-cli "
        "download` writes them; a keras-hub directory needs tokenizer.json and "
        f"assets/ from `save_to_preset`. Received: backbone={spec!r}"
    )


def _load_local(keras_hub, spec, sequence_length):
    if not os.path.isfile(os.path.join(spec, "config.json")):
        raise ValueError(
            f"{spec!r} is not a model directory: it has no config.json. Pass a "
            "directory in Hugging Face format (config.json, model.safetensors, "
            "vocab.txt, ...) or one written by keras-hub's `save_to_preset`. "
            f"Received: backbone={spec!r}"
        )
    try:
        backbone = keras_hub.models.Backbone.from_preset(spec)
    except FileNotFoundError as err:
        raise ValueError(
            f"Could not load the weights of the text backbone in {spec!r} ({err}). "
            "keras-hub reads Hugging Face weights from model.safetensors (not "
            f"pytorch_model.bin). Received: backbone={spec!r}"
        ) from err
    preprocessor_cls = _text_preprocessor_class(keras_hub, type(backbone))
    if preprocessor_cls is None:
        raise _not_text_error(spec, backbone)
    try:
        preprocessor = preprocessor_cls.from_preset(spec, sequence_length=sequence_length)
    except FileNotFoundError as err:
        tokenizer = _wordpiece_from_tokenizer_json(keras_hub, spec, preprocessor_cls.tokenizer_cls)
        if tokenizer is None:
            raise _no_tokenizer_error(spec, err) from err
        logger.info("%s: no vocab.txt; using the WordPiece vocabulary of tokenizer.json", spec)
        preprocessor = preprocessor_cls(tokenizer=tokenizer, sequence_length=sequence_length)
    return backbone, preprocessor


def _not_text_error(spec, backbone):
    return ValueError(
        f"{spec!r} is not a text backbone keras-hub can classify with: it loads as a "
        f"{type(backbone).__name__}, which has no text classification preprocessor. "
        "Use `tftransfer.build_classifier` for image backbones. "
        f"Received: backbone={spec!r}"
    )


def _unreachable_error(spec, err):
    return WeightsUnavailableError(
        f"Could not load the text backbone {spec!r} ({type(err).__name__}: {err}). "
        "It must be downloaded, and this machine may be offline (or the handle "
        "may not exist). On a machine with internet, fetch it into a directory "
        "(for a Hugging Face model: `huggingface-cli download ORG/MODEL "
        "--local-dir DIR`; for a keras-hub preset: `keras_hub.models."
        "TextClassifier.from_preset(...)` then `.save_to_preset(DIR)`) and pass "
        f"that directory: backbone='DIR'. Received: backbone={spec!r}"
    )


def _load_remote(keras_hub, spec, sequence_length):
    is_handle = "://" in spec
    if not is_handle:
        known = sorted(keras_hub.models.TextClassifierPreprocessor.presets)
        if spec not in known:
            close = difflib.get_close_matches(spec, known, n=5, cutoff=0.5)
            raise ValueError(
                f"Unknown text backbone {spec!r}: not a keras-hub text preset, a "
                "handle ('hf://org/model', 'kaggle://...') or an existing directory."
                + (f" Close matches: {', '.join(close)}." if close else "")
                + f" Received: backbone={spec!r}"
            )
    try:
        backbone = keras_hub.models.Backbone.from_preset(spec)
    except (OSError, ValueError) as err:
        raise _unreachable_error(spec, err) from err
    preprocessor_cls = _text_preprocessor_class(keras_hub, type(backbone))
    if preprocessor_cls is None:
        raise _not_text_error(spec, backbone)
    try:
        preprocessor = preprocessor_cls.from_preset(spec, sequence_length=sequence_length)
    except (OSError, ValueError) as err:
        raise _unreachable_error(spec, err) from err
    return backbone, preprocessor


def load_text_backbone(backbone, *, sequence_length=128):
    """Loads a text encoder and its preprocessor (tokenizer, packing).

    Args:
        backbone: a keras-hub preset name (``"bert_tiny_en_uncased"``), a
            handle (``"hf://ORG/MODEL"``, ``"kaggle://..."``), or a local
            directory in Hugging Face format (``config.json``,
            ``model.safetensors``, ``vocab.txt`` + ``tokenizer_config.json``
            or ``tokenizer.json``) or keras-hub format.
        sequence_length: texts are cut (or padded) to this many tokens,
            special tokens included.

    Returns:
        ``(backbone, preprocessor)``: a keras-hub ``Backbone`` and its
        ``TextClassifierPreprocessor``.

    Raises:
        ValueError: an unknown name (with close matches), a directory
            without config.json or without a tokenizer, a backbone that is
            not a text model, a `sequence_length` that is not an integer of
            at least 3 or exceeds the backbone's maximum; a
            `WeightsUnavailableError` (a ValueError) for a preset or handle
            that cannot be downloaded.
        ImportError: keras-hub is not installed.

    Example (a tiny random BERT saved as a keras-hub preset directory):

    >>> encoder, preprocessor = load_text_backbone(tiny_preset(), sequence_length=8)
    >>> type(encoder).__name__, preprocessor(["a good film"])["token_ids"].shape
    ('BertBackbone', TensorShape([1, 8]))
    """
    if not isinstance(backbone, (str, os.PathLike)):
        raise TypeError(
            "`backbone` must be a keras-hub preset name, a handle ('hf://ORG/MODEL') "
            "or the path of a local model directory. Received: "
            f"backbone={backbone!r} of type {type(backbone).__name__}"
        )
    _check_sequence_length(sequence_length)
    keras_hub = import_keras_hub()
    spec = os.fspath(backbone)
    if os.path.isdir(os.path.expanduser(spec)):
        encoder, preprocessor = _load_local(keras_hub, os.path.expanduser(spec), sequence_length)
    elif "://" not in spec and _looks_like_path(spec):
        raise ValueError(
            f"The text backbone directory {spec!r} does not exist. Pass an existing "
            "directory (config.json, model.safetensors, vocab.txt), a keras-hub "
            f"preset name or an 'hf://ORG/MODEL' handle. Received: backbone={spec!r}"
        )
    else:
        encoder, preprocessor = _load_remote(keras_hub, spec, sequence_length)
    logger.info("Loaded text backbone %s: %s, tokenizer %s", spec, type(encoder).__name__,
                type(getattr(preprocessor, "tokenizer", None)).__name__)
    maximum = getattr(encoder, "max_sequence_length", None)
    if maximum is not None and sequence_length > maximum:
        raise ValueError(
            f"`sequence_length` must be at most {maximum}, the longest sequence "
            f"backbone {spec!r} was trained for. Received: sequence_length={sequence_length}"
        )
    return encoder, preprocessor


def _check_sequence_length(sequence_length):
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or (
        sequence_length < 3
    ):
        raise ValueError(
            "`sequence_length` must be an integer of at least 3 (tokens per text, "
            "the [CLS] and [SEP] tokens included), e.g. 128. "
            f"Received: sequence_length={sequence_length!r}"
        )


def tiny_preset(directory=None):
    """Writes a tiny randomly initialized BERT (2 layers, 8 features, a
    dozen-word vocabulary) as a keras-hub preset directory; for examples and
    tests. Returns the directory."""
    keras_hub = import_keras_hub()
    directory = directory or tempfile.mkdtemp(prefix="tiny-bert-")
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film",
                  "book", "great", "awful", "the", "is", ",", "."]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32,
    )
    backbone.save_to_preset(directory)
    tokenizer.save_to_preset(directory)
    return directory
