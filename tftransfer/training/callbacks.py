"""The callbacks every phase runs: the NaN check, early stopping, TensorBoard."""

import keras
import numpy as np

from tftransfer.errors import NonFiniteLossError


class _StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """`TerminateOnNaN(raise_error=True)` with a message that says what to do.

    It raises at the first batch whose loss is not finite, before any
    checkpoint of that epoch is written, so no saved state holds non-finite
    weights. When EarlyStopping holds the best epoch's weights, the model gets
    them back; otherwise its weights are those of the failing batch."""

    def __init__(self, phase, learning_rate, argument, early_stopping):
        super().__init__(raise_error=True)
        self.phase = phase
        self.learning_rate = learning_rate
        self.argument = argument
        self.early_stopping = early_stopping
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.isfinite(loss):
            return
        es = self.early_stopping
        if es is not None and es.best_weights is not None:
            self.model.set_weights(es.best_weights)
            weights = (f"The model's weights were set back to its best epoch so far "
                       f"(epoch {es.best_epoch + 1}).")
        else:
            weights = "The model's weights are not finite now: rebuild it before training again."
        rate = self.learning_rate
        if self.argument is None:  # the user's optimizer
            hint = "try your optimizer with a lower learning rate"
        elif isinstance(rate, (int, float)):
            hint = f"try `{self.argument}={rate / 10:g}` (a tenth of {rate:g})"
        else:
            hint = f"try a lower `{self.argument}`"

        raise NonFiniteLossError(
            f"Phase {self.phase} stopped: the loss became {float(loss)} at epoch "
            f"{self.epoch + 1}, batch {batch + 1}. A learning rate that is too high is the "
            f"usual cause: {hint}. Also check the data for NaN or infinite values and the "
            f"labels for values outside [0, num_classes). {weights}"
        )


def phase_callbacks(phase, fit_kwargs, validation_data, *, learning_rate, argument,
                    early_stopping, log_dir):
    """The phase's callbacks: the NaN check, early stopping, the user's
    (taken out of `fit_kwargs`), TensorBoard. The checkpoint's callback goes
    last (it saves what the others did in the epoch); the caller adds it.

    Returns:
        ``(callbacks, the EarlyStopping callback or None)``.
    """
    callbacks = list(fit_kwargs.pop("callbacks", None) or [])
    stopper = next(
        (c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    if stopper is None and early_stopping is not False:
        validating = validation_data is not None or fit_kwargs.get("validation_split")
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss" if validating else "loss", patience=early_stopping,
            restore_best_weights=True)
        # Before the user's callbacks: at the end they see the best weights.
        callbacks.insert(0, stopper)
    if not any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks):
        callbacks.insert(0, _StopOnNonFiniteLoss(phase, learning_rate, argument, stopper))
    if log_dir is not None:
        # Both phases write to one log: epochs are numbered on across phases.
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False))
    return callbacks, stopper
