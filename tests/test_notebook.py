"""notebooks/nbq_zcu102.ipynb runs top to bottom off the board (as CI and a laptop run it).

Executed with nbclient in a Jupyter kernel whose conv layers go to the board's stand-in
(``NBQ_NOTEBOOK_BACKEND``, default csim); the notebook itself asserts the backend's logits
equal the numpy engine's, and these tests check what it printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "nbq_zcu102.ipynb"

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


def test_notebook_runs_off_the_board(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on any failing cell (incl. the bit-exact assert)
    text = "\n".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    backend = os.environ.get("NBQ_NOTEBOOK_BACKEND", "csim")
    assert f"backend: {backend}" in text
    assert f"{backend} logits == numpy logits: True" in text
    assert "power unavailable:" in text and "(modelled, not measured)" in text
    assert "labels agree on" in text and "conv (ms)" in text
