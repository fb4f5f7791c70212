"""Training: freezing, the two-phase recipe, its callbacks, checkpoints and options.
"""

from tftransfer.training.determinism import enable_determinism
from tftransfer.training.freezing import freeze_backbone
from tftransfer.training.freezing import freeze_batchnorm
from tftransfer.training.freezing import unfreeze_top_blocks
from tftransfer.training.linear_probe import LinearProbeResult
from tftransfer.training.linear_probe import fit_linear_probe
from tftransfer.training.lora import enable_lora
from tftransfer.training.lora import has_lora
from tftransfer.training.lora import merge_lora
from tftransfer.training.lora import trainable_parameters
from tftransfer.training.lr_finder import LearningRateFinder
from tftransfer.training.lr_finder import find_learning_rate
from tftransfer.training.recipe import fine_tune
from tftransfer.training.recipe import fit_head
from tftransfer.training.recipe import fit_two_phase
from tftransfer.training.schedules import warmup_cosine_schedule

__all__ = [
    "LearningRateFinder",
    "LinearProbeResult",
    "enable_determinism",
    "enable_lora",
    "find_learning_rate",
    "fine_tune",
    "fit_head",
    "fit_linear_probe",
    "fit_two_phase",
    "freeze_backbone",
    "freeze_batchnorm",
    "has_lora",
    "merge_lora",
    "trainable_parameters",
    "unfreeze_top_blocks",
    "warmup_cosine_schedule",
]
