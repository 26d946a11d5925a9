"""Fabric cost of the arrays and the choice of parallelism (Pm, Pn).

The paper limits parallelism by DSPs alone (Eq. 35, 44).  With ``fabric_limits``
this module also applies, each from a stated source:

* LUTs and FFs per array: Table VII's 3x3 figures, scaled by k^2/9 for a k x k
  array (the shift PEs and their registers are per tap);
* LUTs and FFs of everything that is not an array (buffers' control, DMA, AXI,
  adder trees, pooling): the fraction of the device left over in Table VIII's two
  ZCU102 designs after their arrays, averaged over the two designs and reserved on
  every board;
* BRAM18s from the layer shapes: k-1 line buffers per input lane, a partial-sum
  buffer per output lane when M > Pm, and a fixed allowance for DMA FIFOs.
  UltraRAM counts as capacity (16 BRAM18 each) for everything but line buffers.

Pm and Pn are powers of two, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..datapath import PEKind
from .boards import Board
from .constants import (
    ACC_BITS,
    BRAM18_BITS,
    BRAM18_WORDS_16,
    INFRA_BRAM18,
    PAPER_ARRAYS,
    PAPER_PM_OVER_PN,
    SVPE_BITS,
    TABLE7_SVPE_FF,
    TABLE7_SVPE_LUT,
    TABLE7_VPE_FF,
    TABLE7_VPE_LUT,
    TABLE8_DEVICE,
    TABLE8_UTILISATION,
)
from .equations import dsp_per_array, tiles
from .layers import Layer

PES = tuple(k.value for k in PEKind)  #: the datapath's PE kinds (``datapath.PEKind``)
SPLITS = ("paper", "best")


def check_pe(pe: str, n_bits: int) -> None:
    """Raise ``ValueError`` naming a bad PE kind or weight width (``datapath.PEKind``)."""
    if pe not in PES:
        raise ValueError(f"pe must be one of {PES}, got {pe!r}")
    if PEKind(pe) is PEKind.SVPE and n_bits not in SVPE_BITS:
        raise ValueError(f"svpe weights must have n_bits in {SVPE_BITS}, got {n_bits!r}")


@dataclass(frozen=True)
class ArrayCost:
    """Fabric cost of one k x k array (counts)."""

    pe: str
    k: int
    dsp: int
    lut: float
    ff: float


def array_cost(pe: str, k: int, n_bits: int = 3) -> ArrayCost:
    """DSPs from Eq. 35/44; LUTs and FFs from Table VII scaled by k^2/9."""
    check_pe(pe, n_bits)
    scale = k * k / 9
    if pe == "vpe":
        return ArrayCost(pe, k, dsp_per_array(pe, k), TABLE7_VPE_LUT * scale, TABLE7_VPE_FF * scale)
    lut = TABLE7_SVPE_LUT[n_bits] * scale
    return ArrayCost(pe, k, dsp_per_array(pe, k), lut, TABLE7_SVPE_FF * scale)


@dataclass(frozen=True)
class FabricReserve:
    """Fractions of a device's LUTs and FFs kept for everything but the arrays."""

    lut: float
    ff: float


def fabric_reserve() -> FabricReserve:
    """Table VIII's non-array share of LUTs and FFs, averaged over its VPE and SVPE designs.

    Each design's arrays (64 VPE, 256 3-bit SVPE 3x3 arrays) are costed with
    Table VII and taken off its utilisation; what is left is the infrastructure.
    """
    lut, ff = [], []
    for pe, arrays in PAPER_ARRAYS.items():
        cost = array_cost(pe, 3, 3)
        util = TABLE8_UTILISATION[pe]
        lut.append(util["lut"] - arrays * cost.lut / TABLE8_DEVICE["lut"])
        ff.append(util["ff"] - arrays * cost.ff / TABLE8_DEVICE["ff"])
    return FabricReserve(lut=sum(lut) / len(lut), ff=sum(ff) / len(ff))


def bram18_demand(pm: int, pn: int, k: int, layers: Iterable[Layer], m_form: str = "ceil") -> dict:
    """BRAM18s an engine of Pm x Pn k x k arrays needs for the given layers (counts).

    ``line_buffers``: Pm lanes x (k - 1) lines x ceil(padded width / 1024) 16-bit
    words; ``partial_sums``: Pn lanes x one output map of ACC_BITS-bit sums, for
    the largest layer that needs more than one pass over its inputs; ``infra``:
    DMA and stream FIFOs (an assumption).  Weights are not counted here: their
    store does not grow with Pm x Pn (see :func:`weight_bram18`).
    """
    layers = list(layers)
    width = max((lay.in_width + 2 * lay.padding for lay in layers), default=0)
    lines = pm * max(k - 1, 0) * math.ceil(width / BRAM18_WORDS_16)
    psum_per_lane = 0
    for lay in layers:
        if tiles(lay.in_channels // lay.groups, pm, "ceil") > 1:
            bits = lay.conv_height * lay.conv_width * ACC_BITS
            psum_per_lane = max(psum_per_lane, math.ceil(bits / BRAM18_BITS))
    psums = pn * psum_per_lane
    return {
        "line_buffers": lines,
        "partial_sums": psums,
        "infra": INFRA_BRAM18,
        "total": lines + psums + INFRA_BRAM18,
    }


def weight_bram18(layer: Layer, weight_bits: int) -> int:
    """BRAM18s that hold all of a layer's weights at once, as Eq. 39 loads them."""
    return math.ceil(layer.weights * weight_bits / BRAM18_BITS)


@dataclass(frozen=True)
class Parallelism:
    """An engine: Pm x Pn arrays of k x k PEs, and what it costs."""

    pe: str
    k: int
    pm: int
    pn: int
    dsp: int
    lut: int
    ff: int
    bram18: int | None  #: None when no layer shapes were given to size the buffers
    limited_by: str  #: the resource that stops the next larger engine
    max_arrays_by: dict[str, int] = field(default_factory=dict)

    @property
    def arrays(self) -> int:
        """Pm x Pn, count."""
        return self.pm * self.pn

    def peak_gops(self, clock_mhz: float) -> float:
        """2 k^2 Pm Pn Freq: every PE busy every cycle (GOP/s)."""
        return 2 * self.k * self.k * self.arrays * clock_mhz * 1e-3

    def to_dict(self, clock_mhz: float) -> dict[str, Any]:
        """JSON-ready description; counts unless the key names a unit."""
        return {
            "pe": self.pe,
            "k": self.k,
            "pm": self.pm,
            "pn": self.pn,
            "arrays": self.arrays,
            "dsp": self.dsp,
            "lut": self.lut,
            "ff": self.ff,
            "bram18": self.bram18,
            "limited_by": self.limited_by,
            "max_arrays_by": dict(self.max_arrays_by),
            "peak_gops": round(self.peak_gops(clock_mhz), 3),
        }


def _pow2_pairs(max_product: int) -> list[tuple[int, int]]:
    pairs = []
    pm = 1
    while pm <= max_product:
        pn = 1
        while pm * pn <= max_product:
            pairs.append((pm, pn))
            pn *= 2
        pm *= 2
    return pairs


def _paper_key(pair: tuple[int, int]) -> tuple[float, int]:
    pm, pn = pair
    return (abs(math.log2(pm / pn) - math.log2(PAPER_PM_OVER_PN)), -pm)


def choose_parallelism(
    board: Board,
    pe: str,
    k: int = 3,
    n_bits: int = 3,
    dsp_budget: int | None = None,
    fabric_limits: bool = True,
    layers: Iterable[Layer] = (),
    split: str = "paper",
    score: Callable[[int, int], float] | None = None,
) -> Parallelism:
    """The largest power-of-two Pm x Pn that fits; ties between splits broken by ``split``.

    ``split="paper"``: Pm/Pn closest to 4 (the paper's (32, 8) and (16, 4)), then
    the larger Pm.  ``split="best"``: the lowest ``score(pm, pn)`` (the model's
    time for the layers), then as "paper".  ``dsp_budget`` defaults to the whole
    device.  Raises ``ValueError`` when not even one array fits.
    """
    check_pe(pe, n_bits)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    budget = board.dsp if dsp_budget is None else dsp_budget
    if budget > board.dsp:
        raise ValueError(f"DSP budget {budget} exceeds the {board.name}'s {board.dsp} DSPs")
    cost = array_cost(pe, k, n_bits)
    bounds = {"dsp": budget // cost.dsp}
    if fabric_limits:
        reserve = fabric_reserve()
        bounds["lut"] = int(board.lut * (1 - reserve.lut) // cost.lut)
        bounds["ff"] = int(board.ff * (1 - reserve.ff) // cost.ff)
    cap = min(bounds.values())
    limited_by = min(bounds, key=lambda r: bounds[r])
    layers = list(layers)

    def bram(pm: int, pn: int) -> int | None:
        if not layers:
            return None
        return bram18_demand(pm, pn, k, layers)["total"]

    def fits(pm: int, pn: int) -> bool:
        if not (fabric_limits and layers):
            return True
        need = bram18_demand(pm, pn, k, layers)
        lines_ok = need["line_buffers"] + need["infra"] <= board.bram18
        return lines_ok and need["total"] <= board.bram18_capacity

    pairs = [p for p in _pow2_pairs(cap) if fits(*p)]
    if not pairs:
        raise ValueError(
            f"no {k}x{k} {pe.upper()} array fits the {board.name} "
            f"(DSP budget {budget}, limits {bounds})"
        )
    best = max(pm * pn for pm, pn in pairs)
    if best < 2 ** int(math.log2(cap)):
        limited_by = "bram18"
    top = [p for p in pairs if p[0] * p[1] == best]
    if split == "best" and score is not None:
        pm, pn = min(top, key=lambda p: (score(*p), _paper_key(p)))
    else:
        pm, pn = min(top, key=_paper_key)
    arrays = pm * pn
    return Parallelism(
        pe=pe,
        k=k,
        pm=pm,
        pn=pn,
        dsp=arrays * cost.dsp,
        lut=round(arrays * cost.lut),
        ff=round(arrays * cost.ff),
        bram18=bram(pm, pn),
        limited_by=limited_by,
        max_arrays_by=bounds,
    )
