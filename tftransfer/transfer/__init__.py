"""Kinds of transfer beyond one new head: across domains (AdaBN, DANN) and
from unlabelled data (self-training, self-supervised pretraining).
"""

from tftransfer.transfer.adabn import adapt_batchnorm
from tftransfer.transfer.adversarial import fit_domain_adversarial
from tftransfer.transfer.adversarial_step import GradientReversal
from tftransfer.transfer.adversarial_step import dann_lambda
from tftransfer.transfer.self_supervised import nt_xent_loss
from tftransfer.transfer.self_supervised import pretrain_self_supervised
from tftransfer.transfer.self_training import fit_self_training
from tftransfer.transfer.views import ContrastiveViews

__all__ = [
    "ContrastiveViews",
    "GradientReversal",
    "adapt_batchnorm",
    "dann_lambda",
    "fit_domain_adversarial",
    "fit_self_training",
    "nt_xent_loss",
    "pretrain_self_supervised",
]
