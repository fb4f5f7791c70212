"""Text classification over pretrained keras-hub encoders: strings in, classes out.

`build_text_classifier` loads a transformer encoder and its tokenizer from a
keras-hub preset name (``"bert_tiny_en_uncased"``), a Hugging Face handle
(``"hf://sentence-transformers/all-MiniLM-L6-v2"``) or a local directory in
Hugging Face format (``config.json``, ``model.safetensors`` and the
tokenizer files, e.g. ``vocab.txt``) or keras-hub format (a directory written
by ``save_to_preset``), and puts a new dense head on top.

The tokenizer is **inside** the model: `TextClassifier` takes raw strings, in
`fit`, `predict` and in the exported SavedModel, whose ``serving_default``
signature takes a string tensor ``text`` and tokenizes in the graph. The
tokenizer runs TensorFlow Text ops, so a process that loads the export needs
``import tensorflow_text`` (which registers them) before
``tf.saved_model.load``; it does not need keras-hub or tftransfer.

The encoder's transformer layers (``transformer_layer_0`` ...) are the blocks
that `tftransfer.unfreeze_top_blocks` and `tftransfer.fit_two_phase` count from
the top; the embeddings belong to the lowest block. keras-hub is an optional
dependency (``pip install "tftransfer[text]"``), imported when a text model is
built or loaded.
"""

import copy
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from tftransfer.backbones import WeightsUnavailableError
from tftransfer.backbones import get_blocks
from tftransfer.builders import _Classifier
from tftransfer.builders import _InferenceModeCall
from tftransfer.builders import _check_head_options
from tftransfer.builders import _resolve_class_names

logger = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls")
"""How `TextClassifier` turns token vectors into one vector per text:
``"mean"`` averages the non-padding tokens (what sentence-embedding models
such as all-MiniLM-L6-v2 are trained for), ``"cls"`` takes the first
(``[CLS]``) token."""

TRANSFORMER_BLOCK_PATTERN = r"^([a-z_]*layer_\d+)$"
"""Block pattern of text encoders: keras-hub names its transformer layers
``transformer_layer_0``, ``transformer_layer_1``, ... (``f_net_layer_0`` ...
for FNet); the embedding layers below them join the first block."""

SIGNATURE_INPUT = "text"
_INSTALL_HINT = 'pip install "tftransfer[text]" (or: pip install keras-hub)'


def _keras_hub():
    """Imports keras-hub (which also registers its layers for loading)."""
    try:
        import keras_hub
    except ImportError as err:
        raise ImportError(
            f"Text classification needs keras-hub, which is not installed: {_INSTALL_HINT}"
        ) from err
    return keras_hub


@keras.saving.register_keras_serializable(package="tftransfer")
class TextPreprocessing(keras.layers.Layer):
    """Runs a keras-hub preprocessor (tokenizer, packing, padding) as a layer
    of a functional model: strings in, integer features out.

    The wrapped preprocessor only runs on real strings. For symbolic inputs
    the output spec is known without it (``(batch, sequence_length)``
    integers per key), so the model can be rebuilt from its config before
    the tokenizer's vocabulary is restored from a `.keras` file's assets.

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
        features = self.preprocessor(text)
        return {key: tf.cast(features[key], tf.int32) for key in self.output_keys}

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
        _keras_hub()
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


def _check_text_head_options(pooling, dropout, activation, multi_label, hidden_units):
    _check_pooling(pooling)
    _check_head_options(dropout, activation, multi_label, hidden_units)


def _sequence_encoder(backbone):
    """The part of `backbone` that maps features to token vectors.

    A keras-hub backbone with a ``sequence_output`` and a ``pooled_output``
    (BERT's pooler) is cut below the pooler, which no pooling mode here uses:
    left in, its weights would get no gradients when unfrozen.
    """
    outputs = backbone.output
    if isinstance(outputs, dict):
        if "sequence_output" not in outputs:
            raise ValueError(
                "`backbone` must output token vectors (batch, tokens, features), or "
                "a dict with 'sequence_output'. Received: a backbone with outputs "
                f"{sorted(outputs)}"
            )
        backbone = keras.Model(backbone.input, outputs["sequence_output"], name=backbone.name)
    elif len(backbone.output.shape) != 3:
        raise ValueError(
            "`backbone` must output token vectors (batch, tokens, features). "
            f"Received: a backbone with output shape {backbone.output.shape}"
        )
    return backbone


def _as_text(x):
    """Lists and NumPy arrays of `str` as object arrays, which Keras feeds
    as `tf.string` (it rejects NumPy's fixed-width unicode arrays)."""
    if isinstance(x, (list, tuple)) and x and all(isinstance(s, (str, bytes)) for s in x):
        return np.array(x, dtype=object)
    if isinstance(x, np.ndarray) and x.dtype.kind in "US":
        return x.astype(object)
    return x


@keras.saving.register_keras_serializable(package="tftransfer")
class TextClassifier(_Classifier):
    """A pretrained text encoder, its tokenizer and a new dense head.

    The model takes raw strings: a `TextPreprocessing` layer tokenizes them
    inside the model, the encoder (frozen after construction) maps the
    tokens to vectors, `TokenPooling` pools them (``"mean"`` over the
    non-padding tokens, or the ``"cls"`` token), and dense layers classify.
    The encoder always runs in inference mode, also inside `fit` (as for
    `ImageClassifier`), so its own dropout stays off in both training
    phases; the head's `dropout` regularizes.

    `fit`, `evaluate` and `predict` accept lists or NumPy arrays of `str`,
    string tensors and `tf.data` datasets of ``(text, label)``; calling the
    model directly takes a string tensor.

    Prefer `build_text_classifier`, which loads the encoder and the tokenizer
    by name, handle or directory.

    Args:
        backbone: a keras-hub text backbone (its ``sequence_output`` is used)
            or any `keras.Model` from the preprocessor's features to token
            vectors ``(batch, tokens, features)``.
        preprocessor: the matching keras-hub ``TextClassifierPreprocessor``
            (tokenizer and sequence length).
        num_classes, class_names, hidden_units, hidden_activation, dropout,
        activation, multi_label: as for `ImageClassifier`.
        pooling: ``"mean"`` or ``"cls"``.
        backbone_source: where the backbone came from (preset, handle or
            directory), recorded in the export's metadata.

    Attributes:
        backbone: the encoder, frozen after construction; its
            ``block_pattern`` makes its transformer layers the blocks.
        preprocessor: the keras-hub preprocessor.
        class_names, num_classes, training_summary: as for `ImageClassifier`.
    """

    def __init__(
        self,
        *,
        backbone,
        preprocessor,
        num_classes=None,
        class_names=None,
        pooling="mean",
        hidden_units=(),
        hidden_activation="relu",
        dropout=0.1,
        activation=None,
        multi_label=False,
        backbone_source=None,
        **kwargs,
    ):
        class_names = _resolve_class_names(num_classes, class_names)
        _check_text_head_options(pooling, dropout, activation, multi_label, hidden_units)
        if not isinstance(backbone, keras.Model):
            raise TypeError(
                "`backbone` must be a `keras.Model` (use `build_text_classifier` to "
                "load one by name, handle or directory). Received: "
                f"backbone={backbone!r} of type {type(backbone).__name__}"
            )
        if not isinstance(preprocessor, keras.layers.Layer) or not hasattr(
            preprocessor, "sequence_length"
        ):
            raise TypeError(
                "`preprocessor` must be a keras-hub `TextClassifierPreprocessor` (a "
                "tokenizer with a sequence length). Received: "
                f"preprocessor={preprocessor!r} of type {type(preprocessor).__name__}"
            )

        # === Layers ===
        self.backbone = _sequence_encoder(backbone)
        if getattr(self.backbone, "block_pattern", None) is None:
            self.backbone.block_pattern = TRANSFORMER_BLOCK_PATTERN
        feature_keys = list(self.backbone.input) if isinstance(self.backbone.input, dict) else []
        self.text_preprocessing = TextPreprocessing(
            preprocessor,
            output_keys=sorted(set(feature_keys or ["token_ids"]) | {"padding_mask"}),
            name="text_preprocessing",
        )
        self.pooler = TokenPooling(pooling, name="pooling")
        self._make_head(len(class_names), hidden_units, hidden_activation, dropout, activation)

        # === Functional model ===
        inputs = keras.Input(shape=(), dtype="string", name=SIGNATURE_INPUT)
        features = self.text_preprocessing(inputs)
        # In inference mode also inside `fit` (dropout off), as for images.
        frozen_call = _InferenceModeCall(self.backbone, name="frozen_backbone_call")
        if feature_keys:
            tokens = frozen_call({k: features[k] for k in feature_keys})
        else:
            tokens = frozen_call(features["token_ids"])
        outputs = self._apply_head(self.pooler(tokens, features["padding_mask"]))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # Frozen after wiring, by way of True: a backbone rebuilt from a frozen
        # config has layers marked non-trainable whose sublayers `build`
        # created trainable, and under TensorFlow `layer.trainable = False` on
        # a layer that is False already returns early, not reaching them.
        self.backbone.trainable = True
        self.backbone.trainable = False

        # === Config ===
        self._store_head_config(class_names, pooling, hidden_units, hidden_activation, dropout,
                                activation, multi_label)
        self.backbone_source = backbone_source

    @property
    def preprocessor(self):
        """The keras-hub preprocessor (tokenizer, packing) inside the model."""
        # Held by the layer only: it is built on its first real call, once
        # its vocabulary is there (after a `.keras` file's assets load).
        return self.text_preprocessing.preprocessor

    @property
    def sequence_length(self):
        """Texts are cut (or padded) to this many tokens."""
        return self.preprocessor.sequence_length

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        """`keras.Model.fit`; `x` (and the validation texts) may also be a
        list or a NumPy array of `str`."""
        if isinstance(validation_data, tuple) and validation_data:
            validation_data = (_as_text(validation_data[0]), *validation_data[1:])
        return super().fit(_as_text(x), y, *args, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`, also for a list or a NumPy array of `str`."""
        return super().evaluate(_as_text(x), y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, also for a list or a NumPy array of `str`."""
        return super().predict(_as_text(x), *args, **kwargs)

    def predict_proba(self, x, **kwargs):
        """`predict`, turned into probabilities whatever the output activation.

        Example (a tiny random encoder; see `build_text_classifier`):

        >>> model = build_text_classifier(_tiny_preset(), class_names=["a", "b"],
        ...                               sequence_length=8)
        >>> model.predict_proba(["good", "bad film"], verbose=0).shape
        (2, 2)
        """
        return super().predict_proba(x, **kwargs)

    def serving_spec(self):
        """How `tftransfer.export_saved_model` serves this model: raw strings
        (``text``, `tf.string` ``[batch]``) in, tokenized inside the graph."""
        from tftransfer.export import ServingSpec

        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        return ServingSpec(
            input_name=SIGNATURE_INPUT,
            input_signature=tf.TensorSpec([None], tf.string, name=SIGNATURE_INPUT),
            forward=lambda text: self(tf.convert_to_tensor(text, tf.string), training=False),
            example=np.array(["An example sentence.", "another, shorter one"], dtype=object),
            description=(
                "raw UTF-8 strings, one text per example; tokenized inside the graph "
                "with TensorFlow Text ops (import tensorflow_text before loading)"
            ),
            backbone={
                "name": self.backbone.name,
                "source": self.backbone_source,
                "tokenizer": type(tokenizer).__name__ if tokenizer is not None else None,
                "sequence_length": self.sequence_length,
                "pooling": self.pooling,
                "blocks": list(get_blocks(self.backbone)),
                "requires": ["tensorflow", "tensorflow_text"],
            },
        )

    def get_config(self):
        return {
            **self._head_config(),
            "preprocessor": keras.layers.serialize(self.preprocessor),
            "backbone_source": self.backbone_source,
        }

    @classmethod
    def from_config(cls, config):
        _keras_hub()  # registers keras-hub's layers
        config = copy.deepcopy(config)  # deserializing consumes nested configs
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        config["preprocessor"] = keras.layers.deserialize(config["preprocessor"])
        return cls(**config)


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
    import json

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
            import difflib

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

    >>> encoder, preprocessor = load_text_backbone(_tiny_preset(), sequence_length=8)
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
    keras_hub = _keras_hub()
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


def build_text_classifier(
    backbone,
    *,
    num_classes=None,
    class_names=None,
    pooling="mean",
    sequence_length=128,
    hidden_units=(),
    hidden_activation="relu",
    dropout=0.1,
    activation=None,
    multi_label=False,
    name=None,
):
    """Builds a text classifier: a frozen pretrained encoder, its tokenizer
    and a new dense head; strings in, class scores out.

    Args:
        backbone: a keras-hub preset name (``"bert_tiny_en_uncased"``), a
            handle (``"hf://sentence-transformers/all-MiniLM-L6-v2"``), or a
            local directory in Hugging Face format (``config.json``,
            ``model.safetensors``, ``vocab.txt``) or keras-hub format. A
            preset or handle is downloaded (and cached) once; offline, pass
            a directory.
        num_classes: number of classes (or give `class_names`).
        class_names: class names, in label order; they travel with the model
            into the export.
        pooling: ``"mean"`` (the mean over non-padding tokens: what
            sentence-embedding models like MiniLM are trained for) or
            ``"cls"`` (the first token).
        sequence_length: texts are cut (or padded) to this many tokens.
        hidden_units, hidden_activation, dropout, activation, multi_label:
            the head, as for `tftransfer.build_classifier`.
        name: model name. Default: ``"<architecture>_text_classifier"``.

    Returns:
        A `TextClassifier` (a `keras.Model` taking strings), compiled with
        the `"auto"` defaults and its encoder frozen. Train it with
        `tftransfer.fit_two_phase`: the blocks are the transformer layers.

    Example (a tiny random BERT saved as a keras-hub preset directory; for
    real use pass e.g. the directory of all-MiniLM-L6-v2):

    >>> model = build_text_classifier(_tiny_preset(), class_names=["neg", "pos"],
    ...                               sequence_length=8)
    >>> model.predict(["a good film", "bad"], verbose=0).shape
    (2, 2)
    >>> tft.get_blocks(model.backbone).keys()
    odict_keys(['transformer_layer_0', 'transformer_layer_1'])
    """
    # Check the cheap arguments before loading weights.
    class_names = _resolve_class_names(num_classes, class_names)
    _check_text_head_options(pooling, dropout, activation, multi_label, hidden_units)
    encoder, preprocessor = load_text_backbone(backbone, sequence_length=sequence_length)
    if name is None:
        name = f"{type(encoder).__name__.removesuffix('Backbone').lower()}_text_classifier"
    model = TextClassifier(
        backbone=encoder,
        preprocessor=preprocessor,
        class_names=class_names,
        pooling=pooling,
        hidden_units=hidden_units,
        hidden_activation=hidden_activation,
        dropout=dropout,
        activation=activation,
        multi_label=multi_label,
        backbone_source=os.fspath(backbone),
        name=name,
    )
    model.compile()
    return model


def _tiny_preset(directory=None):
    """Writes a tiny randomly initialized BERT (2 layers, 8 features, a
    dozen-word vocabulary) as a keras-hub preset directory; for examples and
    tests. Returns the directory."""
    import tempfile

    keras_hub = _keras_hub()
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
