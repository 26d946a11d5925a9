"""The chain after a Conv/Gemm/MatMul up to its output ``Quant``: per-channel affine ops
folded into one scale and offset, the Relu, and our export's exact requant form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from .. import datapath as dp
from .qonnx_format import po2_exponent
from .qonnx_graph import Importer
from .qonnx_nodes import attr_str, fail, node_attrs

_MaybeRequant = tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[None, None, None]
#: ``decode(e_w, f_in, f_out) -> (mult, bias, shift)`` int64 arrays [C_out], or three
#: Nones when the constants are not our exact form for these formats
ExactDecoder = Callable[[int, int, int], _MaybeRequant]


@dataclass
class Chain:
    """A weighted layer's output side: ``y = scale * conv_real + offset`` per channel
    ([C_out] float64), whether a Relu follows, the output format ``2**-frac``."""

    scale: np.ndarray
    offset: np.ndarray
    relu: bool
    frac: int
    end: str  # the graph tensor holding the layer's int16 output
    note: str | None
    exact: ExactDecoder | None  # our export's exact form, when the chain has its shape


def affine_chain(imp: Importer, node: onnx.NodeProto, c: int, op: str) -> Chain:
    """Follow a Conv/Gemm output through per-channel affine ops, Relu and its Quant."""
    scale, offset = np.ones(c), np.zeros(c)
    steps: list[tuple[str, np.ndarray]] = []
    relu = False
    t = node.output[0]
    while True:
        nxt = imp.only_consumer(t)
        if nxt is None:
            raise fail(node, "its output must reach a Quant (the output format)")
        if nxt.op_type in ("Cast", "Identity"):
            imp.take(nxt)
            t = nxt.output[0]
            continue
        if nxt.op_type == "Relu":
            if relu:
                raise fail(nxt, "a second Relu")
            imp.take(nxt)
            relu, t = True, nxt.output[0]
            continue
        if nxt.op_type == "Quant":
            break
        if nxt.op_type == "Add" and relu is False and _is_half_before_floor(imp, nxt, t):
            break
        if relu:
            raise fail(nxt, "only a Quant may follow the Relu of a conv/linear layer")
        if nxt.op_type == "BatchNormalization":
            g, b, mu, var = (imp.const(i) for i in nxt.input[1:5])
            if g is None or b is None or mu is None or var is None:
                raise fail(nxt, "batch norm parameters must be constant")
            denom = var + float(node_attrs(nxt).get("epsilon", 1e-5))
            if not np.all(np.isfinite(denom) & (denom > 0)):
                raise fail(nxt, "variance + epsilon must be positive and finite in every channel")
            s = g / np.sqrt(denom)
            scale, offset = scale * s, offset * s + b - mu * s
            steps.append(("bn", s))
        elif nxt.op_type in ("Mul", "Div", "Add", "Sub"):
            other = nxt.input[1] if nxt.input[0] == t else nxt.input[0]
            v = imp.const(other)
            if v is None:
                raise fail(nxt, "only per-channel constants may scale or shift a conv output")
            if nxt.op_type in ("Div", "Sub") and nxt.input[0] != t:
                raise fail(nxt, "the constant must be the second operand")
            v = _per_channel(nxt, v, c, op)
            if not np.all(np.isfinite(v)):
                raise fail(nxt, "its constant holds inf or NaN")
            if nxt.op_type == "Div" and np.any(v == 0):
                raise fail(nxt, "divides by a constant that is 0 in some channel")
            if nxt.op_type == "Mul":
                scale, offset = scale * v, offset * v
            elif nxt.op_type == "Div":
                scale, offset = scale / v, offset / v
            elif nxt.op_type == "Add":
                offset = offset + v
            else:
                offset = offset - v
            steps.append((nxt.op_type, v))
        else:
            raise fail(
                nxt,
                f"op {nxt.op_type} between {node.name} ({node.op_type}) and its output Quant "
                "(allowed: per-channel Mul/Div/Add/Sub, BatchNormalization, Relu)",
            )
        imp.take(nxt)
        t = nxt.output[0]
    q, half = imp.half_then_quant(nxt)
    frac, note = imp.act_quant(q, relu=relu, half_added=half, in_chain=True)
    imp.take(q)
    floor = attr_str(node_attrs(q).get("rounding_mode", "")).upper() == "FLOOR"
    if floor and not half:  # floor(v) is round half up of v - half; fold adds the half
        offset = offset - 2.0 ** -(frac + 1)
    end = q.output[0]
    while True:  # trailing Casts back to float32 (our exact form)
        nxt = imp.sole_consumer(end)
        if nxt is None or nxt.op_type not in ("Cast", "Identity"):
            break
        imp.take(nxt)
        end = nxt.output[0]
    exact: ExactDecoder | None = None
    kinds = [k for k, _ in steps]
    if kinds == ["Mul", "Add", "Mul"] and floor and not half:
        exact = _exact_decoder(steps)
    return Chain(scale, offset, relu, frac, end, note, exact)


def _is_half_before_floor(imp: Importer, add: onnx.NodeProto, t: str) -> bool:
    c = imp.const(add.input[1]) if add.input[0] == t else None
    q = imp.only_consumer(add.output[0])
    if c is None or c.size != 1 or q is None or q.op_type != "Quant":
        return False
    f = imp.scale_frac(q.input[1])
    return f is not None and float(c.ravel()[0]) == 2.0 ** -(f + 1)


def _exact_decoder(steps: list[tuple[str, np.ndarray]]) -> ExactDecoder:
    """Decode our exact form: Mul(mult * 2**(f_in - e_w)), Add(bias + half),
    Mul(2**-(shift + f_out)) -> the integer (mult, bias, shift), or Nones."""
    k, total, sh = (v for _, v in steps)

    def decode(e_w: int, f_in: int, f_out: int) -> _MaybeRequant:
        mult = k * 2.0 ** (e_w - f_in)
        exps = [po2_exponent(v) for v in sh]
        if any(e is None for e in exps) or np.any(mult != np.round(mult)):
            return None, None, None
        shift = -np.array(exps, dtype=np.int64) - f_out
        if (
            shift.min() < 0
            or shift.max() > dp.MAX_REQUANT_SHIFT
            or np.any(total != np.round(total))
        ):
            return None, None, None
        if np.abs(total).max() >= dp.FLOAT64_EXACT:
            return None, None, None
        bias = total.astype(np.int64) - dp.half(shift)
        return mult.astype(np.int64), bias, shift

    return decode


def _per_channel(node: onnx.NodeProto, v: np.ndarray, c: int, op: str) -> np.ndarray:
    """A scalar or per-channel constant (shape [C], [C,1,1], [1,C,1,1]) as a [C] vector."""
    if v.size == 1:
        return np.full(c, float(v.ravel()[0]))
    shape = [s for s in v.shape]
    while shape and shape[0] == 1 and len(shape) > (3 if op == "conv" else 1):
        shape = shape[1:]
    ok = (op == "conv" and shape in ([c, 1, 1],)) or (op == "linear" and shape == [c])
    if not ok or v.size != c:
        raise fail(node, f"constant of shape {list(v.shape)} is not per-channel for {c} channels")
    return v.reshape(c)
