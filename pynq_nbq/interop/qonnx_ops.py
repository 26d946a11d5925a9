"""The per-op handlers of the QONNX import: each takes one graph node (and the nodes it
fuses) into bundle layers, or refuses it by name."""

from __future__ import annotations

import numpy as np
import onnx

from .. import datapath as dp
from .qonnx_graph import Importer
from .qonnx_nodes import Act, Align, fail, node_attrs, pool_attrs
from .qonnx_weighted import weighted_layer


def _maxpool(imp: Importer, node: onnx.NodeProto) -> None:
    x = imp.act_of(node, node.input[0])
    if len(x.shape) != 3:
        raise fail(node, f"max-pool input must be a (C, H, W) map, got {list(x.shape)}")
    k, s = pool_attrs(node)
    imp.take(node)
    shape = (x.shape[0], *dp.conv_output_hw(x.shape[1], x.shape[2], k, s))
    out = imp.new_tensor(node.output[0], x.frac, shape, node.output[0])
    imp.add_layer(node, "maxpool", [x], out, kernel=k, stride=s)


def _gap(imp: Importer, node: onnx.NodeProto) -> None:
    x = imp.act_of(node, node.input[0])
    if len(x.shape) != 3:
        raise fail(node, f"input must be a (C, H, W) map, got {list(x.shape)}")
    imp.take(node)
    nxt = imp.only_consumer(node.output[0])
    if nxt is None:
        raise fail(node, "needs a Quant after it (the output format)")
    q, half = imp.half_then_quant(nxt)
    frac, note = imp.act_quant(q, relu=False, half_added=half)
    imp.take(q)
    if note:
        imp.notes.append(note)
    end = q.output[0]
    nxt = imp.sole_consumer(end)
    while nxt is not None and (nxt.op_type in ("Cast", "Identity") or _is_flatten(imp, nxt)):
        imp.take(nxt)
        end = nxt.output[0]
        nxt = imp.sole_consumer(end)
    out = imp.new_tensor(end, frac, (x.shape[0],), end)
    imp.add_layer(node, "gap", [x], out)


def _is_flatten(imp: Importer, node: onnx.NodeProto) -> bool:
    """A Flatten(axis=1), or a Reshape to (N, -1) / (N, K) with a constant shape."""
    if node.op_type == "Flatten":
        return int(node_attrs(node).get("axis", 1)) == 1
    if node.op_type == "Reshape":
        shape = imp.const(node.input[1])
        return shape is not None and shape.size == 2
    return False


def _flatten(imp: Importer, node: onnx.NodeProto) -> None:
    if not _is_flatten(imp, node):
        raise fail(
            node,
            "only Flatten(axis=1) / Reshape to (N, -1): the datapath flattens "
            "C, H, W into one vector",
        )
    x = imp.act_of(node, node.input[0])
    imp.take(node)
    if len(x.shape) == 1:  # a vector already: the same tensor
        imp.acts[node.output[0]] = x
        return
    out = imp.new_tensor(node.output[0], x.frac, (int(np.prod(x.shape)),), node.output[0])
    imp.add_layer(node, "flatten", [x], out)


def _passthrough(imp: Importer, node: onnx.NodeProto) -> None:
    if node.input[0] in imp.aligns:
        imp.aligns[node.output[0]] = imp.aligns[node.input[0]]
    else:
        imp.acts[node.output[0]] = imp.act_of(node, node.input[0])
    imp.take(node)


def _quant_on_act(imp: Importer, node: onnx.NodeProto) -> None:
    """A Quant (or half-Add + Quant) on a quantised tensor: an align of add/concat."""
    src = imp.act_of(node, node.input[0])
    q, half = imp.half_then_quant(node)
    frac, _ = imp.act_quant(q, relu=False, half_added=half, in_chain=True)
    note = None
    if frac < src.frac:  # losing bits: the rounding counts (left shifts are exact)
        _, note = imp.act_quant(q, relu=False, half_added=half)
    imp.take(q)
    imp.aligns[q.output[0]] = Align(src, frac, note is None)


def _add(imp: Importer, node: onnx.NodeProto) -> None:
    if any(imp.const(i) is not None for i in node.input):
        if node.input[0] in imp.acts:  # Add(half) before a Quant: an align
            _quant_on_act(imp, node)
            return
        raise fail(node, "adding a constant to an activation outside a conv/linear chain")
    terms = [node.input[0], node.input[1]]
    imp.take(node)
    t = node.output[0]
    relu = False
    while True:
        nxt = imp.only_consumer(t)
        if nxt is None:
            raise fail(node, "a residual add needs a Quant after it (the output format)")
        if nxt.op_type == "Add" and not relu and all(imp.const(i) is None for i in nxt.input):
            terms.append(nxt.input[1] if nxt.input[0] == t else nxt.input[0])
        elif nxt.op_type == "Relu" and not relu:
            relu = True
        elif nxt.op_type == "Quant":
            break
        else:
            raise fail(nxt, "only Add, one Relu and a Quant may follow a residual add")
        imp.take(nxt)
        t = nxt.output[0]
    frac, note = imp.act_quant(nxt, relu=relu, in_chain=True)
    imp.take(nxt)
    ins = [_aligned_input(imp, node, name, frac) for name in terms]
    if any(a.frac > frac and name not in imp.aligns for a, name in zip(ins, terms)):
        _, note = imp.act_quant(nxt, relu=relu)  # off the grid: the rounding counts
        imp.notes.append(
            f"{node.name}: an input loses bits in the sum's Quant, not before it "
            "(rounding may differ by an LSB)"
        )
    if note:
        imp.notes.append(note)
    shape = ins[0].shape
    if any(a.shape != shape for a in ins):
        raise fail(node, f"inputs of different shapes {[list(a.shape) for a in ins]}")
    out = imp.new_tensor(nxt.output[0], frac, shape, nxt.output[0])
    imp.add_layer(node, "add", ins, out, relu=relu)


def _aligned_input(imp: Importer, node: onnx.NodeProto, name: str, frac: int) -> Act:
    if name in imp.aligns:
        al = imp.aligns[name]
        if al.frac != frac:
            raise fail(
                node,
                f"input {name!r} is moved to 2**-{al.frac}, the result is "
                f"2**-{frac}: two roundings the datapath does not have",
            )
        if not al.exact:
            imp.notes.append(f"{node.name}: input {name!r} aligned with ties to even")
        return al.source
    return imp.act_of(node, name)


def _concat(imp: Importer, node: onnx.NodeProto) -> None:
    a = node_attrs(node)
    ins = []
    fracs = set()
    for name in node.input:
        if name in imp.aligns:
            al = imp.aligns[name]
            ins.append(al.source)
            fracs.add(al.frac)
            if not al.exact:
                imp.notes.append(f"{node.name}: input {name!r} aligned with ties to even")
        else:
            act = imp.act_of(node, name)
            ins.append(act)
            fracs.add(act.frac)
    if len(fracs) != 1:
        raise fail(node, f"inputs in formats {sorted(fracs)}: put a Quant on each to one format")
    dims = {len(x.shape) for x in ins}
    if int(a.get("axis", 1)) not in (1, -len(ins[0].shape) - 1) or len(dims) != 1:
        raise fail(node, "only concatenation along channels (axis 1) of like tensors")
    if any(x.shape[1:] != ins[0].shape[1:] for x in ins):
        raise fail(node, "inputs differ in height/width")
    imp.take(node)
    shape = (sum(x.shape[0] for x in ins), *ins[0].shape[1:])
    out = imp.new_tensor(node.output[0], fracs.pop(), shape, node.output[0])
    imp.add_layer(node, "concat", ins, out)


HANDLERS = {
    "Conv": weighted_layer,
    "Gemm": weighted_layer,
    "MatMul": weighted_layer,
    "MaxPool": _maxpool,
    "GlobalAveragePool": _gap,
    "Flatten": _flatten,
    "Reshape": _flatten,
    "Add": _add,
    "Concat": _concat,
    "Cast": _passthrough,
    "Identity": _passthrough,
    "Quant": _quant_on_act,
}
KNOWN = "known: " + ", ".join(sorted(HANDLERS))
