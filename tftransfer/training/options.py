"""What every phase of one training call shares: `TrainingOptions`, checked once."""

import dataclasses
import importlib.util
import os

from tftransfer.caching import CacheOptions
from tftransfer.caching import cache_options

DEFAULT_LEARNING_RATE = 1e-3
"""Phase 1's learning rate (Adam)."""

FINE_TUNE_LR_FACTOR = 0.1
"""Phase 2's default peak learning rate, as a share of phase 1's."""

DEFAULT_PATIENCE = 3
"""Epochs without improvement before ``early_stopping=True`` stops a phase."""

_SET_BY_THE_RECIPE = ("epochs", "initial_epoch", "x", "validation_data")


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """The options of one `fit_head` / `fine_tune` / `fit_two_phase` call
    that every phase shares, validated before any work starts.

    Attributes:
        function: the public function called (for messages and the run's
            identity in `checkpoint_dir`).
        loss, metrics: passed to `model.compile` in every phase.
        early_stopping: False, or a patience in epochs.
        checkpoint_dir: where the resumable state goes, or None.
        log_dir: TensorBoard logs, or None.
        cache: the `tftransfer.caching.CacheOptions`.
        fit_kwargs: the other `keras.Model.fit` arguments.
    """

    function: str
    loss: object = "auto"
    metrics: object = "auto"
    label_smoothing: float = 0.0
    early_stopping: object = DEFAULT_PATIENCE
    checkpoint_dir: str = None
    log_dir: str = None
    cache: CacheOptions = None
    fit_kwargs: dict = dataclasses.field(default_factory=dict)


def training_options(function, *, loss="auto", metrics="auto", label_smoothing=0.0,
                     early_stopping=True,
                     checkpoint_dir=None, log_dir=None, cache="auto", cache_dir=None,
                     cache_memory_limit=None, fit_kwargs=None):
    """Checks the shared arguments of the training functions; returns
    `TrainingOptions`."""
    fit_kwargs = dict(fit_kwargs or {})
    for key in _SET_BY_THE_RECIPE:
        if key in fit_kwargs:
            raise TypeError(
                f"`{function}` sets `{key}` itself; pass the phase's epochs as "
                "`head_epochs` / `fine_tune_epochs` (or `epochs` for one phase). "
                f"Received: {key}={fit_kwargs[key]!r}"
            )
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError("`checkpoint_dir` must be a directory path. "
                        f"Received: checkpoint_dir={checkpoint_dir!r}")
    if label_smoothing and loss != "auto":
        raise ValueError(
            "`label_smoothing` applies to loss='auto'; with your own loss, set it there. "
            f"Received: label_smoothing={label_smoothing!r}, loss={loss!r}")
    if isinstance(label_smoothing, bool) or not isinstance(
            label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
        raise ValueError("`label_smoothing` must be a number in [0, 1), e.g. 0.1. "
                         f"Received: label_smoothing={label_smoothing!r}")
    return TrainingOptions(
        function=function,
        loss=loss,
        metrics=metrics,
        label_smoothing=float(label_smoothing),
        early_stopping=check_early_stopping(early_stopping),
        checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
        log_dir=check_log_dir(log_dir),
        cache=cache_options(cache, cache_dir, cache_memory_limit),
        fit_kwargs=fit_kwargs,
    )


def check_epochs(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    return value


def check_learning_rate(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"`{name}` must be a positive number, e.g. 1e-3. Received: {name}={value!r}")
    return float(value)


def check_log_dir(log_dir):
    if log_dir is None:
        return None
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"`log_dir` must be a directory path. Received: log_dir={log_dir!r}")
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            "`log_dir` writes TensorBoard logs, which needs the `tensorboard` package: "
            "`pip install tensorboard` (or `pip install tftransfer[tensorboard]`). "
            f"Received: log_dir={log_dir!r}"
        )
    return os.fspath(log_dir)


def check_early_stopping(value):
    """False, or the patience in epochs (True: `DEFAULT_PATIENCE`)."""
    if value is True:
        return DEFAULT_PATIENCE
    if value is False or value is None:
        return False
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(
        "`early_stopping` must be True (stop after "
        f"{DEFAULT_PATIENCE} epochs without improvement, keeping the best epoch's "
        "weights), False, or a patience in epochs. Received: "
        f"early_stopping={value!r}"
    )
