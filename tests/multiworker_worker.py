"""One worker of the two-process test in test_multiworker.py.

    TF_CONFIG=... python multiworker_worker.py EXPORT_BASE RESULT_PREFIX CACHE

Builds a tiny classifier under `tf.distribute.MultiWorkerMirroredStrategy`
(the cluster comes from ``TF_CONFIG``), trains it with `fit_two_phase` (1 + 1
epochs, ``cache`` as given: ``auto`` or ``false``), exports it to
EXPORT_BASE, and writes RESULT_PREFIX.json (whether it is the chief, what
`export_saved_model` returned, the training summary) and RESULT_PREFIX.npz
(its final weights, and its probabilities on `helpers.images`).
"""

import json
import os
import sys

CLASS_NAMES = ["ant", "bee", "cat"]


def main(export_base, result_prefix, cache):
    import numpy as np
    import tensorflow as tf

    import tftransfer as tft
    from helpers import images
    from helpers import labelled
    from helpers import tiny_backbone

    task = json.loads(os.environ["TF_CONFIG"])["task"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        # Different seeds on purpose: the strategy broadcasts worker 0's
        # initial values, so the workers still start (and end) equal.
        model = tft.build_classifier(tiny_backbone(seed=task["index"]),
                                     class_names=CLASS_NAMES)
    x, y = labelled(n=32, num_classes=len(CLASS_NAMES))  # the same data everywhere
    tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=1,
                      batch_size=8, verbose=0, cache={"auto": "auto", "false": False}[cache])
    exported = tft.export_saved_model(model, export_base)
    features = tft.export_feature_extractor(model, f"{export_base}_features")
    np.savez(f"{result_prefix}.npz",
             probabilities=np.asarray(model.probabilities(model(images(4), training=False))),
             **{f"weight_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)})
    with open(f"{result_prefix}.json", "w") as f:
        json.dump({
            "task": task,
            "is_chief": tft.is_chief(model.distribute_strategy),
            "exported": exported,
            "features": features,
            "summary": model.training_summary,
        }, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
