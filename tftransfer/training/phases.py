"""The two phases of the recipe, as data: `HeadPhase` and `FineTunePhase`.

A phase knows what it trains and how: `check` validates it against the model
before any work starts (a bad unfreeze request fails before phase 1 runs, not
after it), `prepare` freezes and unfreezes the model's layers and makes the
phase's optimizer, and `settings` is what identifies it in a resumable run.
`tftransfer.training.runner.run_phases` runs a list of them.
"""

import dataclasses
import logging
from typing import ClassVar

import keras

from tftransfer.backbones.blocks import get_blocks
from tftransfer.training.freezing import backbone_of
from tftransfer.training.freezing import freeze_batchnorm
from tftransfer.training.freezing import select_trainable
from tftransfer.training.freezing import unfreeze_top_blocks
from tftransfer.training.lora import DEFAULT_METHOD
from tftransfer.training.lora import DEFAULT_RANK
from tftransfer.training.lora import check_lora
from tftransfer.training.lora import check_method
from tftransfer.training.lora import check_rank
from tftransfer.training.lora import enable_lora
from tftransfer.training.optimizers import block_multipliers
from tftransfer.training.optimizers import discriminative_optimizer
from tftransfer.training.options import DEFAULT_LEARNING_RATE
from tftransfer.training.options import check_epochs
from tftransfer.training.options import check_learning_rate
from tftransfer.training.schedules import DEFAULT_WARMUP
from tftransfer.training.schedules import warmup_cosine_schedule

logger = logging.getLogger(__name__)


def _optimizer_name(optimizer):
    return None if optimizer is None else getattr(optimizer, "name", str(optimizer))


def template_settings(template):
    """``(class, settings)`` of a template optimizer (or its name): its
    config without the learning rate and the name, which each copy sets."""
    if isinstance(template, str):
        template = keras.optimizers.get(template)
    config = template.get_config()
    config.pop("learning_rate", None)
    config.pop("name", None)
    return type(template), config


def copy_optimizer(template, learning_rate):
    """A new optimizer of `template`'s class and settings with `learning_rate`
    (a number or a schedule): each phase gets its own."""
    cls, config = template_settings(template)
    return cls(learning_rate=learning_rate, **config)


def check_optimizer(optimizer):
    if optimizer is None or isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        try:
            keras.optimizers.get(optimizer)
        except ValueError:
            pass
        else:
            return optimizer
    raise ValueError(
        "`optimizer` must be a Keras optimizer (e.g. keras.optimizers.AdamW(weight_decay="
        "1e-4)) or the name of one ('adamw'), or None for Adam. "
        f"Received: optimizer={optimizer!r}"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadPhase:
    """Phase 1: the backbone frozen, only the head trains.

    Attributes:
        epochs: epochs of the phase.
        learning_rate: Adam's learning rate (or the template optimizer's).
        optimizer: None (Adam); an optimizer used as it is (`fit_head`); or,
            with `copy_optimizer_settings`, a template whose class and
            settings are copied with `learning_rate` (`fit_two_phase`).
        copy_optimizer_settings: see `optimizer`.
        learning_rate_argument: the public argument that sets the learning
            rate, for the message of a non-finite loss.
    """

    number: ClassVar[int] = 1

    epochs: int
    learning_rate: object = DEFAULT_LEARNING_RATE
    optimizer: object = None
    copy_optimizer_settings: bool = False
    learning_rate_argument: str = "learning_rate"

    def check(self, model, epochs_name="epochs"):
        """Validates the phase against `model`; returns the ids of the layers
        it trains in the backbone (none)."""
        check_epochs(self.epochs, epochs_name)
        if not isinstance(self.learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            check_learning_rate(self.learning_rate, self.learning_rate_argument)
        check_optimizer(self.optimizer)
        backbone_of(model)
        return set()

    def settings(self):
        return {"epochs": self.epochs, "learning_rate": _number(self.learning_rate),
                "optimizer": _optimizer_name(self.optimizer)}

    def prepare(self, model, steps_per_epoch):
        """Freezes the backbone; returns (optimizer, info for the summary)."""
        backbone_of(model).trainable = False
        freeze_batchnorm(model)
        with model.distribute_strategy.scope():
            optimizer = _phase_optimizer(self, self.learning_rate)
        return optimizer, {"learning_rate": _number(self.learning_rate), "unfrozen_blocks": []}

    def title(self, info):
        """A line for the phase's progress: what trains."""
        title = "training the head on the frozen backbone"
        if isinstance(self.learning_rate, (int, float)):
            title += f" (learning rate {self.learning_rate:g})"
        return title

    def message_argument(self):
        """The argument to name when the loss is not finite (None: the user's
        own optimizer, whose rate the message cannot name)."""
        return None if self.optimizer is not None and not self.copy_optimizer_settings else (
            self.learning_rate_argument)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FineTunePhase:
    """Phase 2: the top blocks of the backbone unfrozen, trained with the head.

    The learning rate warms up linearly from 0 over the first `warmup`
    fraction of the steps, then decays with a cosine to 0 (a constant rate
    when the number of steps is unknown). BatchNormalization layers stay
    frozen and in inference mode.

    Attributes:
        epochs: epochs of the phase.
        learning_rate: the peak learning rate.
        unfreeze_blocks: blocks to unfreeze from the top, or ``"all"``.
        from_layer: instead of `unfreeze_blocks`, unfreeze from this layer.
        warmup: fraction of the steps spent warming up.
        block_learning_rate_decay: discriminative learning rates: each block
            below the top learns this many times slower; None: one rate.
        optimizer, copy_optimizer_settings, learning_rate_argument: as for
            `HeadPhase`.
        method: ``"full"`` trains the unfrozen blocks' weights, ``"lora"``
            low-rank updates of their kernels (`tftransfer.training.lora`).
        rank: the rank of the LoRA factors (``method="lora"``).
    """

    number: ClassVar[int] = 2

    epochs: int
    learning_rate: float
    unfreeze_blocks: object = 2
    from_layer: str = None
    warmup: float = DEFAULT_WARMUP
    block_learning_rate_decay: float = None
    optimizer: object = None
    copy_optimizer_settings: bool = False
    learning_rate_argument: str = "learning_rate"
    method: str = DEFAULT_METHOD
    rank: int = DEFAULT_RANK

    def check(self, model, epochs_name="epochs"):
        """Validates the phase against `model`; returns the ids of the
        backbone layers it will unfreeze."""
        check_epochs(self.epochs, epochs_name)
        check_method(self.method)
        check_rank(self.rank)
        check_learning_rate(self.learning_rate, self.learning_rate_argument)
        check_optimizer(self.optimizer)
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"`warmup` must be in [0, 1). Received: warmup={self.warmup!r}")
        decay = self.block_learning_rate_decay
        if decay is not None:
            if self.from_layer is not None or (
                    self.optimizer is not None and not self.copy_optimizer_settings):
                raise ValueError(
                    "`block_learning_rate_decay` sets a learning rate per unfrozen block: it "
                    "needs `unfreeze_blocks` (not `from_layer`) and an optimizer tftransfer "
                    f"makes (not `optimizer`). Received: block_learning_rate_decay={decay!r}, "
                    f"from_layer={self.from_layer!r}, optimizer={self.optimizer!r}"
                )
            block_multipliers({}, [], decay=decay)  # checks the value
        if not self.epochs:
            return set()  # the phase does not run: there is nothing to unfreeze
        _, ids = select_trainable(model, None if self.from_layer else self.unfreeze_blocks,
                                  self.from_layer)
        if self.method == "lora":
            check_lora(model, self.rank, unfreeze_blocks=self.unfreeze_blocks,
                       from_layer=self.from_layer)
        return ids

    def settings(self):
        return {"epochs": self.epochs, "learning_rate": _number(self.learning_rate),
                "unfreeze_blocks": self.unfreeze_blocks, "from_layer": self.from_layer,
                "warmup": self.warmup,
                "block_learning_rate_decay": self.block_learning_rate_decay,
                "optimizer": _optimizer_name(self.optimizer),
                **({"method": "lora", "rank": self.rank} if self.method == "lora" else {})}

    def prepare(self, model, steps_per_epoch):
        """Unfreezes the blocks; returns (optimizer, info for the summary)."""
        if self.method == "lora":
            blocks = None if self.from_layer else self.unfreeze_blocks
            enable_lora(model, self.rank, unfreeze_blocks=blocks, from_layer=self.from_layer)
            unfrozen, _ = select_trainable(model, blocks, self.from_layer)
        elif self.from_layer is not None:
            unfrozen = unfreeze_top_blocks(model, from_layer=self.from_layer)
        else:
            unfrozen = unfreeze_top_blocks(model, self.unfreeze_blocks)
        info = {"learning_rate": self.learning_rate, "unfrozen_blocks": unfrozen}
        if self.method == "lora":
            info.update(method="lora", rank=self.rank)
        if self.block_learning_rate_decay is not None:
            info["block_learning_rate_decay"] = self.block_learning_rate_decay
        if self.optimizer is not None and not self.copy_optimizer_settings:
            return self.optimizer, info
        if steps_per_epoch is None:
            logger.info("Unknown steps per epoch: fine-tuning at a constant learning rate.")
            schedule = self.learning_rate
        else:
            schedule = warmup_cosine_schedule(
                self.learning_rate, total_steps=max(1, steps_per_epoch * self.epochs),
                warmup=self.warmup)
        with model.distribute_strategy.scope():
            if self.block_learning_rate_decay is None:
                optimizer = _phase_optimizer(self, schedule)
            else:
                multipliers = block_multipliers(get_blocks(model), unfrozen,
                                                decay=self.block_learning_rate_decay)
                optimizer = discriminative_optimizer(
                    schedule, multipliers, **_discriminative_settings(self.optimizer))
        return optimizer, info

    def title(self, info):
        """A line for the phase's progress: what trains."""
        blocks = info["unfrozen_blocks"]
        how = f" with LoRA of rank {self.rank}" if self.method == "lora" else ""
        return (f"fine-tuning {', '.join(blocks)}{how} with the head (peak learning rate "
                f"{self.learning_rate:g})")

    message_argument = HeadPhase.message_argument


def _phase_optimizer(phase, learning_rate):
    if phase.optimizer is None:
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if phase.copy_optimizer_settings:
        return copy_optimizer(phase.optimizer, learning_rate)
    return phase.optimizer


def _discriminative_settings(template):
    """`discriminative_optimizer` arguments for a template optimizer's class
    and settings (none for Adam)."""
    if template is None:
        return {}
    cls, config = template_settings(template)
    for key in ("global_clipnorm", "loss_scale_factor"):  # refused per group when set
        if config.get(key) is None:
            config.pop(key, None)
    return {"optimizer": cls, **config}


def _number(value):
    return float(value) if isinstance(value, (int, float)) else str(value)
