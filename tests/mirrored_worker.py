"""MirroredStrategy over two logical CPU devices, cached and uncached, for
test_multiworker.py (logical devices must be set before TensorFlow starts,
so this runs in its own process). Prints the JSON of both runs."""

import json
import sys


def main(tests_dir):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, tests_dir)
    import tftransfer as tft
    from helpers import labelled
    from helpers import tiny_backbone

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    for cache in ("auto", False):
        with strategy.scope():
            model = tft.build_classifier(tiny_backbone(), class_names=["a", "b", "c"])
        x, y = labelled(32)
        tft.fit_two_phase(model, x, (x, y), y=y, head_epochs=2, fine_tune_epochs=1,
                          unfreeze_blocks=1, batch_size=8, verbose=0, cache=cache,
                          early_stopping=False)
        results[str(cache)] = {
            "replicas": strategy.num_replicas_in_sync,
            "cached": [s["cache"] is not None for s in model.training_summary],
            "loss": model.training_summary[-1]["final"]["loss"],
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
