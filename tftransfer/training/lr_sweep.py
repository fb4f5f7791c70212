"""The learning-rate sweep's parts: the callback that sets the rates, the
per-batch loss it reads, and the arithmetic of fastai's finder.

`find_learning_rate` (`tftransfer.training.lr_finder`) trains with
`LearningRateSweep` among the callbacks and `BatchLoss` among the metrics;
`geometric_learning_rates`, `smooth_losses`, `steepest_descent`,
`minimum_over_ten` and `suggestions` are the numbers, kept apart from the
training so that each can be checked on its own.
"""

import keras
import numpy as np

BATCH_LOSS = "batch_loss"
"""The name under which `BatchLoss` appears in the batch logs."""

MIN_STEPS = 5
"""The fewest steps of a sweep: the slope of the smoothed loss needs a few points."""

SLOPE_POINTS = 3
"""The fewest points, up to the lowest smoothed loss, that `steepest_descent` reads a slope from."""


def geometric_learning_rates(min_learning_rate, max_learning_rate, num_steps):
    """`num_steps` rates from `min_learning_rate` to `max_learning_rate`, each
    the one before times ``(max / min) ** (1 / (num_steps - 1))``.

    Example:

    >>> from tftransfer.training.lr_sweep import geometric_learning_rates
    >>> [float(f"{r:g}") for r in geometric_learning_rates(1e-3, 1.0, 4)]
    [0.001, 0.01, 0.1, 1.0]
    """
    return np.geomspace(min_learning_rate, max_learning_rate, num_steps)


def smooth_losses(losses, smoothing):
    """fastai's bias-corrected exponential moving average of `losses`:
    ``average = smoothing * average + (1 - smoothing) * loss``, divided by
    ``1 - smoothing ** (step + 1)``, so that the first value is the first loss.

    Example:

    >>> from tftransfer.training.lr_sweep import smooth_losses
    >>> [round(float(v), 4) for v in smooth_losses([1.0, 0.0], 0.5)]
    [1.0, 0.3333]
    """
    smoothed, average = [], 0.0
    for step, loss in enumerate(losses):
        average = smoothing * average + (1.0 - smoothing) * float(loss)
        smoothed.append(average / (1.0 - smoothing ** (step + 1)))
    return np.asarray(smoothed, np.float64)


def _finite_prefix(smoothed):
    """The number of leading finite values (a sweep stops at the first
    non-finite loss, so only the last value can be one)."""
    finite = np.isfinite(smoothed)
    return len(smoothed) if finite.all() else int(np.argmin(finite))


def steepest_descent(learning_rates, smoothed_losses):
    """The rate where the smoothed loss falls fastest: the most negative
    slope against the log of the rate (central differences over the finite
    losses), among the rates below the one with the lowest smoothed loss;
    None when fewer than `SLOPE_POINTS` points lead to that minimum (the
    loss hardly fell: no slope to read).

    Example:

    >>> from tftransfer.training.lr_sweep import steepest_descent
    >>> steepest_descent([1e-3, 1e-2, 1e-1, 1.0, 10.0], [2.0, 1.9, 1.0, 0.95, 5.0])
    0.01
    """
    rates = np.asarray(learning_rates, np.float64)
    smoothed = np.asarray(smoothed_losses, np.float64)
    usable = _finite_prefix(smoothed)
    if usable == 0:
        return None
    lowest = int(np.argmin(smoothed[:usable]))
    if lowest + 1 < SLOPE_POINTS:
        return None
    slopes = np.gradient(smoothed[:usable], np.log(rates[:usable]))
    return float(rates[int(np.argmin(slopes[:lowest]))])


def minimum_over_ten(learning_rates, smoothed_losses):
    """A tenth of the rate with the lowest smoothed loss (the other classic
    rule: the minimum is already too fast to train at); None when no loss
    was finite.

    Example:

    >>> from tftransfer.training.lr_sweep import minimum_over_ten
    >>> minimum_over_ten([1e-3, 1e-2, 1e-1], [2.0, 1.0, 3.0])
    0.001
    """
    smoothed = np.asarray(smoothed_losses, np.float64)
    usable = _finite_prefix(smoothed)
    if usable == 0:
        return None
    return float(learning_rates[int(np.argmin(smoothed[:usable]))]) / 10.0


def suggestions(learning_rates, smoothed_losses):
    """The suggested rate and the alternative, each with its rule, as the
    `LearningRateFinder` fields ``suggested_learning_rate``, ``rule``,
    ``alternative_learning_rate``, ``alternative_rule``.

    The suggestion is `steepest_descent`'s rate; where it has none (the loss
    hardly fell), the lowest rate swept, and the rule says so. The
    alternative is `minimum_over_ten`'s (it may lie below the swept range).

    Example:

    >>> from tftransfer.training.lr_sweep import suggestions
    >>> found = suggestions([1e-3, 1e-2, 1e-1, 1.0, 10.0], [2.0, 1.9, 1.0, 0.95, 5.0])
    >>> found["suggested_learning_rate"], found["alternative_learning_rate"]
    (0.01, 0.1)
    """
    steepest = steepest_descent(learning_rates, smoothed_losses)
    if steepest is not None:
        suggested = steepest
        rule = ("the steepest descent of the smoothed loss (its most negative slope against "
                "log(learning rate)), before its minimum")
    else:
        suggested = float(learning_rates[0])
        rule = (f"the smoothed loss fell over fewer than {SLOPE_POINTS} steps, so no slope "
                "could be read: the lowest rate swept (sweep from a lower min_learning_rate)")
    return {"suggested_learning_rate": suggested, "rule": rule,
            "alternative_learning_rate": minimum_over_ten(learning_rates, smoothed_losses),
            "alternative_rule": "a tenth of the rate with the lowest smoothed loss"}


class BatchLoss(keras.metrics.MeanMetricWrapper):
    """The loss of the last batch only, as a metric.

    Keras 3 logs, after each batch, the mean loss since the epoch began; a
    sweep needs each batch's own loss. This metric forgets the batches
    before: its value is the loss function on the current batch's outputs
    (without the layers' regularization losses).

    Args:
        fn: the loss function (a `keras.losses.Loss` or a callable
            ``fn(y_true, y_pred)``).
        name: the name in the logs.

    Example:

    >>> from tftransfer.training.lr_sweep import BatchLoss
    >>> metric = BatchLoss(keras.losses.MeanSquaredError())
    >>> metric.update_state(np.zeros((2, 1)), np.ones((2, 1)))
    >>> metric.update_state(np.zeros((2, 1)), np.full((2, 1), 3.0))
    >>> float(metric.result())
    9.0
    """

    def __init__(self, fn, name=BATCH_LOSS, dtype=None, **kwargs):
        super().__init__(fn, name=name, dtype=dtype, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.reset_state()
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)


class LearningRateSweep(keras.callbacks.Callback):
    """Sets the learning rate of each batch and records the batch's loss.

    Batch ``i`` trains at ``learning_rates[i]``: the rate is assigned to the
    optimizer of the model the callback is given (a float on a Keras
    optimizer's learning-rate variable; a schedule cannot be set) before the
    batch, and read back after it. Training stops after the last rate, or
    when the smoothed loss exceeds `divergence_threshold` times its lowest
    value so far or a loss is not finite (fastai's rule); `stopped_early`
    then says so.

    Args:
        learning_rates: the rates, one per batch.
        smoothing: of the exponential moving average (see `smooth_losses`).
        divergence_threshold: stop when the smoothed loss passes this many
            times its best.

    Attributes:
        learning_rates, losses, smoothed_losses: lists, one entry per batch
            trained (the rate read back from the optimizer, the batch's
            loss, its bias-corrected moving average).
        stopped_early: whether the loss diverged before the last rate.
    """

    def __init__(self, learning_rates, *, smoothing, divergence_threshold):
        super().__init__()
        self.planned = [float(rate) for rate in learning_rates]
        self.smoothing = float(smoothing)
        self.divergence_threshold = float(divergence_threshold)
        self.learning_rates, self.losses, self.smoothed_losses = [], [], []
        self.stopped_early = False
        self._average = 0.0
        self._best = np.inf

    def on_train_batch_begin(self, batch, logs=None):
        step = len(self.losses)
        if step < len(self.planned):
            self.model.optimizer.learning_rate = self.planned[step]

    def on_train_batch_end(self, batch, logs=None):
        if len(self.losses) >= len(self.planned):
            self.model.stop_training = True
            return
        if BATCH_LOSS not in (logs or {}):
            raise ValueError(
                f"The sweep reads each batch's loss from the logs' {BATCH_LOSS!r}: compile the "
                f"model it trains with metrics=[BatchLoss(loss)]. Received: logs with keys "
                f"{sorted(logs or {})}")
        loss = float(np.asarray(logs[BATCH_LOSS]))
        step = len(self.losses)
        self.learning_rates.append(float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate)))
        self.losses.append(loss)
        self._average = self.smoothing * self._average + (1.0 - self.smoothing) * loss
        smoothed = self._average / (1.0 - self.smoothing ** (step + 1))
        self.smoothed_losses.append(smoothed)
        if not np.isfinite(smoothed) or smoothed > self.divergence_threshold * self._best:
            self.stopped_early = True
            self.model.stop_training = True
            return
        self._best = min(self._best, smoothed)
        if len(self.losses) == len(self.planned):
            self.model.stop_training = True
