"""Kinds of transfer beyond one new head: across domains (AdaBN, DANN) and
from unlabelled data (self-training, self-supervised pretraining).
"""

from tftransfer.transfer.adabn import adapt_batchnorm

__all__ = [
    "adapt_batchnorm",
]
