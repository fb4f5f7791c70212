"""`.keras` files saved by earlier tftransfer versions still load and give the
same outputs (the files are committed; tests/fixtures/make_fixtures.py wrote them)."""

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import tftransfer as tft

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
VERSIONS = sorted(d for d in os.listdir(FIXTURES) if d.startswith("v"))


def _expected(version):
    with open(os.path.join(FIXTURES, version, "expected.json")) as f:
        return json.load(f)


def _load(version, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return keras.saving.load_model(os.path.join(FIXTURES, version, name))


@pytest.mark.parametrize("version", VERSIONS)
def test_image_classifier_saved_by_an_earlier_version_loads(version):
    expected = _expected(version)["image_classifier"]
    model = _load(version, "image_classifier.keras")
    assert isinstance(model, tft.ImageClassifier)
    assert model.class_names == expected["class_names"]
    x = np.load(os.path.join(FIXTURES, version, "image_inputs.npy"))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected["outputs"],
                               rtol=1e-4, atol=1e-5)
    # The custom block pattern survived, so fine-tuning finds the same blocks.
    assert list(tft.get_blocks(model.backbone)) == ["stem1", "stem2", "stem3"]
    # The compiled optimizer is restored and can keep training.
    model.fit(x, np.arange(len(x)) % 3, epochs=1, verbose=0)


@pytest.mark.parametrize("version", VERSIONS)
def test_application_classifier_saved_by_an_earlier_version_loads(version):
    expected = _expected(version)["application_classifier"]
    model = _load(version, "application_classifier.keras")
    assert model.class_names == expected["class_names"]
    x = np.load(os.path.join(FIXTURES, version, "image_inputs.npy"))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected["outputs"],
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("version", VERSIONS)
def test_text_classifier_saved_by_an_earlier_version_loads(version):
    pytest.importorskip("keras_hub")
    expected = _expected(version)["text_classifier"]
    model = _load(version, "text_classifier.keras")
    assert isinstance(model, tft.TextClassifier)
    assert model.class_names == expected["class_names"]
    np.testing.assert_allclose(model.predict(np.array(expected["texts"]), verbose=0),
                               expected["outputs"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("first", [
    "import tftransfer; import keras",  # Keras after tftransfer
    "import keras; import tftransfer",  # Keras first
    "import tftransfer.data.folders; import keras",  # a submodule that imports Keras itself
])
def test_import_tftransfer_is_enough_to_load_a_file(first):
    """`import tftransfer` imports no TensorFlow, yet a `.keras` file naming
    tftransfer's classes loads after it (they register when Keras is imported)."""
    path = os.path.join(FIXTURES, VERSIONS[0], "image_classifier.keras")
    script = (f"{first}\nm = keras.saving.load_model({path!r})\n"
              "print(type(m).__name__)\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                            text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "ImageClassifier"
