"""Every number the performance model takes from the paper, and every assumption.

Sources: Chen et al., "A Learning Framework for n-Bit Quantized Neural Networks
toward FPGAs", IEEE TNNLS 32(3), 2021, Table VII (one 3x3 array) and Table VIII
(AlexNet on a ZCU102 at 200 MHz); docs/perfmodel.md in this repository cites each.
Board-specific numbers live in ``pynq_nbq/boards/*.json``, not here.
``docs/perfmodel.md`` explains how each constant is used.
"""

from __future__ import annotations

from pynq_nbq.datapath import ACC_BITS, ACT_BITS, SVPE_BITS, VPE_WEIGHT_BITS

__all__ = [
    "ACC_BITS",
    "ACT_BITS",
    "SVPE_BITS",
    "VPE_WEIGHT_BITS",
]

# --- the paper's setting -------------------------------------------------------------
PAPER_CLOCK_MHZ = 200.0  #: the array clock of every figure in the paper (MHz)
PAPER_DSP_BUDGET = 768  #: DSPs behind the paper's (32, 8) / (16, 4) example (~30 % of 2520)
#: The (Pm, Pn) aspect ratio the paper picked for both PEs at 768 DSPs:
#: (32, 8) and (16, 4) both have Pm = 4 * Pn.  Used only to break ties between
#: splits of the same Pm * Pn (split="paper").
PAPER_PM_OVER_PN = 4.0
#: Arrays of the paper's two 768-DSP designs, in 3x3 arrays: 64 = (16, 4) VPE,
#: 256 = (32, 8) SVPE.  Table VIII's 30 % DSP use (756 of 2520) matches both.
PAPER_ARRAYS = {"vpe": 64, "svpe": 256}

# --- Table VII: one 3x3 array (k = 3) -------------------------------------------------
#: "Total power" per design with one 3x3 SVPE array, n = 1..5 (W).  Non-monotonic in n
#: (n = 5 draws less than n = 3); average 3.81 W.
TABLE7_SVPE_POWER_W = {1: 3.05, 2: 3.73, 3: 4.25, 4: 4.24, 5: 3.81}
TABLE7_VPE_POWER_W = 5.53  #: the same for the 16-bit multiplier (VPE) array (W)
TABLE7_SVPE_LUT = {1: 353, 2: 280, 3: 307, 4: 334, 5: 346}  #: LUTs per 3x3 SVPE array
TABLE7_VPE_LUT = 41  #: LUTs per 3x3 VPE array (the multiplies sit in DSPs)
#: FFs per 3x3 SVPE array: the paper gives only the range 220-244 over n = 1..5; we use
#: the top of the range for every n (conservative).
TABLE7_SVPE_FF = 244
TABLE7_VPE_FF = 213  #: FFs per 3x3 VPE array
TABLE7_SVPE_DSP = 3  #: = k (the final column of adders), Eq. 44
TABLE7_VPE_DSP = 12  #: = k^2 + k (multipliers + adders), Eq. 35

# --- Table VIII: AlexNet, 3-bit weights, 16-bit activations, ZCU102 at 200 MHz -------------
TABLE8_LAYER_GOPS = {
    "vpe": (227.5, 535.8, 655.9, 634.4, 559.5),
    "svpe": (410.5, 1744.3, 1680.7, 1739.4, 1456.1),
}
TABLE8_AVERAGE_GOPS = {"vpe": 332.2, "svpe": 957.4}  #: the paper's "average" row
TABLE8_POWER_W = {"vpe": 28.7, "svpe": 19.6}  #: whole-design power (W)
#: Fractions of the ZCU102 used by each design (DSP, LUT, FF, BRAM).
TABLE8_UTILISATION = {
    "vpe": {"dsp": 0.30, "lut": 0.48, "ff": 0.42, "bram": 0.50},
    "svpe": {"dsp": 0.30, "lut": 0.73, "ff": 0.68, "bram": 0.83},
}
#: The device behind Table VIII (xczu9eg): LUT and FF counts used to turn its
#: utilisation fractions into counts.
TABLE8_DEVICE = {"lut": 274080, "ff": 548160, "bram18": 1824}

# --- power model assumptions -------------------------------------------------------------
#: Static + processing-system power assumed inside Table VIII's totals (W).  Table VII's
#: smallest figure (3.05 W for a design holding one 1-bit array) bounds the
#: array-independent part of a ZCU102 design from above; we take 3.0 W and treat the
#: paper's powers as chip-level (Vivado-style) figures.  Equal to zcu102.json's
#: ps_static_w + pl_static_w, but kept separate: it calibrates the per-array power, it
#: does not describe a board.
PAPER_STATIC_W = 3.0

# --- fabric assumptions beyond the paper ------------------------------------------------------
#: BRAM18s of the design's fixed plumbing (AXI DMA buffers, stream FIFOs): an assumption.
INFRA_BRAM18 = 16
BRAM18_BITS = 18 * 1024  #: capacity of one 18Kb block RAM (bits)
BRAM18_WORDS_16 = 1024  #: 16-bit words per BRAM18 line buffer (1K x 18 mode)
URAM_BRAM18_EQUIV = 16  #: one 288Kb UltraRAM holds as much as 16 BRAM18
URAM_DEPTH = 4096  #: words of one UltraRAM (its one aspect ratio: 4K x 72)
URAM_WIDTH = 72  #: bits of one UltraRAM word
