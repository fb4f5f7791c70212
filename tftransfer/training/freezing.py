"""Freezing as a named concept: the backbone, its top blocks, BatchNormalization.

Phase 1 trains only the new head on top of the frozen backbone
(`freeze_backbone`). Phase 2 unfreezes the top N blocks of the backbone, or
everything from a named layer up (`unfreeze_top_blocks`).

BatchNormalization layers stay frozen **and** in inference mode in both
phases. Calling the backbone with ``training=False`` is not enough in
Keras 3: once a BatchNormalization layer is trainable, its moving statistics
are updated during `fit` (keras#20285). Each one is therefore set
non-trainable by itself, which Keras 3 treats as inference mode (the Keras
fine-tuning guide's rewrite, keras PR #20298).
"""

import keras

from tftransfer import _compat
from tftransfer.backbones.blocks import get_blocks
from tftransfer.backbones.hub import check_unfreeze_request


def backbone_of(model):
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, keras.Model):
        raise TypeError(
            "`model` must be a classifier with a `.backbone` (a model built by "
            "`tftransfer.build_classifier`). Received: "
            f"model={getattr(model, 'name', model)!r} of type {type(model).__name__}"
        )
    return backbone


def freeze_batchnorm(layer):
    """Sets every BatchNormalization layer below `layer` non-trainable.

    In Keras 3 a non-trainable BatchNormalization layer runs in inference
    mode: it neither updates nor uses batch statistics.

    Returns:
        The number of BatchNormalization layers found.
    """
    count = 0
    for sublayer in _compat.flatten_layers(layer):
        if isinstance(sublayer, keras.layers.BatchNormalization):
            sublayer.trainable = False
            count += 1
    return count


def freeze_backbone(model):
    """Freezes the whole backbone of `model` (phase 1 of the recipe).

    Example:

    >>> model = build_classifier("mobilenet_v3_small", num_classes=2,
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> model.backbone.trainable = True
    >>> freeze_backbone(model)
    >>> model.backbone.trainable
    False
    """
    backbone_of(model).trainable = False


def unfreeze_top_blocks(model, num_blocks=None, *, from_layer=None, block_pattern=None):
    """Unfreezes the top `num_blocks` blocks of the backbone, or all layers
    from `from_layer` up; BatchNormalization layers stay frozen.

    Args:
        model: a classifier from `build_classifier`.
        num_blocks: how many blocks to unfreeze, counted from the top, or
            ``"all"``. See `tftransfer.get_blocks` for what the blocks are.
        from_layer: instead of `num_blocks`: the name of the backbone layer
            from which on (in topological order) layers are unfrozen.
        block_pattern: overrides the block pattern of the model's
            `BackboneSpec`.

    Returns:
        The names of the unfrozen blocks (or ``[from_layer]``).

    Example:

    >>> model = build_classifier("efficientnet_b0", num_classes=2,
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> unfreeze_top_blocks(model, 2)
    ['block6', 'block7']
    """
    backbone = backbone_of(model)
    unfrozen, trainable = select_trainable(model, num_blocks, from_layer, block_pattern)
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = id(layer) in trainable
    freeze_batchnorm(backbone)
    return unfrozen


def select_trainable(model, num_blocks, from_layer, block_pattern=None):
    """Validates the unfreeze request for `model`'s backbone; returns (names,
    ids of layers to train). The blocks follow `block_pattern`, else the
    model's `BackboneSpec`."""
    backbone = backbone_of(model)
    if (num_blocks is None) == (from_layer is None):
        raise ValueError(
            "Pass exactly one of `num_blocks` (e.g. 2) and `from_layer` (a layer "
            f"name). Received: num_blocks={num_blocks!r}, from_layer={from_layer!r}"
        )
    layers = backbone.layers
    if from_layer is not None:
        names = [layer.name for layer in layers]
        if from_layer not in names:
            raise ValueError(
                f"Backbone {backbone.name!r} has no layer named {from_layer!r}. "
                f"Its blocks start at: "
                f"{', '.join(_first_layer_names(model, block_pattern))}. "
                f"Received: from_layer={from_layer!r}"
            )
        start = names.index(from_layer)
        return [from_layer], {id(layer) for layer in layers[start:]}
    check_unfreeze_request(backbone, num_blocks)  # hub modules: all or nothing
    blocks = get_blocks(model, block_pattern=block_pattern)
    if num_blocks == "all":
        num_blocks = len(blocks)
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(
            "`num_blocks` must be a positive integer or 'all'. "
            f"Received: num_blocks={num_blocks!r}"
        )
    if num_blocks > len(blocks):
        raise ValueError(
            f"Cannot unfreeze {num_blocks} blocks: backbone {backbone.name!r} "
            f"has {len(blocks)} ({', '.join(blocks)}). Pass at most "
            f"{len(blocks)}, or 'all'. Received: num_blocks={num_blocks}"
        )
    unfrozen = list(blocks)[-num_blocks:]
    return unfrozen, {id(layer) for name in unfrozen for layer in blocks[name]}


def _first_layer_names(model, block_pattern):
    try:
        return [f"{layers[0].name} ({name})" for name, layers in
                get_blocks(model, block_pattern=block_pattern).items()]
    except ValueError:
        return [layer.name for layer in backbone_of(model).layers[:20]]
