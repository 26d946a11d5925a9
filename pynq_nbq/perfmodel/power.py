"""Power of the engine and the ARM cores (modelled, W).

Power while a layer runs = the board's static power (processing system idle +
PL static) + either the engine's dynamic power or the ARM cores' active power.

Engine dynamic power is linear in its PEs: arrays x (k^2 / 9) x the dynamic power
of one 3x3 array, scaled with the clock.  The per-array figure comes from Table
VIII, whose two ZCU102 designs are reproduced exactly: (28.7 W - 3.0 W) / 64 VPE
arrays and (19.6 W - 3.0 W) / 256 SVPE arrays (3-bit).  Table VII sets how the
SVPE figure changes with n (the ratio of its totals to the 3-bit one).  Table VII's
absolute figures cannot be per-array dynamic powers (64 VPE arrays at 5.53 W would
be 354 W, not Table VIII's 28.7 W); docs/perfmodel.md gives the reasoning.
"""

from __future__ import annotations

from .constants import (
    PAPER_ARRAYS,
    PAPER_CLOCK_MHZ,
    PAPER_STATIC_W,
    TABLE7_SVPE_POWER_W,
    TABLE8_POWER_W,
)
from .resources import check_pe


def array_dynamic_w(pe: str, n_bits: int = 3) -> float:
    """Dynamic power of one 3x3 array at 200 MHz, infrastructure share included (W)."""
    check_pe(pe, n_bits)
    per_array = (TABLE8_POWER_W[pe] - PAPER_STATIC_W) / PAPER_ARRAYS[pe]
    if pe == "svpe":
        per_array *= TABLE7_SVPE_POWER_W[n_bits] / TABLE7_SVPE_POWER_W[3]
    return per_array


def engine_dynamic_w(pe: str, n_bits: int, k: int, arrays: int, clock_mhz: float) -> float:
    """Dynamic power of ``arrays`` k x k arrays at ``clock_mhz`` (W)."""
    scale = k * k / 9 * clock_mhz / PAPER_CLOCK_MHZ
    return arrays * scale * array_dynamic_w(pe, n_bits)
