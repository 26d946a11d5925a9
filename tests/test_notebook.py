"""notebooks/nbq_zcu102.ipynb runs top to bottom off the board (as CI and a laptop run it).

Executed with nbclient in a fresh Jupyter kernel on the simulated ZCU102
(``NBQ_OVERLAY=sim``: the unmodified pynq library, a model of the AXI DMA and the kernel's
C-simulation) when this checkout has it (``pynq_nbq/sim/board.py``), else on the csim
backend.  The notebook itself asserts that both models' logits equal the numpy engine's;
these tests also check what it printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pynq_nbq import api

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "nbq_zcu102.ipynb"
#: The simulated board is part of the checkout once the fpga backend is; then it is required.
SIMULATED_BOARD = (ROOT / "pynq_nbq" / "sim" / "board.py").is_file()

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


def test_notebook_runs_off_the_board(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if SIMULATED_BOARD:
        monkeypatch.setenv("NBQ_OVERLAY", "sim")
    else:
        monkeypatch.delenv("NBQ_OVERLAY", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on any failing cell (incl. the bit-exact asserts)
    text = "\n".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    backend = "fpga" if SIMULATED_BOARD else "csim"
    if SIMULATED_BOARD:
        assert "backend: fpga (simulated ZCU102)" in text
        # the overlay was loaded through pynq: cells and addresses as design.py says
        from pynq_nbq.kernel import design

        for cell, (base, _) in design.ADDRESS_MAP.items():
            assert f"0x{base:08X}" in text and cell in text
        assert design.kernel_vlnv("svpe") in text
    else:
        assert "backend: csim" in text
    assert f"{backend} logits == numpy logits: True" in text
    assert f"vpe {backend} logits == numpy logits: True" in text
    assert "power unavailable:" in text and "(modelled, not measured)" in text
    assert "labels agree on" in text and "conv (ms)" in text
    # what it prints cannot be mistaken for a board's figures or a raw register dump
    note = "simulated board, emulated timings — not hardware" if SIMULATED_BOARD else "not hardware"
    assert f"SVPE vs VPE ({note}" in text
    assert "KernelInfo(" not in text
    if SIMULATED_BOARD:
        assert "-bit build running the 3-bit model" in text
    # the timings table lists the stages in pipeline order, total last
    lines = text.splitlines()
    (head,) = [i for i, line in enumerate(lines) if line.startswith("stage ")]
    stages = []
    for line in lines[head + 1 :]:  # the table's rows: up to the first line that is not one
        word = (line.split() or [""])[0]
        if word not in api.TIMING_KEYS:
            break
        stages.append(word)
    assert stages == [k for k in api.TIMING_KEYS if k in stages] and stages[-1] == "total", stages
    assert stages[0] == "decode", stages
