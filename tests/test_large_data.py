"""docs/large-data.md copies its tables from benchmarks/results/scale.md, the
scale benchmark's report: they must stay equal."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tables(text):
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def test_the_large_data_tables_are_the_benchmarks():
    results = _tables((ROOT / "benchmarks" / "results" / "scale.md").read_text())
    docs = _tables((ROOT / "docs" / "large-data.md").read_text())
    measured = [t for t in docs if "---:" in t[1]]  # the tables of numbers
    assert measured == results
