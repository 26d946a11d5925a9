"""A validated bundle -> a QONNX graph that states the same integer datapath.

    model = export_qonnx(load_bundle("pynq_nbq/models/fmnist-svpe"))
    onnx.save(model, "fmnist-svpe.onnx")

The graph takes the real-valued input (N, C, H, W) float32 - the image already
normalised, ``(p/255 - mean)/std``; feed it the dequantised int16 input ``q * 2**-f_in``
to reproduce the engine - and returns the real logits (N, classes) float32 (int16
times ``2**-f_out``).  Mapping per bundle op (``docs/interop.md``):

========== ==========================================================================
bundle     QONNX nodes
========== ==========================================================================
input      ``Quant`` (2**-f_in, 16 bits, ROUND): the input's fixed-point format
conv       ``Quant`` weights -> ``Conv`` -> requant -> [``Relu``] -> ``Quant`` (FLOOR)
           -> [``MaxPool`` 2x2/2]
linear     ``Quant`` weights -> ``Gemm`` (transB) -> requant -> [``Relu``] -> ``Quant``
maxpool    ``MaxPool`` (no padding)
gap        ``GlobalAveragePool`` -> ``Add`` half LSB -> ``Quant`` (FLOOR) -> ``Flatten``
add        per input: align (``Add`` half, ``Quant`` FLOOR) -> ``Add`` -> [``Relu``] ->
           ``Quant``
concat     per input: align -> ``Concat`` (axis 1)
flatten    ``Flatten`` (axis 1: C, H, W order)
========== ==========================================================================

Requantisation, two forms (``requant=``):

* ``"exact"`` (default): ``Cast`` to float64, ``Mul`` by ``mult * 2**(f_in - e_w)``
  (the accumulator times the integer multiplier), ``Add`` ``bias + half`` (an integer),
  ``Mul`` by ``2**-(shift + f_out)``, [``Relu``], ``Quant`` FLOOR, ``Cast`` back to
  float32.  Every constant is an exact integer or power of two, products stay below
  2**53, so the only rounding left is float32's inside ``Conv`` (exact while the
  accumulator stays below 2**24); import recovers mult, bias and shift exactly.
* ``"fused"``: float32 throughout, one ``Mul`` by ``mult * 2**(f_in - e_w - shift - f_out)``
  (exact) and one ``Add`` of ``(bias + half) * 2**-(shift + f_out)`` (rounded to
  float32).  For tools that take no ``Cast`` or float64 (hls4ml).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import datapath as dp
from ..bundle import Bundle, LayerSpec
from ..errors import NbqError
from .qonnx_format import (
    ACT_ROUNDING,
    METADATA_KEY,
    OPSET,
    QONNX_DOMAIN,
    weight_quant_bits,
)

REQUANT_FORMS = ("exact", "fused")


class QonnxExportError(NbqError):
    """The bundle cannot be written as QONNX (names the layer and why)."""


@dataclass
class _Graph:
    """Nodes and initializers being collected; unique names from ``prefix`` counters."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    used: set[str] = field(default_factory=set)  # tensor names
    used_nodes: set[str] = field(default_factory=set)

    def name(self, base: str, used: set[str] | None = None) -> str:
        """``base``, or ``base_1``, ``base_2``... if taken (tensors and nodes apart)."""
        used = self.used if used is None else used
        n, i = base, 1
        while n in used:
            n, i = f"{base}_{i}", i + 1
        used.add(n)
        return n

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(
        self, op: str, inputs: list[str], out: str, name: str, domain: str = "", **attrs
    ) -> str:
        self.nodes.append(
            helper.make_node(
                op, inputs, [out], name=self.name(name, self.used_nodes), domain=domain, **attrs
            )
        )
        return out

    def quant(
        self,
        x: str,
        out: str,
        name: str,
        scale: float,
        bits: int,
        *,
        narrow: bool = False,
        rounding: str = ACT_ROUNDING,
        dtype: type[np.floating[Any]] = np.float32,
    ) -> str:
        """``Quant(x, scale, zero point 0, bits)``, signed, constants of ``dtype``."""
        return self.node(
            "Quant",
            [
                x,
                self.const(f"{name}.scale", np.array(scale, dtype=dtype)),
                self.const(f"{name}.zeropt", np.array(0.0, dtype=dtype)),
                self.const(f"{name}.bitwidth", np.array(float(bits), dtype=dtype)),
            ],
            out,
            name,
            domain=QONNX_DOMAIN,
            signed=1,
            narrow=int(narrow),
            rounding_mode=rounding,
        )


def export_qonnx(bundle: Bundle, requant: str = "exact", batch: int = 1) -> onnx.ModelProto:
    """The QONNX model of a validated bundle (see the module docstring).

    ``requant``: ``"exact"`` or ``"fused"``; ``batch``: the fixed batch size of the
    graph's input and output (qonnx's executor and hls4ml want a fixed one).  The
    bundle's name, classes, input block, datapath and per-layer weight widths travel
    in ``metadata_props`` under :data:`METADATA_KEY`, so
    :func:`~pynq_nbq.interop.qonnx_import.import_qonnx` restores them.  Raises
    :class:`QonnxExportError` for an unknown form or op.
    """
    if batch < 1:
        raise QonnxExportError(f"batch must be >= 1, got {batch}")
    if requant not in REQUANT_FORMS:
        raise QonnxExportError(f"requant form must be one of {REQUANT_FORMS}, got {requant!r}")
    spec = bundle.spec
    if spec is None:
        raise QonnxExportError("the bundle has not been validated (use bundle.load_bundle)")
    g = _Graph()
    g.used.update(spec.tensors)  # generated names never take a bundle tensor's name
    real_in = g.name(f"{spec.input.tensor}.real")
    g.quant(real_in, spec.input.tensor, f"{spec.input.tensor}.quant",
            2.0**-spec.input_frac, dp.ACT_BITS, rounding="ROUND")  # fmt: skip
    for layer in spec.layers:
        _EMIT[layer.op](g, bundle, layer, requant)
    c_in, h, w = spec.tensors[spec.input.tensor].shape
    graph = helper.make_graph(
        g.nodes,
        spec.name or "pynq-nbq",
        [helper.make_tensor_value_info(real_in, TensorProto.FLOAT, [batch, c_in, h, w])],
        [helper.make_tensor_value_info(spec.output, TensorProto.FLOAT, [batch, len(spec.classes)])],
        g.inits,
    )
    model = helper.make_model(
        graph,
        producer_name="pynq-nbq",
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)],
    )
    model.ir_version = 8
    helper.set_model_props(model, {METADATA_KEY: json.dumps(_metadata(bundle), sort_keys=True)})
    onnx.checker.check_model(model)
    return model


def _metadata(bundle: Bundle) -> dict:
    m = bundle.manifest
    return {
        "name": m.get("name", ""),
        "datapath": m["datapath"],
        "weight_bits": m["weight_bits"],
        "classes": m["classes"],
        "input": m["input"],
        "provenance": m.get("provenance", {}),
        "maxpool_layers": [layer["name"] for layer in m["layers"] if layer["op"] == "maxpool"],
        "layer_weight_bits": {
            layer["name"]: layer["weight_bits"] for layer in m["layers"] if "weight_bits" in layer
        },
    }


# --- one emitter per bundle op ------------------------------------------------------------
def weight_format(layer: LayerSpec) -> tuple[int, int]:
    """(weight_bits, weight_exp) of a conv/linear layer; QonnxExportError if either is
    missing (a validated bundle's weighted layers have both)."""
    if layer.weight_bits is None or layer.weight_exp is None:
        raise QonnxExportError(f"{layer.name}: a weighted layer without weight_bits/weight_exp")
    return layer.weight_bits, layer.weight_exp


def _weights(g: _Graph, bundle: Bundle, layer: LayerSpec) -> str:
    """The layer's weights as ``Quant(w * 2**e_w, scale 2**e_w)``: the real values, with
    the integer grid they lie on stated (exact in float32: w has at most 16 bits)."""
    n_bits, e_w = weight_format(layer)
    w = bundle.layer_arrays(layer)["weights"]
    ints = dp.decode_svpe(w, n_bits) if bundle.pe is dp.PEKind.SVPE else w
    bits = weight_quant_bits(bundle.pe, n_bits)
    w_name = g.const(f"{layer.name}.weight_real", ints.astype(np.float32) * 2.0**e_w)
    return g.quant(
        w_name,
        g.name(f"{layer.name}.weight"),
        f"{layer.name}.weight_quant",
        2.0**e_w,
        bits,
        narrow=bundle.pe is dp.PEKind.SVPE,
        rounding="ROUND",
    )


def fused_constants(
    mult: np.ndarray, bias: np.ndarray, shift: np.ndarray, acc_exp: int, f_out: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``fused`` form's float32 (scale, offset) per channel: the layer output before
    its FLOOR Quant is ``conv_real * scale + offset``.  ``acc_exp = f_in - e_w`` (the
    accumulator is ``conv_real * 2**acc_exp``).  ``scale = mult * 2**(acc_exp - shift -
    f_out)`` is exact; ``offset = (bias + half) * 2**-(shift + f_out)`` is rounded to
    float32 (24 significant bits), the only change the fused form makes."""
    shift = np.asarray(shift, dtype=np.int64)
    total = np.asarray(bias, dtype=np.int64) + dp.half(shift)
    k = np.asarray(mult, dtype=np.float64) * 2.0 ** (acc_exp - shift - f_out).astype(np.float64)
    b = total.astype(np.float64) * 2.0 ** -(shift + f_out).astype(np.float64)
    return k.astype(np.float32), b.astype(np.float32)


def _requant(g: _Graph, bundle: Bundle, layer: LayerSpec, x: str, requant: str) -> str:
    """Requantisation, ReLU and the output Quant after a Conv/Gemm output ``x``;
    returns the int16 tensor (before any fused pool)."""
    arrs = bundle.layer_arrays(layer)
    mult, bias, shift = (arrs[r].astype(np.int64) for r in ("mult", "bias", "shift"))
    f_in, f_out, e_w = layer.in_fracs[0], layer.out_frac, weight_format(layer)[1]
    total = bias + dp.half(shift)  # the integer the datapath adds before the shift
    per_channel = (-1, 1, 1) if layer.op == "conv" else (-1,)
    n = layer.name
    if requant == "exact":
        if np.abs(total).max(initial=0) >= dp.FLOAT64_EXACT:
            raise QonnxExportError(f"{n}: bias + half needs more than 53 bits (use 'fused')")
        y = g.node("Cast", [x], g.name(f"{n}.acc64"), f"{n}.cast64", to=TensorProto.DOUBLE)
        k = mult.astype(np.float64) * 2.0 ** (f_in - e_w)
        y = g.node("Mul", [y, g.const(f"{n}.mult", k.reshape(per_channel))],
                   g.name(f"{n}.product"), f"{n}.mult")  # fmt: skip
        y = g.node("Add", [y, g.const(f"{n}.bias_half", total.astype(np.float64)
                                      .reshape(per_channel))],
                   g.name(f"{n}.biased"), f"{n}.bias")  # fmt: skip
        s = 2.0 ** -(shift + f_out).astype(np.float64)
        y = g.node("Mul", [y, g.const(f"{n}.shift", s.reshape(per_channel))],
                   g.name(f"{n}.shifted"), f"{n}.shift")  # fmt: skip
        dtype: type[np.floating[Any]] = np.float64
    else:
        k, b = fused_constants(mult, bias, shift, f_in - e_w, f_out)
        y = g.node("Mul", [x, g.const(f"{n}.scale", k.reshape(per_channel))],
                   g.name(f"{n}.scaled"), f"{n}.scale")  # fmt: skip
        y = g.node("Add", [y, g.const(f"{n}.offset", b.reshape(per_channel))],
                   g.name(f"{n}.offset"), f"{n}.offset")  # fmt: skip
        dtype = np.float32
    if layer.relu:
        y = g.node("Relu", [y], g.name(f"{n}.relu"), f"{n}.relu")
    out = layer.output if not layer.pool and requant != "exact" else g.name(f"{n}.q")
    y = g.quant(y, out, f"{n}.act_quant", 2.0**-f_out, dp.ACT_BITS, dtype=dtype)
    if requant == "exact":
        final = layer.output if not layer.pool else g.name(f"{n}.q32")
        y = g.node("Cast", [y], final, f"{n}.cast32", to=TensorProto.FLOAT)
    return y


def _conv(g: _Graph, bundle: Bundle, layer: LayerSpec, requant: str) -> None:
    k, p, s = layer.kernel, layer.padding, layer.stride
    acc = g.node(
        "Conv",
        [layer.inputs[0], _weights(g, bundle, layer)],
        g.name(f"{layer.name}.acc"),
        layer.name,
        kernel_shape=[k, k],
        pads=[p, p, p, p],
        strides=[s, s],
        dilations=[1, 1],
        group=layer.groups,
    )
    y = _requant(g, bundle, layer, acc, requant)
    if layer.pool:
        _maxpool(g, f"{layer.name}.pool", y, layer.output, layer.pool, layer.pool)


def _linear(g: _Graph, bundle: Bundle, layer: LayerSpec, requant: str) -> None:
    acc = g.node(
        "Gemm",
        [layer.inputs[0], _weights(g, bundle, layer)],
        g.name(f"{layer.name}.acc"),
        layer.name,
        transB=1,
    )
    _requant(g, bundle, layer, acc, requant)  # a linear layer has no fused pool


def _maxpool(g: _Graph, name: str, x: str, out: str, k: int, s: int) -> str:
    # explicit zero pads: qonnx's channels-last pass needs them
    return g.node("MaxPool", [x], out, name, kernel_shape=[k, k], strides=[s, s], pads=[0] * 4)


def _maxpool_layer(g: _Graph, bundle: Bundle, layer: LayerSpec, requant: str) -> None:
    _maxpool(g, layer.name, layer.inputs[0], layer.output, layer.kernel, layer.stride)


def _round_to(g: _Graph, x: str, out: str, name: str, frac: int) -> str:
    """Round half up to ``frac`` fractional bits and saturate to int16: ``Add`` half an
    LSB, ``Quant`` FLOOR."""
    half = g.const(f"{name}.half", np.array(2.0 ** -(frac + 1), dtype=np.float32))
    y = g.node("Add", [x, half], g.name(f"{name}.plus_half"), f"{name}.half")
    return g.quant(y, out, f"{name}.quant", 2.0**-frac, dp.ACT_BITS)


def _gap(g: _Graph, bundle: Bundle, layer: LayerSpec, requant: str) -> None:
    n = layer.name
    mean = g.node("GlobalAveragePool", [layer.inputs[0]], g.name(f"{n}.mean"), n)
    q = _round_to(g, mean, g.name(f"{n}.q"), n, layer.out_frac)
    g.node("Flatten", [q], layer.output, f"{n}.flatten", axis=1)


def _aligned(g: _Graph, layer: LayerSpec, i: int, saturate: bool) -> str:
    """Input ``i`` of an add/concat moved to the layer's output format."""
    x, f_in, f_out = layer.inputs[i], layer.in_fracs[i], layer.out_frac
    name = f"{layer.name}.align{i}"
    if f_in > f_out:  # right shift, round half up (always fits int16)
        return _round_to(g, x, g.name(f"{name}.q"), name, f_out)
    if f_in < f_out and saturate:  # exact left shift, then saturate
        return g.quant(x, g.name(f"{name}.q"), f"{name}.quant", 2.0**-f_out, dp.ACT_BITS)
    return x


def _add(g: _Graph, bundle: Bundle, layer: LayerSpec, requant: str) -> None:
    n = layer.name
    terms = [_aligned(g, layer, i, saturate=False) for i in range(len(layer.inputs))]
    y = terms[0]
    for i, t in enumerate(terms[1:], 1):
        y = g.node("Add", [y, t], g.name(f"{n}.sum{i}"), n if i == 1 else f"{n}.sum{i}")
    if layer.relu:
        y = g.node("Relu", [y], g.name(f"{n}.relu"), f"{n}.relu")
    g.quant(y, layer.output, f"{n}.quant", 2.0**-layer.out_frac, dp.ACT_BITS)


def _concat(g: _Graph, bundle: Bundle, layer: LayerSpec, requant: str) -> None:
    parts = [_aligned(g, layer, i, saturate=True) for i in range(len(layer.inputs))]
    g.node("Concat", parts, layer.output, layer.name, axis=1)


def _flatten(g: _Graph, bundle: Bundle, layer: LayerSpec, requant: str) -> None:
    g.node("Flatten", [layer.inputs[0]], layer.output, layer.name, axis=1)


_EMIT = {
    "conv": _conv,
    "linear": _linear,
    "maxpool": _maxpool_layer,
    "gap": _gap,
    "add": _add,
    "concat": _concat,
    "flatten": _flatten,
}
