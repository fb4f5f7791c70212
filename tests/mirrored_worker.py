"""MirroredStrategy over two logical CPU devices, cached and uncached, for
test_multiworker.py (logical devices must be set before TensorFlow starts,
so this runs in its own process): each run against the same run on one
device (same initial weights, data, seed and global batch), and the
mirrored model's export loaded back. Prints the JSON of the runs."""

import json
import os
import sys
import tempfile


def main(tests_dir):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, tests_dir)
    import keras
    import numpy as np

    import tftransfer as tft
    from helpers import labelled
    from helpers import tiny_backbone

    def train(strategy, cache, initial=None):
        with strategy.scope():
            model = tft.build_classifier(tiny_backbone(), class_names=["a", "b", "c"],
                                         dropout=0.0)
        if initial is not None:
            model.set_weights(initial)
        start = model.get_weights()
        x, y = labelled(32)
        keras.utils.set_random_seed(1)
        tft.fit_two_phase(model, x, (x, y), y=y, head_epochs=2, fine_tune_epochs=1,
                          unfreeze_blocks=1, batch_size=8, verbose=0, cache=cache,
                          early_stopping=False, shuffle=False)
        return model, start, x

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    for cache in ("auto", False):
        model, start, x = train(mirrored, cache)
        single, _, _ = train(tf.distribute.OneDeviceStrategy("/cpu:0"), cache, initial=start)
        difference = max(float(np.max(np.abs(a - b)))
                         for a, b in zip(model.get_weights(), single.get_weights()))
        moved = max(float(np.max(np.abs(a - b)))
                    for a, b in zip(model.get_weights(), start))
        with tempfile.TemporaryDirectory() as base:
            path = tft.export_saved_model(model, os.path.join(base, "model"))
            served = tf.saved_model.load(path).signatures["serving_pixels"](
                images=tf.constant(x[:8]))["probabilities"].numpy()
        expected = model.predict_proba(x[:8], verbose=0)
        results[str(cache)] = {
            "replicas": mirrored.num_replicas_in_sync,
            "cached": [s["cache"] is not None for s in model.training_summary],
            "loss": model.training_summary[-1]["final"]["loss"],
            "single_loss": single.training_summary[-1]["final"]["loss"],
            "weights_difference": difference,
            "weights_moved": moved,
            "export_difference": float(np.max(np.abs(served - expected))),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
