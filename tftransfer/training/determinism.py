"""Reproducible runs."""

import logging

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)


def enable_determinism(seed):
    """Seeds every random generator and makes TensorFlow's ops deterministic.

    One `seed` then gives the same data splits, the same initial head and
    the same trained weights, run after run (on the same machine and
    software). Call it once, at the start of the program: op determinism
    cannot be turned off again in the same process, and some ops run
    slower (or raise, where no deterministic kernel exists) with it.

    Args:
        seed: an integer, for Python's, NumPy's, TensorFlow's and Keras's
            generators (`keras.utils.set_random_seed`).

    Example:

    ```python
    tft.enable_determinism(42)
    model = tft.build_classifier("efficientnet_b0", num_classes=5)
    tft.fit_two_phase(model, splits.train, splits.validation)
    ```
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()
    logger.info("Seeded all generators with %d; TensorFlow op determinism is on.", seed)
