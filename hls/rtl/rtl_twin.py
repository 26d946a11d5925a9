"""Drive the RTL twin (``hls/rtl/*.v``): simulate it with iverilog, synthesise it with yosys.

The twin is hand-written Verilog of the kernel's arithmetic at the kernel's widths
(the svpe/vpe PE, one 3x3 array, one output lane of Pm arrays with its adder tree and
int48 accumulator, the requantisation).  It is simulated bit-exact against
``pynq_nbq.datapath`` (``tests/test_rtl_twin.py``) and synthesised with
``yosys synth_xilinx -family xcup`` (or ``xc7``, :attr:`Design.family`) for an
*open-synthesis estimate* of its cost (``scripts/rtl_synth.py`` writes
``pynq_nbq/perfmodel/yosys_report.json``).  Figures from yosys are not Vivado's:
ABC's LUT mapping usually comes out above Vivado's.

Needs ``iverilog``/``vvp`` (simulation) and ``yosys`` (synthesis) on PATH; nothing
else.  Import it with ``hls/rtl`` on ``sys.path`` (as the test and script do).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RTL_DIR = Path(__file__).resolve().parent
SOURCES = ("nbq_pe.v", "nbq_tree.v", "nbq_lane.v", "nbq_requant.v")
SVPE, VPE = 1, 2  #: the KIND parameter of the Verilog modules
FAMILY = "xcup"  #: UltraScale+ (the ZCU102's xczu9eg, the ZCU104's and KV260's parts)
#: yosys families the twin is synthesised for: UltraScale+ and 7-series (the PYNQ-Z2's
#: xc7z020: DSP48E1, CARRY4, where yosys 0.23 packs the vpe multiply-accumulate into a DSP).
FAMILIES = ("xcup", "xc7")


class RtlToolError(RuntimeError):
    """A simulator or synthesis tool is missing or failed (the message says which)."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RtlToolError(
            f"{name} not found on PATH; install it with "
            "`apt-get install --no-install-recommends iverilog yosys`"
        )
    return path


def product_bits(kind: int, nb: int) -> int:
    """Bits of one PE product: svpe 17 + largest shift (2^(nb-1) - 2), vpe 32."""
    return 17 + (1 << (nb - 1)) - 2 if kind == SVPE else 32


def code_bits(kind: int, nb: int) -> int:
    """Bits of one weight at the PE: svpe the nb-bit code, vpe 16."""
    return nb if kind == SVPE else 16


def encode_codes(codes: np.ndarray, nb: int) -> np.ndarray:
    """Signed svpe codes (bundle form, +-m) -> the twin's nb-bit words {sign, m}."""
    c = np.asarray(codes, dtype=np.int64)
    mag = np.abs(c)
    if mag.max(initial=0) > (1 << (nb - 1)) - 1:
        raise ValueError(f"svpe code magnitude {int(mag.max())} does not fit a {nb}-bit build")
    return ((c < 0).astype(np.int64) << (nb - 1)) | mag


# --- simulation ---------------------------------------------------------------------------
def _run_vvp(top: str, sources: Sequence[str], params: dict[str, int], vectors: str) -> str:
    iverilog, vvp = _tool("iverilog"), _tool("vvp")
    with tempfile.TemporaryDirectory(prefix="nbq_rtl_") as d:
        exe, vec = Path(d) / "sim", Path(d) / "vectors.txt"
        vec.write_text(vectors)
        cmd = [iverilog, "-g2005", "-I", str(RTL_DIR), "-o", str(exe), "-s", top]
        cmd += [f"-P{top}.{k}={v}" for k, v in params.items()]
        cmd += [str(RTL_DIR / s) for s in sources]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RtlToolError(f"iverilog failed:\n{res.stderr}")
        res = subprocess.run([vvp, "-n", str(exe), f"+vectors={vec}"], capture_output=True,
                             text=True)  # fmt: skip
        if res.returncode != 0 or "ERROR" in res.stdout:
            raise RtlToolError(f"vvp failed:\n{res.stdout}\n{res.stderr}")
        return res.stdout


@dataclass
class LaneCycle:
    """One input cycle of ``nbq_lane``: 9*Pm activations and weights (tap-major per array)."""

    x: np.ndarray  # int16-range values, shape (9*Pm,)
    w: np.ndarray  # svpe: signed codes (+-m); vpe: int16 weights; shape (9*Pm,)
    first: bool  # this cycle starts a new accumulation
    valid: bool = True


def simulate_lane(
    kind: int, nb: int, pm: int, cycles: Iterable[LaneCycle], style: int = 0
) -> list[int]:
    """Run ``nbq_lane`` (twin ``style``, nbq_pe.v) over ``cycles``; returns the
    accumulator after each valid cycle."""
    lines = []
    for c in cycles:
        w = encode_codes(c.w, nb) if kind == SVPE else np.asarray(c.w, dtype=np.int64)
        if len(c.x) != 9 * pm or len(w) != 9 * pm:
            raise ValueError(f"a lane cycle needs 9*Pm = {9 * pm} activations and weights")
        vals = [int(c.valid), int(c.first), *map(int, c.x), *map(int, w)]
        lines.append(" ".join(map(str, vals)))
    out = _run_vvp("tb_lane", ("tb_lane.v", "nbq_pe.v", "nbq_tree.v", "nbq_lane.v"),
                   {"KIND": kind, "NB": nb, "PM": pm, "STYLE": style},
                   "\n".join(lines) + "\n")  # fmt: skip
    return [int(m) for m in re.findall(r"^acc (-?\d+)$", out, flags=re.M)]


def simulate_requant(acc, mult, bias, shift, relu) -> list[int]:
    """Run ``nbq_requant`` over equal-length sequences; returns y per value."""
    rows = zip(acc, mult, bias, shift, relu, strict=True)
    text = "\n".join(" ".join(str(int(v)) for v in row) for row in rows) + "\n"
    out = _run_vvp("tb_requant", ("tb_requant.v", "nbq_requant.v"), {}, text)
    return [int(m) for m in re.findall(r"^y (-?\d+)$", out, flags=re.M)]


# --- synthesis ----------------------------------------------------------------------------
#: How yosys's xcup / xc7 cells are counted (Vivado's utilisation categories).
CELL_CLASSES = {
    "lut": re.compile(r"^(LUT[1-6]|INV)$"),  # yosys's INV is a LUT1 in Vivado
    "lutram": re.compile(r"^(RAM\d+[MSX]\w*|SRL16E|SRLC32E)$"),
    "ff": re.compile(r"^FD[RSCP]E$"),
    "carry": re.compile(r"^CARRY[48]$"),
    "muxf": re.compile(r"^MUXF[789]$"),
    "dsp": re.compile(r"^DSP48E[12]$"),
    "bram18": re.compile(r"^RAMB18E[12]$"),
    "bram36": re.compile(r"^RAMB36E[12]$"),
}


@dataclass(frozen=True)
class Design:
    """One synthesis run: a top module with parameters."""

    name: str
    top: str
    params: dict[str, int] = field(default_factory=dict)
    what: str = ""
    family: str = FAMILY  #: one of :data:`FAMILIES`


def yosys_version() -> str:
    res = subprocess.run([_tool("yosys"), "-V"], capture_output=True, text=True, check=True)
    return res.stdout.strip()


def synthesize(design: Design) -> dict[str, int]:
    """``synth_xilinx -family <design.family> -flatten`` of one design; cell counts by class.

    Returns ``{"lut", "lutram", "ff", "carry", "muxf", "dsp", "bram18", "bram36"}``
    (BRAM counted in 18 Kb halves in ``bram18_equiv``).  I/O buffers are left out
    (``-noiopad``): the designs are blocks inside a kernel, not chips.
    """
    if design.family not in FAMILIES:
        raise ValueError(f"family {design.family!r} is not one of {FAMILIES}")
    yosys = _tool("yosys")
    with tempfile.TemporaryDirectory(prefix="nbq_yosys_") as d:
        stat = Path(d) / "stat.json"
        chparam = " ".join(f"-set {k} {v}" for k, v in design.params.items())
        script = "; ".join(
            [
                f"read_verilog -defer -I {RTL_DIR} " + " ".join(str(RTL_DIR / s) for s in SOURCES),
                (f"chparam {chparam} {design.top}" if chparam else "") or "hierarchy",
                f"hierarchy -top {design.top}",
                f"synth_xilinx -family {design.family} -flatten -noiopad -noclkbuf "
                f"-top {design.top}",
                f"tee -q -o {stat} stat -json",
            ]
        )
        res = subprocess.run([yosys, "-q", "-p", script], capture_output=True, text=True)
        if res.returncode != 0:
            raise RtlToolError(f"yosys failed on {design.name}:\n{res.stderr[-2000:]}")
        cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    counts = {k: 0 for k in CELL_CLASSES}
    for cell, n in cells.items():
        for k, rx in CELL_CLASSES.items():
            if rx.match(cell):
                counts[k] += int(n)
    counts["bram18_equiv"] = counts["bram18"] + 2 * counts["bram36"]
    return counts
