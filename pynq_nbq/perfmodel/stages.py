"""The streaming kernel (``hls/nbq_conv.cpp``) described once, for the model and the simulation.

Three things here, each the one definition the cycle model (:mod:`.kernel`) and the
dataflow simulation (:mod:`.dataflow`) share:

* :data:`Build` - a kernel build: the :class:`~pynq_nbq.kernel.protocol.KernelInfo`
  (PE kind, (Pm, Pn), buffer limits) the host's tile planner takes, so the model plans
  exactly the calls the scheduler makes (:func:`plan_calls` calls
  :func:`pynq_nbq.kernel.tiles.plan_layer`); :func:`build_with_limits` fills the limits
  from ``hls/nbq_params.h`` (:func:`header_limits`), never restated.
* :class:`Call` and :func:`geometry` - one call's registers and the derived sizes of
  ``geom_t`` in the kernel (padded tile, conv outputs, channel groups).
* :func:`describe_call` - the six DATAFLOW stages of one call as the C++ loops run
  them: per stage its loop trip count, pipeline latency (cycles from an iteration's
  issue to its FIFO write) and, per iteration, which FIFO it reads and writes
  (``numpy`` bool arrays, built on demand).  All stages are pipelined at II = 1.

FIFO depths come from the same formulas as ``NBQ_*_DEPTH`` in ``hls/nbq_params.h``
(:func:`fifo_depths`; ``tests/test_perf_dataflow.py`` compares them).  Sizes are in
cycles of the PL clock (the board's, :attr:`.boards.Board.kernel_clock_mhz`) and stream
words of ``protocol.WORD_BITS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .. import datapath as dp
from ..kernel import protocol
from ..kernel.tiles import plan_layer

#: int16 activations per stream word (8 in 128 bits): the reader's and packer's rate.
ACT_LANES = protocol.ACT_LANES
#: Pipeline latency of each stage's loop (cycles from an iteration's issue to its FIFO
#: write), as scheduled by hand from the source - an ESTIMATE, not a Vitis report:
#: reader (word shift, lane demux), window (line-buffer read, select), requant (a
#: 48x16 multiply in DSP cascade, round, saturate), pool (two compares), pack (shift,
#: merge).  The compute stage's is :func:`compute_latency`.
STAGE_LATENCY = {"reader": 2, "window": 2, "requant": 4, "pool": 2, "pack": 2}
#: Stage names in DATAFLOW order, and the FIFOs between them (producer, consumer).
STAGES = ("reader", "window", "compute", "requant", "pool", "pack")
FIFOS = {
    "px": ("reader", "window"),
    "wins": ("window", "compute"),
    "accs": ("compute", "requant"),
    "outs": ("requant", "pool"),
    "pooled": ("pool", "pack"),
    "st": ("reader", "pack"),  # the reader's STATUS bits, read by pack for the status word
}


def compute_latency(pm: int) -> int:
    """Product (1) + adder tree over 9 Pm products (ceil(log2 9 Pm)) + accumulate (1)."""
    return 2 + math.ceil(math.log2(9 * pm))


def fifo_depths(pm: int, max_cin: int) -> dict[str, int]:
    """Depth of each FIFO of the DATAFLOW region: ``hls/nbq_params.h`` NBQ_*_DEPTH.

    ``px`` holds two pixels' ceil(MAX_CIN / Pm) channel groups + 2 (the compute stage
    reads a pixel's windows in one burst, then none for the other output groups, and
    the window stage takes two pixels at a row's start before its first window); the
    others are ping-pong (2).  See the header's comment for the derivation.
    """
    return {"px": 2 * -(-max_cin // pm) + 2, "wins": 2, "accs": 2, "outs": 2, "pooled": 2, "st": 2}


@lru_cache(maxsize=1)
def header_limits() -> dict[str, int]:
    """The default buffer limits of ``hls/nbq_params.h``: max_h, max_w, max_cin, max_cout."""
    from ..backends.csim import hls_dir  # the checkout's hls/ or the wheel's copy
    from ..kernel.header import parse_params_header

    h = parse_params_header(hls_dir() / "nbq_params.h")
    return {k: h[f"NBQ_{k.upper()}"] for k in ("max_h", "max_w", "max_cin", "max_cout")}


#: A kernel build as the model sees it: exactly the
#: :class:`~pynq_nbq.kernel.protocol.KernelInfo` its read-only registers report (PE kind,
#: (Pm, Pn), buffer limits), the one record of a build's geometry the host's planner takes.
Build = protocol.KernelInfo


def build_with_limits(pe: str, pm: int, pn: int, limits: dict | None = None) -> Build:
    """A build with the header's limits, overridden by ``limits`` (same keys)."""
    lim = {**header_limits(), **(limits or {})}
    return Build(
        dp.PEKind.parse(pe), pm, pn, lim["max_h"], lim["max_w"], lim["max_cin"], lim["max_cout"]
    )


@dataclass(frozen=True)
class Call:
    """One kernel call: an input tile (rows x columns as sent), its channels and flags."""

    h: int
    w: int
    c_in: int
    c_out: int
    k: int
    pool: bool
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    load: bool = False


@dataclass(frozen=True)
class Geometry:
    """``geom_t`` of the kernel: padded tile, conv outputs computed, output, groups."""

    vh: int
    vw: int
    rows: int
    cols: int
    oh: int
    ow: int
    mg: int
    cg: int


def geometry(call: Call, pm: int, pn: int) -> Geometry:
    """The sizes ``nbq_conv`` derives from the registers (floor-mode pool drops the odd
    last conv row/column)."""
    pt, pb, pl, pr = call.pads
    vh, vw = call.h + pt + pb, call.w + pl + pr
    ch, cw = vh - call.k + 1, vw - call.k + 1
    oh, ow = (ch // 2, cw // 2) if call.pool else (ch, cw)
    rows, cols = (2 * oh, 2 * ow) if call.pool else (ch, cw)
    return Geometry(vh, vw, rows, cols, oh, ow, -(-call.c_in // pm), -(-call.c_out // pn))


def plan_calls(
    h: int, w: int, c_in: int, c_out: int, k: int, pool: bool, build: Build
) -> list[Call]:
    """The calls of one layer on ``build``: exactly the host's plan
    (:func:`pynq_nbq.kernel.tiles.plan_layer`): output-channel groups, each loading its
    weights on its first call, then every spatial tile."""
    plan = plan_layer(h, w, c_in, c_out, k, 2 if pool else 0, build)
    calls = []
    for co0, co1 in plan.groups:
        for i, t in enumerate(plan.tiles):
            in_h, in_w = t.in_rows[1] - t.in_rows[0], t.in_cols[1] - t.in_cols[0]
            pads = (int(t.pads[0]), int(t.pads[1]), int(t.pads[2]), int(t.pads[3]))
            calls.append(Call(in_h, in_w, c_in, co1 - co0, k, pool, pads, load=i == 0))
    return calls


# --- the stages of one call ---------------------------------------------------------------
@dataclass
class Stage:
    """One pipelined loop of the DATAFLOW region.

    ``iterations`` its trip count; ``latency`` cycles from issue to FIFO write;
    ``reads``/``writes`` FIFO name -> a function giving the per-iteration bool array
    (length ``iterations``) of the iterations that read / write it.
    """

    name: str
    iterations: int
    latency: int
    reads: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)
    writes: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)


@dataclass
class CallDescription:
    """The stages of one call, its FIFOs (name -> (producer, consumer)) and their depths,
    and the load that precedes them."""

    call: Call
    build: Build
    geom: Geometry
    stages: list[Stage]
    fifos: dict[str, tuple[str, str]]
    depths: dict[str, int]
    load_cycles: int
    first_window: int  #: window-stage iteration of the first emitted window (the skew)
    tail_cycles: int  #: after the packer's loop: flush word + status word

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _grid(*sizes: int) -> list[np.ndarray]:
    """Index arrays of a row-major loop nest of ``sizes`` (outermost first), flattened."""
    return [a.reshape(-1) for a in np.meshgrid(*(np.arange(n) for n in sizes), indexing="ij")]


def _reader_writes(call: Call, pm: int) -> np.ndarray:
    mg = -(-call.c_in // pm)
    group_iters = [-(-min(pm, call.c_in - g * pm) // ACT_LANES) for g in range(mg)]
    one = np.concatenate([np.arange(n) == n - 1 for n in group_iters])  # last of a group
    return np.tile(one, call.h * call.w)


def _window_pattern(call: Call, g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    pt, _, pl, _ = call.pads
    vr, vx, _ = _grid(g.vh, g.vw, g.mg)
    real = (vr >= pt) & (vr < pt + call.h) & (vx >= pl) & (vx < pl + call.w)
    if call.k == 3:
        emit = (vr >= 2) & (vx >= 2) & (vr - 2 < g.rows) & (vx - 2 < g.cols)
    else:
        emit = (vr < g.rows) & (vx < g.cols)
    return real, emit


def describe_call(
    call: Call, build: Build, depths: dict[str, int] | None = None
) -> CallDescription:
    """The six stages of one call as ``hls/nbq_conv.cpp`` runs them (see the module doc).

    ``depths`` overrides FIFO depths (what-if runs of the simulation); default: the
    build's (:func:`fifo_depths`).
    """
    g = geometry(call, build.pm, build.pn)
    load = 0
    if call.load:  # the flat loader: one word a cycle, then one requant word a channel
        wv = protocol.weight_vector_words(build.pe, build.pm)
        load = call.c_out * g.mg * call.k * call.k * wv + call.c_out
    if call.k == 3:  # first emit: (vr, vx) = (2, 2), group 0
        first = (2 * g.vw + 2) * g.mg
    else:
        first = 0
    return CallDescription(
        call,
        build,
        g,
        _stages(call, g, build.pm, build.pn),
        dict(FIFOS),
        {**fifo_depths(build.pm, build.max_cin), **(depths or {})},
        load,
        first,
        tail_cycles=2,  # the last, partial feature-map word and the status word
    )


def _stages(call: Call, g: Geometry, pm: int, pn: int) -> list[Stage]:
    """The stages of one call: iterations, latency, and which iterations read and write
    each FIFO (as functions returning boolean masks, evaluated only when simulated)."""
    quads = -(-pn // ACT_LANES)
    per_pixel = sum(-(-min(pm, call.c_in - i * pm) // ACT_LANES) for i in range(g.mg))
    n_win = g.vh * g.vw * g.mg
    n_pix = g.rows * g.cols
    window = _window_pattern

    def compute_reads() -> np.ndarray:
        _, cgi, _ = _grid(n_pix, g.cg, g.mg)
        return cgi == 0

    def compute_writes() -> np.ndarray:
        _, _, mgi = _grid(n_pix, g.cg, g.mg)
        return mgi == g.mg - 1

    def pool_writes() -> np.ndarray:
        if not call.pool:
            return np.ones(n_pix * g.cg, bool)
        cr, cx, _ = _grid(g.rows, g.cols, g.cg)
        return (cr % 2 == 1) & (cx % 2 == 1)

    def pack_reads() -> np.ndarray:
        _, q = _grid(g.oh * g.ow * g.cg, quads)
        return q == 0

    every = lambda n: lambda: np.ones(n, bool)  # noqa: E731
    last = lambda n: lambda: np.arange(n) == n - 1  # noqa: E731
    stages = [
        Stage(
            "reader",
            call.h * call.w * per_pixel,
            STAGE_LATENCY["reader"],
            # the STATUS bits leave after the loop: counted on its last iteration
            writes={
                "px": lambda: _reader_writes(call, pm),
                "st": last(call.h * call.w * per_pixel),
            },
        ),
        Stage(
            "window",
            n_win,
            STAGE_LATENCY["window"],
            reads={"px": lambda: window(call, g)[0]},
            writes={"wins": lambda: window(call, g)[1]},
        ),
        Stage(
            "compute",
            n_pix * g.cg * g.mg,
            compute_latency(pm),
            reads={"wins": compute_reads},
            writes={"accs": compute_writes},
        ),
        Stage(
            "requant",
            n_pix * g.cg,
            STAGE_LATENCY["requant"],
            reads={"accs": every(n_pix * g.cg)},
            writes={"outs": every(n_pix * g.cg)},
        ),
        Stage(
            "pool",
            n_pix * g.cg,
            STAGE_LATENCY["pool"],
            reads={"outs": every(n_pix * g.cg)},
            writes={"pooled": pool_writes},
        ),
        Stage(
            "pack",
            g.oh * g.ow * g.cg * quads,
            STAGE_LATENCY["pack"],
            # the status word is written after the loop, once st is read: its last iteration
            reads={"pooled": pack_reads, "st": last(g.oh * g.ow * g.cg * quads)},
        ),
    ]
    return stages


def pipeline_depth(desc: CallDescription) -> int:
    """Cycles one item needs through the chain: every stage's latency + one per FIFO hop."""
    return sum(s.latency for s in desc.stages) + len(FIFOS) - 1  # st is off the chain
