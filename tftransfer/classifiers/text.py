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
``tf.saved_model.load``; it does not need keras-hub or tftransfer. They are
ops that TensorFlow Text 2.12.1 has, the release inside stock TF Serving
images: the packing after the tokenizer is `tftransfer.classifiers.packing`
(core TensorFlow ops), not keras-hub's packer, whose trimmer needs a later
TensorFlow Text. `tftransfer.export_litert` exports the model after the
tokenizer (token ids in), with the vocabulary beside it.

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

from tftransfer.backbones.blocks import get_blocks
from tftransfer.backbones.spec import BackboneSpec
from tftransfer.backbones.spec import with_spec
from tftransfer.backbones.text import import_keras_hub
from tftransfer.backbones.text import load_text_backbone
from tftransfer.classifiers.base import Classifier
from tftransfer.classifiers.base import ServingSpec
from tftransfer.classifiers.head import resolve_class_names
from tftransfer.classifiers.sequence_length import check_texts
from tftransfer.classifiers.sequence_length import sequence_length_from_texts
from tftransfer.classifiers.text_layers import TRANSFORMER_BLOCK_PATTERN
from tftransfer.classifiers.text_layers import TextPreprocessing
from tftransfer.classifiers.text_layers import TokenPooling
from tftransfer.classifiers.text_layers import check_text_head_options
from tftransfer.formats import TEXT_INPUT

DEFAULT_DROPOUT = 0.1
"""The head's default dropout rate for text classifiers."""

_SHORTEST = 3  # a valid length to load with before "auto" measures the texts

logger = logging.getLogger(__name__)



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
class TextClassifier(Classifier):
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

        backbone_spec: the encoder's `BackboneSpec`. Default: the encoder's
            name and the `TRANSFORMER_BLOCK_PATTERN`, which makes its
            transformer layers the blocks.

    A `.keras` file saves and loads the whole model. Its config alone does
    not: keras-hub keeps a tokenizer's vocabulary out of configs (it is saved
    as an asset of the `.keras` file), so a model rebuilt by `from_config`
    has no vocabulary until one is loaded.

    Attributes:
        preprocessor: the keras-hub preprocessor.
        backbone, backbone_spec, head, class_names, num_classes,
        training_summary: see `tftransfer.Classifier`.
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
        dropout=DEFAULT_DROPOUT,
        activation=None,
        multi_label=False,
        backbone_source=None,
        backbone_spec=None,
        **kwargs,
    ):
        check_text_head_options(pooling=pooling, dropout=dropout, activation=activation,
                                multi_label=multi_label, hidden_units=hidden_units)
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
        if isinstance(backbone_spec, dict):
            backbone_spec = BackboneSpec.from_config(backbone_spec)
        if backbone_spec is None:
            backbone_spec = BackboneSpec(name=backbone.name, source="text",
                                         handle=backbone_source,
                                         block_pattern=TRANSFORMER_BLOCK_PATTERN)

        # === Layers ===
        # The encoder carries its spec (its transformer layers are the blocks),
        # so `get_blocks(model.backbone)` finds them as `get_blocks(model)` does.
        encoder = with_spec(_sequence_encoder(backbone), backbone_spec)
        self._init_head(backbone=encoder, spec=backbone_spec,
                        num_classes=num_classes, class_names=class_names, pooling=pooling,
                        hidden_units=hidden_units, hidden_activation=hidden_activation,
                        dropout=dropout, activation=activation, multi_label=multi_label)
        feature_keys = list(self.backbone.input) if isinstance(self.backbone.input, dict) else []
        self.text_preprocessing = TextPreprocessing(
            preprocessor,
            output_keys=sorted(set(feature_keys or ["token_ids"]) | {"padding_mask"}),
            name="text_preprocessing",
        )
        self.pooler = TokenPooling(pooling, name="pooling")

        # === Functional model ===
        inputs = keras.Input(shape=(), dtype="string", name=TEXT_INPUT)
        features = self.text_preprocessing(inputs)
        frozen_call = self._frozen_call()  # inference mode also inside `fit`
        if feature_keys:
            tokens = frozen_call({k: features[k] for k in feature_keys})
        else:
            tokens = frozen_call(features["token_ids"])
        outputs = self.head.apply_layers(self.pooler(tokens, features["padding_mask"]))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._freeze_backbone()

        # === Config ===
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

        >>> from tftransfer.backbones.text import tiny_preset
        >>> model = build_text_classifier(tiny_preset(), class_names=["a", "b"],
        ...                               sequence_length=8)
        >>> model.predict_proba(["good", "bad film"], verbose=0).shape
        (2, 2)
        """
        return super().predict_proba(x, **kwargs)

    def classify_inputs(self, inputs):
        texts = [inputs] if isinstance(inputs, (str, bytes)) else list(inputs)
        if not texts or not all(isinstance(t, (str, bytes)) for t in texts):
            raise TypeError("`inputs` must be a string or a list of strings. "
                            f"Received: inputs={inputs!r}")
        sources = [t if len(t) <= 60 else t[:57] + "..." for t in texts]
        return sources, _as_text(texts)

    serving_inputs = ("text",)

    def serving_spec(self, inputs="text"):
        """How `tftransfer.export_saved_model` serves this model: raw strings
        (``text``, `tf.string` ``[batch]``) in, tokenized inside the graph."""
        if inputs != "text":
            raise ValueError(
                "`inputs` must be 'text' for a text classifier (it serves raw strings). "
                f"Received: inputs={inputs!r}")
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        return ServingSpec(
            input_name=TEXT_INPUT,
            input_signature=tf.TensorSpec([None], tf.string, name=TEXT_INPUT),
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
                "blocks": list(get_blocks(self)),
                "requires": ["tensorflow", "tensorflow_text"],
            },
        )

    def get_config(self):
        return {
            **super().get_config(),
            "preprocessor": keras.layers.serialize(self.preprocessor),
            "backbone_source": self.backbone_source,
        }

    @classmethod
    def from_config(cls, config):
        import_keras_hub()  # registers keras-hub's layers
        config = copy.deepcopy(config)  # deserializing consumes nested configs
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        config["preprocessor"] = keras.layers.deserialize(config["preprocessor"])
        return cls(**config)


def build_text_classifier(
    backbone,
    *,
    num_classes=None,
    class_names=None,
    pooling="mean",
    sequence_length=128,
    hidden_units=(),
    hidden_activation="relu",
    dropout=DEFAULT_DROPOUT,
    activation=None,
    multi_label=False,
    texts=None,
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
        sequence_length: texts are cut (or padded) to this many tokens,
            special tokens included; or ``"auto"``: the length that holds 99%
            of `texts` whole, a multiple of 8, at most the encoder's maximum
            (see `tftransfer.classifiers.sequence_length`). Short texts train
            and serve faster with a shorter length, with the same results.
        texts: with ``sequence_length="auto"``: the texts to measure, e.g.
            the training texts.
        hidden_units, hidden_activation, dropout, activation, multi_label:
            the head, as for `tftransfer.build_classifier`.
        name: model name. Default: ``"<architecture>_text_classifier"``.

    Returns:
        A `TextClassifier` (a `keras.Model` taking strings), compiled with
        the `"auto"` defaults and its encoder frozen. Train it with
        `tftransfer.fit_two_phase`: the blocks are the transformer layers.

    Example (a tiny random BERT saved as a keras-hub preset directory; for
    real use pass e.g. the directory of all-MiniLM-L6-v2):

    >>> from tftransfer.backbones.text import tiny_preset
    >>> model = build_text_classifier(tiny_preset(), class_names=["neg", "pos"],
    ...                               sequence_length=8)
    >>> model.predict(["a good film", "bad"], verbose=0).shape
    (2, 2)
    >>> tft.get_blocks(model.backbone).keys()
    odict_keys(['transformer_layer_0', 'transformer_layer_1'])
    """
    # Check the cheap arguments before loading weights.
    class_names = resolve_class_names(num_classes, class_names)
    check_text_head_options(pooling=pooling, dropout=dropout, activation=activation,
                            multi_label=multi_label, hidden_units=hidden_units)
    if sequence_length == "auto":
        texts = check_texts(texts)
        encoder, preprocessor = load_text_backbone(backbone, sequence_length=_SHORTEST)
        sequence_length = sequence_length_from_texts(
            preprocessor, texts, maximum=getattr(encoder, "max_sequence_length", None))
        preprocessor.sequence_length = sequence_length
        logger.info("sequence_length='auto': %d tokens hold 99%% of the %d texts whole",
                    sequence_length, len(texts))
    else:
        if texts is not None:
            raise ValueError(
                "`texts` is read only with sequence_length='auto' (it measures their token "
                "lengths). Pass sequence_length='auto', or leave `texts` out. Received: "
                f"sequence_length={sequence_length!r} and {len(texts)} texts")
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
