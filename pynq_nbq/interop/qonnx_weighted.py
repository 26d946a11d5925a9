"""``Conv`` / ``Gemm`` / ``MatMul`` with constant weights -> one ``conv``/``linear`` layer:
the geometry, the integer weights, the folded chain to the output ``Quant`` and an
optional fused 2x2/2 ``MaxPool``.  The weights' arrays and requant are filled in later,
once the datapath (svpe/vpe) is chosen (:mod:`.qonnx_assemble`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from .. import datapath as dp
from .qonnx_chain import Chain, affine_chain
from .qonnx_graph import Importer, Requant
from .qonnx_nodes import Act, attr_str, fail, node_attrs, pool_attrs
from .qonnx_weights import integer_grid


def weighted_layer(imp: Importer, node: onnx.NodeProto) -> None:
    """Take ``node`` and the nodes it fuses into one weighted layer, or refuse."""
    x, w, bias = _operands(imp, node)
    gain = 1.0
    if node.op_type == "Conv":
        op, attrs = "conv", _conv_attrs(node, x, w)
        wmat = w
    else:
        op, attrs = "linear", {}
        wmat, gain, bias = _linear_matrix(node, x, w, bias)
    imp.take(node)
    c_out = wmat.shape[0]
    ints, e_w = integer_grid(wmat, imp.weight_scale_exp(node.input[1]))
    if np.any(ints != np.round(ints)):
        raise fail(node, f"weights are not integers times the scale 2**{e_w}")
    chain = affine_chain(imp, node, c_out, op)
    scale, offset = chain.scale * gain, chain.offset
    if bias is not None:
        offset = offset + chain.scale * np.broadcast_to(np.ravel(bias), (c_out,))
    out = _output(imp, op, x, c_out, attrs, chain)
    layer = imp.add_layer(node, op, [x], out, relu=chain.relu, weight_exp=int(e_w), **attrs)
    if chain.note:
        imp.notes.append(chain.note)
    requant = _requant(node, chain, scale, offset, e_w, x.frac)
    imp.weight_layers.append((layer, ints.reshape(wmat.shape), requant, c_out))


def _operands(imp: Importer, node: onnx.NodeProto) -> tuple[Act, np.ndarray, np.ndarray | None]:
    """(the quantised input, the constant weights, the constant bias or None)."""
    x = imp.act_of(node, node.input[0])
    w = imp.const(node.input[1])
    if w is None:
        raise fail(node, "weights must be constant")
    has_bias = len(node.input) > 2 and bool(node.input[2])
    bias = imp.const(node.input[2]) if has_bias else None
    if has_bias and bias is None:
        raise fail(node, "bias must be constant")
    return x, w, bias


def _conv_attrs(node: onnx.NodeProto, x: Act, w: np.ndarray) -> dict[str, int]:
    """The layer's ``kernel``, ``stride``, ``padding``, ``groups``; refuses non-square
    kernels, unequal pads or strides, dilation and auto_pad."""
    a = node_attrs(node)
    if len(x.shape) != 3:
        raise fail(node, f"conv input must be a (C, H, W) map, got {list(x.shape)}")
    k = list(a.get("kernel_shape", w.shape[2:]))
    if len(k) != 2 or k[0] != k[1] or list(w.shape[2:]) != k:
        raise fail(node, f"kernel {k}: only square 2-D kernels")
    if attr_str(a.get("auto_pad", "NOTSET")) not in ("NOTSET", ""):
        raise fail(node, "auto_pad: give explicit pads")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    strides = list(a.get("strides", [1, 1]))
    if len(set(pads)) != 1:
        raise fail(node, f"pads {pads}: only the same padding on all four sides")
    if len(set(strides)) != 1:
        raise fail(node, f"strides {strides}: only equal strides")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise fail(node, f"dilations {a['dilations']}: only 1")
    groups = int(a.get("group", 1))
    if w.shape[1] * groups != x.shape[0]:
        raise fail(node, f"weights {list(w.shape)} do not fit {x.shape[0]} input channels")
    return {
        "kernel": int(k[0]),
        "stride": int(strides[0]),
        "padding": int(pads[0]),
        "groups": groups,
    }


def _linear_matrix(
    node: onnx.NodeProto, x: Act, w: np.ndarray, bias: np.ndarray | None
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(weights as [C_out, C_in], Gemm's alpha, bias times Gemm's beta) of a Gemm/MatMul."""
    if len(x.shape) != 1:
        raise fail(
            node, f"{node.op_type} input must be a vector, got {list(x.shape)} (add a Flatten)"
        )
    gain = 1.0
    if node.op_type == "Gemm":
        a = node_attrs(node)
        if a.get("transA", 0):
            raise fail(node, "transA=1")
        wmat = w if a.get("transB", 0) else w.T
        gain = float(a.get("alpha", 1.0))
        if bias is not None:
            bias = bias * float(a.get("beta", 1.0))
    else:
        wmat = w.T
    if wmat.ndim != 2 or wmat.shape[1] != x.shape[0]:
        raise fail(node, f"weights {list(w.shape)} do not fit {x.shape[0]} inputs")
    return wmat, gain, bias


def _output(imp: Importer, op: str, x: Act, c_out: int, attrs: dict[str, Any], chain: Chain) -> Act:
    """The layer's output tensor; fuses a following 2x2/2 MaxPool into a conv (setting
    ``attrs["pool"]``) unless our metadata names it a standalone pool."""
    if op != "conv":
        return imp.new_tensor(chain.end, chain.frac, (c_out,), chain.end)
    h, w = dp.conv_output_hw(
        x.shape[1], x.shape[2], attrs["kernel"], attrs["stride"], attrs["padding"]
    )
    end, pool = chain.end, 0
    nxt = imp.sole_consumer(end)
    if (
        nxt is not None
        and nxt.op_type == "MaxPool"
        and pool_attrs(nxt) == (2, 2)
        and nxt.name not in imp.standalone_pools()
    ):
        imp.take(nxt)
        pool, end = 2, nxt.output[0]
        h, w = h // 2, w // 2
    attrs["pool"] = pool
    return imp.new_tensor(end, chain.frac, (c_out, h, w), end)


def _requant(
    node: onnx.NodeProto,
    chain: Chain,
    scale: np.ndarray,
    offset: np.ndarray,
    e_w: int,
    f_in: int,
) -> Requant:
    """``requant(acc_max) -> (mult, bias, shift)``: our export's exact form when the
    chain has it and it is legal for ``acc_max``, else :func:`datapath.fold_requant`."""
    f_out = chain.frac

    def requant(acc_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if chain.exact is not None:
            m, b, s = chain.exact(e_w, f_in, f_out)
            if m is not None and b is not None and s is not None:
                if not dp.requant_problems(m, b, s, acc_max):
                    return m, b, s
        try:
            return dp.fold_requant(scale, offset, e_w - f_in, f_out, acc_max)
        except ValueError as exc:
            raise fail(node, f"requantisation: {exc}") from exc

    return requant
