"""The checks every model kind runs: `ModelKindTests`.

A model kind is a `tftransfer.Classifier` subclass on one backbone source
(an `ImageClassifier` on a Keras Applications name, on the user's own model,
on a TF-Hub SavedModel; a `TextClassifier` on a keras-hub preset). Each kind
must survive the same four things:

1. a config round trip (``get_config`` -> JSON -> ``from_config``);
2. a ``.keras`` round trip (``model.save`` -> ``keras.saving.load_model``);
3. an export round trip (``tft.export_saved_model``, served in a process
   that cannot import tftransfer);
4. head training (``tft.fit_head``) that leaves every backbone weight,
   BatchNormalization statistics included, bit-identical.

A kind applies them by subclassing `ModelKindTests` in a test file, under a
name pytest collects (``class TestMyKind(ModelKindTests)``), and providing:

- a ``model`` fixture: a freshly built classifier of that kind (each test
  gets its own, so that training or saving in one test touches no other);
- ``examples(self)``: ``(x, y)``, a handful of inputs `predict` takes and
  their integer labels;

and, where the kind differs from an image model on a Keras backbone:

- ``safe_mode``: whether its config and its `.keras` file load in Keras's
  safe mode (`False` for TF-Hub backbones: `HubLayer` refuses safe mode by
  design, so their config round trip runs `from_config` under
  ``keras.saving.deserialize_keras_object(..., safe_mode=False)``, the way
  ``load_model(path, safe_mode=False)`` runs it);
- ``serving_imports``: modules the serving process imports before
  ``tf.saved_model.load`` (``("tensorflow_text",)`` for text models);
- ``has_batchnorm``: whether the backbone has BatchNormalization moving
  statistics, which the freeze check then requires to be among the weights
  it compares;
- ``array_signature``: the export's signature that takes the examples as
  arrays (``serving_pixels`` for images, whose ``serving_default`` takes
  encoded files; ``serving_default`` for text).
"""

import copy
import json
import os

import keras
import numpy as np
import pytest

import tftransfer as tft
from helpers import run_without_tftransfer
from helpers import weights_by_path

# The head's options, as every `Classifier` exposes them.
HEAD_OPTIONS = ("num_classes", "hidden_units", "hidden_activation", "dropout", "activation",
                "multi_label", "pooling")

# Serves a request from an export, in a process where tftransfer cannot be
# imported (`run_without_tftransfer`). argv: export dir, request JSON file
# ({"name", "dtype", "values"}), JSON list of modules to import first.
SERVE = r"""
import importlib
import json
import sys
for module in json.loads(sys.argv[3]):  # e.g. tensorflow_text: the tokenizer's ops
    importlib.import_module(module)
import tensorflow as tf
with open(sys.argv[2]) as f:
    request = json.load(f)
serve = tf.saved_model.load(sys.argv[1]).signatures[request["signature"]]
out = serve(**{request["name"]: tf.constant(request["values"], dtype=request["dtype"])})
print(json.dumps({
    "inputs": sorted(serve.structured_input_signature[1]),
    "outputs": sorted(out),
    "probabilities": out["probabilities"].numpy().tolist(),
    "class_ids": out["class_ids"].numpy().tolist(),
    "class_names": [s.decode() for s in out["class_names"].numpy()],
    "tftransfer_imported": any(m.split(".")[0] == "tftransfer" for m in sys.modules),
}))
"""


def perturb(model, seed=1):
    """Moves every float weight of `model` (backbone and head, trainable or
    not, BatchNormalization statistics included) off its initial value, so a
    round trip that re-initializes or reloads from elsewhere shows."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = np.asarray(variable.numpy())
        dtype = value.dtype
        if dtype.kind != "f":
            continue
        if "variance" in variable.path:  # stays positive
            value = value * rng.uniform(0.5, 1.5, value.shape)
        else:
            value = value * rng.uniform(0.8, 1.2, value.shape) + rng.normal(0, 0.05, value.shape)
        variable.assign(value.astype(dtype))


def from_config(model, config, *, safe_mode):
    """``type(model).from_config(config)``; with ``safe_mode=False``, called
    by `keras.saving.deserialize_keras_object` outside safe mode (after
    checking that in safe mode, the default, it is refused)."""
    if safe_mode:
        return type(model).from_config(copy.deepcopy(config))
    with pytest.raises(ValueError, match=r"safe mode.*safe_mode=False"):
        type(model).from_config(copy.deepcopy(config))
    serialized = keras.saving.serialize_keras_object(model)
    serialized = {key: serialized[key] for key in ("module", "class_name", "registered_name")}
    serialized["config"] = copy.deepcopy(config)
    return keras.saving.deserialize_keras_object(serialized, safe_mode=False)


def head_options(model):
    return {option: getattr(model, option) for option in HEAD_OPTIONS}


def outputs(model, x):
    return np.asarray(model.predict(x, verbose=0))


def as_list(x):
    """`x` as a JSON-able list (strings or numbers)."""
    if isinstance(x, np.ndarray) and x.dtype.kind not in "OUS":
        return x.tolist()
    return [str(s) for s in x]


class ModelKindTests:
    """The four checks of a model kind; see the module docstring."""

    safe_mode = True
    serving_imports = ()
    has_batchnorm = True
    array_signature = "serving_pixels"
    batch_size = 4

    def examples(self):
        raise NotImplementedError(f"{type(self).__name__} must implement `examples()`.")

    @pytest.fixture
    def model(self):
        raise NotImplementedError(f"{type(self).__name__} must provide a `model` fixture.")

    # --- 1. Config round trip ----------------------------------------------------

    def test_config_round_trip(self, model):
        x, _ = self.examples()
        perturb(model)
        config = model.get_config()
        text = json.dumps(config)  # the config must be JSON
        clone = from_config(model, json.loads(text), safe_mode=self.safe_mode)

        assert type(clone) is type(model)
        assert clone.class_names == model.class_names
        assert clone.backbone_spec == model.backbone_spec
        assert head_options(clone) == head_options(model)
        assert json.loads(json.dumps(clone.get_config())) == json.loads(text)
        assert clone.backbone.trainable is False
        assert list(tft.get_blocks(clone)) == list(tft.get_blocks(model))

        clone.set_weights(model.get_weights())
        np.testing.assert_allclose(outputs(clone, x), outputs(model, x), rtol=1e-5, atol=1e-6)

    # --- 2. `.keras` round trip ----------------------------------------------------

    def test_keras_file_round_trip(self, model, tmp_path):
        x, _ = self.examples()
        perturb(model)
        path = tmp_path / "m.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=self.safe_mode)

        assert type(loaded) is type(model)
        assert loaded.class_names == model.class_names
        assert loaded.backbone_spec == model.backbone_spec
        assert head_options(loaded) == head_options(model)
        assert list(tft.get_blocks(loaded)) == list(tft.get_blocks(model))
        assert loaded.backbone.trainable is False
        np.testing.assert_allclose(outputs(loaded, x), outputs(model, x), rtol=1e-5, atol=1e-6)

    # --- 3. Export round trip --------------------------------------------------------

    def test_export_round_trip_without_tftransfer(self, model, tmp_path):
        x, _ = self.examples()
        perturb(model)
        version_dir = tft.export_saved_model(model, tmp_path / "serving")
        assert os.path.basename(version_dir) == "1"

        input_name = model.serving_spec().input_name
        request = tmp_path / "request.json"
        request.write_text(json.dumps({
            "signature": self.array_signature,
            "name": input_name,
            "dtype": "string" if input_name == "text" else "float32",
            "values": as_list(x),
        }))
        served = run_without_tftransfer(SERVE, version_dir, request,
                                        json.dumps(list(self.serving_imports)))

        expected = model.predict_proba(x, verbose=0)
        assert served["inputs"] == [input_name]
        assert served["outputs"] == ["class_ids", "class_names", "probabilities"]
        assert not served["tftransfer_imported"]
        np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
        assert served["class_ids"] == expected.argmax(-1).tolist()
        assert served["class_names"] == [model.class_names[i] for i in expected.argmax(-1)]
        assert tft.read_labels(version_dir) == model.class_names
        assert tft.read_metadata(version_dir)["class_names"] == model.class_names

    # --- 4. Head training leaves the backbone bit-identical ------------------------------

    @pytest.mark.parametrize("cache", ["auto", False])
    def test_fit_head_leaves_the_backbone_bit_identical(self, model, cache):
        x, y = self.examples()
        backbone_before = weights_by_path(model.backbone)
        head_before = {v.path: np.array(v.numpy()) for v in model.head.trainable_weights}
        assert backbone_before and head_before
        if self.has_batchnorm:
            assert any("moving_mean" in p for p in backbone_before), sorted(backbone_before)
            assert any("moving_variance" in p for p in backbone_before), sorted(backbone_before)

        tft.fit_head(model, x, y=y, epochs=1, batch_size=self.batch_size, cache=cache,
                     verbose=0)

        backbone_after = weights_by_path(model.backbone)
        assert sorted(backbone_after) == sorted(backbone_before)
        changed = [p for p in backbone_before
                   if not np.array_equal(backbone_before[p], backbone_after[p])]
        assert changed == [], f"fit_head changed backbone weights: {changed}"
        head_after = {v.path: np.array(v.numpy()) for v in model.head.trainable_weights}
        unchanged = [p for p in head_before if np.array_equal(head_before[p], head_after[p])]
        assert unchanged == [], f"fit_head left head weights unchanged: {unchanged}"
