"""The recipe's defaults per kind of model: `RecipeDefaults`, `recipe_defaults`.

`fit_head`, `fine_tune` and `fit_two_phase` take their epochs, the blocks to
unfreeze and the learning rates from here when the call leaves them out
(``None``). Images and text get different defaults because they were chosen
on different measurements:

- **Images** (`IMAGE_RECIPE`): 5 head epochs at 1e-3, then 5 with the top 2
  blocks at a tenth of that: the Keras transfer-learning guide's recipe,
  measured in ``benchmarks/benchmark.py`` (docs/performance.md).
- **Text** (`TEXT_RECIPE`): LP-FT (Kumar et al., ICLR 2022). Phase 1 is a
  linear probe (`tftransfer.fit_linear_probe`: logistic regression on the
  frozen features, C chosen on the validation data, written into the head),
  phase 2 trains **all** transformer blocks for up to 10 epochs at a peak of
  3e-5 (inside the 2e-5 to 5e-5 BERT fine-tuning uses), with warmup, cosine
  decay and early stopping on the validation loss. Measured in
  ``benchmarks/text_benchmark.py`` against that probe on two real text sets
  (docs/text.md): a head trained with Adam for 10 epochs is underfit with 8
  labels per class, and fine-tuning then falls below the probe; only the
  top 2 blocks, or all at 1e-4, score less.

Example:

>>> from tftransfer.backbones.text import tiny_preset
>>> recipe_defaults(build_text_classifier(tiny_preset(), num_classes=2,
...                                       sequence_length=16)).unfreeze_blocks
'all'
>>> recipe_defaults(build_classifier("mobilenet_v3_small", num_classes=2,
...                                  input_shape=(32, 32, 3), weights=None)).head_epochs
5
"""

import dataclasses

from tftransfer.classifiers.text import TextClassifier
from tftransfer.training.options import DEFAULT_LEARNING_RATE
from tftransfer.training.options import FINE_TUNE_LR_FACTOR


@dataclasses.dataclass(frozen=True)
class RecipeDefaults:
    """What the recipe does where a call does not say.

    Attributes:
        head_method: how `fit_two_phase` trains the head in phase 1:
            ``"train"`` (Adam, `head_epochs`) or ``"linear_probe"``
            (`tftransfer.fit_linear_probe`: a logistic regression on the
            frozen features with its regularization chosen on the validation
            data, written into the head; LP-FT).
        head_epochs: epochs of phase 1 (`fit_head`'s `epochs`).
        fine_tune_epochs: epochs of phase 2 (`fine_tune`'s `epochs`).
        unfreeze_blocks: blocks unfrozen in phase 2, from the top, or
            ``"all"``.
        learning_rate: phase 1's learning rate.
        fine_tune_learning_rate: phase 2's peak learning rate, or None for
            `FINE_TUNE_LR_FACTOR` times phase 1's (after `fit_head`: the
            model's current one).
    """

    head_method: str = "train"
    head_epochs: int = 5
    fine_tune_epochs: int = 5
    unfreeze_blocks: object = 2
    learning_rate: float = DEFAULT_LEARNING_RATE
    fine_tune_learning_rate: float = None

    def blocks(self, unfreeze_blocks, from_layer=None):
        """The blocks phase 2 unfreezes: `unfreeze_blocks` when given (or
        None when `from_layer` says where instead), else the default."""
        if unfreeze_blocks is None and from_layer is None:
            return self.unfreeze_blocks
        return unfreeze_blocks

    def fine_tune_rate(self, head_rate):
        """Phase 2's peak learning rate after a phase 1 at `head_rate`."""
        if self.fine_tune_learning_rate is not None:
            return self.fine_tune_learning_rate
        return FINE_TUNE_LR_FACTOR * head_rate


IMAGE_RECIPE = RecipeDefaults()
"""The defaults for image classifiers (and any model that is not text)."""

HEAD_METHODS = ("train", "linear_probe")
"""The values of `fit_two_phase`'s `head_method`."""

TEXT_RECIPE = RecipeDefaults(head_method="linear_probe", head_epochs=10, fine_tune_epochs=10,
                             unfreeze_blocks="all", fine_tune_learning_rate=3e-5)
"""The defaults for `TextClassifier` (see the module's docstring)."""


def recipe_defaults(model):
    """The `RecipeDefaults` for `model`: `TEXT_RECIPE` for a text
    classifier, `IMAGE_RECIPE` for anything else."""
    return TEXT_RECIPE if isinstance(model, TextClassifier) else IMAGE_RECIPE


def resolve_head_method(model, head_method, head_epochs):
    """`fit_two_phase`'s phase-1 method: `head_method` when given; else
    ``"train"`` when `head_epochs` is given (epochs are Adam's), or when the
    head cannot be a probe (hidden layers, multi-label); else the model
    kind's default."""
    if head_method is not None:
        if head_method not in HEAD_METHODS:
            raise ValueError(
                f"`head_method` must be one of {HEAD_METHODS}: 'train' trains the head with "
                "Adam for `head_epochs`, 'linear_probe' fits a logistic regression on the "
                f"frozen features. Received: head_method={head_method!r}")
        if head_method == "linear_probe" and head_epochs is not None:
            raise ValueError(
                "`head_epochs` counts the epochs of head_method='train'; a linear probe is "
                "fitted to convergence. Leave `head_epochs` out, or pass head_method='train'. "
                f"Received: head_method='linear_probe', head_epochs={head_epochs!r}")
        return head_method
    default = recipe_defaults(model).head_method
    if default == "train" or head_epochs is not None or getattr(model, "hidden_units", ()) \
            or getattr(model, "multi_label", False):
        return "train"
    return default
