"""The learning-rate finder: `find_learning_rate` and its result, `LearningRateFinder`.

A short training run whose learning rate grows by a constant factor every
batch, from a rate too small to matter to one too large to train at (Leslie
Smith's range test, with fastai's smoothing, stopping rule and suggestions).
The loss against the rate shows where training is fastest and where it
breaks down.

How the model is left as it was: the sweep trains a second functional model
over the same layers (``keras.Model(model.inputs, model.outputs)``), compiled
with the sweep's own optimizer, so the classifier's compile state (its
optimizer and that optimizer's variables, its loss and metrics, or its not
being compiled) is never touched. Its variables (weights, BatchNormalization
statistics, random-seed states) and every layer's and variable's
``trainable`` flag are read before the sweep and written back afterwards,
also when the sweep fails.
"""

import dataclasses
import logging
import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _compat
from tftransfer.classifiers.base import Classifier
from tftransfer.data.checks import is_array
from tftransfer.feature_cache.cache import FeatureCache
from tftransfer.feature_cache.feed import steps_per_epoch
from tftransfer.training.data_checks import check_training_data
from tftransfer.training.data_checks import unpack_splits
from tftransfer.training.defaults import recipe_defaults
from tftransfer.training.lr_sweep import MIN_STEPS
from tftransfer.training.lr_sweep import BatchLoss
from tftransfer.training.lr_sweep import LearningRateSweep
from tftransfer.training.lr_sweep import geometric_learning_rates
from tftransfer.training.lr_sweep import suggestions
from tftransfer.training.options import training_options
from tftransfer.training.phases import FineTunePhase
from tftransfer.training.phases import HeadPhase

logger = logging.getLogger(__name__)

PHASES = ("head", "fine_tune")
"""The phases a sweep can run: `fit_head`'s and `fine_tune`'s."""

@dataclasses.dataclass(frozen=True)
class LearningRateFinder:
    """The result of `find_learning_rate`: the losses of a learning-rate sweep.

    Attributes:
        phase: ``"head"`` or ``"fine_tune"``.
        learning_rates: the rate of each batch trained (read back from the
            optimizer), growing geometrically.
        losses: each batch's loss (before its update).
        smoothed_losses: their bias-corrected exponential moving average.
        suggested_learning_rate: the rate `rule` picks: where the smoothed
            loss falls fastest.
        rule: a sentence on how the suggestion was chosen.
        alternative_learning_rate: the other classic rule's rate: a tenth of
            the rate with the lowest smoothed loss (None if no loss was
            finite).
        alternative_rule: a sentence on that rule.
        stopped_early: True when the smoothed loss diverged (passed
            `divergence_threshold` times its best, or was not finite) before
            the last rate.
        cache_info: what the feature cache did (boundary, examples, bytes,
            ...) when the sweep trained on cached features, else None.
    """

    phase: str
    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggested_learning_rate: float
    rule: str
    alternative_learning_rate: float
    alternative_rule: str
    stopped_early: bool
    cache_info: dict = None

    def plot(self):
        """The smoothed loss (and the raw one, faint) against the learning
        rate on a log axis, the suggestion marked by a dashed line and the
        alternative by a dotted one.

        Returns:
            A `matplotlib.figure.Figure` (no pyplot: save it with
            ``figure.savefig("lr.png")``).
        """
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6, 4), layout="constrained")
        axes = figure.add_subplot()
        axes.plot(self.learning_rates, self.losses, color="C0", alpha=0.3, label="loss")
        axes.plot(self.learning_rates, self.smoothed_losses, color="C0", label="smoothed loss")
        axes.set_xscale("log")
        axes.axvline(self.suggested_learning_rate, color="C3", linestyle="--",
                     label=f"suggested: {self.suggested_learning_rate:.2g}")
        if self.alternative_learning_rate is not None:
            axes.axvline(self.alternative_learning_rate, color="C2", linestyle=":",
                         label=f"minimum / 10: {self.alternative_learning_rate:.2g}")
        finite = self.smoothed_losses[np.isfinite(self.smoothed_losses)]
        if finite.size:  # the divergence's spike would flatten the rest
            low, high = float(finite.min()), float(finite.max())
            margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
            axes.set_ylim(low - margin, high + margin)
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss")
        axes.set_title(f"Learning-rate sweep ({self.phase} phase)")
        axes.legend()
        return figure

    def __str__(self):
        end = (" (stopped early: the loss diverged)" if self.stopped_early else "")
        lines = [
            (f"Learning-rate sweep of the {self.phase} phase: {len(self.learning_rates)} steps "
             f"from {self.learning_rates[0]:.3g} to {self.learning_rates[-1]:.3g}{end}"),
            f"Suggested learning rate: {self.suggested_learning_rate:.3g} ({self.rule})",
        ]
        if self.alternative_learning_rate is not None:
            lines.append(f"Alternative: {self.alternative_learning_rate:.3g} "
                         f"({self.alternative_rule})")
        return "\n".join(lines)


def find_learning_rate(model, x, y=None, *, phase="head", min_learning_rate=1e-7,
                       max_learning_rate=10.0, num_steps=100, smoothing=0.98,
                       divergence_threshold=4.0, batch_size=None,
                       unfreeze_blocks=None, optimizer=None, loss="auto",
                       label_smoothing=0.0, cache="auto", seed=0, verbose=0):
    """Sweeps the learning rate over one phase of the recipe and suggests one.

    Batch ``i`` of `num_steps` trains at ``min_learning_rate * (max /
    min) ** (i / (num_steps - 1))`` (the data repeats when it has fewer
    batches). The sweep stops when the smoothed loss passes
    `divergence_threshold` times its lowest value, or a loss is not finite.
    The phase is set up as `fit_head` or `fine_tune` would (backbone frozen,
    or its top `unfreeze_blocks` blocks unfrozen with BatchNormalization
    frozen and in inference mode), and trains on cached backbone features
    where those functions would (``cache="auto"``). Afterwards the model is
    as before: weights, BatchNormalization statistics, ``trainable`` flags
    and compile state (see the module's docstring).

    Args:
        model: a classifier from `build_classifier` (a `tftransfer.Classifier`).
        x: training data: a `tf.data.Dataset` of ``(inputs, labels)``
            batches, a `tftransfer.DataSplits` (its training split), or an
            array of inputs with `y`.
        y: labels, when `x` is an array.
        phase: ``"head"`` (the rate of `fit_head`) or ``"fine_tune"`` (the
            peak rate of `fine_tune`).
        min_learning_rate, max_learning_rate: the first and last rates.
        num_steps: batches of the sweep, at least 5.
        smoothing: of the loss's exponential moving average, in [0, 1)
            (0: no smoothing).
        divergence_threshold: stop when the smoothed loss passes this many
            times its best (more than 1).
        batch_size: for array data (default 32, as `fit`).
        unfreeze_blocks: for ``phase="fine_tune"``: backbone blocks
            unfrozen from the top, or ``"all"``, as in `fine_tune`. Default:
            the model kind's, as `fine_tune` (2 for images, ``"all"`` for
            text; `tftransfer.training.defaults`).
        optimizer: a Keras optimizer or its name whose class and settings
            the sweep copies (it never trains the object itself); default Adam.
        loss, label_smoothing: as for `fit_head`.
        cache: as for `fit_head`.
        seed: the order the data is shuffled in (None: a random one).
        verbose: as for `keras.Model.fit`.

    Returns:
        A `LearningRateFinder`: the rates, losses, suggestion, and ``plot()``.

    Example:

    >>> from tftransfer.training.lr_finder import find_learning_rate
    >>> model = build_classifier("mobilenet_v3_small", num_classes=2,
    ...                          input_shape=(32, 32, 3), weights=None)
    >>> images = np.random.uniform(0, 255, (16, 32, 32, 3))
    >>> finder = find_learning_rate(model, images, np.arange(16) % 2, num_steps=8,
    ...                             batch_size=8)
    >>> finder.phase, 1e-7 <= finder.suggested_learning_rate <= 10.0
    ('head', True)
    """
    x, phase_object, options, sweep = _checked(
        model, x, y, phase=phase, min_learning_rate=min_learning_rate,
        max_learning_rate=max_learning_rate, num_steps=num_steps, smoothing=smoothing,
        divergence_threshold=divergence_threshold, batch_size=batch_size,
        unfreeze_blocks=unfreeze_blocks, optimizer=optimizer, loss=loss,
        label_smoothing=label_smoothing, cache=cache, seed=seed, verbose=verbose)
    fit_kwargs = dict(options.fit_kwargs)
    steps = steps_per_epoch(x, fit_kwargs)
    epochs = math.ceil(num_steps / steps) if steps else num_steps
    state = _ModelState(model)
    try:
        # No steps: FineTunePhase then makes a constant rate, a variable the
        # sweep sets, instead of its warmup and cosine schedule.
        sweep_optimizer, _ = phase_object.prepare(model, None)
        shadow = keras.Model(model.inputs, model.outputs, name=f"{model.name}_lr_sweep")
        loss_fn = _sweep_loss(model, options)
        with model.distribute_strategy.scope():
            shadow.compile(optimizer=sweep_optimizer, loss=loss_fn,
                           metrics=[BatchLoss(loss_fn)])
        logger.info("Sweeping the learning rate of the %s phase from %g to %g over %d steps.",
                    phase, min_learning_rate, max_learning_rate, num_steps)
        with FeatureCache(options.cache, shuffle_seed=seed) as feature_cache:
            plan = feature_cache.plan(shadow, x, y, None, fit_kwargs=fit_kwargs)
            plan.fit(epochs=epochs, callbacks=[sweep])
    finally:
        state.restore()
    return _result(phase, sweep, cache_info=plan.info)


def _checked(model, x, y, *, phase, min_learning_rate, max_learning_rate, num_steps, smoothing,
             divergence_threshold, batch_size, unfreeze_blocks, optimizer, loss,
             label_smoothing, cache, seed, verbose):
    """Every check before any work; returns (x, the phase, the options, the
    sweep callback)."""
    if phase not in PHASES:
        raise ValueError(f"`phase` must be one of {', '.join(map(repr, PHASES))}. "
                         f"Received: phase={phase!r}")
    if not isinstance(model, Classifier):
        raise TypeError(
            "`model` must be a tftransfer classifier (from `tftransfer.build_classifier` or "
            "`build_text_classifier`): the sweep freezes its backbone as the recipe does. "
            f"Received: model of type {type(model).__name__}")
    unfreeze_blocks = recipe_defaults(model).blocks(unfreeze_blocks)
    for name, value in (("min_learning_rate", min_learning_rate),
                        ("max_learning_rate", max_learning_rate)):
        if not _is_number(value) or not 0 < value < math.inf:
            raise ValueError(f"`{name}` must be a positive number, e.g. 1e-7. "
                             f"Received: {name}={value!r}")
    if not min_learning_rate < max_learning_rate:
        raise ValueError(
            "`min_learning_rate` must be below `max_learning_rate`: the sweep grows from one "
            f"to the other. Received: min_learning_rate={min_learning_rate!r}, "
            f"max_learning_rate={max_learning_rate!r}")
    if not _is_integer(num_steps) or num_steps < MIN_STEPS:
        raise ValueError(
            f"`num_steps` must be an integer of at least {MIN_STEPS} (the slope of the loss "
            f"needs a few points), e.g. 100. Received: num_steps={num_steps!r}")
    if not _is_number(smoothing) or not 0.0 <= smoothing < 1.0:
        raise ValueError("`smoothing` must be a number in [0, 1), e.g. 0.98 (0: none). "
                         f"Received: smoothing={smoothing!r}")
    if not _is_number(divergence_threshold) or not divergence_threshold > 1.0:
        raise ValueError(
            "`divergence_threshold` must be a number above 1, e.g. 4.0 (stop when the "
            f"smoothed loss is 4 times its best). Received: divergence_threshold="
            f"{divergence_threshold!r}")
    if batch_size is not None and (not _is_integer(batch_size) or batch_size < 1):
        raise ValueError("`batch_size` must be a positive integer or None (32). "
                         f"Received: batch_size={batch_size!r}")
    if seed is not None and (not _is_integer(seed) or seed < 0):
        raise ValueError("`seed` must be a non-negative integer or None. "
                         f"Received: seed={seed!r}")
    fit_kwargs = {"verbose": verbose}
    if batch_size is not None:
        fit_kwargs["batch_size"] = int(batch_size)
    options = training_options("find_learning_rate", loss=loss, label_smoothing=label_smoothing,
                               cache=cache, fit_kwargs=fit_kwargs)
    template = optimizer is not None
    if phase == "head":
        phase_object = HeadPhase(epochs=1, learning_rate=float(min_learning_rate),
                                 optimizer=optimizer, copy_optimizer_settings=template,
                                 learning_rate_argument="min_learning_rate")
    else:
        phase_object = FineTunePhase(epochs=1, learning_rate=float(min_learning_rate),
                                     unfreeze_blocks=unfreeze_blocks, optimizer=optimizer,
                                     copy_optimizer_settings=template,
                                     learning_rate_argument="min_learning_rate")
    phase_object.check(model)
    x, _ = unpack_splits(model, x, None)
    _check_labelled(x, y, batch_size)
    check_training_data(model, x, y)
    sweep = LearningRateSweep(
        geometric_learning_rates(float(min_learning_rate), float(max_learning_rate),
                                 int(num_steps)),
        smoothing=smoothing, divergence_threshold=divergence_threshold)
    return x, phase_object, options, sweep


def _check_labelled(x, y, batch_size):
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(
                "`x` must be a tf.data.Dataset of (inputs, labels) batches: the sweep "
                f"measures the loss. Received: a dataset of {spec}")
        if y is not None:
            raise ValueError("`y` is for array inputs; a dataset holds its labels. "
                             f"Received: y of type {type(y).__name__}")
        if batch_size is not None:
            raise ValueError("`batch_size` is for array inputs; a dataset is batched "
                             f"already. Received: batch_size={batch_size!r}")
        return
    if x is None or not is_array(x):
        raise TypeError(
            "`x` must be an array of inputs (with `y`), a tf.data.Dataset of (inputs, labels) "
            f"or a tftransfer.DataSplits. Received: x of type {type(x).__name__}")
    if y is None:
        raise ValueError("`y` must be the labels of `x`: the sweep measures the loss. "
                         "Received: y=None")
    if len(y) != len(x):
        raise ValueError(f"`y` must hold one label per example of `x` ({len(x)}). "
                         f"Received: y of length {len(y)}")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _sweep_loss(model, options):
    """The loss the phase would compile: the option's, or for ``"auto"`` the
    classifier's default (`tftransfer.Classifier.default_loss`)."""
    if options.loss != "auto":
        return keras.losses.get(options.loss)
    return model.default_loss(label_smoothing=options.label_smoothing)


class _ModelState:
    """A model's variables and ``trainable`` flags, read now and written back
    by `restore`."""

    def __init__(self, model):
        # Parents before children: a layer's flag sets its sublayers', so
        # restoring in this order leaves each layer with its own flag.
        self.layers = [(layer, layer.trainable) for layer in _compat.flatten_layers(model)]
        self.variables = [(v, np.array(keras.ops.convert_to_numpy(v)), v.trainable)
                          for v in model.variables]

    def restore(self):
        for layer, trainable in self.layers:
            layer.trainable = trainable
        for variable, value, trainable in self.variables:
            variable.assign(value)
            variable.trainable = trainable


def _result(phase, sweep, *, cache_info):
    if not sweep.losses:
        raise ValueError("The sweep trained no batch: is the data empty? Received: no batches")
    rates = np.asarray(sweep.learning_rates, np.float64)
    smoothed = np.asarray(sweep.smoothed_losses, np.float64)
    return LearningRateFinder(
        phase=phase, learning_rates=rates, losses=np.asarray(sweep.losses, np.float64),
        smoothed_losses=smoothed, **suggestions(rates, smoothed),
        stopped_early=bool(sweep.stopped_early), cache_info=cache_info)
