"""Measured cost constants of the kernel's arithmetic: the yosys report of the RTL twin.

``hls/rtl/`` holds a Verilog twin of the kernel's arithmetic (PE, 3x3 array, one output
lane of Pm arrays with its adder tree and int48 accumulator, the requantisation),
simulated bit-exact against :mod:`pynq_nbq.datapath`.  ``scripts/rtl_synth.py``
synthesises the designs listed in :data:`DESIGNS` with
``yosys synth_xilinx -family xcup`` (UltraScale+) and their ``*_xc7`` copies with
``-family xc7`` (7-series, the PYNQ-Z2's Zynq-7000; lanes at :data:`XC7_LANE_PMS`) and
writes :data:`REPORT_PATH`; this module reads it (:func:`cells` with a family).
Every number from it is an **open-synthesis estimate (yosys, not Vivado)**: ABC's LUT
mapping usually comes out above Vivado's, and yosys 0.23 packs no adder into a DSP48E2
for UltraScale+ (for xc7 it packs the vpe multiply-add into the DSP48E1).

Lane cost at any Pm: the report measures lanes at Pm = 4, 8, 16, 32; between the
points the cost is interpolated linearly, beyond them extrapolated from the last two.

Two twins: ``nbq_pe.v`` STYLE 0 (the shipped one: negate, then shift; registered
products) and STYLE 1 (shift, then negate; products straight into the adder tree),
both bit-exact.  The second is synthesised as 3x3 arrays and as lanes at
:data:`ALT_LANE_PMS` (the ``*_alt`` designs); :func:`twin_factor` is how much larger
the larger of the two is, which the model's pessimistic resource figure applies.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

REPORT_PATH = Path(__file__).resolve().parent / "yosys_report.json"
COST_NOTE = "open-synthesis estimate, yosys, not Vivado"
LANE_PMS = (4, 8, 16, 32)  #: Pm values at which one output lane is synthesised
ALT_LANE_PMS = (4, 8)  #: Pm values at which the other twin's lane is synthesised
#: svpe build code widths: a 3-bit build runs bundles with n <= 3, a 5-bit build n <= 5.
SVPE_BUILD_BITS = (3, 5)
SVPE, VPE = 1, 2  #: the Verilog KIND parameter


def _designs() -> dict[str, dict[str, Any]]:
    d: dict[str, dict[str, Any]] = {}
    for nb in (2, 3, 4, 5):
        d[f"svpe_pe_nb{nb}"] = {
            "top": "nbq_svpe_pe",
            "params": {"NB": nb},
            "what": f"one shift PE, {nb}-bit code (shift 0..{(1 << (nb - 1)) - 2}), int16 x",
        }
    d["vpe_pe"] = {"top": "nbq_vpe_pe", "params": {}, "what": "one 16 x 16 multiply PE"}
    for nb in SVPE_BUILD_BITS:
        d[f"svpe_array_nb{nb}"] = {
            "top": "nbq_array3x3",
            "params": {"KIND": SVPE, "NB": nb},
            "what": f"3x3 array: 9 shift PEs ({nb}-bit), registered products, adder tree",
        }
    d["vpe_array"] = {
        "top": "nbq_array3x3",
        "params": {"KIND": VPE, "NB": 3},
        "what": "3x3 array: 9 multiply PEs, registered products, adder tree",
    }
    for pm in LANE_PMS:
        for nb in SVPE_BUILD_BITS:
            d[f"svpe_lane_nb{nb}_pm{pm}"] = {
                "top": "nbq_lane",
                "params": {"KIND": SVPE, "NB": nb, "PM": pm},
                "what": f"one output lane: {pm} shift arrays ({nb}-bit), tree, int48 accumulator",
            }
        d[f"vpe_lane_pm{pm}"] = {
            "top": "nbq_lane",
            "params": {"KIND": VPE, "NB": 3, "PM": pm},
            "what": f"one output lane: {pm} multiply arrays, tree, int48 accumulator",
        }
    # the other twin (nbq_pe.v STYLE 1: negate after the shift, products unregistered),
    # synthesised where it is cheap (arrays, lanes at Pm <= ALT_LANE_PMS[-1]): its cost
    # over the shipped twin's bounds the PE cost from above (lane_cost(..., "pessimistic"))
    for nb in SVPE_BUILD_BITS:
        d[f"svpe_array_nb{nb}_alt"] = {
            "top": "nbq_array3x3",
            "params": {"KIND": SVPE, "NB": nb, "STYLE": 1},
            "what": f"3x3 array, the other twin: shift then negate ({nb}-bit), unregistered",
        }
    d["vpe_array_alt"] = {
        "top": "nbq_array3x3",
        "params": {"KIND": VPE, "NB": 3, "STYLE": 1},
        "what": "3x3 array, the other twin: 9 multiply PEs, unregistered products",
    }
    for pm in ALT_LANE_PMS:
        for nb in SVPE_BUILD_BITS:
            d[f"svpe_lane_nb{nb}_pm{pm}_alt"] = {
                "top": "nbq_lane",
                "params": {"KIND": SVPE, "NB": nb, "PM": pm, "STYLE": 1},
                "what": f"one output lane, the other twin: {pm} shift arrays ({nb}-bit)",
            }
        d[f"vpe_lane_pm{pm}_alt"] = {
            "top": "nbq_lane",
            "params": {"KIND": VPE, "NB": 3, "PM": pm, "STYLE": 1},
            "what": f"one output lane, the other twin: {pm} multiply arrays",
        }
    d["requant"] = {
        "top": "nbq_requant",
        "params": {},
        "what": "requantisation of one value: 48x16 multiply, + bias + half, shift, saturate",
    }
    return d


#: yosys families of the report: UltraScale+ (ZCU102, ZCU104, KV260) and 7-series (PYNQ-Z2).
FAMILIES = ("xcup", "xc7")
#: Pm values at which one output lane is synthesised for xc7 (the 7-series parts are
#: small: the PYNQ-Z2's 53,200 LUTs hold few Pm = 32 lanes; lane_cost extrapolates).
XC7_LANE_PMS = (4, 8, 16)


def _xc7_designs(base: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The 7-series copies (``<name>_xc7``, family ``xc7``) of the designs the model reads
    for a 7-series part: arrays, requant, lanes at :data:`XC7_LANE_PMS` and both twins."""
    keep = [n for n in base if not n.startswith(("svpe_pe", "vpe_pe")) and "pm32" not in n]
    return {f"{n}_xc7": {**base[n], "family": "xc7"} for n in keep}


def family_of(design: dict[str, Any]) -> str:
    """The yosys family of one design entry (``xcup`` when the entry names none)."""
    return str(design.get("family", "xcup"))


#: name -> {"top", "params", "what"[, "family"]}: every design of the report.
DESIGNS = {**_designs(), **_xc7_designs(_designs())}
#: The small designs a CI run re-synthesises (a few seconds each).
CI_DESIGNS = (
    "svpe_pe_nb3",
    "svpe_pe_nb5",
    "vpe_pe",
    "svpe_array_nb3",
    "vpe_array",
    "requant",
    "svpe_array_nb5_alt",  # the other twin, where it costs most
    "vpe_array_xc7",  # 7-series: the multiply-add packed into DSP48E1s
    "requant_xc7",
)


@lru_cache(maxsize=1)
def load_report() -> dict[str, Any]:
    """The committed report (``yosys_report.json``); ValueError if missing or stale."""
    if not REPORT_PATH.is_file():
        raise ValueError(f"{REPORT_PATH} missing: run `python3 scripts/rtl_synth.py`")
    report = json.loads(REPORT_PATH.read_text())
    missing = sorted(set(DESIGNS) - set(report.get("designs", {})))
    if missing:
        raise ValueError(f"{REPORT_PATH} lacks {missing}: rerun `python3 scripts/rtl_synth.py`")
    return report


def cells(name: str, family: str = "xcup") -> dict[str, int]:
    """Cell counts of one design of the report (lut, ff, carry, dsp, bram18_equiv, ...),
    synthesised for ``family`` (:data:`FAMILIES`; the xc7 copy is ``<name>_xc7``)."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {FAMILIES}")
    key = name if family == "xcup" else f"{name}_{family}"
    return dict(load_report()["designs"][key]["cells"])


def lane_name(pe: str, nb: int, pm: int) -> str:
    return f"svpe_lane_nb{nb}_pm{pm}" if pe == "svpe" else f"vpe_lane_pm{pm}"


def lane_pms(family: str = "xcup") -> tuple[int, ...]:
    """Pm values at which one output lane is synthesised for ``family``."""
    return XC7_LANE_PMS if family == "xc7" else LANE_PMS


def twin_factor(pe: str, nb: int, family: str = "xcup") -> float:
    """How much larger (LUT + LUTRAM) the larger of the two twins (``nbq_pe.v`` STYLE 0
    and 1) is than the shipped one, for this PE kind and code width: the largest ratio
    over the designs synthesised both ways (the 3x3 array and the lanes at
    :data:`ALT_LANE_PMS`); never below 1.  Applied to every Pm (an extrapolation: the
    Pm = 16, 32 lanes of the other twin are not synthesised, 10-30 min each)."""
    base = f"svpe_array_nb{nb}" if pe == "svpe" else "vpe_array"
    names = [base] + [lane_name(pe, nb, pm) for pm in ALT_LANE_PMS]
    ratios = []
    for name in names:
        a, b = cells(name, family), cells(f"{name}_alt", family)
        ratios.append((b["lut"] + b["lutram"]) / (a["lut"] + a["lutram"]))
    return max(1.0, *ratios)


def lane_cost(pe: str, nb: int, pm: int, family: str = "xcup") -> dict[str, float]:
    """LUT/FF/CARRY/DSP of one output lane of Pm arrays for ``family`` (interpolated over
    Pm between the synthesised points :func:`lane_pms`, extrapolated beyond them)."""
    if pm < 1:
        raise ValueError(f"Pm must be >= 1, got {pm}")
    if pe == "svpe" and nb not in SVPE_BUILD_BITS:
        raise ValueError(f"svpe builds have code width {SVPE_BUILD_BITS}, got {nb}")
    pts = [(p, cells(lane_name(pe, nb, p), family)) for p in lane_pms(family)]
    lo, hi = pts[0], pts[1]
    for a, b in zip(pts, pts[1:]):
        lo, hi = a, b
        if pm <= b[0]:
            break
    t = (pm - lo[0]) / (hi[0] - lo[0])
    keys = ("lut", "ff", "carry", "dsp", "lutram")
    return {k: max(0.0, lo[1][k] + t * (hi[1][k] - lo[1][k])) for k in keys}
