"""Parameter-efficient fine-tuning with LoRA, on Keras's own `enable_lora`.

``fine_tune(..., method="lora", rank=8)`` trains, instead of the unfrozen
blocks' weights, a low-rank update ``A @ B`` of each kernel in them (Hu et
al., 2021): Keras's `enable_lora` of `Dense`, `EinsumDense`, `Conv1D/2D/3D`
and `Embedding` freezes the kernel and adds the two factors, and the layer's
``kernel`` is then the merged ``kernel + alpha / rank * A @ B``. Everything
else in those blocks stays frozen (as after keras-hub's
`Backbone.enable_lora`, the adapted layers' biases train too), and
BatchNormalization stays in inference mode; the head trains in full.

Which layers are adapted: the layers `unfreeze_top_blocks` would unfreeze
that have `enable_lora`. In a transformer block (a layer with sublayers
named like keras-hub's attention projections), only the attention's query
and value projections, keras-hub's default (`Backbone.default_lora_layer_names`).
keras-hub's `Backbone.enable_lora` itself adapts *every* block, and a
tftransfer text classifier holds a cut of the keras-hub backbone (a plain
functional model), so the same choice is made here per unfrozen block.
`DepthwiseConv2D`, `SeparableConv2D` and `LayerNormalization` have no LoRA
in Keras 3.15 and stay frozen.

Saving: a ``.keras`` file holds the merged kernels (Keras writes
``layer.kernel``) and the LoRA rank in the layer configs, so the loaded
model gives the same outputs (its factors are zeros). A SavedModel export
of the model as it is would trace ``kernel + A @ B`` and save the factors:
`merge_lora` gives the copy to export, with plain merged kernels.
"""

import json
import os
import tempfile
import zipfile

import keras
import numpy as np

from tftransfer import _compat
from tftransfer.training.freezing import backbone_of
from tftransfer.training.freezing import freeze_batchnorm
from tftransfer.training.freezing import select_trainable

METHODS = ("full", "lora")
"""What a fine-tuning phase trains: ``"full"`` (the unfrozen blocks'
weights) or ``"lora"`` (low-rank updates of their kernels)."""

DEFAULT_METHOD = "full"

DEFAULT_RANK = 8
"""The rank of the LoRA factors (``fine_tune(method="lora")``)."""

TRANSFORMER_LORA_LAYER_NAMES = ("query_dense", "value_dense", "query", "value")
"""keras-hub's `Backbone.default_lora_layer_names()`: in a transformer block,
only these (the attention's query and value projections) are adapted."""

_MERGED = {keras.layers.Embedding: "embeddings"}  # the merged weight; others: "kernel"


def check_method(method):
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {METHODS}: 'full' trains the unfrozen blocks' "
            "weights, 'lora' low-rank updates of their kernels (with `rank`). "
            f"Received: method={method!r}")
    return method


def check_rank(rank):
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(
            "`rank` must be a positive integer, the rank of the LoRA factors (e.g. 8). "
            f"Received: rank={rank!r}")
    return int(rank)


def lora_targets(layers):
    """The layers below `layers` that LoRA adapts (see the module docstring)."""
    targets = []
    for layer in layers:
        below = [sub for sub in _compat.flatten_layers(layer) if hasattr(sub, "enable_lora")]
        named = [sub for sub in below if sub.name in TRANSFORMER_LORA_LAYER_NAMES]
        if layer not in below and named:  # a transformer block: keras-hub's choice
            below = named
        targets += [sub for sub in below if _can_adapt(sub)]
    return targets


def _can_adapt(layer):
    return layer.built and not getattr(layer, "kernel_constraint", None) and not getattr(
        layer, "embeddings_constraint", None)


def check_lora(model, rank, *, unfreeze_blocks=2, from_layer=None):
    """Validates a LoRA request for `model` before any work starts (see
    `enable_lora`); returns the names of the layers it would adapt."""
    return [layer.name for layer in _plan(model, rank, unfreeze_blocks, from_layer)[1]]


def _plan(model, rank, unfreeze_blocks, from_layer):
    rank = check_rank(rank)
    backbone = backbone_of(model)
    names, ids = select_trainable(model, None if from_layer else unfreeze_blocks, from_layer)
    unfrozen = [layer for layer in backbone.layers if id(layer) in ids]
    targets = lora_targets(unfrozen)
    if not targets:
        raise ValueError(
            f"LoRA found no layer to adapt in {', '.join(names)} of backbone "
            f"{backbone.name!r}: Keras has LoRA for Dense, EinsumDense, Conv and Embedding "
            "layers only. Adapt more blocks, or fine-tune with method='full'. Received: "
            f"unfreeze_blocks={unfreeze_blocks!r}, from_layer={from_layer!r}")
    for layer in targets:
        if layer.lora_enabled and layer.lora_rank != rank:
            raise ValueError(
                f"Layer {layer.name!r} has LoRA of rank {layer.lora_rank} already (from an "
                f"earlier fine-tuning); continue with rank={layer.lora_rank}, or start from a "
                f"model without LoRA (`merge_lora`). Received: rank={rank!r}")
    return backbone, targets


def enable_lora(model, rank=DEFAULT_RANK, *, unfreeze_blocks=2, from_layer=None):
    """Makes the top blocks of the backbone train as LoRA updates.

    The blocks `unfreeze_top_blocks` would unfreeze get Keras's LoRA on
    their kernels (see the module docstring for which layers); everything
    else in the backbone is frozen, BatchNormalization included. A layer
    that has LoRA already keeps it (a second fine-tuning continues it).

    Args:
        model: a classifier from `build_classifier` or `build_text_classifier`.
        rank: the rank of the LoRA factors.
        unfreeze_blocks: how many backbone blocks to adapt, from the top, or
            ``"all"``.
        from_layer: instead of `unfreeze_blocks`: adapt from this backbone
            layer up.

    Returns:
        The names of the adapted layers.

    Raises:
        ValueError: no layer in those blocks has LoRA (e.g. only depthwise
            convolutions), or one has LoRA of another rank.

    Example:

    >>> model = build_classifier("efficientnet_b0", num_classes=2,
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> enable_lora(model, rank=4, unfreeze_blocks=1)
    ['block7a_expand_conv', 'block7a_se_reduce', 'block7a_se_expand', 'block7a_project_conv', 'top_conv']
    >>> trainable_parameters(model)  # the LoRA factors, the adapted layers' biases, the head
    31026
    """
    backbone, targets = _plan(model, rank, unfreeze_blocks, from_layer)
    rank = int(rank)
    # Keras 3 freezes by variable: a layer's `trainable` sets its variables'
    # flags, and a model trains the variables flagged trainable.
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    for layer in targets:
        layer.trainable = True
        if layer.lora_enabled:  # `trainable = True` also flagged the frozen kernel
            _raw_weight(layer).trainable = False
        else:
            layer.enable_lora(rank)
    freeze_batchnorm(backbone)
    return [layer.name for layer in targets]


def _raw_weight(layer):
    """The variable under a LoRA layer's merged ``kernel`` (``embeddings``)."""
    name = _MERGED.get(type(layer), "kernel")
    return next(w for w in layer.weights if w.name == name)


def is_lora_variable(variable):
    """Whether `variable` is a LoRA factor (``lora_kernel_a``, ...)."""
    return variable.name.startswith("lora_")


def trainable_parameters(model):
    """The number of parameters that `fit` trains in `model` now.

    Example:

    >>> dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> trainable_parameters(dense)
    15
    """
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def has_lora(model):
    """Whether any layer of `model` has LoRA enabled."""
    return any(getattr(layer, "lora_enabled", False) for layer in _compat.flatten_layers(model))


def merge_lora(model):
    """A copy of `model` with each LoRA update merged into its kernel.

    The copy has plain layers (no LoRA factors, no LoRA in their configs)
    whose kernels are the LoRA layers' merged ``kernel + alpha / rank * A @
    B``: it gives the same outputs, and its export traces plain matrix
    products. A model without LoRA is returned as it is.

    Args:
        model: a classifier (or any Keras model that a ``.keras`` file
            saves and loads).

    Returns:
        The merged copy (not compiled), or `model` itself without LoRA.

    Example:

    >>> model = build_classifier("efficientnet_b0", num_classes=2,
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> _ = enable_lora(model, rank=4, unfreeze_blocks=1)
    >>> merged = merge_lora(model)
    >>> has_lora(model), has_lora(merged)
    (True, False)
    >>> any(is_lora_variable(v) for v in merged.weights)
    False
    """
    if not has_lora(model):
        return model
    # Keras writes a LoRA layer's merged kernel (`layer.kernel`) and no
    # factors to a `.keras` file, and rebuilds LoRA from `lora_rank` in its
    # config: loaded without it, the layers are plain, with merged kernels.
    with tempfile.TemporaryDirectory(prefix="tftransfer-merge-lora-") as scratch:
        source = os.path.join(scratch, "lora.keras")
        target = os.path.join(scratch, "merged.keras")
        model.save(source)
        with zipfile.ZipFile(source) as lora_file, zipfile.ZipFile(target, "w") as merged_file:
            for item in lora_file.infolist():
                data = lora_file.read(item.filename)
                if item.filename == "config.json":
                    data = json.dumps(_without_lora(json.loads(data))).encode("utf-8")
                merged_file.writestr(item, data)
        copy = keras.saving.load_model(target, compile=False)
    summary = getattr(model, "training_summary", None)
    if isinstance(summary, list) and isinstance(getattr(copy, "training_summary", None), list):
        copy.training_summary.extend(summary)
    return copy


def _without_lora(config):
    if isinstance(config, dict):
        return {key: _without_lora(value) for key, value in config.items()
                if key not in ("lora_rank", "lora_alpha")}
    if isinstance(config, list):
        return [_without_lora(value) for value in config]
    return config
