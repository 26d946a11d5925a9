"""The integer datapath: the one source of truth for every constant and rule.

Every backend (the numpy engine, the HLS C-simulation, the FPGA driver), the
bundle reader and the exporter take their constants and rules from here; nothing
else defines them.  ``docs/datapath.md`` is the specification in prose and lists
where each rule lives (its "one source of truth" table).

Fixed-point convention
----------------------
An activation tensor is int16 ``q`` with a per-tensor fractional-bit count ``f``:
``real = q * 2**-f``.  Weights are integers ``w`` with a per-layer exponent
``e_w``: ``real = w * 2**e_w``.  A layer's accumulator ``acc = sum(q * w)`` is an
exact integer of at most :func:`accumulator_bits` signed bits (checked at export
and load to be <= :data:`ACC_BITS`) and stands for ``acc * 2**(e_w - f_in)``.

SVPE weight codes (n = 1..5 bits, stored one per int8)
------------------------------------------------------
``code = sign * m`` with magnitude ``m`` in ``1..M`` (and ``0`` for n >= 2), where
``M = num_magnitudes(n)`` (1 for n = 1, else ``2**(n-1) - 1``): ``m == 0`` is the
zero weight and ``m >= 1`` the integer weight ``sign * 2**(m-1)``, i.e. a LEFT
shift by ``m - 1`` bits.  The paper's level ``2**-i`` (i = 0..M-1) times the layer
scale ``2**e`` is ``2**(M-1-i)`` times ``2**(e - (M - 1))``, so
``e_w = e - (M - 1)`` (:func:`layer_exponent`).

Requantisation (batch norm folded; the only multiplies outside the PE array)
---------------------------------------------------------------------------
Per output channel c: ``y = (acc * mult[c] + bias[c] + half(shift[c])) >> shift[c]``
(arithmetic shift, round half up), then ReLU if the layer has one, then
saturation to int16 (ReLU and saturation commute), then the fused 2x2 max-pool.
``mult`` is int16, ``shift`` in ``0..MAX_REQUANT_SHIFT``, and
``|acc|max * |mult| + |bias| + half`` fits :data:`REQUANT_BITS` signed bits
(:func:`requant_problems`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from fractions import Fraction
from functools import lru_cache

import numpy as np

# --- activations -----------------------------------------------------------------
ACT_BITS = 16  #: activation word width (signed)
ACT_MIN = -(1 << (ACT_BITS - 1))  #: -32768
ACT_MAX = (1 << (ACT_BITS - 1)) - 1  #: 32767
ACT_MAX_ABS = 1 << (ACT_BITS - 1)  #: largest |activation| (of -32768)
ACT_DTYPE = np.int16
FRAC_MIN, FRAC_MAX = -8, 30  #: allowed per-tensor fractional-bit counts
PIXEL_MAX = 255  #: 8-bit pixels: the input is defined on integers 0..255


# --- PE kinds and weights -------------------------------------------------------------
class PEKind(str, Enum):
    """The two datapaths: shift PEs with n-bit power-of-two codes, or 16-bit multiplies.

    A ``str`` enum: ``PEKind.SVPE == "svpe"`` and it prints and serialises as
    ``"svpe"``, so manifests and JSON keep plain strings.
    """

    SVPE = "svpe"
    VPE = "vpe"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> PEKind:
        """``"svpe"``/``"vpe"`` (or a PEKind) -> PEKind; ValueError naming the choices."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown datapath {value!r} (expected one of {[k.value for k in cls]})"
            ) from None


SVPE_MAX_BITS = 5  #: widest svpe weight (largest shift 14; the kernel's 4-bit magnitude)
SVPE_BITS = tuple(range(1, SVPE_MAX_BITS + 1))  #: supported power-of-two weight widths n
VPE_WEIGHT_BITS = 16  #: the multiply (VPE) baseline's weight width
VPE_WEIGHT_MIN, VPE_WEIGHT_MAX = -(1 << 15), (1 << 15) - 1
WEIGHT_CODE_DTYPE = np.int8  #: storage of svpe codes in bundles
VPE_WEIGHT_DTYPE = np.int16  #: storage of vpe weights in bundles

# --- accumulators and requantisation ----------------------------------------------
ACC_BITS = 48  #: accumulator width of every layer (like a DSP48E2's P register)
REQUANT_MULT_BITS = 16  #: signed multiplier width of the folded batch norm
REQUANT_MULT_MIN, REQUANT_MULT_MAX = -(1 << 15), (1 << 15) - 1
MAX_REQUANT_SHIFT = 62
REQUANT_BITS = 64  #: acc*mult + bias + half must fit this many signed bits
#: largest |bias| of the requantisation, 2**61: what the exporter clips to, so that a
#: bias never by itself takes more than a quarter of the 64-bit sum (``requant_problems``)
REQUANT_BIAS_MAX = 1 << (REQUANT_BITS - 3)

#: float64 products are exact while every partial sum stays below this magnitude.
FLOAT64_EXACT = 1 << 53

# --- what the hardware conv engine runs (docs/datapath.md section 3) -----------------
#: (kernel, padding) pairs the conv engine takes, always stride 1 and groups 1
CONV_ENGINE_SHAPES = ((3, 1), (1, 0))
POOL_CHOICES = (0, 2)  #: a conv/linear layer's ``pool``: none, or a fused 2x2/2 max-pool


def conv_engine_takes(kernel: int, stride: int, padding: int, groups: int) -> bool:
    """True for a conv the hardware engine runs: 3x3 pad 1 or 1x1 pad 0, stride 1, groups 1
    (requantisation, ReLU and a 2x2 max-pool fused); everything else runs on the ARM cores."""
    return stride == 1 and groups == 1 and (kernel, padding) in CONV_ENGINE_SHAPES


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a conv or pool along one axis (floor mode, symmetric padding):
    ``(size + 2*padding - kernel) // stride + 1``; 0 or less means no output."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_output_hw(
    h: int, w: int, kernel: int, stride: int = 1, padding: int = 0, pool: int = 0
) -> tuple[int, int]:
    """(height, width) of a conv layer's output, after its fused ``pool`` (0 or 2)."""
    oh, ow = (
        conv_output_size(h, kernel, stride, padding),
        conv_output_size(w, kernel, stride, padding),
    )
    if pool:
        oh, ow = conv_output_size(oh, pool, pool), conv_output_size(ow, pool, pool)
    return oh, ow


# --- svpe codes <-> integer weights ------------------------------------------------------
def check_bits(n_bits: int) -> None:
    """ValueError unless ``n_bits`` is a supported svpe width (1..SVPE_MAX_BITS)."""
    if n_bits not in SVPE_BITS:
        raise ValueError(f"svpe weights need n_bits in {SVPE_BITS}, got {n_bits}")


def num_magnitudes(n_bits: int) -> int:
    """Non-zero weight magnitudes of n-bit svpe weights: 1 for n = 1 (levels +-1, no
    zero), else ``r = 2**(n-1) - 1`` (levels 0 and +-2**-i, i = 0..r-1).  It is also
    the largest |code|."""
    check_bits(n_bits)
    return 1 if n_bits == 1 else (1 << (n_bits - 1)) - 1


def max_code(n_bits: int) -> int:
    """Largest |code| of an n-bit svpe weight: an alias of :func:`num_magnitudes`, kept
    only for ``hls/gen_vectors.py`` and ``tests/test_rtl_twin.py`` (TODO: they call
    ``num_magnitudes``, then this goes)."""
    return num_magnitudes(n_bits)


def max_shift(n_bits: int) -> int:
    """Largest left shift an n-bit svpe weight applies (bits)."""
    return num_magnitudes(n_bits) - 1


def layer_exponent(scale_exp: int, n_bits: int) -> int:
    """``e_w`` of a layer whose levels are ``{0, +-2**-i} * 2**scale_exp``: the exponent
    of the smallest level, so that every integer weight is a left shift."""
    return int(scale_exp) - (num_magnitudes(n_bits) - 1)


def decode_svpe(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """Integer weights (int64) of svpe codes: 0 -> 0, +-m -> +-2**(m-1).

    Raises ValueError for a code out of range for ``n_bits`` (and for 0 when n = 1).
    """
    check_svpe_codes(codes, n_bits)
    c = np.asarray(codes).astype(np.int64)
    mag = np.abs(c)
    return np.sign(c) * np.where(mag == 0, 0, np.left_shift(1, np.maximum(mag - 1, 0)))


def encode_svpe(weights: np.ndarray, n_bits: int = SVPE_MAX_BITS) -> np.ndarray:
    """svpe codes (int8) of integer weights 0 / +-2**s: ``sign * (s + 1)``, in integers.

    Raises ValueError naming the first weight that is not 0 or a power of two with
    ``s <= max_shift(n_bits)`` (or a zero when n = 1).
    """
    w = np.asarray(weights).astype(np.int64)
    mag = np.abs(w)
    s = np.zeros(w.shape, dtype=np.int64)
    nz = mag > 0
    # exact integer log2 of a power of two: the position of its only set bit
    s[nz] = np.frexp(mag[nz].astype(np.float64))[1] - 1
    bad = nz & (np.left_shift(1, np.clip(s, 0, 62)) != mag)
    bad |= nz & (s > max_shift(n_bits))
    if n_bits == 1:
        bad |= ~nz
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"weight {int(w[i])} at {i} is not an {n_bits}-bit svpe weight "
            f"(0{' excluded' if n_bits == 1 else ''} or +-2**s with s <= {max_shift(n_bits)})"
        )
    return (np.sign(w) * np.where(nz, s + 1, 0)).astype(WEIGHT_CODE_DTYPE)


def check_svpe_codes(codes: np.ndarray, n_bits: int) -> None:
    """ValueError unless every code is in ``-M..M`` (``M = num_magnitudes(n_bits)``), no zero
    when n = 1."""
    check_bits(n_bits)
    if np.size(codes) == 0:
        return
    mag = np.abs(np.asarray(codes).astype(np.int64))
    if mag.max() > num_magnitudes(n_bits):
        raise ValueError(
            f"svpe code magnitude {int(mag.max())} out of range for n={n_bits} "
            f"(max {num_magnitudes(n_bits)})"
        )
    if n_bits == 1 and (mag == 0).any():
        raise ValueError("1-bit svpe weights have no zero code (codes must be +-1)")


def weight_bits_problem(pe: PEKind | str, n_bits: object) -> str | None:
    """Why ``n_bits`` is not a weight width of datapath ``pe`` (None when it is)."""
    kind = PEKind.parse(pe)
    if kind is PEKind.SVPE and n_bits not in SVPE_BITS:
        return f"svpe needs n in {SVPE_BITS}, got {n_bits}"
    if kind is PEKind.VPE and n_bits != VPE_WEIGHT_BITS:
        return f"vpe weights are {VPE_WEIGHT_BITS}-bit, got {n_bits}"
    return None


def max_abs_weight(pe: PEKind | str, n_bits: int) -> int:
    """Largest |integer weight| a layer of this datapath can hold (2**14 for 5-bit svpe,
    2**15 for vpe: the weight -32768)."""
    if PEKind.parse(pe) is PEKind.SVPE:
        return 1 << max_shift(int(n_bits))
    return 1 << (VPE_WEIGHT_BITS - 1)


# --- accumulator bound -------------------------------------------------------------------
def accumulator_bound(fan_in: int, max_abs_w: int) -> int:
    """V = ``fan_in * 2**15 * max_abs_w``: the largest |accumulator| of a layer.

    +V is always reachable: every input at -32768 times every weight at ``-max_abs_w``
    (svpe weights are symmetric; a magnitude of 2**15 is only the int16 weight -32768).
    -V is reachable only when ``max_abs_w <= 32767`` (weights at ``+max_abs_w``): +32768 is
    neither an int16 weight nor an input.  ``accumulator_bits`` holds both all the same."""
    return int(fan_in) * ACT_MAX_ABS * int(max_abs_w)


def accumulator_bits(fan_in: int, max_abs_w: int) -> int:
    """Signed bits B that hold every accumulator of a layer: the smallest B with
    ``-2**(B-1) <= -V`` and ``V <= 2**(B-1) - 1``, i.e. ``V.bit_length() + 1``
    (V = :func:`accumulator_bound`; +V needs the extra bit when V is a power of two)."""
    return accumulator_bound(fan_in, max_abs_w).bit_length() + 1


def accumulator_problem(fan_in: int, max_abs_w: int, acc_bits: int = ACC_BITS) -> str | None:
    """Why a layer would overflow an ``acc_bits`` accumulator (None when it fits)."""
    need = accumulator_bits(fan_in, max_abs_w)
    if need > acc_bits:
        return (
            f"possible overflow: worst-case accumulator needs {need} bits > {acc_bits} "
            f"(fan-in {fan_in}, max |w| {max_abs_w})"
        )
    return None


# --- rounding ----------------------------------------------------------------------------
def half(shift: np.ndarray | int) -> np.ndarray:
    """The round-half-up constant of a right shift: ``2**(s-1)``, 0 for s = 0 (int64)."""
    s = np.asarray(shift, dtype=np.int64)
    return np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)


def rounding_shift(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Arithmetic right shift with round half up (towards +inf): ``(x + half(s)) >> s``.

    ``x`` int64; ``shift`` broadcastable non-negative ints.
    """
    s = np.asarray(shift, dtype=np.int64)
    return np.right_shift(x + half(s), s)


def div_round_half_up(num: np.ndarray, den: int) -> np.ndarray:
    """``num / den`` rounded half up, in integers: ``floor((2*num + den) / (2*den))``
    (``den > 0``; int64)."""
    return np.floor_divide(2 * np.asarray(num, dtype=np.int64) + den, 2 * den)


def round_half_up(x: np.ndarray | float) -> np.ndarray:
    """Real values rounded half up, ``floor(x + 0.5)``, in float64 (exact for |x| < 2**52)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def saturate(x: np.ndarray) -> np.ndarray:
    """Clip to the int16 activation range and cast to :data:`ACT_DTYPE`."""
    return np.clip(x, ACT_MIN, ACT_MAX).astype(ACT_DTYPE)


# --- requantisation ----------------------------------------------------------------------
def requant_problems(
    mult: np.ndarray, bias: np.ndarray, shift: np.ndarray, acc_max: int | None = None
) -> list[str]:
    """Every way per-channel (mult, bias, shift) break the requantisation's ranges.

    ``mult`` int16 range, ``shift`` in 0..MAX_REQUANT_SHIFT, ``bias`` a signed
    64-bit integer and, given ``acc_max`` (the largest |accumulator|),
    ``acc_max * |mult| + |bias| + half(shift) < 2**63`` for every channel.
    Returns [] when all hold.
    """
    mult, bias, shift = (np.asarray(a) for a in (mult, bias, shift))
    problems = []
    for name, a in (("mult", mult), ("bias", bias), ("shift", shift)):
        if not np.issubdtype(a.dtype, np.integer):
            problems.append(f"requantisation {name} must be integers, got {a.dtype}")
    if problems:
        return problems
    if mult.size and (mult.min() < REQUANT_MULT_MIN or mult.max() > REQUANT_MULT_MAX):
        problems.append("requantisation multiplier out of int16 range")
    if shift.size and (shift.min() < 0 or shift.max() > MAX_REQUANT_SHIFT):
        problems.append(f"requantisation shift outside 0..{MAX_REQUANT_SHIFT}")
    if acc_max is not None and not problems and mult.size:
        limit = 1 << (REQUANT_BITS - 1)
        for m, b, s in zip(mult.tolist(), bias.tolist(), shift.tolist()):
            if int(acc_max) * abs(m) + abs(b) + (1 << (s - 1) if s else 0) >= limit:
                problems.append(
                    f"possible overflow: requantisation exceeds {REQUANT_BITS} bits "
                    f"(|acc| {acc_max} x |mult| {abs(m)} + |bias| {abs(b)})"
                )
                break
    return problems


def bias_problem(bias: np.ndarray) -> str | None:
    """The bundle's bias rule: ``|bias| <= REQUANT_BIAS_MAX`` (2**61, what the exporter
    clips to); None when it holds.  (The stream protocol carries any int64 bias; this
    is a rule of the bundle, ``docs/datapath.md`` section 4.)"""
    b = np.asarray(bias)
    if b.size and (int(b.min()) < -REQUANT_BIAS_MAX or int(b.max()) > REQUANT_BIAS_MAX):
        return f"requantisation |bias| over 2**{REQUANT_BITS - 3} ({REQUANT_BIAS_MAX})"
    return None


def requantize(
    acc: np.ndarray, mult: np.ndarray, bias: np.ndarray, shift: np.ndarray, relu: bool
) -> np.ndarray:
    """Folded batch norm: ``(acc*mult + bias + half) >> shift``, ReLU, saturate to int16.

    ``acc`` int64 of shape (..., C) (channels last); ``mult``, ``bias``, ``shift``
    int64 of shape (C,).  Returns int16 of acc's shape.
    """
    y = rounding_shift(acc * mult + bias, shift)
    if relu:
        y = np.maximum(y, 0)
    return saturate(y)


def align(q: np.ndarray, frac_from: int, frac_to: int) -> np.ndarray:
    """Move int values from ``frac_from`` to ``frac_to`` fractional bits (int64 out).

    Left shift when gaining bits (exact), :func:`rounding_shift` (round half up) when
    losing them.
    """
    x = q.astype(np.int64)
    d = frac_to - frac_from
    if d >= 0:
        return np.left_shift(x, d)
    return rounding_shift(x, -d)


# --- the input ---------------------------------------------------------------------------
#: smallest ``std`` of the input block, 2**-32.  Below it, at every allowed frac (down to
#: FRAC_MIN = -8), one pixel step (1/255) moves the input by more than the whole int16
#: range, so every pixel but one per channel saturates: the input would carry a sign only.
#: It also keeps ``(p/255 - mean)/std * 2**frac`` finite in float64 for |mean| <= 2**16.
INPUT_STD_MIN = 2.0**-32
#: largest |mean| of the input block (pixels are 0..1; a larger mean saturates every pixel)
INPUT_MEAN_MAX_ABS = 2.0**16


def input_norm_problem(mean: Sequence[float], std: Sequence[float]) -> str | None:
    """Why per-channel ``mean``/``std`` cannot normalise 8-bit pixels, or None when they
    can: finite, ``|mean| <= INPUT_MEAN_MAX_ABS``, ``std >= INPUT_STD_MIN``."""
    for m, s in zip(mean, std):
        if not (math.isfinite(m) and math.isfinite(s)):
            return f"mean and std must be finite, got {m}, {s}"
        if s <= 0:
            return f"std must be positive, got {s}"
        if s < INPUT_STD_MIN:
            return f"std {s} is below the smallest allowed, 2**-32 ({INPUT_STD_MIN})"
        if abs(m) > INPUT_MEAN_MAX_ABS:
            return f"|mean| {abs(m)} is over the largest allowed, 2**16"
    return None


@lru_cache(maxsize=64)
def _pixel_table(mean: float, std: float, frac: int) -> bytes:
    scale, m, sd = Fraction(2) ** frac, Fraction(mean), Fraction(std)
    q = [
        math.floor((Fraction(p, PIXEL_MAX) - m) / sd * scale + Fraction(1, 2))
        for p in range(PIXEL_MAX + 1)
    ]
    return saturate(np.array(q, dtype=np.int64)).tobytes()


def pixel_table(mean: float, std: float, frac: int) -> np.ndarray:
    """int16 (256,): the quantised input for each 8-bit pixel value p of one channel.

    ``q(p) = saturate(floor((p/255 - mean) / std * 2**frac + 1/2))`` evaluated
    **exactly** (rational arithmetic), with ``mean`` and ``std`` the float64 values
    of the manifest's numbers.  Precision-independent: any implementation that
    computes this rational expression exactly gets the same table.
    """
    problem = input_norm_problem([mean], [std])
    if problem:
        raise ValueError(problem)
    return np.frombuffer(_pixel_table(float(mean), float(std), int(frac)), dtype=ACT_DTYPE)


def quantize_pixels(
    pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], frac: int
) -> np.ndarray:
    """uint8 pixels (N, C, H, W) -> int16 input with ``frac`` fractional bits, per channel
    through :func:`pixel_table` (the contract's input rule)."""
    px = np.asarray(pixels)
    if px.dtype != np.uint8 or px.ndim != 4 or len(mean) != len(std) or px.shape[1] != len(mean):
        raise ValueError(f"pixels must be uint8 (N, {len(mean)}, H, W), got {px.dtype} {px.shape}")
    out = np.empty(px.shape, dtype=ACT_DTYPE)
    for c, (m, s) in enumerate(zip(mean, std)):
        out[:, c] = pixel_table(float(m), float(s), frac)[px[:, c]]
    return out


def quantize_real(x: np.ndarray, frac: int) -> np.ndarray:
    """Real values to int16 with ``frac`` fractional bits: round half up, saturate.

    Float64 ``floor(x * 2**frac + 0.5)``.  For float inputs (torch-side tensors);
    images are quantised from their pixels by :func:`quantize_pixels`.
    """
    return saturate(round_half_up(np.asarray(x, dtype=np.float64) * 2.0**frac))


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
    fractional bits.  ``mult`` gets the most precision the int16 range allows while
    ``|acc_max * mult| < 2**62``; ``|bias|`` is clipped to ``2**61`` so that
    :func:`requant_problems` always passes.  Channels with ``scale == 0`` get
    ``mult = 0``.  Returns int64 arrays (mult, bias, shift).
    """
    scale = np.asarray(scale, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    # real multiplier on acc in output units: scale * 2**(acc_exp + frac_out)
    real_mult = scale * 2.0 ** (acc_exp + frac_out)
    mult = np.zeros(scale.shape, dtype=np.int64)
    shift = np.zeros(scale.shape, dtype=np.int64)
    limit = (1 << (REQUANT_BITS - 2)) - 1
    for c, rm in enumerate(real_mult):
        if rm == 0.0 or not np.isfinite(rm):
            continue
        # choose s so that |rm| * 2**s lies in [2**14, 2**15)
        s = 14 - int(np.floor(np.log2(abs(rm))))
        while s > 0:
            m = int(round_half_up(rm * 2.0**s))
            if (
                REQUANT_MULT_MIN <= m <= REQUANT_MULT_MAX
                and abs(m) * acc_max < limit
                and s <= MAX_REQUANT_SHIFT
            ):
                break
            s -= 1
        s = max(s, 0)
        m = int(np.clip(round_half_up(rm * 2.0**s), REQUANT_MULT_MIN, REQUANT_MULT_MAX))
        mult[c], shift[c] = m, s
    bias = round_half_up(offset * 2.0 ** (frac_out + shift.astype(np.float64)))
    bias_limit = float(REQUANT_BIAS_MAX)
    bias = np.clip(bias, -bias_limit, bias_limit).astype(np.int64)
    problems = requant_problems(mult, bias, shift, acc_max)
    if problems:  # only a scale too large for shift 0 gets here
        raise ValueError("; ".join(problems))
    return mult, bias, shift
