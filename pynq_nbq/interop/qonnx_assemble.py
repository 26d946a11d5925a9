"""The end of a QONNX import: the weighted layers' arrays for the chosen datapath (svpe or
vpe) and the bundle manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import datapath as dp
from ..bundle import ROLES, weighted_fields
from .qonnx_graph import Importer
from .qonnx_nodes import QonnxImportError, fail
from .qonnx_weights import po2_problem, svpe_bits


@dataclass
class ImportResult:
    """``manifest`` and ``arrays`` for :func:`pynq_nbq.bundle.save_bundle`; ``notes``:
    every approximation taken (rounding modes that differ on ties), one line each."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)


def finish(imp: Importer) -> ImportResult:
    """The bundle fields of a walked graph: checks its one output is a quantised vector
    (the logits), fills in the weighted layers' arrays (:func:`_choose_datapath`), and
    builds the manifest; the input block comes from the options, else our metadata, else
    identity normalisation (mean 0, std 1) for 1 (L) or 3 (RGB) channels."""
    outs = [o.name for o in imp.graph.output]
    if len(outs) != 1:
        raise fail(None, f"needs exactly one output, has {len(outs)}")
    if outs[0] not in imp.acts:
        raise fail(None, f"output {outs[0]!r} is not a quantised tensor (end with a Quant)")
    out = imp.acts[outs[0]]
    if len(out.shape) != 1:
        raise fail(
            None,
            f"output {outs[0]!r} has shape {list(out.shape)}; the logits "
            "must be a vector (add a Flatten)",
        )
    pe, bits = _choose_datapath(imp)
    meta, opts = imp.meta, imp.options
    k = out.shape[0]
    classes = opts.get("classes") or meta.get("classes") or [f"class{i}" for i in range(k)]
    if len(classes) != k:
        raise QonnxImportError(f"{len(classes)} class names for {k} outputs")
    in_act = next(iter(imp.tensors))
    c, h, w = imp.tensors[in_act]["shape"]
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
        "name": opts.get("name") or meta.get("name") or imp.graph.name or "imported",
        "datapath": str(pe),
        "weight_bits": bits,
        "classes": list(classes),
        "input": inp,
        "tensors": imp.tensors,
        "layers": imp.layers,
        "output": out.tensor,
        "provenance": meta.get("provenance")
        or {"tool": "pynq-nbq import", "producer": imp.model.producer_name or "unknown"},
    }
    return ImportResult(manifest, imp.arrays, imp.notes)


def _choose_datapath(imp: Importer) -> tuple[dp.PEKind, int]:
    """Choose svpe/vpe and the weight widths, fill in every weighted layer's arrays."""
    want = imp.options.get("datapath") or imp.meta.get("datapath")
    pe = dp.PEKind.parse(want) if want else None
    po2_ok = all(po2_problem(ints) is None for _, ints, _, _ in imp.weight_layers)
    if pe is None:
        pe = dp.PEKind.SVPE if po2_ok else dp.PEKind.VPE
    layer_bits: dict[str, int] = imp.meta.get("layer_weight_bits", {})
    widths = []
    for layer, ints, requant, _ in imp.weight_layers:
        name = layer["name"]
        if pe is dp.PEKind.SVPE:
            problem = po2_problem(ints)
            if problem:
                raise QonnxImportError(f"layer {name}: {problem} (svpe needs 0 or +-2**k)")
            n = svpe_bits(ints, layer_bits.get(name))
            codes = dp.encode_svpe(ints, n)
            imp.arrays[f"{name}.weights"] = codes
        else:
            n = dp.VPE_WEIGHT_BITS
            if ints.min(initial=0) < dp.VPE_WEIGHT_MIN or ints.max(initial=0) > dp.VPE_WEIGHT_MAX:
                raise QonnxImportError(f"layer {name}: integer weights beyond int16")
            imp.arrays[f"{name}.weights"] = ints.astype(dp.VPE_WEIGHT_DTYPE)
        fields = weighted_fields(pe, n, ints.shape)
        problem = dp.accumulator_problem(fields["fan_in"], dp.max_abs_weight(pe, n))
        if problem:
            raise QonnxImportError(f"layer {name}: {problem}")
        mult, bias, shift = requant(fields["acc_bound"])
        imp.arrays.update({f"{name}.mult": mult, f"{name}.bias": bias, f"{name}.shift": shift})
        layer.update(
            weight_bits=n, acc_bits=fields["acc_bits"], arrays={r: f"{name}.{r}" for r in ROLES}
        )
        widths.append(n)
    if pe is dp.PEKind.VPE:
        return pe, dp.VPE_WEIGHT_BITS
    bits = imp.meta.get("weight_bits") if imp.meta.get("datapath") == "svpe" else None
    return pe, int(bits or max(widths, default=dp.SVPE_MAX_BITS))
