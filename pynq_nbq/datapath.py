"""The integer datapath: the one source of truth for every constant and rounding rule.

Every backend (the numpy engine, the HLS C-simulation, the FPGA driver) and the
exporter import their constants from here.  ``docs/datapath.md`` explains the
reasoning; this module is what the code obeys.

Fixed-point convention
----------------------
An activation tensor is int16 ``q`` with a per-tensor fractional-bit count ``f``:
``real = q * 2**-f``.  Weights are integers ``w`` with a per-layer exponent
``e_w``: ``real = w * 2**e_w``.  A layer's accumulator ``acc = sum(q * w)`` is an
exact integer (at most :data:`ACC_BITS` bits, checked at export) and stands for
``acc * 2**(e_w - f_in)``.

SVPE weight codes (n = 1..5 bits, stored one per int8)
------------------------------------------------------
``code = sign * m`` with magnitude ``m`` in ``0..r`` where ``r = 2**(n-1) - 1``:
``m == 0`` is the zero weight (no operation) and ``m >= 1`` is the integer
weight ``sign * 2**(m-1)``, i.e. a LEFT shift by ``m - 1`` bits (the paper's
hardware shifts left only).  For n = 1 there is no zero: codes are +-1 (shift 0).
The paper's level ``2**-i`` (i = 0..r-1) times the layer scale ``2**e`` is
``2**(r-1-i)`` times ``2**(e - (r - 1))``, so ``e_w = e - (r - 1)``.

Requantisation (batch norm folded; the only multiplies outside the PE array)
---------------------------------------------------------------------------
Per output channel c: ``y = (acc * mult[c] + bias[c] + round_half) >> shift[c]``
(arithmetic shift, ``round_half = 1 << (shift - 1)`` for shift > 0, else 0:
round half up), then saturate to int16, then ReLU if the layer has one, then
2x2 max-pool if fused.  ``mult`` is int16-range signed, ``shift`` in
``0..MAX_REQUANT_SHIFT``, ``bias`` a signed 64-bit-range integer; the product
and sum are checked at export to fit :data:`REQUANT_BITS` signed bits.
"""

from __future__ import annotations

import numpy as np

# --- activations -----------------------------------------------------------------
ACT_BITS = 16  #: activation word width (signed)
ACT_MIN = -(1 << (ACT_BITS - 1))  #: -32768
ACT_MAX = (1 << (ACT_BITS - 1)) - 1  #: 32767
ACT_DTYPE = np.int16
FRAC_MIN, FRAC_MAX = -8, 30  #: allowed per-tensor fractional-bit counts

# --- weights ---------------------------------------------------------------------
SVPE_BITS = (1, 2, 3, 4, 5)  #: supported power-of-two weight widths n
VPE_WEIGHT_BITS = 16  #: the multiply (VPE) baseline's weight width
VPE_WEIGHT_MIN, VPE_WEIGHT_MAX = -(1 << 15), (1 << 15) - 1
WEIGHT_CODE_DTYPE = np.int8  #: storage of svpe codes in bundles

# --- accumulators and requantisation ----------------------------------------------
ACC_BITS = 48  #: accumulator width of every layer (like a DSP48E2's P register)
REQUANT_MULT_BITS = 16  #: signed multiplier width of the folded batch norm
REQUANT_MULT_MIN, REQUANT_MULT_MAX = -(1 << 15), (1 << 15) - 1
MAX_REQUANT_SHIFT = 62
REQUANT_BITS = 64  #: acc*mult + bias + round_half must fit this many signed bits

#: float64 products are exact while every partial sum stays below this magnitude.
FLOAT64_EXACT = 1 << 53

# --- what the hardware conv engine runs (docs/datapath.md section 3) -----------------
#: (kernel, padding) pairs the conv engine takes, always stride 1 and groups 1
CONV_ENGINE_SHAPES = ((3, 1), (1, 0))


def conv_engine_takes(kernel: int, stride: int, padding: int, groups: int) -> bool:
    """True for a conv the hardware engine runs: 3x3 pad 1 or 1x1 pad 0, stride 1, groups 1
    (requantisation, ReLU and a 2x2 max-pool fused); everything else runs on the ARM cores."""
    return stride == 1 and groups == 1 and (kernel, padding) in CONV_ENGINE_SHAPES


def levels_per_side(n_bits: int) -> int:
    """r = 2**(n-1) - 1: the number of non-zero magnitudes for n >= 2 (0 for n = 1)."""
    check_bits(n_bits)
    return (1 << (n_bits - 1)) - 1


def check_bits(n_bits: int) -> None:
    if n_bits not in SVPE_BITS:
        raise ValueError(f"svpe weights must have n in {SVPE_BITS}, got {n_bits}")


def max_code(n_bits: int) -> int:
    """Largest |code| of an n-bit svpe weight (1 for n = 1, else r)."""
    return 1 if n_bits == 1 else levels_per_side(n_bits)


def max_shift(n_bits: int) -> int:
    """Largest left shift an n-bit svpe weight applies (bits)."""
    return max_code(n_bits) - 1


def decode_svpe(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """Integer weights (int64) of svpe codes: 0 -> 0, +-m -> +-2**(m-1).

    Raises ValueError for a code out of range for ``n_bits`` (and for 0 when n = 1).
    """
    check_svpe_codes(codes, n_bits)
    c = codes.astype(np.int64)
    mag = np.abs(c)
    out = np.where(mag == 0, 0, np.left_shift(1, np.maximum(mag - 1, 0)))
    return np.sign(c) * out


def check_svpe_codes(codes: np.ndarray, n_bits: int) -> None:
    check_bits(n_bits)
    if codes.size == 0:
        return
    mag = np.abs(codes.astype(np.int64))
    if mag.max() > max_code(n_bits):
        raise ValueError(
            f"svpe code magnitude {int(mag.max())} out of range for n={n_bits} "
            f"(max {max_code(n_bits)})"
        )
    if n_bits == 1 and (mag == 0).any():
        raise ValueError("1-bit svpe weights have no zero code (codes must be +-1)")


def max_abs_weight(datapath: str, n_bits: int | None) -> int:
    """Largest |integer weight| a layer of this datapath can hold."""
    if datapath == "svpe":
        return 1 << max_shift(int(n_bits))
    if datapath == "vpe":
        return 1 << (VPE_WEIGHT_BITS - 1)
    raise ValueError(f"unknown datapath {datapath!r} (expected 'svpe' or 'vpe')")


def accumulator_bits(fan_in: int, max_abs_w: int) -> int:
    """Signed bits that hold the worst-case accumulator of a layer.

    Worst case: every input at |x| = 2**15 and every weight at ``max_abs_w``, all of
    one sign, over ``fan_in`` products.  Returns the smallest B with
    ``fan_in * 2**15 * max_abs_w <= 2**(B-1)`` (the bound includes -2**(B-1)).
    """
    bound = int(fan_in) * (1 << (ACT_BITS - 1)) * int(max_abs_w)
    return max(bound - 1, 1).bit_length() + 1


def rounding_shift(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Arithmetic right shift with round-half-up: ``(x + 2**(s-1)) >> s`` (s = 0: x).

    ``x`` int64; ``shift`` broadcastable non-negative ints.
    """
    s = np.asarray(shift, dtype=np.int64)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return np.right_shift(x + half, s)


def saturate(x: np.ndarray) -> np.ndarray:
    """Clip to the int16 activation range and cast to :data:`ACT_DTYPE`."""
    return np.clip(x, ACT_MIN, ACT_MAX).astype(ACT_DTYPE)


def requantize(
    acc: np.ndarray, mult: np.ndarray, bias: np.ndarray, shift: np.ndarray, relu: bool
) -> np.ndarray:
    """Folded batch norm: saturate((acc*mult + bias + half) >> shift), then ReLU.

    ``acc`` int64 of shape (..., C) (channels last); ``mult``, ``bias``, ``shift``
    int64 of shape (C,).  Returns int16 of acc's shape.
    """
    y = rounding_shift(acc * mult + bias, shift)
    if relu:
        y = np.maximum(y, 0)
    return saturate(y)


def align(q: np.ndarray, frac_from: int, frac_to: int) -> np.ndarray:
    """Move int values from ``frac_from`` to ``frac_to`` fractional bits (int64 out).

    Left shift when gaining bits (exact), rounding right shift when losing them.
    """
    x = q.astype(np.int64)
    d = frac_to - frac_from
    if d >= 0:
        return np.left_shift(x, d)
    return rounding_shift(x, -d)


def quantize_real(x: np.ndarray, frac: int) -> np.ndarray:
    """Real values to int16 with ``frac`` fractional bits: round half up, saturate.

    Uses float64 ``floor(x * 2**frac + 0.5)``, the same rule as :func:`rounding_shift`.
    """
    return saturate(np.floor(np.asarray(x, dtype=np.float64) * 2.0**frac + 0.5))


def choose_frac(max_abs: float, headroom: float = 1.0) -> int:
    """Largest fractional-bit count whose int16 range holds ``max_abs * headroom``."""
    m = float(max_abs) * headroom
    if not np.isfinite(m):
        raise ValueError(f"cannot choose a fixed-point format for max |x| = {max_abs}")
    if m <= 0:
        return FRAC_MAX
    f = int(np.floor(np.log2(ACT_MAX / m)))
    return int(np.clip(f, FRAC_MIN, FRAC_MAX))


def fold_requant(
    scale: np.ndarray, offset: np.ndarray, acc_exp: int, frac_out: int, acc_max: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer (mult, bias, shift) per channel for ``y = scale*conv + offset``.

    ``conv = acc * 2**acc_exp`` (``acc_exp = e_w - f_in``); output has ``frac_out``
    fractional bits.  ``mult`` gets the most precision the int16 range allows; the
    shift is then fixed so that ``|acc_max * mult| + |bias|`` stays inside
    :data:`REQUANT_BITS`.  Channels with ``scale == 0`` get ``mult = 0``.
    Returns int64 arrays (mult, bias, shift).
    """
    scale = np.asarray(scale, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    # real multiplier on acc in output units: scale * 2**(acc_exp + frac_out)
    real_mult = scale * 2.0 ** (acc_exp + frac_out)
    mult = np.zeros(scale.shape, dtype=np.int64)
    shift = np.zeros(scale.shape, dtype=np.int64)
    for c, rm in enumerate(real_mult):
        if rm == 0.0 or not np.isfinite(rm):
            continue
        # choose s so that |rm| * 2**s lies in [2**14, 2**15)
        s = 14 - int(np.floor(np.log2(abs(rm))))
        while s > 0:
            m = int(np.floor(rm * 2.0**s + 0.5))
            limit = (1 << (REQUANT_BITS - 2)) - 1
            if (
                REQUANT_MULT_MIN <= m <= REQUANT_MULT_MAX
                and abs(m) * acc_max < limit
                and s <= MAX_REQUANT_SHIFT
            ):
                break
            s -= 1
        s = max(s, 0)
        m = int(np.clip(np.floor(rm * 2.0**s + 0.5), REQUANT_MULT_MIN, REQUANT_MULT_MAX))
        mult[c], shift[c] = m, s
    bias = np.floor(offset * 2.0 ** (frac_out + shift.astype(np.float64)) + 0.5)
    limit = float(1 << (REQUANT_BITS - 2))
    bias = np.clip(bias, -limit, limit).astype(np.int64)
    return mult, bias, shift
