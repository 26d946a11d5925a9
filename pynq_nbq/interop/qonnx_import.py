"""A QONNX graph -> a bundle, refusing by node name everything the datapath cannot run.

    result = import_qonnx(onnx.load("model.onnx"))
    bundle = save_bundle(result.manifest, result.arrays, "model-bundle")

What is read (``docs/interop.md`` has the full table):

* the graph input must go straight into a ``Quant``: its power-of-two scale ``2**-f``
  is the input format (the input block - mean, std, mode - comes from our metadata or
  from the caller: the graph does not hold it);
* ``Conv`` / ``Gemm`` / ``MatMul`` on a quantised tensor with constant weights (plain,
  or under ``Quant``/``BipolarQuant``/``FloatQuant`` nodes that are evaluated here), then
  per-channel ``Mul``/``Div``/``Add``/``Sub``/``BatchNormalization`` (and the conv's
  bias), an optional ``Relu``, a ``Quant`` giving the output format, an optional 2x2/2
  ``MaxPool`` (fused) -> a ``conv``/``linear`` layer.  Weights must all be 0 or
  ``+-2**k`` (svpe; n from 1 to 5 chosen to hold them) or integers times one power of
  two that fit int16 (vpe).  The per-channel affine map is folded by the datapath's own
  :func:`pynq_nbq.datapath.fold_requant`, except our export's exact form
  (``Mul``, ``Add``, ``Mul`` by integer / integer / power-of-two constants), which is
  decoded into the very same ``mult``, ``bias``, ``shift``;
* ``MaxPool`` (no padding, dilation, ceil mode), ``GlobalAveragePool`` + ``Quant``,
  ``Add`` of quantised tensors + ``Quant``, ``Concat`` (axis 1), ``Flatten`` (axis 1),
  and ``Cast``/``Identity`` (no-ops) map to the bundle ops of the same meaning.

An activation ``Quant`` must have zero point 0, a power-of-two scale with ``f`` in the
datapath's range and the int16 clip range (signed 16 bits, not narrow; after a
``Relu`` also unsigned 15 bits), since the datapath saturates to int16 and nowhere
else.  Its rounding: ``FLOOR`` after an added half LSB is the datapath's round half up
exactly; ``ROUND`` (half to even) and ``HALF_UP`` (half away from zero) are taken as
round half up and listed in :attr:`ImportResult.notes` (they differ on exact ties);
any other mode is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .. import datapath as dp
from ..bundle import ROLES, weighted_fields
from ..errors import NbqError
from .qonnx_format import METADATA_KEY, frac_of_scale, po2_exponent, quant_range


class QonnxImportError(NbqError):
    """The graph has something the datapath cannot run; names the node and why."""


@dataclass
class ImportResult:
    """``manifest`` and ``arrays`` for :func:`pynq_nbq.bundle.save_bundle`; ``notes``:
    every approximation taken (rounding modes that differ on ties), one line each."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Act:
    """A quantised activation: the bundle tensor it is, its format and shape."""

    tensor: str
    frac: int
    shape: tuple[int, ...]  # [C, H, W] or [C]


@dataclass
class _Align:
    """A ``Quant`` (with an optional half-LSB ``Add``) that moves ``source`` to ``frac``:
    legal only as an input of an add or concat."""

    source: _Act
    frac: int
    exact: bool  # FLOOR after half: the datapath's align; else a rounding note


_ACT_ROUNDING_EXACT = ("FLOOR",)
_ACT_ROUNDING_TIES = ("ROUND", "HALF_EVEN", "HALF_UP")


def _fail(node: onnx.NodeProto | None, why: str) -> QonnxImportError:
    where = f"node {node.name or '(unnamed)'} ({node.op_type})" if node is not None else "graph"
    return QonnxImportError(f"{where}: {why}")


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class _Importer:
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
        self.acts: dict[str, _Act] = {}
        self.aligns: dict[str, _Align] = {}
        self.done: set[int] = set()  # id() of nodes already taken into a layer
        self.layers: list[dict[str, Any]] = []
        self.tensors: dict[str, dict[str, Any]] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        # (manifest layer, integer weights, requant(acc_max) -> (mult, bias, shift), C_out)
        self.weight_layers: list[tuple[dict[str, Any], np.ndarray, Any, int]] = []

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
        a = _attrs(node)
        if node.op_type == "Constant":
            value = numpy_helper.to_array(a["value"]).astype(np.float64)
        elif node.op_type in ("Identity", "Cast"):
            value = ins[0]
        elif node.op_type == "Quant":
            value = _int_quant(node, ins, a)
        elif node.op_type == "BipolarQuant":
            value = np.where(ins[0] >= 0, 1.0, -1.0) * ins[1]
        elif node.op_type == "FloatQuant":
            value = _float_quant(node, ins, a)
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
        f = frac_of_scale(self.const(node.input[1]))
        return None if f is None else -f

    # --- the walk -----------------------------------------------------------------------
    def run(self) -> ImportResult:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise _fail(None, f"needs exactly one (non-constant) input, has {len(inputs)}")
        self._input(inputs[0])
        for node in self.graph.node:
            if id(node) in self.done or self._is_const_node(node):
                continue
            handler = _HANDLERS.get(node.op_type)
            if handler is None:
                raise _fail(node, f"op {node.op_type} has no datapath form ({_KNOWN})")
            handler(self, node)
        return self._finish()

    def _is_const_node(self, node: onnx.NodeProto) -> bool:
        return all(self.const(o) is not None for o in node.output if o)

    def take(self, node: onnx.NodeProto) -> None:
        self.done.add(id(node))

    def act_of(self, node: onnx.NodeProto, name: str) -> _Act:
        """The quantised activation ``name`` (an input of ``node``), or refuse."""
        if name in self.acts:
            return self.acts[name]
        if name in self.aligns:
            raise _fail(
                node,
                f"input {name!r} is a standalone requantisation (a Quant on a "
                "quantised tensor), which the datapath has only inside add/concat",
            )
        raise _fail(node, f"input {name!r} is not a quantised activation (no Quant before it)")

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        """The single node reading ``tensor`` (None if none, or if it is a graph output);
        refuses a fan-out inside a fused chain."""
        users = self.consumers.get(tensor, [])
        if tensor in {o.name for o in self.graph.output}:
            return None
        if len(users) > 1:
            raise _fail(users[1], f"tensor {tensor!r} is read twice inside a layer's chain")
        return users[0] if users else None

    def sole_consumer(self, tensor: str) -> onnx.NodeProto | None:
        """The node reading ``tensor`` if it is the only one (and ``tensor`` is not a
        graph output), else None: for optional ops after a layer's output Quant."""
        users = self.consumers.get(tensor, [])
        outputs = {o.name for o in self.graph.output}
        return users[0] if len(users) == 1 and tensor not in outputs else None

    def new_tensor(self, name: str, frac: int, shape: tuple[int, ...], graph_name: str) -> _Act:
        if not dp.FRAC_MIN <= frac <= dp.FRAC_MAX:
            raise _fail(
                self.producer.get(graph_name),
                f"format 2**-{frac} outside the datapath's "
                f"frac range [{dp.FRAC_MIN}, {dp.FRAC_MAX}]",
            )
        if name in self.tensors:
            raise _fail(self.producer.get(graph_name), f"tensor {name!r} defined twice")
        self.tensors[name] = {"shape": list(shape), "frac": frac}
        act = _Act(name, frac, shape)
        self.acts[graph_name] = act
        return act

    def add_layer(self, node: onnx.NodeProto, op: str, ins: list[_Act], out: _Act, **attrs):
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
    def _input(self, vi: onnx.ValueInfoProto) -> None:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if len(dims) != 4 or not all(d > 0 for d in dims[1:]):
            raise _fail(None, f"input {vi.name!r} must be (N, C, H, W) with fixed C, H, W")
        users = self.consumers.get(vi.name, [])
        if len(users) != 1 or users[0].op_type != "Quant":
            raise _fail(None, f"input {vi.name!r} must go into one Quant (its format)")
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
            raise _fail(q, "an activation format must be a Quant node")
        scale, zp, bits = (self.const(i) for i in q.input[1:4])
        if scale is None or zp is None or bits is None:
            raise _fail(q, "scale, zero point and bit width must be constants")
        frac = frac_of_scale(scale)
        if frac is None:
            raise _fail(
                q,
                f"scale {np.ravel(scale)[:4]} is not one power of two "
                "(the datapath's formats are 2**-f per tensor)",
            )
        if np.any(zp != 0):
            raise _fail(q, "zero point must be 0 (the datapath is symmetric)")
        a = _attrs(q)
        lo, hi = quant_range(
            int(np.ravel(bits)[0]), bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        )
        ok = (lo, hi) == (dp.ACT_MIN, dp.ACT_MAX) or (relu and lo <= 0 and hi == dp.ACT_MAX)
        if not ok:
            raise _fail(
                q,
                f"clip range [{lo}, {hi}] is not int16's [{dp.ACT_MIN}, {dp.ACT_MAX}]"
                + (" (or [0, 32767] after a Relu)" if relu else "")
                + ": the datapath saturates to int16 only",
            )
        mode = _str(a.get("rounding_mode", "ROUND")).upper()
        if mode in _ACT_ROUNDING_EXACT:
            if not half_added and not in_chain:
                raise _fail(
                    q,
                    "FLOOR without a half LSB added before it (the datapath "
                    "rounds half up; floor alone is not available)",
                )
            return frac, None
        if mode in _ACT_ROUNDING_TIES:
            if half_added:
                raise _fail(q, f"rounding {mode} after an added half LSB rounds twice")
            return frac, f"{q.name}: rounding {mode} taken as round half up (differs on ties)"
        raise _fail(
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
                f = frac_of_scale(self.const(q.input[1]))
                if f is not None and float(c.ravel()[0]) == 2.0 ** -(f + 1):
                    self.take(node)
                    return q, True
        raise _fail(node, "expected a Quant (optionally after an Add of half its LSB)")

    # --- results ----------------------------------------------------------------------------
    def _finish(self) -> ImportResult:
        outs = [o.name for o in self.graph.output]
        if len(outs) != 1:
            raise _fail(None, f"needs exactly one output, has {len(outs)}")
        if outs[0] not in self.acts:
            raise _fail(None, f"output {outs[0]!r} is not a quantised tensor (end with a Quant)")
        out = self.acts[outs[0]]
        if len(out.shape) != 1:
            raise _fail(
                None,
                f"output {outs[0]!r} has shape {list(out.shape)}; the logits "
                "must be a vector (add a Flatten)",
            )
        pe, bits = self._datapath()
        meta, opts = self.meta, self.options
        k = out.shape[0]
        classes = opts.get("classes") or meta.get("classes") or [f"class{i}" for i in range(k)]
        if len(classes) != k:
            raise QonnxImportError(f"{len(classes)} class names for {k} outputs")
        in_act = next(iter(self.tensors))
        c, h, w = self.tensors[in_act]["shape"]
        inp = dict(meta.get("input") or {})
        if not inp:
            mode = {1: "L", 3: "RGB"}.get(c)
            if mode is None:
                raise QonnxImportError(f"{c} input channels: a bundle takes 1 (L) or 3 (RGB)")
            inp = {
                "mode": mode,
                "mean": [0.0] * c,
                "std": [1.0] * c,
                "resize": "stretch",
                "invert": False,
            }
        for key in ("mean", "std", "mode", "resize", "invert"):
            if opts.get(key) is not None:
                inp[key] = opts[key]
        inp.update(tensor=in_act, channels=c, height=h, width=w)
        manifest = {
            "name": opts.get("name") or meta.get("name") or self.graph.name or "imported",
            "datapath": str(pe),
            "weight_bits": bits,
            "classes": list(classes),
            "input": inp,
            "tensors": self.tensors,
            "layers": self.layers,
            "output": out.tensor,
            "provenance": meta.get("provenance")
            or {"tool": "pynq-nbq import", "producer": self.model.producer_name or "unknown"},
        }
        return ImportResult(manifest, self.arrays, self.notes)

    def _datapath(self) -> tuple[dp.PEKind, int]:
        """Choose svpe/vpe and the weight widths, fill in every weighted layer's arrays."""
        want = self.options.get("datapath") or self.meta.get("datapath")
        pe = dp.PEKind.parse(want) if want else None
        po2_ok = all(_po2_problem(ints) is None for _, ints, _, _ in self.weight_layers)
        if pe is None:
            pe = dp.PEKind.SVPE if po2_ok else dp.PEKind.VPE
        layer_bits: dict[str, int] = self.meta.get("layer_weight_bits", {})
        widths = []
        for layer, ints, requant, _ in self.weight_layers:
            name = layer["name"]
            if pe is dp.PEKind.SVPE:
                problem = _po2_problem(ints)
                if problem:
                    raise QonnxImportError(f"layer {name}: {problem} (svpe needs 0 or +-2**k)")
                n = _svpe_bits(ints, layer_bits.get(name))
                codes = dp.encode_svpe(ints, n)
                self.arrays[f"{name}.weights"] = codes
            else:
                n = dp.VPE_WEIGHT_BITS
                if (
                    ints.min(initial=0) < dp.VPE_WEIGHT_MIN
                    or ints.max(initial=0) > dp.VPE_WEIGHT_MAX
                ):
                    raise QonnxImportError(f"layer {name}: integer weights beyond int16")
                self.arrays[f"{name}.weights"] = ints.astype(dp.VPE_WEIGHT_DTYPE)
            fields = weighted_fields(pe, n, ints.shape)
            problem = dp.accumulator_problem(fields["fan_in"], dp.max_abs_weight(pe, n))
            if problem:
                raise QonnxImportError(f"layer {name}: {problem}")
            mult, bias, shift = requant(fields["acc_bound"])
            self.arrays.update({f"{name}.mult": mult, f"{name}.bias": bias, f"{name}.shift": shift})
            layer.update(
                weight_bits=n, acc_bits=fields["acc_bits"], arrays={r: f"{name}.{r}" for r in ROLES}
            )
            widths.append(n)
        if pe is dp.PEKind.VPE:
            return pe, dp.VPE_WEIGHT_BITS
        bits = self.meta.get("weight_bits") if self.meta.get("datapath") == "svpe" else None
        return pe, int(bits or max(widths, default=dp.SVPE_MAX_BITS))


# --- weights -------------------------------------------------------------------------------
def _int_quant(node: onnx.NodeProto, ins: list, a: dict) -> np.ndarray:
    """qonnx's ``Quant`` on constants (scale, zero point, bit width; clip, then round)."""
    x, scale, zp, bits = ins[:4]
    mode = _str(a.get("rounding_mode", "ROUND")).upper()
    fn = {"ROUND": np.round, "HALF_EVEN": np.round, "FLOOR": np.floor, "CEIL": np.ceil}.get(mode)
    if fn is None:
        raise _fail(node, f"weight Quant rounding {mode} is not evaluated here")
    signed, n = bool(a.get("signed", 1)), int(np.ravel(bits)[0])
    if n == 1 and signed:  # qonnx: a signed 1-bit Quant is bipolar (+-1), not {-1, 0}
        return np.where(x / scale + zp >= 0, 1.0, -1.0) * scale
    lo, hi = quant_range(n, signed, bool(a.get("narrow", 0)))
    y = np.clip(x / scale + zp, lo, hi)
    return (fn(y) - zp) * scale


def _float_quant(node: onnx.NodeProto, ins: list, a: dict) -> np.ndarray:
    """qonnx's ``FloatQuant`` on constants (needs the qonnx package)."""
    try:
        from qonnx.custom_op.general.floatquant import float_quant
    except ImportError as exc:  # pragma: no cover - qonnx is in the interop extra
        raise _fail(node, "FloatQuant weights need the qonnx package to evaluate") from exc
    kw = {
        k: a[k]
        for k in ("has_inf", "has_nan", "has_subnormal", "rounding_mode", "saturation")
        if k in a
    }
    if "rounding_mode" in kw:
        kw["rounding_mode"] = _str(kw["rounding_mode"])
    return np.asarray(
        float_quant(*[np.asarray(v, dtype=np.float32) for v in ins[:6]], **kw), dtype=np.float64
    )


def _integer_grid(w: np.ndarray, exp: int | None) -> tuple[np.ndarray, int]:
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


def _po2_problem(ints: np.ndarray) -> str | None:
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


def _svpe_bits(ints: np.ndarray, stated: int | None) -> int:
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


# --- per-op handlers -------------------------------------------------------------------------
def _weighted(imp: _Importer, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    x = imp.act_of(node, node.input[0])
    w = imp.const(node.input[1])
    if w is None:
        raise _fail(node, "weights must be constant")
    bias = imp.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and bias is None:
        raise _fail(node, "bias must be constant")
    gain = 1.0
    if node.op_type == "Conv":
        op = "conv"
        if len(x.shape) != 3:
            raise _fail(node, f"conv input must be a (C, H, W) map, got {list(x.shape)}")
        k = list(a.get("kernel_shape", w.shape[2:]))
        if len(k) != 2 or k[0] != k[1] or list(w.shape[2:]) != k:
            raise _fail(node, f"kernel {k}: only square 2-D kernels")
        if _str(a.get("auto_pad", "NOTSET")) not in ("NOTSET", ""):
            raise _fail(node, "auto_pad: give explicit pads")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        strides = list(a.get("strides", [1, 1]))
        if len(set(pads)) != 1:
            raise _fail(node, f"pads {pads}: only the same padding on all four sides")
        if len(set(strides)) != 1:
            raise _fail(node, f"strides {strides}: only equal strides")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise _fail(node, f"dilations {a['dilations']}: only 1")
        groups = int(a.get("group", 1))
        attrs = {
            "kernel": int(k[0]),
            "stride": int(strides[0]),
            "padding": int(pads[0]),
            "groups": groups,
        }
        if w.shape[1] * groups != x.shape[0]:
            raise _fail(node, f"weights {list(w.shape)} do not fit {x.shape[0]} input channels")
        wmat = w
    else:
        op = "linear"
        if len(x.shape) != 1:
            raise _fail(
                node, f"{node.op_type} input must be a vector, got {list(x.shape)} (add a Flatten)"
            )
        if node.op_type == "Gemm":
            if a.get("transA", 0):
                raise _fail(node, "transA=1")
            wmat = w if a.get("transB", 0) else w.T
            gain = float(a.get("alpha", 1.0))
            if bias is not None:
                bias = bias * float(a.get("beta", 1.0))
        else:
            wmat = w.T
        if wmat.ndim != 2 or wmat.shape[1] != x.shape[0]:
            raise _fail(node, f"weights {list(w.shape)} do not fit {x.shape[0]} inputs")
        attrs = {}
    imp.take(node)
    c_out = wmat.shape[0]
    ints, e_w = _integer_grid(wmat, imp.weight_scale_exp(node.input[1]))
    if np.any(ints != np.round(ints)):
        raise _fail(node, f"weights are not integers times the scale 2**{e_w}")
    chain = _affine_chain(imp, node, c_out, op)
    scale, offset = chain.scale * gain, chain.offset
    if bias is not None:
        offset = offset + chain.scale * np.broadcast_to(np.ravel(bias), (c_out,))
    f_in, f_out = x.frac, chain.frac
    shape = (
        (
            c_out,
            *dp.conv_output_hw(
                x.shape[1], x.shape[2], attrs["kernel"], attrs["stride"], attrs["padding"]
            ),
        )
        if op == "conv"
        else (c_out,)
    )
    pool = 0
    end = chain.end
    nxt = imp.sole_consumer(end)
    fuse_ok = op == "conv" and nxt is not None and nxt.op_type == "MaxPool"
    if fuse_ok and _pool_attrs(nxt) == (2, 2) and nxt.name not in imp.standalone_pools():
        imp.take(nxt)
        pool, end = 2, nxt.output[0]
        shape = (c_out, shape[1] // 2, shape[2] // 2)
    out = imp.new_tensor(end, f_out, shape, end)
    if op == "conv":
        attrs["pool"] = pool
    layer = imp.add_layer(node, op, [x], out, relu=chain.relu, weight_exp=int(e_w), **attrs)
    if chain.note:
        imp.notes.append(chain.note)

    def requant(acc_max: int):
        if chain.exact is not None:
            m, b, s = chain.exact(e_w, f_in, f_out)
            if m is not None and not dp.requant_problems(m, b, s, acc_max):
                return m, b, s
        try:
            return dp.fold_requant(scale, offset, e_w - f_in, f_out, acc_max)
        except ValueError as exc:
            raise _fail(node, f"requantisation: {exc}") from exc

    imp.weight_layers.append((layer, ints.reshape(wmat.shape), requant, c_out))


@dataclass
class _Chain:
    scale: np.ndarray
    offset: np.ndarray
    relu: bool
    frac: int
    end: str  # the graph tensor holding the layer's int16 output
    note: str | None
    exact: Any  # callable(e_w, f_in, f_out) -> (mult, bias, shift) or (None,)*3, or None


def _affine_chain(imp: _Importer, node: onnx.NodeProto, c: int, op: str) -> _Chain:
    """Follow a Conv/Gemm output through per-channel affine ops, Relu and its Quant."""
    scale, offset = np.ones(c), np.zeros(c)
    steps: list[tuple[str, np.ndarray]] = []
    relu = False
    t = node.output[0]
    while True:
        nxt = imp.only_consumer(t)
        if nxt is None:
            raise _fail(node, "its output must reach a Quant (the output format)")
        if nxt.op_type in ("Cast", "Identity"):
            imp.take(nxt)
            t = nxt.output[0]
            continue
        if nxt.op_type == "Relu":
            if relu:
                raise _fail(nxt, "a second Relu")
            imp.take(nxt)
            relu, t = True, nxt.output[0]
            continue
        if nxt.op_type == "Quant":
            break
        if nxt.op_type == "Add" and relu is False and _is_half_before_floor(imp, nxt, t):
            break
        if relu:
            raise _fail(nxt, "only a Quant may follow the Relu of a conv/linear layer")
        if nxt.op_type == "BatchNormalization":
            g, b, mu, var = (imp.const(i) for i in nxt.input[1:5])
            if any(v is None for v in (g, b, mu, var)):
                raise _fail(nxt, "batch norm parameters must be constant")
            s = g / np.sqrt(var + float(_attrs(nxt).get("epsilon", 1e-5)))
            scale, offset = scale * s, offset * s + b - mu * s
            steps.append(("bn", s))
        elif nxt.op_type in ("Mul", "Div", "Add", "Sub"):
            other = nxt.input[1] if nxt.input[0] == t else nxt.input[0]
            v = imp.const(other)
            if v is None:
                raise _fail(nxt, "only per-channel constants may scale or shift a conv output")
            if nxt.op_type in ("Div", "Sub") and nxt.input[0] != t:
                raise _fail(nxt, "the constant must be the second operand")
            v = _per_channel(nxt, v, c, op)
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
            raise _fail(
                nxt,
                f"op {nxt.op_type} between {node.name} ({node.op_type}) and its output Quant "
                "(allowed: per-channel Mul/Div/Add/Sub, BatchNormalization, Relu)",
            )
        imp.take(nxt)
        t = nxt.output[0]
    q, half = imp.half_then_quant(nxt)
    frac, note = imp.act_quant(q, relu=relu, half_added=half, in_chain=True)
    imp.take(q)
    floor = _str(_attrs(q).get("rounding_mode", "")).upper() == "FLOOR"
    if floor and not half:  # floor(v) is round half up of v - half; fold adds the half
        offset = offset - 2.0 ** -(frac + 1)
    end = q.output[0]
    while True:  # trailing Casts back to float32 (our exact form)
        nxt = imp.sole_consumer(end)
        if nxt is None or nxt.op_type not in ("Cast", "Identity"):
            break
        imp.take(nxt)
        end = nxt.output[0]
    exact = None
    kinds = [k for k, _ in steps]
    if kinds == ["Mul", "Add", "Mul"] and floor and not half:
        exact = _exact_decoder(steps)
    return _Chain(scale, offset, relu, frac, end, note, exact)


def _is_half_before_floor(imp: _Importer, add: onnx.NodeProto, t: str) -> bool:
    c = imp.const(add.input[1]) if add.input[0] == t else None
    q = imp.only_consumer(add.output[0])
    if c is None or c.size != 1 or q is None or q.op_type != "Quant":
        return False
    f = frac_of_scale(imp.const(q.input[1]))
    return f is not None and float(c.ravel()[0]) == 2.0 ** -(f + 1)


def _exact_decoder(steps):
    """Decode our exact form: Mul(mult * 2**(f_in - e_w)), Add(bias + half),
    Mul(2**-(shift + f_out)) -> the integer (mult, bias, shift), or Nones."""
    k, total, sh = (v for _, v in steps)

    def decode(e_w: int, f_in: int, f_out: int):
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
        raise _fail(node, f"constant of shape {list(v.shape)} is not per-channel for {c} channels")
    return v.reshape(c)


def _pool_attrs(node: onnx.NodeProto) -> tuple[int, int]:
    """(kernel, stride) of a MaxPool; refuses padding, dilation, ceil mode, 1-D/3-D."""
    a = _attrs(node)
    k = list(a.get("kernel_shape", []))
    s = list(a.get("strides", [1] * len(k)))
    if len(k) != 2 or k[0] != k[1] or len(s) != 2 or s[0] != s[1]:
        raise _fail(node, f"kernel {k} strides {s}: only square 2-D pools with equal strides")
    if any(p != 0 for p in a.get("pads", [])) or _str(a.get("auto_pad", "NOTSET")) not in (
        "NOTSET",
        "VALID",
        "",
    ):
        raise _fail(node, "padded max-pool (the datapath pools without padding)")
    if a.get("ceil_mode", 0):
        raise _fail(node, "ceil_mode=1 (the datapath uses floor mode)")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise _fail(node, "dilated max-pool")
    if a.get("storage_order", 0) or len(node.output) > 1:
        raise _fail(node, "max-pool indices output / storage order")
    return int(k[0]), int(s[0])


def _maxpool(imp: _Importer, node: onnx.NodeProto) -> None:
    x = imp.act_of(node, node.input[0])
    if len(x.shape) != 3:
        raise _fail(node, f"max-pool input must be a (C, H, W) map, got {list(x.shape)}")
    k, s = _pool_attrs(node)
    imp.take(node)
    shape = (x.shape[0], *dp.conv_output_hw(x.shape[1], x.shape[2], k, s))
    out = imp.new_tensor(node.output[0], x.frac, shape, node.output[0])
    imp.add_layer(node, "maxpool", [x], out, kernel=k, stride=s)


def _gap(imp: _Importer, node: onnx.NodeProto) -> None:
    x = imp.act_of(node, node.input[0])
    if len(x.shape) != 3:
        raise _fail(node, f"input must be a (C, H, W) map, got {list(x.shape)}")
    imp.take(node)
    nxt = imp.only_consumer(node.output[0])
    if nxt is None:
        raise _fail(node, "needs a Quant after it (the output format)")
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


def _is_flatten(imp: _Importer, node: onnx.NodeProto) -> bool:
    """A Flatten(axis=1), or a Reshape to (N, -1) / (N, K) with a constant shape."""
    if node.op_type == "Flatten":
        return int(_attrs(node).get("axis", 1)) == 1
    if node.op_type == "Reshape":
        shape = imp.const(node.input[1])
        return shape is not None and shape.size == 2
    return False


def _flatten(imp: _Importer, node: onnx.NodeProto) -> None:
    if not _is_flatten(imp, node):
        raise _fail(
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


def _passthrough(imp: _Importer, node: onnx.NodeProto) -> None:
    if node.input[0] in imp.aligns:
        imp.aligns[node.output[0]] = imp.aligns[node.input[0]]
    else:
        imp.acts[node.output[0]] = imp.act_of(node, node.input[0])
    imp.take(node)


def _quant_on_act(imp: _Importer, node: onnx.NodeProto) -> None:
    """A Quant (or half-Add + Quant) on a quantised tensor: an align of add/concat."""
    src = imp.act_of(node, node.input[0])
    q, half = imp.half_then_quant(node)
    frac, _ = imp.act_quant(q, relu=False, half_added=half, in_chain=True)
    note = None
    if frac < src.frac:  # losing bits: the rounding counts (left shifts are exact)
        _, note = imp.act_quant(q, relu=False, half_added=half)
    imp.take(q)
    imp.aligns[q.output[0]] = _Align(src, frac, note is None)


def _add(imp: _Importer, node: onnx.NodeProto) -> None:
    if any(imp.const(i) is not None for i in node.input):
        if node.input[0] in imp.acts:  # Add(half) before a Quant: an align
            _quant_on_act(imp, node)
            return
        raise _fail(node, "adding a constant to an activation outside a conv/linear chain")
    terms = [node.input[0], node.input[1]]
    imp.take(node)
    t = node.output[0]
    relu = False
    while True:
        nxt = imp.only_consumer(t)
        if nxt is None:
            raise _fail(node, "a residual add needs a Quant after it (the output format)")
        if nxt.op_type == "Add" and not relu and all(imp.const(i) is None for i in nxt.input):
            terms.append(nxt.input[1] if nxt.input[0] == t else nxt.input[0])
        elif nxt.op_type == "Relu" and not relu:
            relu = True
        elif nxt.op_type == "Quant":
            break
        else:
            raise _fail(nxt, "only Add, one Relu and a Quant may follow a residual add")
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
        raise _fail(node, f"inputs of different shapes {[list(a.shape) for a in ins]}")
    out = imp.new_tensor(nxt.output[0], frac, shape, nxt.output[0])
    imp.add_layer(node, "add", ins, out, relu=relu)


def _aligned_input(imp: _Importer, node: onnx.NodeProto, name: str, frac: int) -> _Act:
    if name in imp.aligns:
        al = imp.aligns[name]
        if al.frac != frac:
            raise _fail(
                node,
                f"input {name!r} is moved to 2**-{al.frac}, the result is "
                f"2**-{frac}: two roundings the datapath does not have",
            )
        if not al.exact:
            imp.notes.append(f"{node.name}: input {name!r} aligned with ties to even")
        return al.source
    return imp.act_of(node, name)


def _concat(imp: _Importer, node: onnx.NodeProto) -> None:
    a = _attrs(node)
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
        raise _fail(node, f"inputs in formats {sorted(fracs)}: put a Quant on each to one format")
    dims = {len(x.shape) for x in ins}
    if int(a.get("axis", 1)) not in (1, -len(ins[0].shape) - 1) or len(dims) != 1:
        raise _fail(node, "only concatenation along channels (axis 1) of like tensors")
    if any(x.shape[1:] != ins[0].shape[1:] for x in ins):
        raise _fail(node, "inputs differ in height/width")
    imp.take(node)
    shape = (sum(x.shape[0] for x in ins), *ins[0].shape[1:])
    out = imp.new_tensor(node.output[0], fracs.pop(), shape, node.output[0])
    imp.add_layer(node, "concat", ins, out)


_HANDLERS = {
    "Conv": _weighted,
    "Gemm": _weighted,
    "MatMul": _weighted,
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
_KNOWN = "known: " + ", ".join(sorted(_HANDLERS))


def import_qonnx(model: onnx.ModelProto | str | Path, **options: Any) -> ImportResult:
    """Turn a QONNX model into bundle fields (see the module docstring).

    ``options`` (each overrides our metadata): ``datapath`` ("svpe"/"vpe"; default: svpe
    when every layer's weights are powers of two), ``classes``, ``name``, ``mean``,
    ``std``, ``mode``, ``resize``, ``invert``.  Raises :class:`QonnxImportError` naming
    the first node the datapath cannot run.
    """
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:  # noqa: BLE001 - custom ops; shapes are computed here anyway
        pass
    return _Importer(m, options).run()
