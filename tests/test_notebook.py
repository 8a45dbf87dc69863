"""notebooks/colab.ipynb runs top to bottom here (its CPU path: small random-init models), executed as Jupyter
would run it (nbclient, a python3 kernel of this environment)."""

import os

import pytest

from launch import ROOT

pytestmark = pytest.mark.slow


def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the dev extra (nbclient, ipykernel)")
    from nbclient import NotebookClient

    monkeypatch.setenv("SCALEDOWN_NOTEBOOK_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU path, as on this machine
    notebook = nbformat.read(ROOT / "notebooks" / "colab.ipynb", as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = {i: "".join(o.get("text", "") for o in cell.get("outputs", []))
               for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    text = "\n".join(outputs.values())
    assert "steps; final loss" in text and "compressed" in text and "uncompressed" in text
    for name in ("dataset", "exported model", "TensorBoard logs", "report", "evaluation"):
        assert f"{name:>16}: {tmp_path / 'run'}" in text
    assert os.path.isdir(tmp_path / "run" / "train" / "export")
