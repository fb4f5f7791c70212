"""LiteRT export: builtin ops only, runs under ai-edge-litert's interpreter,
labels beside it; float32 parity and int8 agreement on real digits."""

import json
import os

import numpy as np
import pytest

import tftransfer as tft
from helpers import tiny_backbone
from tftransfer.data.digits import load_digits

litert = pytest.importorskip("ai_edge_litert.interpreter",
                             reason="ai-edge-litert is not installed: pip install ai-edge-litert")
from ai_edge_litert import schema_py_generated as schema  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    """A small classifier trained on real handwritten digits (32x32 RGB)."""
    images, labels = load_digits(image_size=32)
    images = np.repeat(images, 3, axis=-1)
    model = tft.build_classifier(tiny_backbone(), class_names=[str(d) for d in range(10)],
                                 dropout=0.0)
    # The tiny backbone is random: its features need training, all of it.
    tft.fine_tune(model, images[:1200], y=labels[:1200], epochs=10, unfreeze_blocks="all",
                  learning_rate=1e-2, warmup=0.0, early_stopping=False, batch_size=32,
                  verbose=0)
    held_out = images[1200:]
    accuracy = np.mean(model.predict_proba(held_out, verbose=0).argmax(-1) == labels[1200:])
    assert accuracy > 0.8, accuracy  # a model worth quantizing
    return model, held_out, images[:300]


def _custom_ops(path):
    with open(path, "rb") as f:
        model = schema.Model.GetRootAsModel(f.read(), 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    return [c.CustomCode().decode() for c in codes if c.CustomCode()]


def _run(path, images):
    interpreter = litert.Interpreter(model_path=os.path.join(path, "model.tflite"))
    run = interpreter.get_signature_runner("serving_default")
    return np.concatenate([run(images=image[None])["probabilities"] for image in images])


def test_float_export_matches_keras_and_carries_its_labels(trained, tmp_path, capsys):
    model, held_out, _ = trained
    path = tft.export_litert(model, tmp_path / "float", verbose=1)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"Exporting {model.name} to LiteRT (float32) at {path}"
    assert printed[-1].startswith("  done in ")
    assert sorted(os.listdir(path)) == ["labels.txt", "model.tflite", "tftransfer.json"]
    assert _custom_ops(os.path.join(path, "model.tflite")) == []  # no Flex ops
    with open(os.path.join(path, "labels.txt")) as f:
        assert f.read().splitlines() == model.class_names
    metadata = json.loads(open(os.path.join(path, "tftransfer.json")).read())
    assert metadata["class_names"] == model.class_names and metadata["quantization"] is None
    expected = model.predict_proba(held_out[:64], verbose=0)
    np.testing.assert_allclose(_run(path, held_out[:64]), expected, atol=1e-4)


@pytest.mark.parametrize("quantization", ["dynamic", "float16", "int8"])
def test_quantized_exports_agree_with_the_float_model(trained, tmp_path, quantization):
    model, held_out, calibration = trained
    path = tft.export_litert(model, tmp_path / quantization, quantization=quantization,
                             representative_data=calibration)
    assert _custom_ops(os.path.join(path, "model.tflite")) == []
    expected = model.predict_proba(held_out, verbose=0).argmax(-1)
    agreement = float(np.mean(_run(path, held_out).argmax(-1) == expected))
    assert agreement >= 0.98, agreement


def test_litert_argument_errors(trained, tmp_path):
    model, _, _ = trained
    with pytest.raises(ValueError, match=r"`quantization` must be one of .*Received: "
                                         r"quantization='int4'"):
        tft.export_litert(model, tmp_path / "a", quantization="int4")
    with pytest.raises(ValueError, match=r"quantization='int8' needs `representative_data`"):
        tft.export_litert(model, tmp_path / "b", quantization="int8")
    (tmp_path / "c").mkdir()
    with pytest.raises(FileExistsError, match=r"exists already.*overwrite=True"):
        tft.export_litert(model, tmp_path / "c")
    assert sorted(os.listdir(tmp_path)) == ["c"]
