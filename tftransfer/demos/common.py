"""What the demos share."""

import keras


class EpochLog(keras.callbacks.Callback):
    """Reports each epoch through `report(text)`."""

    def __init__(self, stage, report):
        super().__init__()
        self.stage, self.report = stage, report

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{k}={v:.3f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_accuracy")]
        self.report(f"  {self.stage} epoch {epoch + 1}: {' '.join(parts)}")
