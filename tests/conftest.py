"""Test-wide settings: one compute thread per library, and the test tiers (markers).

The suite's models are small; one thread is as fast as two for them, and it keeps
timings sane when the machine is shared (two-thread OpenMP/OpenBLAS pools on two
busy cores spin and slow down by an order of magnitude).

Tiers (``docs/architecture.md``, "Tests"): every test file is marked below with what it
needs beyond numpy and Pillow, and ``slow`` when it takes more than a few seconds, so
that ``pytest -m "not slow"`` is the fast loop and ``pytest -m "not needs_torch"`` the
board's subset.  The full suite (no ``-m``) is what CI runs.  A marker is per file: a
file that needs g++ in some tests is ``needs_gxx`` as a whole (those without run
anyway when g++ is there).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # pragma: no cover
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - board installs have no torch
    pass

#: marker -> what it means (registered here; ``pyproject.toml`` lists them too)
MARKERS = {
    "needs_gxx": "builds C/C++ (g++/cc): the csim kernel, the native kernel, the wheel",
    "needs_torch": "imports torch (training, export)",
    "needs_pynq": "imports the pynq library (the simulated board, the fpga backend)",
    "needs_rtl": "runs iverilog or yosys (the RTL twin)",
    "needs_browser": "drives chromium through selenium",
    "needs_interop": "imports onnx / qonnx / Brevitas / hls4ml (the [interop] extra)",
    "slow": "takes more than a few seconds; left out of the fast loop (-m 'not slow')",
}

#: test file -> its markers (a file not listed needs nothing beyond the base install)
TIERS: dict[str, tuple[str, ...]] = {
    "test_bench.py": ("needs_gxx", "needs_pynq", "slow"),
    "test_bench_engine.py": ("needs_gxx", "needs_torch", "slow"),
    "test_brevitas_peer.py": ("needs_torch", "needs_interop", "slow"),
    "test_hls4ml_peer.py": ("needs_gxx", "needs_interop", "slow"),
    "test_perf_dataflow.py": ("slow",),
    "test_qonnx_cli.py": ("needs_interop",),
    "test_qonnx_export.py": ("needs_interop",),
    "test_qonnx_import.py": ("needs_interop",),
    "test_qonnx_roundtrip.py": ("needs_interop",),
    "test_bench_train.py": ("needs_torch",),
    "test_check.py": ("needs_gxx",),
    "test_distributed.py": ("needs_torch", "slow"),
    "test_embedded.py": ("needs_torch",),
    "test_errors.py": ("needs_torch",),
    "test_export.py": ("needs_torch", "slow"),
    "test_fpga_sim.py": ("needs_gxx", "needs_pynq", "slow"),
    "test_fuse.py": ("needs_torch",),
    "test_hls_builds.py": ("needs_gxx", "slow"),
    "test_hls_csim.py": ("needs_gxx", "slow"),
    "test_hls_synth_guards.py": ("needs_gxx", "slow"),
    "test_layers.py": ("needs_torch",),
    "test_native.py": ("needs_gxx", "slow"),
    "test_notebook.py": ("needs_gxx", "needs_pynq", "slow"),
    "test_overlay_tcl.py": ("needs_pynq",),
    "test_perf_kernel.py": ("needs_rtl",),
    "test_quant.py": ("needs_torch",),
    "test_rtl_twin.py": ("needs_rtl", "slow"),
    "test_server_browser.py": ("needs_browser", "slow"),
    "test_server_load.py": ("slow",),
    "test_sim_hwh.py": ("needs_pynq",),
    "test_train.py": ("needs_torch", "slow"),
    "test_train_methods.py": ("needs_torch", "slow"),
    "test_wheel.py": ("needs_gxx", "needs_pynq", "slow"),
}

#: single slow tests in otherwise fast files ("file::test", parameters included)
SLOW_TESTS = (
    "test_embedded.py::test_reexport_reproduces_shipped_checksums",  # 38 s: a re-export
    "test_embedded.py::test_engine_agrees_with_torch_on_a_fixed_subset",  # 5-10 s each
)


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        file = Path(str(item.fspath)).name
        for name in TIERS.get(file, ()):
            item.add_marker(getattr(pytest.mark, name))
        if f"{file}::{item.name}".startswith(SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
