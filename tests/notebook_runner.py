"""Running a notebook offline in a real Jupyter kernel, for the notebook tests."""

import json
import os
import pathlib
import sys

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 300


def launches_this_interpreter(spec_dir):
    """Whether the kernelspec in `spec_dir` starts `sys.executable`, as
    jupyter_client resolves it (a bare ``python``/``python3`` becomes
    `sys.executable`)."""
    with open(os.path.join(spec_dir, "kernel.json"), encoding="utf-8") as f:
        argv = json.load(f)["argv"]
    major, minor = sys.version_info[:2]
    if argv[0] in {"python", f"python{major}", f"python{major}.{minor}"}:
        return True
    return os.path.realpath(argv[0]) == os.path.realpath(sys.executable)


def use_this_interpreter_as_python3(monkeypatch, tmp_path):
    """Makes the ``python3`` kernel run this interpreter (which has tftransfer):
    the installed kernelspec if it does, else a temporary one on JUPYTER_PATH."""
    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager().find_kernel_specs().get("python3")
    if found and launches_this_interpreter(found):
        return
    from ipykernel import kernelspec

    prefix = tmp_path / "jupyter-prefix"
    kernelspec.install(user=False, prefix=str(prefix), kernel_name="python3")
    data_dir = prefix / "share" / "jupyter"
    jupyter_path = [str(data_dir), os.environ.get("JUPYTER_PATH")]
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, jupyter_path)))
    found = KernelSpecManager().find_kernel_specs().get("python3")
    assert found and launches_this_interpreter(found), found


def stream_text(nb):
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def execute_notebook(path, monkeypatch, tmp_path, **env):
    """Executes the notebook at `path` offline (``TFTRANSFER_NOTEBOOK_OFFLINE=1``)
    with ``tmp_path/work`` as its working directory and ``tmp_path/tmp`` as its
    TMPDIR, `env` added to the kernel's environment; fails on a cell error.
    Returns ``(notebook, the text it printed, work dir, tmp dir)``."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed")
    use_this_interpreter_as_python3(monkeypatch, tmp_path)
    # The kernel inherits this environment.
    settings = {"TFTRANSFER_NOTEBOOK_OFFLINE": "1", "KERAS_BACKEND": "tensorflow",
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "MPLBACKEND": "module://matplotlib_inline.backend_inline", **env}
    tmp_dir, work_dir = tmp_path / "tmp", tmp_path / "work"
    tmp_dir.mkdir()
    work_dir.mkdir()
    settings["TMPDIR"] = str(tmp_dir)  # the notebook's tempfile exports go here
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     startup_timeout=120,
                                     resources={"metadata": {"path": str(work_dir)}})
    client.execute()  # raises CellExecutionError if a cell fails
    errors = [output for cell in nb.cells if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert not errors, errors
    return nb, stream_text(nb), work_dir, tmp_dir


def assert_valid_without_outputs(path):
    """The notebook at `path` is valid nbformat 4 with a python3 kernel, and
    stored without outputs or execution counts."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [], f"stored outputs in cell {cell.get('id')}"
        assert cell.execution_count is None, f"stored execution count in cell {cell.get('id')}"
