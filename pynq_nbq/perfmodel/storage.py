"""The kernel's on-chip memories: what ``hls/nbq_conv.cpp`` declares and binds, mapped onto
the fabric's RAMs (BRAM18, UltraRAM, LUTRAM) - sizes from the source's declarations.

A memory of depth x width maps onto 18 Kb blocks in their best aspect ratio
(:func:`bram18_for`), onto 4K x 72 UltraRAMs (:func:`uram_for`) or onto LUTRAM
(:func:`lutram_lut`).  :data:`STORAGE` is how the source binds its RAMs and FIFOs with
every switch at its header default, :data:`URAM_SWITCHES` the buffers a build may move to
UltraRAM, :data:`LUTRAM_SWITCHES` the small RAMs a build may move from block RAM to LUTRAM
(tests/test_hls_synth_guards.py reads all three back from the pragmas).  :mod:`.kernel`
adds them up per build.
"""

from __future__ import annotations

import math

from ..kernel.builds import LUTRAM_MACROS
from . import stages
from .constants import URAM_DEPTH, URAM_WIDTH
from .stages import header_limits

#: BRAM18s outside the kernel's own buffers (DMA FIFOs): an assumption.
INFRA_BRAM18 = 16


def bram18_for(depth: int, width: int) -> int:
    """BRAM18s for a depth x width memory, in the 18 Kb block's best aspect ratio."""
    if depth <= 0 or width <= 0:
        return 0
    shapes = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in shapes)


def uram_for(depth: int, width: int) -> int:
    """UltraRAMs (4K x 72 bits, one aspect ratio) for a depth x width memory."""
    if depth <= 0 or width <= 0:
        return 0
    return math.ceil(depth / URAM_DEPTH) * math.ceil(width / URAM_WIDTH)


#: LUTs per bit of a simple dual-port LUTRAM of depth <= 32 (RAM32M: 32 x 6 in 4 LUTs) and
#: per bit per 64 words beyond (RAM64M: 64 x 3 in 4 LUTs): UltraScale+ CLB primitives.
LUTRAM_LUT_PER_BIT_32 = 4 / 6
LUTRAM_LUT_PER_BIT_64 = 4 / 3


def lutram_lut(depth: int, width: int) -> int:
    """LUTs of a depth x width simple dual-port LUTRAM (the source's impl=lutram)."""
    if depth <= 32:
        return math.ceil(width * LUTRAM_LUT_PER_BIT_32)
    return math.ceil(math.ceil(depth / 64) * width * LUTRAM_LUT_PER_BIT_64)


#: How ``hls/nbq_conv.cpp`` binds each of its RAMs and FIFOs (its ``BIND_STORAGE``
#: pragmas, read back by tests/test_hls_synth_guards.py) when no :data:`LUTRAM_SWITCHES`
#: switch is set: name -> (type, impl).  A "lutram" one is counted in
#: :func:`.kernel.infrastructure_lut`, a "bram" one in :func:`buffers_bram18`, never both
#: (:func:`bound` applies a build's switches).
STORAGE = {
    "hist": ("ram_2p", "bram"),
    "inbuf": ("ram_2p", "bram"),
    "prow": ("ram_2p", "bram"),
    "pend": ("ram_2p", "lutram"),
    "px": ("fifo", "lutram"),
    "wins": ("fifo", "lutram"),
}
#: The buffers a build may bind to UltraRAM instead of block RAM: part name (as in
#: :func:`buffers_bram18`) -> (the macro ``hls/nbq_conv.cpp`` switches on, the source's
#: variables).  Under ``#if <macro>`` the source binds them ``impl=uram``, else
#: ``impl=bram``; tests/test_hls_synth_guards.py reads the pragmas back.
URAM_SWITCHES = {
    "weights": ("NBQ_URAM_WEIGHTS", ("wbuf",)),
    "line_buffers": ("NBQ_URAM_LINES", ("lb0", "lb1")),
}
#: The small RAMs a build may bind to LUTRAM instead of block RAM: variable of
#: ``hls/nbq_conv.cpp`` -> the macro it switches on (defined once, in
#: :data:`pynq_nbq.kernel.builds.LUTRAM_MACROS`).  Under ``#if <macro>`` the source binds it
#: ``impl=lutram latency=1``, else ``impl=bram latency=1``: read latency 1 either way, so its
#: declared dependence distance holds for both (docs/hls.md).  hist and inbuf are MG =
#: ceil(MAX_CIN / Pm) words deep, prow (MAX_W / 2) x CG (:func:`storage_shapes`).
LUTRAM_SWITCHES = LUTRAM_MACROS
#: Activation width in the kernel's buffers, bits (act_t).
ACT_BITS = 16


def storage_shapes(pm: int, pn: int, limits: dict | None = None) -> dict[str, tuple[int, int, int]]:
    """name -> (copies, depth in words, width in bits) of every buffer in :data:`STORAGE`
    at (Pm, Pn), from the source's declarations: hist[2][3][MG] of Pm activations
    (partitioned into 6 RAMs), inbuf[MG] and the wins FIFO of 9 Pm activations,
    prow[(MAX_W / 2) CG] and pend[CG] of Pn, the px FIFO of Pm (depths
    :func:`.stages.fifo_depths`)."""
    lim = {**header_limits(), **(limits or {})}
    mg, cg = _ceil(lim["max_cin"], pm), _ceil(lim["max_cout"], pn)
    vec, win, outs = pm * ACT_BITS, 9 * pm * ACT_BITS, pn * ACT_BITS
    depths = stages.fifo_depths(pm, lim["max_cin"])
    return {
        "hist": (6, mg, vec),
        "inbuf": (1, mg, win),
        "prow": (1, (lim["max_w"] // 2) * cg, outs),
        "pend": (1, cg, outs),
        "px": (1, depths["px"], vec),
        "wins": (1, depths["wins"], win),
    }


def binding(lutram: frozenset[str] = frozenset()) -> dict[str, str]:
    """name -> impl of every buffer in :data:`STORAGE` when the build binds the RAMs named
    in ``lutram`` to LUTRAM (:data:`LUTRAM_SWITCHES`); ValueError names a RAM without a
    switch."""
    unknown = sorted(set(lutram) - set(LUTRAM_SWITCHES))
    if unknown:
        raise ValueError(f"no LUTRAM switch for {unknown}; switchable: {sorted(LUTRAM_SWITCHES)}")
    return {name: "lutram" if name in lutram else how for name, (_t, how) in STORAGE.items()}


def bound(
    impl: str, pm: int, pn: int, limits: dict | None, lutram: frozenset[str] = frozenset()
) -> dict[str, tuple[int, int, int]]:
    """The :func:`storage_shapes` of the buffers bound to ``impl`` (:func:`binding`)."""
    shapes = storage_shapes(pm, pn, limits)
    return {name: shapes[name] for name, how in binding(lutram).items() if how == impl}


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def switchable_shapes(
    pm: int, pn: int, wbits: int, limits: dict | None = None
) -> dict[str, tuple[int, int, int]]:
    """(copies, depth, width in bits) of the buffers of :data:`URAM_SWITCHES`: 2 line
    buffers (K-1 rows), one Pm-channel word per (padded column, group); Pn x 9 weight
    banks, one word of Pm ``wbits``-bit weights per (output group, input group)."""
    lim = {**header_limits(), **(limits or {})}
    mg, cg = _ceil(lim["max_cin"], pm), _ceil(lim["max_cout"], pn)
    return {
        "line_buffers": (2, (lim["max_w"] + 2) * mg, pm * ACT_BITS),
        "weights": (pn * 9, cg * mg, pm * wbits),
    }


def buffers_bram18(
    pm: int,
    pn: int,
    wbits: int,
    limits: dict | None = None,
    uram: frozenset[str] = frozenset(),
    lutram: frozenset[str] = frozenset(),
) -> dict[str, int]:
    """BRAM18 of the kernel's buffers: the line buffers and the weight banks unless
    ``uram`` names them (:data:`URAM_SWITCHES`), the RAMs bound to block RAM (:data:`STORAGE`
    less those ``lutram`` names, :data:`LUTRAM_SWITCHES`), and :data:`INFRA_BRAM18`;
    ``total`` their sum."""
    out = {
        name: copies * bram18_for(depth, width)
        for name, (copies, depth, width) in switchable_shapes(pm, pn, wbits, limits).items()
        if name not in uram
    }
    for name, (copies, depth, width) in bound("bram", pm, pn, limits, lutram).items():
        out[name] = copies * bram18_for(depth, width)
    out["infra"] = INFRA_BRAM18
    out["total"] = sum(out.values())
    return out


def buffers_uram(
    pm: int, pn: int, wbits: int, limits: dict | None = None, uram: frozenset[str] = frozenset()
) -> dict[str, int]:
    """UltraRAMs of the buffers ``uram`` binds to UltraRAM (:data:`URAM_SWITCHES`);
    ValueError names a buffer without a switch."""
    unknown = sorted(set(uram) - set(URAM_SWITCHES))
    if unknown:
        raise ValueError(f"no URAM switch for {unknown}; switchable: {sorted(URAM_SWITCHES)}")
    out = {
        name: copies * uram_for(depth, width)
        for name, (copies, depth, width) in switchable_shapes(pm, pn, wbits, limits).items()
        if name in uram
    }
    out["total"] = sum(out.values())
    return out
