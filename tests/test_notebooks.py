"""The Colab notebooks: valid, stored without outputs, and runnable offline.

The slow test executes each notebook end to end in a real Jupyter kernel
with ``TFTRANSFER_NOTEBOOK_OFFLINE=1``, the notebooks' small offline mode
(bundled digits, a randomly initialized backbone, one epoch per phase).
"""

import json
import os
import pathlib
import sys

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
QUICKSTART = NOTEBOOKS / "quickstart.ipynb"
DIGIT_NAMES = {str(d) for d in range(10)}
CELL_TIMEOUT_S = 300


def test_quickstart_is_valid_nbformat_without_outputs():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nb = nbformat.read(QUICKSTART, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [], f"stored outputs in cell {cell.get('id')}"
        assert cell.execution_count is None, f"stored execution count in cell {cell.get('id')}"


def _launches_this_interpreter(spec_dir):
    """Whether the kernelspec in `spec_dir` starts `sys.executable`, as
    jupyter_client resolves it (a bare ``python``/``python3`` becomes
    `sys.executable`)."""
    with open(os.path.join(spec_dir, "kernel.json"), encoding="utf-8") as f:
        argv = json.load(f)["argv"]
    major, minor = sys.version_info[:2]
    if argv[0] in {"python", f"python{major}", f"python{major}.{minor}"}:
        return True
    return os.path.realpath(argv[0]) == os.path.realpath(sys.executable)


def _use_this_interpreter_as_python3(monkeypatch, tmp_path):
    """Makes the ``python3`` kernel run this interpreter (which has tftransfer):
    the installed kernelspec if it does, else a temporary one on JUPYTER_PATH."""
    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager().find_kernel_specs().get("python3")
    if found and _launches_this_interpreter(found):
        return
    from ipykernel import kernelspec

    prefix = tmp_path / "jupyter-prefix"
    kernelspec.install(user=False, prefix=str(prefix), kernel_name="python3")
    data_dir = prefix / "share" / "jupyter"
    jupyter_path = [str(data_dir), os.environ.get("JUPYTER_PATH")]
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, jupyter_path)))
    found = KernelSpecManager().find_kernel_specs().get("python3")
    assert found and _launches_this_interpreter(found), found


def _stream_text(nb):
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


@pytest.mark.slow
def test_quickstart_runs_offline(monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed")

    _use_this_interpreter_as_python3(monkeypatch, tmp_path)
    # The kernel inherits this environment.
    monkeypatch.setenv("TFTRANSFER_NOTEBOOK_OFFLINE", "1")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    tmp_dir = tmp_path / "tmp"  # the notebook's tempfile.mkdtemp() export goes here
    tmp_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_dir))
    work_dir = tmp_path / "work"
    work_dir.mkdir()

    nb = nbformat.read(QUICKSTART, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(work_dir)}},
    )
    client.execute()  # raises CellExecutionError if a cell fails

    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, errors
    text = _stream_text(nb)
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
