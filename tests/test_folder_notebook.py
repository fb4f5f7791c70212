"""The folder-to-serving notebook: valid, stored without outputs, and runnable
offline (off Colab it makes a folder of PNG digits, pretrains a small source
CNN on other digits, and runs the whole path: load, train, report, classify,
TF Serving export called with a REST body, LiteRT)."""

import json
import pathlib

import pytest

from notebook_runner import NOTEBOOKS
from notebook_runner import assert_valid_without_outputs
from notebook_runner import execute_notebook

FOLDER_NOTEBOOK = NOTEBOOKS / "folder_to_serving.ipynb"
CLASS_NAMES = ["0", "1", "2", "3", "4"]
PLACEHOLDER = 'TFTRANSFER_SOURCE = "git+https://github.com/OWNER/tftransfer.git"'


def test_folder_notebook_is_valid_nbformat_without_outputs():
    assert_valid_without_outputs(FOLDER_NOTEBOOK)


@pytest.mark.parametrize("name", ["folder_to_serving", "quickstart", "text_classification"])
def test_install_cell_installs_from_a_source_not_the_package_index(name):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    install = next(cell for cell in nb.cells if cell.cell_type == "code")
    source = install.source
    assert PLACEHOLDER in source
    assert "python -m build" in source
    assert "raise RuntimeError" in source  # the placeholder left as it is, on Colab
    assert "{TFTRANSFER_SOURCE}" in source  # the %pip line installs from it
    pip_lines = [line.strip() for line in source.splitlines() if "%pip" in line]
    assert pip_lines and all("{TFTRANSFER_S" in line for line in pip_lines), pip_lines
    # Off Colab nothing is installed: the %pip line is under `if IN_COLAB:`.
    assert "if IN_COLAB:" in source


def test_setup_cfg_names_the_repository_url():
    import configparser

    config = configparser.ConfigParser()
    config.read(NOTEBOOKS.parent / "setup.cfg", encoding="utf-8")
    assert config["metadata"]["url"] == "https://github.com/OWNER/tftransfer"


@pytest.mark.slow
def test_folder_notebook_runs_offline(monkeypatch, tmp_path):
    nb, text, work_dir, tmp_dir = execute_notebook(FOLDER_NOTEBOOK, monkeypatch, tmp_path)

    # The folder was made, the broken file reported and left out.
    folder = work_dir / "digits_folder"
    assert sorted(p.name for p in folder.iterdir()) == CLASS_NAMES
    assert (folder / "3" / "broken.png").is_file()
    assert "5 classes (0, 1, 2, 3, 4)" in text
    assert "1 skipped" in text and "skipped" in text and "broken.png" in text, text[-3000:]

    # The per-class report on the test split.
    assert "precision" in text and "macro avg" in text, text[-3000:]

    # The TF Serving export answered the REST body with the data's class names.
    served_lines = [line for line in text.splitlines() if line.startswith("SERVED: ")]
    assert len(served_lines) == 1, text[-3000:]
    served = json.loads(served_lines[0][len("SERVED: "):])
    export_dir = pathlib.Path(served["export_dir"])
    if not export_dir.is_absolute():
        export_dir = work_dir / export_dir
    assert export_dir == work_dir / "serving" / "digits" / "1"
    assert (export_dir / "saved_model.pb").is_file()
    assert (export_dir / "assets.extra" / "labels.txt").read_text().split() == CLASS_NAMES
    assert len(served["class_names"]) == 6
    assert set(served["class_names"]) <= set(CLASS_NAMES), served
    # The export (TensorFlow's PNG decoder) and the Keras model (Pillow's) agree
    # on the files; one may differ where two classes are nearly tied.
    agree = sum(a == b for a, b in zip(served["class_names"], served["classify"]))
    assert agree >= 5, served
    request = json.loads((work_dir / "request.json").read_text())
    assert len(request["instances"]) == 6
    assert all(set(instance["images"]) == {"b64"} for instance in request["instances"])

    # The LiteRT cell ran, or said why it was skipped.
    litert_lines = [line for line in text.splitlines() if line.startswith("LITERT: ")]
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        assert not litert_lines
        assert "LiteRT skipped: ai_edge_litert is not installed" in text
    else:
        assert len(litert_lines) == 1, text[-3000:]
        litert = json.loads(litert_lines[0][len("LITERT: "):])
        assert len(litert["class_names"]) == 6
        assert set(litert["class_names"]) <= set(CLASS_NAMES)
        agree = sum(a == b for a, b in zip(litert["class_names"], served["classify"]))
        assert agree >= 5, (litert, served)
        assert (work_dir / "phone" / "digits" / "model.tflite").is_file()
