import json
import os

import keras
import numpy as np
import pytest

import tftransfer as tft
from tftransfer.export import serving
from helpers import images
from helpers import labelled
from helpers import run_without_tftransfer
from helpers import tiny_classifier

SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
signature = loaded.signatures["serving_pixels"]  # raw pixels (serving_default: encoded images)
out = signature(images=tf.constant(np.load(sys.argv[2])))
print(json.dumps({
    "inputs": sorted(signature.structured_input_signature[1]),
    "dtypes": {k: v.dtype.name for k, v in out.items()},
    "probabilities": out["probabilities"].numpy().tolist(),
    "class_ids": out["class_ids"].numpy().tolist(),
    "class_names": [s.decode() for s in out["class_names"].numpy()],
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("tftransfer", "keras")),
}))
"""


@pytest.fixture(scope="module")
def trained():
    model = tiny_classifier(class_names=["ant", "bee", "cat"])
    x, y = labelled()
    tft.fit_two_phase(model, x, y=y, head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=1,
                      batch_size=8, verbose=0)
    return model


def test_export_round_trip_in_a_process_without_tftransfer(trained, tmp_path):
    path = tft.export_saved_model(trained, tmp_path / "serving")
    x = images(5)
    np.save(tmp_path / "x.npy", x)
    served = run_without_tftransfer(SERVE, path, tmp_path / "x.npy")
    expected = trained.predict_proba(x, verbose=0)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    assert served["class_ids"] == expected.argmax(-1).tolist()
    assert served["class_names"] == [trained.class_names[i] for i in expected.argmax(-1)]
    assert served["inputs"] == ["images"]
    assert served["dtypes"] == {"probabilities": "float32", "class_ids": "int64",
                                "class_names": "string"}
    assert not any(m.startswith("tftransfer") for m in served["modules"])


def test_versions_count_up_and_labels_and_metadata_are_written(trained, tmp_path, capsys):
    base = tmp_path / "serving"
    first = tft.export_saved_model(trained, base, metadata={"run": "a"})
    assert capsys.readouterr().out == ""  # verbose=0
    second = tft.export_saved_model(trained, base, verbose=1)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"Exporting {trained.name} for TF Serving (format 2) under {base}"
    assert printed[-1].startswith("  done in ")
    assert os.path.basename(first) == "1" and os.path.basename(second) == "2"
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temporary leftovers
    assert tft.read_labels(second) == ["ant", "bee", "cat"]
    metadata = tft.read_metadata(first)
    assert metadata["class_names"] == ["ant", "bee", "cat"]
    assert metadata["backbone"]["name"] == "tiny_backbone"
    assert metadata["backbone"]["input_shape"] == [32, 32, 3]
    assert [phase["phase"] for phase in metadata["training"]] == [1, 2]
    assert metadata["user"] == {"run": "a"}
    signatures = metadata["signatures"]
    assert signatures["serving_default"]["inputs"]["images"]["dtype"] == "string"
    assert signatures["serving_pixels"]["inputs"]["images"]["shape"] == [None, 32, 32, 3]


def test_explicit_version_and_refusing_to_overwrite(trained, tmp_path):
    base = tmp_path / "serving"
    tft.export_saved_model(trained, base, version=7)
    marker = base / "7" / "keep.txt"
    marker.write_text("user file")
    with pytest.raises(tft.VersionExistsError, match=r"Version 7 exists already.*overwrite=True.*"
                                                     r"Received: version=7"):
        tft.export_saved_model(trained, base, version=7)
    assert marker.exists()  # nothing the user had is lost
    assert issubclass(tft.VersionExistsError, ValueError)
    tft.export_saved_model(trained, base, version=7, overwrite=True)
    assert not marker.exists() and (base / "7" / "saved_model.pb").exists()
    assert sorted(os.listdir(base)) == ["7"]
    assert os.path.basename(tft.export_saved_model(trained, base)) == "8"


def test_failed_export_leaves_no_version_behind(trained, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("verification failed")

    base = tmp_path / "serving"
    tft.export_saved_model(trained, base)
    monkeypatch.setattr(serving, "verify_export", broken)
    with pytest.raises(RuntimeError, match="verification failed"):
        tft.export_saved_model(trained, base)
    assert sorted(os.listdir(base)) == ["1"]


def test_export_is_checked_against_the_model(trained, tmp_path, monkeypatch):
    """A SavedModel that does not reproduce the model is never published."""
    original = serving.serving_function

    def off_by_one(*args):
        serve = original(*args)
        return lambda images: serve(images + 50.0)

    monkeypatch.setattr(serving, "serving_function", off_by_one)
    with pytest.raises(RuntimeError, match="does not reproduce the model's probabilities"):
        tft.export_saved_model(trained, tmp_path / "serving", inputs="pixels")
    assert os.listdir(tmp_path / "serving") == []


def test_mixed_precision_export_outputs_float32(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_classifier()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    path = tft.export_saved_model(model, tmp_path / "serving", verify_atol=1e-2)
    np.save(tmp_path / "x.npy", images(2))
    served = run_without_tftransfer(SERVE, path, tmp_path / "x.npy")
    assert served["dtypes"]["probabilities"] == "float32"


def test_multi_label_export(tmp_path):
    model = tiny_classifier(multi_label=True)
    path = tft.export_saved_model(model, tmp_path / "serving")
    x = images(3)
    np.save(tmp_path / "x.npy", x)
    served = run_without_tftransfer(SERVE, path, tmp_path / "x.npy")
    np.testing.assert_allclose(served["probabilities"], model.predict_proba(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("version", [0, -2, "3", 1.0, True])
def test_bad_version(trained, tmp_path, version):
    with pytest.raises(ValueError, match=rf"`version` must be a positive integer.*Received: version={version!r}"):
        tft.export_saved_model(trained, tmp_path, version=version)


def test_export_base_is_a_file(trained, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"`export_base` must be a directory.*Received: export_base="):
        tft.export_saved_model(trained, path)


def test_metadata_must_be_json(trained, tmp_path):
    with pytest.raises(TypeError, match=r"`metadata` must be JSON-serializable"):
        tft.export_saved_model(trained, tmp_path, metadata={"a": object()})


def test_export_needs_a_classifier(tmp_path):
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(TypeError, match=r"`model` must be a classifier built by tftransfer.*model.export"):
        tft.export_saved_model(plain, tmp_path)


def test_saved_model_cli_lists_the_named_signature(trained, tmp_path):
    import shutil
    import subprocess
    import sys

    cli = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable),
                                                          "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed")
    path = tft.export_saved_model(trained, tmp_path / "serving")
    out = subprocess.run([cli, "show", "--dir", path, "--tag_set", "serve",
                          "--signature_def", "serving_default"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("inputs['images']", "outputs['probabilities']", "outputs['class_ids']",
                 "outputs['class_names']"):
        assert name in out


def test_published_version_is_readable_by_other_users(tmp_path):
    # mkdtemp's 0700 must not reach the version directory: TF Serving often
    # runs as another user.
    model = tiny_classifier()
    path = tft.export_saved_model(model, str(tmp_path / "base"))
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o777 & ~umask


def test_metadata_names_the_backbone_and_its_blocks(tmp_path):
    inputs = keras.Input((16, 16, 3))
    plain = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs), name="plain")
    path = tft.export_saved_model(tft.build_classifier(plain, num_classes=2), tmp_path / "a")
    backbone = tft.read_metadata(path)["backbone"]
    assert backbone["name"] == "plain" and backbone["blocks"] == []  # no block names: none
    model = tft.build_classifier("mobilenet_v3_small", num_classes=2, input_shape=(32, 32, 3),
                                 weights=None)
    backbone = tft.read_metadata(tft.export_saved_model(model, tmp_path / "b"))["backbone"]
    assert backbone["name"] == "mobilenet_v3_small" and backbone["source"] == "application"
    assert backbone["blocks"] == list(tft.get_blocks(model))
