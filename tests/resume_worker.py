"""A training run for tests/test_resume.py, in its own process so that it
can be killed with SIGKILL in the middle of an epoch.

Usage: python resume_worker.py CHECKPOINT_DIR OUT.npz KILL DATA CACHE PATIENCE
KILL is "EPOCH:BATCH" (global epoch, from 0) or "none"; DATA "arrays" or
"dataset"; CACHE "auto" or "off"; PATIENCE an integer or "off".
"""

import json
import os
import signal
import sys


def main(checkpoint_dir, out, kill, data, cache, patience):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import keras
    import numpy as np
    import tensorflow as tf

    import tftransfer as tft
    from helpers import labelled
    from helpers import tiny_backbone

    tft.enable_determinism(7)
    model = tft.build_classifier(tiny_backbone(), class_names=["a", "b", "c"], dropout=0.3,
                                 hidden_units=(8,))
    x, y = labelled(48, seed=0)
    validation = labelled(12, seed=1)
    if data == "dataset":
        x = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(48, seed=3).batch(8)
        y = None
    callbacks = []
    if kill != "none":
        kill_epoch, kill_batch = map(int, kill.split(":"))

        class Kill(keras.callbacks.Callback):
            epoch = -1

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if (self.epoch, batch) == (kill_epoch, kill_batch):
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(Kill())
    history = tft.fit_two_phase(
        model, x, validation, y=y, head_epochs=3, fine_tune_epochs=3, unfreeze_blocks=2,
        learning_rate=3e-3, batch_size=8, verbose=0, callbacks=callbacks,
        cache="auto" if cache == "auto" else False,
        early_stopping=False if patience == "off" else int(patience),
        checkpoint_dir=checkpoint_dir,
    )
    np.savez(out, **{v.path: np.asarray(v.numpy()) for v in model.weights})
    with open(out + ".json", "w") as f:
        json.dump({"epoch": history.epoch, "history": history.history,
                   "cache": [s["cache"] is not None for s in model.training_summary]}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
