"""Blocks: the named stages of a backbone that "unfreeze the top N blocks" counts in.

Blocks are found by a regular expression with one group, matched against
each layer name in topological order. Layers that match nothing (the input,
the stem, an unnamed shortcut convolution, the concatenation-free part of an
Inception module) join the *next* block that does match; layers after the
last match (EfficientNet's ``top_conv``) join the last block. So every layer
belongs to exactly one block, and unfreezing all blocks unfreezes the whole
backbone.
"""

import collections
import re

import keras

from tftransfer.backbones.hub import HubLayer
from tftransfer.backbones.hub import contains_hub_layer
from tftransfer.backbones.spec import BackboneSpec
from tftransfer.backbones.spec import backbone_spec


def feature_rank(backbone, *, subject="`backbone` must output"):
    """The rank of `backbone`'s output: 4 (a feature map) or 2 (a feature
    vector); anything else is a `ValueError` that starts with `subject`."""
    rank = len(backbone.output.shape)
    if rank not in (2, 4):
        raise ValueError(
            f"{subject} a feature map (batch, height, width, channels) or a feature "
            f"vector (batch, features). Received: a backbone with output shape "
            f"{backbone.output.shape}"
        )
    return rank


def _all_layers(model):
    """Every layer below `model`, depth-first, in topological order."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def get_blocks(backbone, *, block_pattern=None):
    """Groups a backbone's layers into its named blocks, bottom to top.

    Args:
        backbone: a backbone (an `ImageBackbone`, a `Backbone`, any
            functional `keras.Model`), or a classifier built on one.
        block_pattern: a regular expression with one group that names the
            block of a layer from the layer's name. Default: the pattern of
            the backbone's `BackboneSpec` (the table's pattern for an
            `ImageBackbone`, the one given to `load_backbone` or
            `build_classifier`), else `DEFAULT_BLOCK_PATTERN` (``block1_*``,
            ``block_2_*``, ``stage3_*``).

    Returns:
        An ordered dict ``{block_name: [layer, ...]}``. Layers that match no
        block join the next block that does, and trailing layers join the
        last block, so every top-level layer belongs to exactly one block.
        A backbone around a TF-Hub / SavedModel module (a `HubLayer`) is
        one block, named after that layer: it unfreezes all or nothing.

    Example:

    >>> backbone = load_backbone("efficientnet_b0", input_shape=(32, 32, 3),
    ...                          weights=None)
    >>> list(get_blocks(backbone))
    ['block1', 'block2', 'block3', 'block4', 'block5', 'block6', 'block7']
    """
    spec = backbone_spec(backbone)
    if isinstance(getattr(backbone, "backbone_spec", None), BackboneSpec):
        backbone = backbone.backbone  # a classifier: its backbone's blocks
    if block_pattern is None and contains_hub_layer(backbone):
        hub_layer = next(l for l in backbone.layers if isinstance(l, HubLayer))
        return collections.OrderedDict([(hub_layer.name, list(backbone.layers))])
    pattern = block_pattern or spec.block_pattern
    regex = re.compile(pattern)
    blocks = collections.OrderedDict()
    pending = []
    for layer in backbone.layers:
        match = regex.search(layer.name)
        if match is None:
            pending.append(layer)
            continue
        block = blocks.setdefault(match.group(1), [])
        block.extend(pending)
        pending = []
        block.append(layer)
    if not blocks:
        raise ValueError(
            f"No layer of backbone {backbone.name!r} matches the block pattern "
            f"{pattern!r}, so it has no blocks to unfreeze. Name its stages like "
            "'block1_conv', 'block2_conv', ..., pass `block_pattern=`, or "
            f"unfreeze from a layer with `from_layer=`. Layers: "
            f"{', '.join(layer.name for layer in backbone.layers[:12])}"
            f"{', ...' if len(backbone.layers) > 12 else ''}. "
            f"Received: block_pattern={pattern!r}"
        )
    if pending:
        next(reversed(blocks.values())).extend(pending)
    return blocks
