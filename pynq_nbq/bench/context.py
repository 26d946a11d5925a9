"""Where a benchmark ran, how to label its timings, and what the bitstreams cost.

* :func:`environment` - host, CPU, cores, software versions and, on a board, the
  board, bitstream and clocks the backend reports.
* :func:`timing_label` - the label every timing carries: "emulated (backend X on
  host Y), not hardware" unless the fpga backend drove real hardware.
* :func:`resources` - DSP/LUT/FF/BRAM18 of a bitstream from the overlay build's
  report ``<overlay dir>/<bitstream name>_report.json`` (``overlay/``) when present, else
  "unavailable" with the reason and the performance model's estimate (labelled).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..backends import backend_names
from ..kernel import design
from ..kernel.design import PE_KINDS, bitstream_name
from ..rails import board_compatible

#: keys of a resources report (counts), in report order
RESOURCE_KEYS = ("dsp", "lut", "ff", "bram18")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_simulated_board(backend: Any) -> bool:
    """True for the fpga backend on the simulated board (:mod:`pynq_nbq.sim.board`)."""
    return bool(getattr(backend, "sim", False) or getattr(backend, "simulated", False))


def is_hardware(backend: Any) -> bool:
    """True when ``backend`` drives a real conv engine (fpga, not a simulated board)."""
    return getattr(backend, "name", "") == "fpga" and not is_simulated_board(backend)


def fpga_details(backend: Any) -> dict[str, Any]:
    """What an fpga backend ran on: overlay source, bitstreams, PL clock (on a board:
    pynq's ``Clocks.fclk0_mhz``; on the simulated board the design's value)."""
    out: dict[str, Any] = {"overlay_source": str(getattr(backend, "source", ""))}
    out["simulated_board"] = is_simulated_board(backend)
    if out["simulated_board"]:
        board = getattr(backend, "board_name", None) or design.DEFAULT_BOARD
        out["pl_clock_mhz"] = design.target(board).pl_clock_mhz
        out["pl_clock_source"] = f"design value for {board} (pynq_nbq/boards); simulated board"
        return out
    out["bitstreams"] = {}
    for kind in PE_KINDS:
        bit = Path(out["overlay_source"]) / f"{bitstream_name(kind)}.bit"
        out["bitstreams"][kind] = {
            "path": str(bit),
            "sha256": hashlib.sha256(bit.read_bytes()).hexdigest() if bit.is_file() else None,
        }
    try:
        from pynq.ps import Clocks  # board only

        out["pl_clock_mhz"] = float(Clocks.fclk0_mhz)
        out["pl_clock_source"] = "pynq.ps.Clocks.fclk0_mhz"
    except Exception as exc:  # no PS clock registers to read: say so
        out["pl_clock_mhz"] = None
        out["pl_clock_source"] = f"unread ({type(exc).__name__}: {exc})"
    return out


def on_zynq_board(compatible: list[str] | None = None) -> bool:
    """True on a Zynq board: UltraScale+ (device tree ``compatible`` says ``xlnx,zynqmp``:
    ZCU102, ZCU104, KV260) or Zynq-7000 (``xlnx,zynq-7000``: PYNQ-Z2)."""
    compat = board_compatible() if compatible is None else compatible
    return any(c.startswith("xlnx,zynqmp") or c == "xlnx,zynq-7000" for c in compat)


def timing_label(backend: Any, host: str | None = None, compatible: list[str] | None = None) -> str:
    """How every timing taken with ``backend`` is labelled: "measured on hardware" for
    the fpga backend on a real overlay and for numpy on a Zynq board's ARM cores (the
    CPU-only baseline there), else "emulated (backend X on host Y), not hardware"."""
    host = host or f"{platform.node()} ({cpu_model()}, {os.cpu_count()} cores)"
    name = getattr(backend, "name", str(backend))
    if is_hardware(backend):
        return f"measured on hardware (backend {name})"
    # backends that run every layer on the CPU: their timings on a board are the ARM's
    if name in backend_names("cpu") and on_zynq_board(compatible):
        return f"measured on hardware ({name} on the board's ARM cores, {host})"
    if name == "fpga":
        name = "fpga on the simulated board"
    return f"emulated (backend {name} on host {host}), not hardware"


def environment(backends: dict[str, Any]) -> dict[str, Any]:
    """Host, software versions and, per column, what its backend says about itself
    (``describe()``: bitstream, board, clocks on a board)."""
    out: dict[str, Any] = {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpu_cores_count": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "device_tree_compatible": board_compatible(),
        "software": {
            "python": sys.version.split()[0],
            "pynq_nbq": __version__,
            "numpy": _version("numpy"),
            "pillow": _version("pillow"),
            "pynq": _version("pynq"),
        },
        "backends": {},
    }
    for key, backend in backends.items():
        describe = getattr(backend, "describe", None)
        entry: dict[str, Any] = {"name": getattr(backend, "name", str(backend))}
        entry["hardware"] = is_hardware(backend)
        description = getattr(backend, "description", None)
        if isinstance(description, str):
            entry["description"] = description
        if callable(describe):
            entry.update(describe())
        elif entry["name"] == "fpga":
            entry.update(fpga_details(backend))
        out["backends"][key] = entry
    return out


#: the overlay build's report (overlay/build_overlay.tcl) -> our keys: (resource row, factor)
#: ("Block RAM Tile" counts 36 Kb tiles, 0.5 = one 18 Kb half: x2 gives BRAM18)
UTILIZATION_ROWS = {
    "lut": ("CLB LUTs", 1),
    "ff": ("CLB Registers", 1),
    "bram18": ("Block RAM Tile", 2),
    "dsp": ("DSPs", 1),
    "uram": ("URAM", 1),
}


def report_path(overlay_dir: str | Path, kind: str) -> Path:
    """Where ``overlay/build_overlay.tcl`` writes a build's report: ``<name>_report.json``."""
    return Path(overlay_dir) / f"{bitstream_name(kind)}_report.json"


def read_resources(path: Path) -> dict[str, Any]:
    """One overlay build report (``overlay/build_overlay.tcl``'s ``json_report``): used and
    available per resource as ``<res>_count`` / ``<res>_available_count``, the part, the
    clock and the timing slacks; ValueError naming the file and the problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"overlay report {path}: {exc}") from exc
    util = data.get("utilization") if isinstance(data, dict) else None
    if not isinstance(util, dict):
        raise ValueError(f"overlay report {path}: no 'utilization' object")
    out: dict[str, Any] = {
        "part": data.get("part"),
        "board": data.get("board"),
        "pl_clock_mhz": data.get("pl_clock_mhz"),
    }
    for key, (row, factor) in UTILIZATION_ROWS.items():
        entry = util.get(row)
        used = avail = None
        if entry is not None:
            try:
                used, avail = float(entry["used"]) * factor, float(entry["available"]) * factor
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"overlay report {path}: {row!r} is not used/available") from exc
            if used < 0 or avail < 0:
                raise ValueError(f"overlay report {path}: {row!r} has a negative count")
        out[f"{key}_count"] = used
        out[f"{key}_available_count"] = avail
    timing = data.get("timing_ns") or {}
    for k in ("wns", "tns", "whs", "ths"):
        out[f"{k}_ns"] = timing.get(k)
    return out


def resources(kind: str, overlay_dir: str | Path | None, model: dict[str, Any]) -> dict[str, Any]:
    """Resources of the ``kind`` bitstream: measured (the build's report) or why not,
    always with the model's estimate beside it (from a ``model_network`` result)."""
    engines = model.get("engines") or []
    estimate = {
        f"{k}_count": (sum(e[k] for e in engines if e.get(k) is not None) if engines else None)
        for k in RESOURCE_KEYS
    }
    estimate["modelled"] = True
    out: dict[str, Any] = {"modelled_estimate": estimate}
    kernel = (model.get("kernel_model") or {}).get("resources")
    if kernel:  # the streaming kernel's build, costed from the yosys report of its RTL twin
        out["kernel_model_estimate"] = {
            **{f"{k}_count": kernel.get(k) for k in RESOURCE_KEYS},
            "build": kernel.get("build"),
            "parallelism": f"Pm {kernel.get('pm')} x Pn {kernel.get('pn')}",
            "source": kernel.get("source"),
            "modelled": True,
        }
    if overlay_dir is None or str(overlay_dir) == "sim" or str(overlay_dir).startswith("sim:"):
        why = "the simulated board has no build reports" if overlay_dir else "no --overlay"
        out.update(available=False, reason=f"{why} (reads <overlay dir>/nbq_<kind>_report.json)")
        return out
    report = report_path(overlay_dir, kind)
    if not report.is_file():
        out.update(available=False, reason=f"no overlay build report at {report}")
        return out
    out.update(available=True, source=str(report), **read_resources(report))
    return out
