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

from pathlib import Path
from typing import Any

import onnx

from .qonnx_assemble import ImportResult, finish
from .qonnx_graph import Importer
from .qonnx_nodes import QonnxImportError, fail
from .qonnx_ops import HANDLERS, KNOWN

__all__ = ["ImportResult", "QonnxImportError", "import_qonnx"]


def _walk(imp: Importer) -> ImportResult:
    """Take the graph input, then every node in order through its handler."""
    inputs = [i for i in imp.graph.input if i.name not in imp.consts]
    if len(inputs) != 1:
        raise fail(None, f"needs exactly one (non-constant) input, has {len(inputs)}")
    imp.read_input(inputs[0])
    for node in imp.graph.node:
        if id(node) in imp.done or imp.is_const_node(node):
            continue
        handler = HANDLERS.get(node.op_type)
        if handler is None:
            raise fail(node, f"op {node.op_type} has no datapath form ({KNOWN})")
        handler(imp, node)
    return finish(imp)


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
    return _walk(Importer(m, options))
