"""One QONNX import's state: the graph's indexes (producers, consumers, constants), the
quantised activations found so far, and the bundle fields being built; plus reading an
activation ``Quant`` into a datapath format."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .. import datapath as dp
from .qonnx_format import METADATA_KEY, frac_of_scale, quant_range
from .qonnx_nodes import (
    ACT_ROUNDING_EXACT,
    ACT_ROUNDING_TIES,
    Act,
    Align,
    attr_str,
    fail,
    node_attrs,
)
from .qonnx_weights import eval_float_quant, eval_int_quant

#: a weighted layer's requantisation, once its accumulator bound is known:
#: ``requant(acc_max) -> (mult, bias, shift)``, int64 arrays of shape [C_out]
Requant = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]


class Importer:
    """One import: the graph's indexes, the quantised tensors found so far (``acts``),
    pending aligns, and the bundle fields being built."""

    def __init__(self, model: onnx.ModelProto, options: dict[str, Any]) -> None:
        self.model = model
        self.graph = model.graph
        self.options = options
        self.meta: dict[str, Any] = {}
        for p in model.metadata_props:
            if p.key == METADATA_KEY:
                self.meta = json.loads(p.value)
        self.consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t).astype(np.float64) for t in self.graph.initializer
        }
        self.not_const: set[str] = set()
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for o in node.output:
                self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)
        self.acts: dict[str, Act] = {}
        self.aligns: dict[str, Align] = {}
        self.done: set[int] = set()  # id() of nodes already taken into a layer
        self.layers: list[dict[str, Any]] = []
        self.tensors: dict[str, dict[str, Any]] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        # (manifest layer, integer weights, requant(acc_max) -> (mult, bias, shift), C_out)
        self.weight_layers: list[tuple[dict[str, Any], np.ndarray, Requant, int]] = []

    def standalone_pools(self) -> set[str]:
        """Names of the bundle's standalone maxpool layers (our metadata): never fused."""
        return set(self.meta.get("maxpool_layers", []))

    # --- constants ----------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is constant (an initializer, or computed from
        initializers by Constant/Identity/Cast/Quant/BipolarQuant/FloatQuant)."""
        if name in self.consts:
            return self.consts[name]
        node = self.producer.get(name)
        if node is None or name in self.not_const:
            return None
        ins = [self.const(i) if i else None for i in node.input]
        if any(v is None for i, v in zip(node.input, ins) if i):
            self.not_const.add(name)
            return None
        a = node_attrs(node)
        value: np.ndarray
        if node.op_type == "Constant":
            value = numpy_helper.to_array(a["value"]).astype(np.float64)
        elif node.op_type in ("Identity", "Cast"):
            value = _given(node, ins, 0)
        elif node.op_type == "Quant":
            value = eval_int_quant(node, ins, a)
        elif node.op_type == "BipolarQuant":
            value = np.where(_given(node, ins, 0) >= 0, 1.0, -1.0) * _given(node, ins, 1)
        elif node.op_type == "FloatQuant":
            value = eval_float_quant(node, ins, a)
        else:
            self.not_const.add(name)
            return None
        self.consts[name] = value
        return value

    def weight_scale_exp(self, name: str) -> int | None:
        """``e`` if the weights come from a ``Quant`` with one power-of-two scale ``2**e``."""
        node = self.producer.get(name)
        while node is not None and node.op_type in ("Identity", "Cast"):
            node = self.producer.get(node.input[0])
        if node is None or node.op_type != "Quant":
            return None
        f = self.scale_frac(node.input[1])
        return None if f is None else -f

    def scale_frac(self, name: str) -> int | None:
        """``f`` if ``name`` is a constant per-tensor scale ``2**-f``, else None."""
        scale = self.const(name)
        return None if scale is None else frac_of_scale(scale)

    # --- the graph ------------------------------------------------------------------------
    def is_const_node(self, node: onnx.NodeProto) -> bool:
        return all(self.const(o) is not None for o in node.output if o)

    def take(self, node: onnx.NodeProto) -> None:
        self.done.add(id(node))

    def act_of(self, node: onnx.NodeProto, name: str) -> Act:
        """The quantised activation ``name`` (an input of ``node``), or refuse."""
        if name in self.acts:
            return self.acts[name]
        if name in self.aligns:
            raise fail(
                node,
                f"input {name!r} is a standalone requantisation (a Quant on a "
                "quantised tensor), which the datapath has only inside add/concat",
            )
        raise fail(node, f"input {name!r} is not a quantised activation (no Quant before it)")

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        """The single node reading ``tensor`` (None if none, or if it is a graph output);
        refuses a fan-out inside a fused chain."""
        users = self.consumers.get(tensor, [])
        if tensor in {o.name for o in self.graph.output}:
            return None
        if len(users) > 1:
            raise fail(users[1], f"tensor {tensor!r} is read twice inside a layer's chain")
        return users[0] if users else None

    def sole_consumer(self, tensor: str) -> onnx.NodeProto | None:
        """The node reading ``tensor`` if it is the only one (and ``tensor`` is not a
        graph output), else None: for optional ops after a layer's output Quant."""
        users = self.consumers.get(tensor, [])
        outputs = {o.name for o in self.graph.output}
        return users[0] if len(users) == 1 and tensor not in outputs else None

    def new_tensor(self, name: str, frac: int, shape: tuple[int, ...], graph_name: str) -> Act:
        if not dp.FRAC_MIN <= frac <= dp.FRAC_MAX:
            raise fail(
                self.producer.get(graph_name),
                f"format 2**-{frac} outside the datapath's "
                f"frac range [{dp.FRAC_MIN}, {dp.FRAC_MAX}]",
            )
        if name in self.tensors:
            raise fail(self.producer.get(graph_name), f"tensor {name!r} defined twice")
        self.tensors[name] = {"shape": list(shape), "frac": frac}
        act = Act(name, frac, shape)
        self.acts[graph_name] = act
        return act

    def add_layer(self, node: onnx.NodeProto, op: str, ins: list[Act], out: Act, **attrs):
        layer = {
            "name": node.name or f"{op}{len(self.layers)}",
            "op": op,
            "inputs": [a.tensor for a in ins],
            "output": out.tensor,
            "in_shape": list(ins[0].shape),
            "out_shape": list(out.shape),
            **attrs,
        }
        self.layers.append(layer)
        return layer

    # --- the input ------------------------------------------------------------------------
    def read_input(self, vi: onnx.ValueInfoProto) -> None:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if len(dims) != 4 or not all(d > 0 for d in dims[1:]):
            raise fail(None, f"input {vi.name!r} must be (N, C, H, W) with fixed C, H, W")
        users = self.consumers.get(vi.name, [])
        if len(users) != 1 or users[0].op_type != "Quant":
            raise fail(None, f"input {vi.name!r} must go into one Quant (its format)")
        q = users[0]
        # only the format counts: a bundle quantises its input itself (the exact pixel
        # table, datapath.pixel_table), so the Quant's rounding mode is not a note
        frac, _ = self.act_quant(q, relu=False, in_chain=True)
        self.take(q)
        self.new_tensor(q.output[0], frac, tuple(dims[1:]), q.output[0])

    def act_quant(
        self, q: onnx.NodeProto, relu: bool, half_added: bool = False, in_chain: bool = False
    ):
        """(frac, note or None) of an activation Quant; refuses what the datapath lacks.

        ``half_added``: an Add of half an LSB comes right before it.  ``in_chain``: it
        ends a conv/linear chain, where a FLOOR is exact whatever the offset (the
        caller moves the missing half into the folded offset)."""
        if q.op_type != "Quant":
            raise fail(q, "an activation format must be a Quant node")
        scale, zp, bits = (self.const(i) for i in q.input[1:4])
        if scale is None or zp is None or bits is None:
            raise fail(q, "scale, zero point and bit width must be constants")
        frac = frac_of_scale(scale)
        if frac is None:
            raise fail(
                q,
                f"scale {np.ravel(scale)[:4]} is not one power of two "
                "(the datapath's formats are 2**-f per tensor)",
            )
        if np.any(zp != 0):
            raise fail(q, "zero point must be 0 (the datapath is symmetric)")
        a = node_attrs(q)
        lo, hi = quant_range(
            int(np.ravel(bits)[0]), bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        )
        ok = (lo, hi) == (dp.ACT_MIN, dp.ACT_MAX) or (relu and lo <= 0 and hi == dp.ACT_MAX)
        if not ok:
            raise fail(
                q,
                f"clip range [{lo}, {hi}] is not int16's [{dp.ACT_MIN}, {dp.ACT_MAX}]"
                + (" (or [0, 32767] after a Relu)" if relu else "")
                + ": the datapath saturates to int16 only",
            )
        mode = attr_str(a.get("rounding_mode", "ROUND")).upper()
        if mode in ACT_ROUNDING_EXACT:
            if not half_added and not in_chain:
                raise fail(
                    q,
                    "FLOOR without a half LSB added before it (the datapath "
                    "rounds half up; floor alone is not available)",
                )
            return frac, None
        if mode in ACT_ROUNDING_TIES:
            if half_added:
                raise fail(q, f"rounding {mode} after an added half LSB rounds twice")
            return frac, f"{q.name}: rounding {mode} taken as round half up (differs on ties)"
        raise fail(
            q,
            f"rounding mode {mode} (the datapath rounds half up: use FLOOR after "
            "a half-LSB Add, or ROUND)",
        )

    def half_then_quant(self, node: onnx.NodeProto) -> tuple[onnx.NodeProto, bool]:
        """If ``node`` is ``Add(x, 2**-(f+1))`` feeding a FLOOR Quant of scale 2**-f,
        (that Quant, True); if it is a Quant, (it, False); else refuse."""
        if node.op_type == "Quant":
            return node, False
        if node.op_type == "Add":
            c = self.const(node.input[1])
            q = self.only_consumer(node.output[0])
            if c is not None and q is not None and q.op_type == "Quant" and c.size == 1:
                f = self.scale_frac(q.input[1])
                if f is not None and float(c.ravel()[0]) == 2.0 ** -(f + 1):
                    self.take(node)
                    return q, True
        raise fail(node, "expected a Quant (optionally after an Add of half its LSB)")


def _given(node: onnx.NodeProto, ins: list[np.ndarray | None], k: int) -> np.ndarray:
    """The constant value of ``node``'s input ``k``; refuses a missing one."""
    v = ins[k] if k < len(ins) else None
    if v is None:
        raise fail(node, f"input {k} is missing")
    return v
