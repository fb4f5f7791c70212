"""Backbones: what a classifier is built on, from every source.

`load_backbone` takes a Keras Applications name (the table in
`applications`), a TF-Hub handle or SavedModel directory (`hub`), or the
user's own model (`own`); `blocks` groups a backbone's layers into the
stages that fine-tuning unfreezes; `text` loads keras-hub text encoders.
"""

from tftransfer.backbones.applications import ARCHITECTURES
from tftransfer.backbones.applications import ImageBackbone
from tftransfer.backbones.applications import available_backbones
from tftransfer.backbones.blocks import get_blocks
from tftransfer.backbones.hub import HubLayer
from tftransfer.backbones.load import load_backbone
from tftransfer.backbones.spec import DEFAULT_BLOCK_PATTERN
from tftransfer.backbones.text import load_text_backbone

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_BLOCK_PATTERN",
    "HubLayer",
    "ImageBackbone",
    "available_backbones",
    "get_blocks",
    "load_backbone",
    "load_text_backbone",
]
