"""The domains-and-unlabelled-images notebook: valid, stored without outputs, and
runnable offline (``TFTRANSFER_NOTEBOOK_OFFLINE=1``: the bundled digits, every
step with one or two epochs)."""

import re

import pytest

from notebook_runner import NOTEBOOKS
from notebook_runner import assert_valid_without_outputs
from notebook_runner import execute_notebook

DOMAINS_NOTEBOOK = NOTEBOOKS / "domains_and_unlabelled.ipynb"
ROWS = {
    ("digits -> digits-M", "source only"),
    ("digits -> digits-M", "AdaBN"),
    ("digits -> digits-M", "DANN"),
    ("digits 5-9, few labels", "from scratch"),
    ("digits 5-9, few labels", "transfer (labels only)"),
    ("digits 5-9, few labels", "transfer + self-training"),
    ("digits 5-9, few labels", "SimCLR + transfer"),
}
ROW = re.compile(r"^\| (?P<part>[^|]+) \| (?P<method>[^|]+) \| (?P<accuracy>[0-9.]+) \|$")


def results_table(text):
    """``{(part, method): accuracy}`` from the table the last cells print."""
    rows = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            key = (match["part"], match["method"])
            assert key not in rows, f"row printed twice: {line}"
            rows[key] = float(match["accuracy"])
    return rows


def test_domains_notebook_is_valid_nbformat_without_outputs():
    assert_valid_without_outputs(DOMAINS_NOTEBOOK)


def test_results_table_parser():
    text = ("| experiment | method | accuracy |\n| --- | --- | --- |\n"
            "| digits -> digits-M | DANN | 0.538 |\nnoise | x | 0.1 |\n")
    assert results_table(text) == {("digits -> digits-M", "DANN"): 0.538}


@pytest.mark.slow
def test_domains_notebook_runs_offline(monkeypatch, tmp_path):
    nb, text, _, _ = execute_notebook(DOMAINS_NOTEBOOK, monkeypatch, tmp_path)
    assert "offline smoke run" in text
    rows = results_table(text)
    assert set(rows) == ROWS, text[-3000:]
    for key, value in rows.items():
        assert 0.0 <= value <= 1.0, (key, value)
    # evaluate_domains printed the gap, and the training logs were read.
    gap = re.search(r"^digits-M +(?P<accuracy>[0-9.]+) +(?P<gap>[+-][0-9.]+) ", text, re.MULTILINE)
    assert gap, text[:3000]
    assert float(gap["accuracy"]) == pytest.approx(rows[("digits -> digits-M", "source only")],
                                                   abs=1e-3)
    assert "domain classifier accuracy at the last epoch" in text
    assert "mask rate at the last epoch" in text
    assert "contrastive accuracy at the last epoch" in text
    # The one plot, of the accuracies, was drawn.
    images = [output for cell in nb.cells if cell.cell_type == "code"
              for output in cell.outputs if "image/png" in output.get("data", {})]
    assert len(images) == 1
