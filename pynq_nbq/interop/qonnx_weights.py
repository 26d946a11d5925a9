"""Constant weights of a QONNX graph: evaluating weight ``Quant``/``FloatQuant`` nodes, the
integer grid ``w == ints * 2**e``, and the svpe width that holds the integers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from .. import datapath as dp
from .qonnx_format import quant_range
from .qonnx_nodes import attr_str, fail

#: the weight ``Quant`` rounding modes evaluated here (qonnx's ROUND is half to even)
_WEIGHT_ROUNDING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ROUND": np.round,
    "HALF_EVEN": np.round,
    "FLOOR": np.floor,
    "CEIL": np.ceil,
}


def eval_int_quant(node: onnx.NodeProto, ins: list, a: dict) -> np.ndarray:
    """qonnx's ``Quant`` on constants (scale, zero point, bit width; clip, then round)."""
    x, scale, zp, bits = ins[:4]
    mode = attr_str(a.get("rounding_mode", "ROUND")).upper()
    fn = _WEIGHT_ROUNDING.get(mode)
    if fn is None:
        raise fail(node, f"weight Quant rounding {mode} is not evaluated here")
    signed, n = bool(a.get("signed", 1)), int(np.ravel(bits)[0])
    if n == 1 and signed:  # qonnx: a signed 1-bit Quant is bipolar (+-1), not {-1, 0}
        return np.where(x / scale + zp >= 0, 1.0, -1.0) * scale
    lo, hi = quant_range(n, signed, bool(a.get("narrow", 0)))
    y = np.clip(x / scale + zp, lo, hi)
    return (fn(y) - zp) * scale


def eval_float_quant(node: onnx.NodeProto, ins: list, a: dict) -> np.ndarray:
    """qonnx's ``FloatQuant`` on constants (needs the qonnx package)."""
    try:
        from qonnx.custom_op.general.floatquant import float_quant
    except ImportError as exc:  # pragma: no cover - qonnx is in the interop extra
        raise fail(node, "FloatQuant weights need the qonnx package to evaluate") from exc
    kw = {
        k: a[k]
        for k in ("has_inf", "has_nan", "has_subnormal", "rounding_mode", "saturation")
        if k in a
    }
    if "rounding_mode" in kw:
        kw["rounding_mode"] = attr_str(kw["rounding_mode"])
    return np.asarray(
        float_quant(*[np.asarray(v, dtype=np.float32) for v in ins[:6]], **kw), dtype=np.float64
    )


def integer_grid(w: np.ndarray, exp: int | None) -> tuple[np.ndarray, int]:
    """(integers, e) with ``w == integers * 2**e``: ``e`` given (a weight Quant's scale)
    or the exponent of the smallest set bit of any weight."""
    nz = w[w != 0]
    if exp is None:
        if nz.size == 0:
            exp = 0
        else:
            mant, e = np.frexp(np.abs(nz))
            m = (mant * 2.0**53).astype(np.int64)
            tz = np.array([(int(v) & -int(v)).bit_length() - 1 for v in m])
            exp = int((e - 53 + tz).min())
    ints = w * 2.0**-exp
    return ints, exp


def po2_problem(ints: np.ndarray) -> str | None:
    """Why the integer weights are not all 0 or +-2**k with k <= 14, or None."""
    nz = np.abs(ints[ints != 0])
    if nz.size == 0:
        return None
    mant, e = np.frexp(nz)
    if np.any(mant != 0.5):
        v = float(nz[mant != 0.5][0])
        return f"weight {v:g} (in units of the layer's scale) is not a power of two"
    if (e - 1).max() > dp.max_shift(dp.SVPE_MAX_BITS):
        return f"weights span 2**0 .. 2**{int((e - 1).max())}, wider than 5-bit svpe's 2**14"
    return None


def svpe_bits(ints: np.ndarray, stated: int | None) -> int:
    """The layer's n: ``stated`` (our metadata) if it holds the weights, else the
    smallest n that does (1 only for weights that are all +-1)."""
    nz = np.abs(ints[ints != 0])
    top = int(np.frexp(nz.max())[1] - 1) if nz.size else 0
    has_zero = bool((ints == 0).any())
    if stated in dp.SVPE_BITS and dp.max_shift(stated) >= top and not (stated == 1 and has_zero):
        return int(stated)
    if top == 0 and not has_zero:
        return 1
    return next(n for n in dp.SVPE_BITS if n > 1 and dp.max_shift(n) >= top)
