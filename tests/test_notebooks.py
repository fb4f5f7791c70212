"""The Colab notebooks: valid, stored without outputs, and runnable offline.

The slow test executes each notebook end to end in a real Jupyter kernel
with ``TFTRANSFER_NOTEBOOK_OFFLINE=1``, the notebooks' small offline mode
(bundled digits, a randomly initialized backbone, one epoch per phase).
"""

import json
import pathlib

import pytest

from notebook_runner import NOTEBOOKS
from notebook_runner import assert_valid_without_outputs
from notebook_runner import execute_notebook

QUICKSTART = NOTEBOOKS / "quickstart.ipynb"
DIGIT_NAMES = {str(d) for d in range(10)}


def test_quickstart_is_valid_nbformat_without_outputs():
    assert_valid_without_outputs(QUICKSTART)


@pytest.mark.slow
def test_quickstart_runs_offline(monkeypatch, tmp_path):
    nb, text, work_dir, tmp_dir = execute_notebook(QUICKSTART, monkeypatch, tmp_path)
    assert "offline smoke run" in text
    served_lines = [line for line in text.splitlines() if line.startswith("SERVED: ")]
    assert len(served_lines) == 1, text[-3000:]
    served = json.loads(served_lines[0][len("SERVED: "):])

    assert served["predicted"], served
    assert len(served["predicted"]) == len(served["true"])
    assert set(served["predicted"]) <= DIGIT_NAMES, served
    assert set(served["true"]) <= DIGIT_NAMES, served
    export_dir = pathlib.Path(served["export_dir"])
    assert export_dir.name == "1"
    assert tmp_dir in export_dir.parents
    assert (export_dir / "saved_model.pb").is_file()
    labels = (export_dir / "assets.extra" / "labels.txt").read_text(encoding="utf-8")
    assert labels.split() == sorted(DIGIT_NAMES)
    # The learning curve and the served images were drawn.
    images = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 2
