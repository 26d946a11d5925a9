"""Model of THIS project's streaming conv kernel (``hls/nbq_conv.cpp``) on measured constants.

Beside the paper's model (:mod:`.equations`, Eq. 35-44) this module describes the
kernel as written: its builds, their fabric cost and their cycle count.

Resources of a build (Pm input x Pn output channels per cycle, code width nb):

* arithmetic: Pn output lanes of Pm 3x3 arrays each (PEs, adder tree sized per level,
  int48 accumulator) and Pn requantisation units, from the yosys report of the RTL
  twin (:mod:`.costs`) - an **open-synthesis estimate, yosys, not Vivado**;
* everything else (AXI DMA, interconnect, reset, the kernel's reader, window, pool
  and packer stages, AXI-Lite control): :data:`INFRA_LUT` / :data:`INFRA_FF`, an
  **assumption** (not synthesised here);
* BRAM18 from the buffers the source declares (line buffers, weights, and the window
  history, window buffer and pool row it binds to block RAM: :data:`STORAGE`), each
  mapped onto 18 Kb blocks in its best aspect ratio.

Cycles of one call (one tile), from the stage description of :mod:`.stages` (which
the dataflow simulation of :mod:`.dataflow` runs too).  DATAFLOW: the stages run
concurrently, so a call takes its slowest stage plus the skew before the first window
and the pipeline depth:

* reader    ``H W sum_g ceil(g/8)``: one 128-bit word (8 activations) per cycle, per
  channel group g of the pixel (Pm channels, the last one C_in mod Pm);
* window    ``VH VW ceil(C_in/Pm)``: one Pm-channel group of one padded pixel per cycle;
* compute   ``OHc OWc ceil(C_in/Pm) ceil(C_out/Pn)``: one 3x3 x Pm x Pn window per cycle
  (Eq. 36's term, with ceilings and the conv output of the tile);
* packer    ``OH OW ceil(C_out/Pn) ceil(Pn/8)``: eight output lanes (one word) per
  cycle, then the last word and the status word;
* skew: the window stage's iteration of the first window (``(K-1) (VW+1) ceil(C_in/Pm)``);
  depth: every stage's latency + one cycle per FIFO (:func:`.stages.pipeline_depth`);
* a LOAD call first reads its weights one word per cycle (the flat loader: C_out x
  ceil(C_in/Pm) x K^2 weight vectors of ceil(Pm x item bytes / 16) words) and one
  requant word per output channel; the host loads each output-channel group once per
  batch, so a batch of B images pays it once (``batch``).

The calls are the host's own plan (:func:`pynq_nbq.kernel.tiles.plan_layer`, through
:func:`.stages.plan_calls`), the buffer limits ``hls/nbq_params.h``'s unless a build sets
its own (:mod:`.sizing` sizes them for the networks a user ships).  The clock is the
board's PL clock (:attr:`.boards.Board.kernel_clock_mhz`: the PS's PLL over an integer
divisor).  Call overhead on the host (register writes, DMA start) is a parameter.

The arithmetic's costs come from the yosys family of the board's part (:func:`family_of`:
``xcup`` for Zynq UltraScale+, ``xc7`` for Zynq-7000).  A build may bind its weight banks
and line buffers to UltraRAM where the part has it (:data:`URAM_SWITCHES`).
"""

from __future__ import annotations

import math
from typing import Any

from . import costs, stages, storage
from .boards import Board
from .constants import PAPER_DSP_BUDGET
from .layers import Layer
from .stages import Build, Call, build_with_limits, describe_call, header_limits, pipeline_depth
from .storage import (  # noqa: F401 - the memory model, re-exported for callers
    ACT_BITS,
    INFRA_BRAM18,
    LUTRAM_SWITCHES,
    STORAGE,
    URAM_SWITCHES,
    bound,
    bram18_for,
    lutram_lut,
    uram_for,
)

#: Fraction of the device's LUTs a build may use (the rest: routing slack, timing).
LUT_FRACTION = 0.70
#: Fraction of the device's BRAM18s, and of its UltraRAMs, a build may use.
BRAM_FRACTION = 0.80
URAM_FRACTION = 0.80
#: LUTs / FFs outside the PE arrays and requantisers (AXI DMA, interconnect, reset,
#: reader/window/pool/packer stages, control).  ASSUMPTION, not synthesised here:
#: Xilinx's AXI DMA alone is ~2-3k LUT in simple mode (PG021 resource tables).
INFRA_LUT = 15000
INFRA_FF = 20000
#: name -> (PE kind, code width) of every build: a 3-bit svpe build runs bundles with
#: n <= 3, a 5-bit one n <= 5; vpe takes int16 weights.
BUILDS = {"vpe": ("vpe", 16), "svpe3": ("svpe", 3), "svpe5": ("svpe", 5)}
PM_CHOICES = (1, 2, 4, 8, 16, 32, 64)
PN_CHOICES = (1, 2, 4, 8, 16, 32, 64)


def build_for(pe: str, n_bits: int) -> str:
    """The narrowest build that runs a bundle of this datapath and weight width."""
    if pe == "vpe":
        return "vpe"
    for nb in costs.SVPE_BUILD_BITS:
        if n_bits <= nb:
            return f"svpe{nb}"
    raise ValueError(f"no svpe build runs n = {n_bits} (widths {costs.SVPE_BUILD_BITS})")


def family_of(board: Board | None) -> str:
    """The yosys family whose costs apply to the board's part: ``xc7`` for a Zynq-7000
    (PS7) board, ``xcup`` for Zynq UltraScale+ (PS8) and when no board is given."""
    return "xc7" if board is not None and board.ps_family == "ps7" else "xcup"


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def weight_bits(build: str) -> int:
    pe, nb = BUILDS[build]
    return 16 if pe == "vpe" else nb


# --- the infrastructure, itemised from the source's declarations (pessimistic) ---------------
#: Xilinx IP of the block design, LUTs: ESTIMATES (not synthesised; PG021/PG059 give
#: 1.5-3k for a 32/64-bit simple-mode DMA, more for 128 bits; an AXI interconnect with
#: width converters 1-3k).  Taken at the top of those ranges: pessimistic.
IP_LUT = {
    "axi_dma_128": 4500,
    "data_interconnect": 3000,
    "ctrl_interconnect": 1000,
    "proc_sys_reset": 50,
    "s_axilite_control": 800,
}


def infrastructure_lut(
    pe: str, pm: int, pn: int, limits: dict | None = None, lutram: frozenset[str] = frozenset()
) -> dict[str, int]:
    """LUTs outside the PE lanes and requantisers, item by item from what
    ``hls/nbq_conv.cpp`` declares at (Pm, Pn) - a documented PESSIMISTIC estimate
    (each item rounded up; no Vitis or Vivado run behind it):

    the RAMs and FIFOs the source binds to LUTRAM (:data:`STORAGE`, and the small RAMs
    ``lutram`` names, :data:`LUTRAM_SWITCHES`; ``<name>_lutram``);
    the window's and the compute stage's wide selects (hist or its register bypass, 6 Pm
    x 16 bits; the window from the stream or inbuf, 9 Pm x 16 bits - the held window is
    the register's clock enable - each a 2:1 select, two per LUT6); the reader's lane
    demux (Pm x 16 bits from 8 lanes: 8:1); the packer's (Pn + 8) x 16-bit shift buffer
    (8:1); the loader's vector register and code decode; the Xilinx IP (:data:`IP_LUT`).
    """
    vec, win = pm * ACT_BITS, 9 * pm * ACT_BITS
    wv = stages.protocol.weight_vector_words(pe, pm) * stages.protocol.WORD_BITS
    items = {
        f"{name}_lutram": copies * lutram_lut(depth, width)
        for name, (copies, depth, width) in bound("lutram", pm, pn, limits, lutram).items()
    }
    items.update(
        {
            "window_select": 6 * vec // 2,  # hist or hreg: two 2:1 muxes per LUT6
            "compute_select": win // 2,  # stream or inbuf: two 2:1 muxes per LUT6
            "reader_demux": 2 * vec,  # 8:1 per bit: 2 LUT6 + MUXF7
            "packer": 2 * (pn + stages.ACT_LANES) * ACT_BITS,  # 8:1 shift per bit
            "loader": wv // 2 + pm * 4,  # vector shift register select, code decode
            "stage_control": 2000,  # counters, compares, FIFO flags of six stages
            **IP_LUT,
        }
    )
    items["total"] = sum(items.values())
    return items


def switchable_shapes(
    build: str, pm: int, pn: int, limits: dict | None = None
) -> dict[str, tuple[int, int, int]]:
    """:func:`.storage.switchable_shapes` of build ``build``."""
    return storage.switchable_shapes(pm, pn, weight_bits(build), limits)


def buffers_bram18(
    build: str,
    pm: int,
    pn: int,
    limits: dict | None = None,
    uram: frozenset[str] = frozenset(),
    lutram: frozenset[str] = frozenset(),
) -> dict[str, int]:
    """BRAM18 of build ``build``'s buffers (:func:`.storage.buffers_bram18`)."""
    return storage.buffers_bram18(pm, pn, weight_bits(build), limits, uram, lutram)


def buffers_uram(
    build: str, pm: int, pn: int, limits: dict | None = None, uram: frozenset[str] = frozenset()
) -> dict[str, int]:
    """UltraRAMs of build ``build``'s buffers (:func:`.storage.buffers_uram`)."""
    return storage.buffers_uram(pm, pn, weight_bits(build), limits, uram)


def build_resources(
    build: str,
    pm: int,
    pn: int,
    limits: dict | None = None,
    uram: frozenset[str] = frozenset(),
    family: str = "xcup",
    lutram: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """LUT/FF/DSP/BRAM18/URAM of one build (estimate: yosys ``family`` for the arithmetic,
    see module doc); ``uram`` names the buffers bound to UltraRAM (:data:`URAM_SWITCHES`),
    ``lutram`` the small RAMs bound to LUTRAM instead of block RAM (:data:`LUTRAM_SWITCHES`:
    their LUTs join the itemised infrastructure, their BRAM18 leave the count)."""
    pe, nb = BUILDS[build]
    lane = costs.lane_cost(pe, nb, pm, family)
    rq = costs.cells("requant", family)
    lut = pn * (lane["lut"] + lane["lutram"] + rq["lut"] + rq["lutram"])
    ff = pn * (lane["ff"] + rq["ff"])
    dsp = pn * (lane["dsp"] + rq["dsp"])
    bram = buffers_bram18(build, pm, pn, limits, uram, lutram)
    urams = buffers_uram(build, pm, pn, limits, uram)
    factor = costs.twin_factor(pe, nb, family)
    infra = infrastructure_lut(pe, pm, pn, limits, lutram)
    lane_lut = lane["lut"] + lane["lutram"]
    pessimistic = pn * (factor * lane_lut + rq["lut"] + rq["lutram"]) + infra["total"]
    return {
        "build": build,
        "pe": pe,
        "code_bits": nb if pe == "svpe" else None,
        "pm": pm,
        "pn": pn,
        "arith_lut": round(lut),
        "arith_ff": round(ff),
        "lut": round(lut) + INFRA_LUT,
        "ff": round(ff) + INFRA_FF,
        "dsp": round(dsp),
        "requant_dsp": pn * rq["dsp"],
        "bram18": bram["total"],
        "bram18_parts": bram,
        "uram": urams["total"],
        "uram_parts": urams,
        "uram_bound": sorted(uram),
        "lutram_bound": sorted(lutram),
        "family": family,
        # the pessimistic end of the range: the larger twin's lanes, the itemised
        # infrastructure (infrastructure_lut) instead of the assumed INFRA_LUT
        "lut_pessimistic": round(pessimistic),
        "twin_factor": round(factor, 3),
        "infra_lut_itemised": infra["total"],
        "source": f"{costs.COST_NOTE} (-family {family}); infrastructure {INFRA_LUT} LUT / "
        f"{INFRA_FF} FF assumed "
        f"(pessimistic: the larger of two bit-exact twins, x{factor:.2f}, and "
        f"{infra['total']} LUT itemised)",
    }


def fits(res: dict[str, Any], board: Board, dsp_budget: int | None) -> bool:
    """Whether a build's resources fit: its PESSIMISTIC LUT count (the larger twin and
    the itemised infrastructure, ``lut_pessimistic``) within :data:`LUT_FRACTION` of the
    board's LUTs, BRAM18 and URAM within :data:`BRAM_FRACTION` / :data:`URAM_FRACTION`
    of the board's, FF within the board's, DSP within ``dsp_budget`` capped at the
    board's DSPs."""
    dsp = board.dsp if dsp_budget is None else min(dsp_budget, board.dsp)
    return (
        res["lut_pessimistic"] <= LUT_FRACTION * board.lut
        and res["ff"] <= board.ff
        and res["dsp"] <= dsp
        and res["bram18"] <= BRAM_FRACTION * board.bram18
        and res.get("uram", 0) <= URAM_FRACTION * board.uram
    )


def _subsets(names: list[str]) -> list[frozenset[str]]:
    """Every subset of ``names``, the empty one first."""
    return [
        frozenset(n for i, n in enumerate(names) if mask >> i & 1)
        for mask in range(1 << len(names))
    ]


def uram_options(board: Board) -> list[frozenset[str]]:
    """The UltraRAM bindings a build may take on ``board``: none on a part without
    UltraRAM, else every subset of :data:`URAM_SWITCHES` (block RAM first)."""
    return _subsets(sorted(URAM_SWITCHES)) if board.uram > 0 else [frozenset()]


def lutram_options() -> list[frozenset[str]]:
    """The LUTRAM bindings of the small RAMs a build may take (every part has LUTRAM):
    every subset of :data:`LUTRAM_SWITCHES`, block RAM first."""
    return _subsets(sorted(LUTRAM_SWITCHES))


Choice = tuple[int, int, frozenset[str], frozenset[str]]


def _lutram_cost(pm: int, pn: int, limits: dict, lutram: frozenset[str]) -> int:
    """LUTs of the small RAMs ``lutram`` moves to LUTRAM (:data:`LUTRAM_SWITCHES`)."""
    shapes = storage.storage_shapes(pm, pn, limits)
    return sum(c * lutram_lut(d, w) for n, (c, d, w) in shapes.items() if n in lutram)


def choose(build: str, board: Board, limits: dict | None = None) -> Choice:
    """Default (Pm, Pn, UltraRAM binding, LUTRAM binding) of a build on ``board``: the
    most arrays that fit (:func:`fits`: <= 70 % LUTs at the pessimistic cost, <= 80 %
    BRAM18 / URAM; the vpe build also <= the paper's 768 DSPs capped at the part's), ties
    broken towards the fewest LUTs in switched LUTRAM (so a small RAM leaves block RAM
    only when that lets more arrays fit), then Pm = 4 Pn (the paper's ratio), then the
    larger Pm, then the fewest buffers in UltraRAM.  Pn <= MAX_COUT, Pm <= MAX_CIN.
    ValueError names what even (1, 1) needs."""
    lim = {**header_limits(), **(limits or {})}
    budget = PAPER_DSP_BUDGET if BUILDS[build][0] == "vpe" else None
    family = family_of(board)
    best = None
    for pm in PM_CHOICES:
        for pn in PN_CHOICES:
            if pm > lim["max_cin"] or pn > lim["max_cout"]:
                continue
            for uram in uram_options(board):
                for lutram in lutram_options():
                    res = build_resources(build, pm, pn, lim, uram, family, lutram)
                    if not fits(res, board, budget):
                        continue
                    ratio = -abs(math.log2(pm / pn) - 2)
                    key = (pm * pn, -_lutram_cost(pm, pn, lim, lutram), ratio, pm, -len(uram))
                    if best is None or key > best[0]:
                        best = (key, (pm, pn, uram, lutram))
    if best is None:
        small = build_resources(build, 1, 1, lim, frozenset(), family)
        in_lut = build_resources(build, 1, 1, lim, frozenset(), family, frozenset(LUTRAM_SWITCHES))
        raise ValueError(
            f"no (Pm, Pn) of build {build} fits {board.name}: even (1, 1) needs "
            f"{small['lut_pessimistic']} LUT at the pessimistic cost (of {LUT_FRACTION:.0%} x "
            f"{board.lut}) and {small['bram18']} BRAM18 ({in_lut['bram18']} with its small "
            f"RAMs in LUTRAM; of {BRAM_FRACTION:.0%} x {board.bram18}) with buffers for "
            f"{lim['max_w']} columns, {lim['max_cin']} input and {lim['max_cout']} output channels"
        )
    return best[1]


def choose_build(build: str, board: Board, limits: dict | None = None) -> tuple[int, int]:
    """Default (Pm, Pn) of a build on ``board`` (:func:`choose` without the binding)."""
    pm, pn, _uram, _lutram = choose(build, board, limits)
    return pm, pn


def build_of(build: str, pm: int, pn: int, limits: dict | None = None) -> Build:
    """The :data:`.stages.Build` of build name ``build`` at (Pm, Pn)."""
    return build_with_limits(BUILDS[build][0], pm, pn, limits)


def call_cycles(call: Call, build: Build) -> dict[str, int]:
    """Cycles of one call per stage and in total (modelled; see the module doc)."""
    desc = describe_call(call, build)
    n = {s.name: s.iterations for s in desc.stages}
    stage = {
        "reader": n["reader"],
        "window": n["window"],
        "compute": n["compute"],
        "packer": n["pack"] + desc.tail_cycles,
    }
    skew, depth = desc.first_window, pipeline_depth(desc)
    body = max(stage["reader"], stage["window"], skew + stage["compute"], stage["packer"])
    load = desc.load_cycles
    return {**stage, "skew": skew, "depth": depth, "load": load, "total": load + body + depth}


def plan_calls(layer: Layer, build: Build) -> list[Call]:
    """The calls of one engine layer: the host's tile plan (:func:`.stages.plan_calls`)."""
    return stages.plan_calls(
        layer.in_height,
        layer.in_width,
        layer.in_channels,
        layer.out_channels,
        layer.kernel,
        layer.pool,
        build,
    )


def layer_cycles(
    layer: Layer, build: Build, batch: int = 1, simulate: bool = False
) -> dict[str, Any]:
    """Cycles per image of one engine layer (every call; weight loads shared by ``batch``
    images), the slowest stage, Eq. 36's count at the same (Pm, Pn), and with
    ``simulate`` the dataflow simulation's cycles (:mod:`.dataflow`) of the same calls."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    calls = plan_calls(layer, build)
    per: list[dict[str, Any]] = [call_cycles(c, build) for c in calls]
    for p in per:
        p["total"] -= p["load"] - p["load"] / batch
        p["load"] /= batch
    totals = {s: sum(p[s] for p in per) for s in ("reader", "window", "compute", "packer")}
    eq36 = (
        (layer.out_height * (2 if layer.pool else 1) * layer.out_width * (2 if layer.pool else 1))
        * _ceil(layer.in_channels, build.pm)
        * _ceil(layer.out_channels, build.pn)
    )
    load = sum(p["load"] for p in per)
    out: dict[str, Any] = {
        "calls": len(calls),
        "cycles": sum(p["total"] for p in per),
        "load_cycles": load,
        "stage_cycles": totals,
        "bound": "load" if load > max(totals.values()) else max(totals, key=lambda s: totals[s]),
        "eq36_cycles": eq36,
    }
    if simulate:
        from .dataflow import simulate_calls

        sim = simulate_calls(calls, build, batch)
        out["sim_cycles"] = sim["cycles"]
        out["sim_over_model"] = sim["cycles"] / out["cycles"]
    return out


def model_kernel(
    layers: list[Layer],
    board: Board,
    pe: str,
    n_bits: int,
    clock_mhz: float | None = None,
    call_overhead_us: float = 0.0,
    limits: dict | None = None,
    batch: int = 1,
    simulate: bool = True,
) -> dict[str, Any]:
    """This kernel on ``board``: the build that runs (pe, n_bits), its default (Pm, Pn)
    and storage binding for the buffer ``limits`` (default ``hls/nbq_params.h``'s;
    :func:`.sizing.network_limits` sizes them for a network) and its resources, and per
    engine layer its modelled cycles at the board's PL clock (or ``clock_mhz``) beside
    Eq. 36's (and the dataflow simulation's, with ``simulate``).  A layer's time is at
    least its DMA bytes (words read, written and loaded) over the board's PL bandwidth
    (:meth:`.boards.Board.pl_bandwidth_gbps`; ``bound`` "ddr" then)."""
    from .model import fuse_pools, placement  # model imports nothing from here

    build = build_for(pe, n_bits)
    pm, pn, uram, lutram = choose(build, board, limits)
    spec = build_of(build, pm, pn, limits)
    clock = (clock_mhz or board.kernel_clock_mhz) * 1e6  # the overlay's one PL clock
    bandwidth = board.pl_bandwidth_gbps(clock / 1e6)  # DDR / HP ports, reads + writes
    places = [placement(lay, "engine") for lay in layers]
    work, fused = fuse_pools(list(layers), places)
    rows = []
    for lay, (where, _reason, _), was_fused in zip(work, places, fused, strict=True):
        if where != "fpga" or was_fused:
            continue
        c = layer_cycles(lay, spec, batch, simulate)
        t = c["cycles"] / clock + c["calls"] * call_overhead_us * 1e-6
        # the DMA's bytes: every word the reader takes and the packer writes, and the
        # weight words (shared by the batch); DDR/HP bandwidth a floor under the time
        st = c["stage_cycles"]
        words = st["reader"] + st["packer"] + c["load_cycles"]
        ddr_s = words * stages.protocol.WORD_BYTES / (bandwidth * 1e9)
        if ddr_s > t:
            c["bound"] = "ddr"
        rows.append(
            {
                "name": lay.name,
                **c,
                "time_us": max(t, ddr_s) * 1e6,
                "ddr_us": ddr_s * 1e6,
                "eq36_us": c["eq36_cycles"] / clock * 1e6,
            }
        )
    return {
        "modelled": True,
        "batch": batch,
        "clock_mhz": clock / 1e6,
        "pl_bandwidth_gbps": bandwidth,
        "build": build,
        "limits": {**header_limits(), **(limits or {})},
        "resources": build_resources(build, pm, pn, limits, uram, family_of(board), lutram),
        "layers": rows,
        "fpga_time_us": sum(r["time_us"] for r in rows),
        "eq36_time_us": sum(r["eq36_us"] for r in rows),
    }


def builds_table(
    board: Board, limits: dict | None = None, by_build: dict[str, dict] | None = None
) -> list[dict[str, Any]]:
    """Every build at its default (Pm, Pn) and storage binding (:func:`choose`) with its
    resources against the board's totals (``uram`` 0 on a part without UltraRAM); the
    buffer maxima ``limits``, or per build name ``by_build`` (:mod:`.sizing`)."""
    out = []
    for build in BUILDS:
        lim = by_build[build] if by_build else limits
        pm, pn, uram, lutram = choose(build, board, lim)
        res = build_resources(build, pm, pn, lim, uram, family_of(board), lutram)
        res["limits"] = {**header_limits(), **(lim or {})}
        res["of_device"] = {
            "lut": res["lut"] / board.lut,
            "lut_pessimistic": res["lut_pessimistic"] / board.lut,
            "ff": res["ff"] / board.ff,
            "dsp": res["dsp"] / board.dsp,
            "bram18": res["bram18"] / board.bram18,
            "uram": res["uram"] / board.uram if board.uram else 0.0,
        }
        out.append(res)
    return out
