"""Check every field of a manifest against its arrays and parse it into a :class:`Manifest`.

The rules are ``docs/datapath.md`` section 4 ("Validation"); each refusal is a
:class:`BundleError` whose message names the field at fault.  Op-specific rules
(attributes, input count, output shape, weight shape) come from the op's entry in
:mod:`pynq_nbq.opset`; number rules from :mod:`pynq_nbq.datapath`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import datapath as dp
from . import opset
from .manifest import (
    RESIZE_MODES,
    ROLES,
    SCHEMA,
    SCHEMA_VERSION,
    BundleError,
    InputSpec,
    LayerSpec,
    Manifest,
    TensorSpec,
    weighted_fields,
)


def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's C-order bytes (the manifest's per-array checksum)."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _fail(where: str, msg: str) -> BundleError:
    return BundleError(f"{where}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _req(d: Any, key: str, where: str, types: type | tuple[type, ...]) -> Any:
    if not isinstance(d, dict):
        raise _fail(where, f"must be an object, got {type(d).__name__}")
    if key not in d:
        raise _fail(where, f"missing field {key!r}")
    v = d[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in allowed):
        raise _fail(where, f"field {key!r} has the wrong type ({type(v).__name__})")
    return v


@dataclass
class _Scope:
    """What validation has seen so far: the parsed tensors, the tensors available to the
    next layer, the arrays some layer used."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    pe: dp.PEKind
    tensors: dict[str, TensorSpec]
    available: set[str]
    used: set[str] = field(default_factory=set)


def parse_manifest(m: dict[str, Any], arrays: dict[str, np.ndarray]) -> Manifest:
    """Check every field of manifest ``m`` against ``arrays``, raising
    :class:`BundleError` at the first problem; return the parsed :class:`Manifest`."""
    if m.get("schema") != SCHEMA:
        raise _fail("manifest", f"unknown schema {m.get('schema')!r} (expected {SCHEMA!r})")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise _fail(
            "manifest",
            f"unknown schema_version {m.get('schema_version')!r} "
            f"(this pynq_nbq reads version {SCHEMA_VERSION})",
        )
    try:
        pe = dp.PEKind.parse(_req(m, "datapath", "manifest", str))
    except ValueError as exc:
        raise _fail("manifest.datapath", str(exc)) from None
    bits = _req(m, "weight_bits", "manifest", int)
    problem = dp.weight_bits_problem(pe, bits)
    if problem:
        raise _fail("manifest.weight_bits", problem)
    classes = _req(m, "classes", "manifest", list)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise _fail("manifest.classes", "must be a non-empty list of strings")
    input_spec = _validate_input(_req(m, "input", "manifest", dict))
    tensors = _validate_tensors(_req(m, "tensors", "manifest", dict))
    if input_spec.tensor not in tensors:
        raise _fail("manifest.input.tensor", f"unknown tensor {input_spec.tensor!r}")
    expect = (input_spec.channels, input_spec.height, input_spec.width)
    if tensors[input_spec.tensor].shape != expect:
        raise _fail(
            "manifest.input",
            f"tensor shape {list(tensors[input_spec.tensor].shape)} != {list(expect)}",
        )
    declared = _validate_arrays(_req(m, "arrays", "manifest", dict), arrays)
    scope = _Scope(m, arrays, pe, tensors, {input_spec.tensor})
    layers = _req(m, "layers", "manifest", list)
    if not layers:
        raise _fail("manifest.layers", "no layers")
    parsed = []
    for i, layer in enumerate(layers):
        parsed.append(_validate_layer(scope, layer, i))
        scope.available.add(parsed[-1].output)
    _check_bundle_bits(parsed, pe, bits)
    out = _req(m, "output", "manifest", str)
    if out not in scope.available:
        raise _fail("manifest.output", f"tensor {out!r} is not produced by any layer")
    if tensors[out].shape != (len(classes),):
        raise _fail(
            "manifest.output",
            f"shape {list(tensors[out].shape)} != [{len(classes)}] (one logit per class)",
        )
    provenance = m.get("provenance", {})
    if not isinstance(provenance, dict):
        raise _fail("manifest.provenance", "must be an object")
    unused = sorted(set(declared) - scope.used)
    if unused:
        raise _fail("manifest.arrays", f"arrays no layer uses: {unused}")
    return Manifest(
        name=str(m.get("name", "")),
        pe=pe,
        weight_bits=bits,
        classes=tuple(classes),
        input=input_spec,
        tensors=tensors,
        layers=tuple(parsed),
        output=out,
        provenance=provenance,
    )


def _validate_tensors(tensors: dict[str, Any]) -> dict[str, TensorSpec]:
    specs: dict[str, TensorSpec] = {}
    for name, t in tensors.items():
        where = f"manifest.tensors[{name!r}]"
        if not isinstance(t, dict):
            raise _fail(where, "must be an object")
        shape = _req(t, "shape", where, list)
        if not shape or len(shape) not in (1, 3) or not all(_is_int(s) and s > 0 for s in shape):
            raise _fail(where, f"bad shape {shape} (must be [C] or [C, H, W], positive)")
        frac = _req(t, "frac", where, int)
        if not dp.FRAC_MIN <= frac <= dp.FRAC_MAX:
            raise _fail(where, f"frac {frac} outside [{dp.FRAC_MIN}, {dp.FRAC_MAX}]")
        specs[name] = TensorSpec(name, tuple(shape), frac)
    return specs


def _validate_arrays(declared: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    extra = sorted(set(arrays) - set(declared))
    missing = sorted(set(declared) - set(arrays))
    if missing:
        raise _fail("arrays.npz", f"missing arrays {missing}")
    if extra:
        raise _fail("arrays.npz", f"arrays not in the manifest {extra}")
    for name, spec in declared.items():
        a = arrays[name]
        where = f"manifest.arrays[{name!r}]"
        if not isinstance(spec, dict):
            raise _fail(where, f"must be an object, got {type(spec).__name__}")
        if str(a.dtype) != spec.get("dtype"):
            raise _fail(where, f"dtype {a.dtype} != manifest {spec.get('dtype')}")
        if list(a.shape) != spec.get("shape"):
            raise _fail(where, f"shape {list(a.shape)} != manifest {spec.get('shape')}")
        if array_sha256(a) != spec.get("sha256"):
            raise _fail(where, "checksum mismatch")
    return declared


def _validate_input(inp: dict[str, Any]) -> InputSpec:
    where = "manifest.input"
    _req(inp, "tensor", where, str)
    for k in ("channels", "height", "width"):
        if _req(inp, k, where, int) <= 0:
            raise _fail(where, f"{k} must be positive")
    mode = _req(inp, "mode", where, str)
    if mode not in ("L", "RGB"):
        raise _fail(where, f"mode must be 'L' or 'RGB', got {mode!r}")
    if (mode == "L") != (inp["channels"] == 1):
        raise _fail(where, f"mode {mode!r} does not match {inp['channels']} channels")
    if inp.get("resize", "stretch") not in RESIZE_MODES:
        raise _fail(where, f"resize must be one of {RESIZE_MODES}, got {inp['resize']!r}")
    if not isinstance(inp.get("invert", False), bool):
        raise _fail(where, "invert must be true or false")
    for k in ("mean", "std"):
        v = _req(inp, k, where, list)
        if len(v) != inp["channels"] or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
        ):
            raise _fail(where, f"{k} must list one finite number per channel")
    problem = dp.input_norm_problem(inp["mean"], inp["std"])
    if problem:
        raise _fail(where, problem)
    return InputSpec(
        tensor=inp["tensor"],
        channels=inp["channels"],
        height=inp["height"],
        width=inp["width"],
        mode=mode,
        mean=tuple(float(x) for x in inp["mean"]),
        std=tuple(float(x) for x in inp["std"]),
        resize=inp.get("resize", "stretch"),
        invert=bool(inp.get("invert", False)),
    )


def _validate_layer(scope: _Scope, layer: Any, i: int) -> LayerSpec:
    where = f"manifest.layers[{i}]"
    if not isinstance(layer, dict):
        raise _fail(where, "must be an object")
    name = _req(layer, "name", where, str)
    where = f"manifest.layers[{i}] ({name})"
    try:
        spec = opset.get(_req(layer, "op", where, str))
        attrs = spec.parse_attrs(layer)
    except opset.OpError as exc:
        raise _fail(where, str(exc)) from None
    inputs, output = _validate_io(scope, layer, spec, where)
    in_shapes = [scope.tensors[t].shape for t in inputs]
    out_shape = scope.tensors[output].shape
    _check_stated_shape(layer, "in_shape", in_shapes[0], inputs[0], where)
    _check_stated_shape(layer, "out_shape", out_shape, output, where)
    try:
        expect = spec.shape(attrs, in_shapes)
    except opset.OpError as exc:
        raise _fail(where, str(exc)) from None
    if len(expect) != len(out_shape) or any(
        e is not None and e != o for e, o in zip(expect, out_shape)
    ):
        shown = ["?" if e is None else e for e in expect]
        raise _fail(where, f"output shape {list(out_shape)} != expected {shown}")
    in_fracs = tuple(scope.tensors[t].frac for t in inputs)
    out_frac = scope.tensors[output].frac
    if spec.keeps_format and in_fracs[0] != out_frac:
        raise _fail(
            where,
            f"{spec.name} cannot change the fixed-point format (frac {in_fracs[0]} -> {out_frac})",
        )
    known = {k: v for k, v in attrs.items() if k in _LAYER_FIELDS}
    params = tuple((k, v) for k, v in attrs.items() if k not in _LAYER_FIELDS)
    if spec.weighted:
        known.update(_validate_weighted(scope, layer, spec, attrs, in_shapes[0], where))
    return LayerSpec(
        index=i,
        name=name,
        op=spec.name,
        inputs=tuple(inputs),
        output=output,
        in_shapes=tuple(in_shapes),
        out_shape=out_shape,
        in_fracs=in_fracs,
        out_frac=out_frac,
        params=params,
        **known,
    )


#: op attributes that are :class:`LayerSpec` fields (the rest go to ``params``)
_LAYER_FIELDS = ("relu", "kernel", "stride", "padding", "groups", "pool")


def _validate_io(
    scope: _Scope, layer: dict[str, Any], spec: opset.OpSpec, where: str
) -> tuple[list[str], str]:
    inputs = _req(layer, "inputs", where, list)
    for t in inputs:
        if not isinstance(t, str):
            raise _fail(where, f"inputs must be tensor names, got {t!r:.60}")
        if t not in scope.available:
            raise _fail(where, f"input {t!r} is not available at this point")
    if spec.inputs is not None and len(inputs) != spec.inputs:
        raise _fail(where, f"op {spec.name!r} takes {spec.inputs} input(s), got {len(inputs)}")
    if spec.inputs is None and len(inputs) < 2:
        raise _fail(where, f"op {spec.name!r} needs at least two inputs")
    output = _req(layer, "output", where, str)
    if output not in scope.tensors:
        raise _fail(where, f"output tensor {output!r} not in manifest.tensors")
    if output in scope.available:
        raise _fail(where, f"output tensor {output!r} is written twice")
    return inputs, output


def _check_stated_shape(
    layer: dict[str, Any], key: str, actual: tuple[int, ...], tensor: str, where: str
) -> None:
    """A layer's ``in_shape``/``out_shape`` must equal the shape of the tensor it names."""
    stated = _req(layer, key, where, list)
    if tuple(stated) != actual or not all(_is_int(s) for s in stated):
        raise _fail(where, f"{key} {stated} != shape {list(actual)} of tensor {tensor!r}")


def _validate_weighted(
    scope: _Scope,
    layer: dict[str, Any],
    spec: opset.OpSpec,
    attrs: dict[str, Any],
    in_shape: tuple[int, ...],
    where: str,
) -> dict[str, Any]:
    """Check a conv/linear layer's weights and requantisation; return its typed fields."""
    for k in opset.WEIGHT_FIELDS:
        if k not in layer:
            raise _fail(where, f"missing field {k!r}")
    arrs = layer["arrays"]
    if not isinstance(arrs, dict) or sorted(arrs) != sorted(ROLES):
        raise _fail(where, f"arrays must name exactly {list(ROLES)}")
    for role, name in arrs.items():
        if not isinstance(name, str) or name not in scope.arrays:
            raise _fail(where, f"array {name!r} ({role}) not in arrays.npz")
        scope.used.add(name)
    w = scope.arrays[arrs["weights"]]
    pe, lbits = scope.pe, layer["weight_bits"]
    problem = dp.weight_bits_problem(pe, lbits) if _is_int(lbits) else "must be an integer"
    if problem:
        raise _fail(where, f"weight_bits: {problem}")
    _check_weight_codes(pe, lbits, w, where)
    c_out = scope.tensors[layer["output"]].shape[0]
    assert spec.weight_shape is not None, f"weighted op {spec.name} has no weight_shape"
    try:
        want = spec.weight_shape(attrs, in_shape, c_out)
    except opset.OpError as exc:
        raise _fail(where, str(exc)) from None
    if list(w.shape) != want:
        raise _fail(where, f"weights shape {list(w.shape)} != expected {want}")
    for role in ("mult", "bias", "shift"):
        a = scope.arrays[arrs[role]]
        if a.dtype != np.int64 or list(a.shape) != [c_out]:
            raise _fail(where, f"{role} must be int64 of shape [{c_out}]")
    derived = weighted_fields(pe, lbits, tuple(want))
    if layer["acc_bits"] != derived["acc_bits"]:
        raise _fail(
            where, f"acc_bits {layer['acc_bits']} != worst-case bound {derived['acc_bits']}"
        )
    overflow = dp.accumulator_problem(derived["fan_in"], dp.max_abs_weight(pe, lbits))
    if overflow:
        raise _fail(where, overflow)
    mult, bias, shift = (scope.arrays[arrs[r]] for r in ("mult", "bias", "shift"))
    problems = dp.requant_problems(mult, bias, shift, derived["acc_bound"])
    problems += filter(None, [dp.bias_problem(scope.arrays[arrs["bias"]])])
    if problems:
        raise _fail(where, "; ".join(problems))
    if not _is_int(layer["weight_exp"]):
        raise _fail(where, "weight_exp must be an integer")
    return {
        **derived,
        "weight_bits": lbits,
        "weight_exp": layer["weight_exp"],
        "arrays": tuple((r, arrs[r]) for r in ROLES),
    }


def _check_weight_codes(pe: dp.PEKind, bits: int, w: np.ndarray, where: str) -> None:
    if pe is dp.PEKind.SVPE:
        if w.dtype != dp.WEIGHT_CODE_DTYPE:
            raise _fail(where, f"svpe weights must be int8 codes, got {w.dtype}")
        try:
            dp.check_svpe_codes(w, bits)
        except ValueError as exc:
            raise _fail(where, str(exc)) from exc
    elif w.dtype != dp.VPE_WEIGHT_DTYPE:
        raise _fail(where, f"vpe weights must be int16, got {w.dtype}")


def _check_bundle_bits(layers: list[LayerSpec], pe: dp.PEKind, bits: int) -> None:
    """The bundle's ``weight_bits`` is its widest layer's (``docs/datapath.md`` section 4):
    no layer is wider, and some layer has exactly that width."""
    widths = [(layer.weight_bits, layer.name) for layer in layers if layer.weight_bits is not None]
    for lbits, name in widths:
        if lbits > bits:
            raise _fail(
                "manifest.weight_bits",
                f"layer {name!r} has weight_bits {lbits}, wider than the bundle's {bits} "
                f"(the bundle's weight_bits is its widest layer's)",
            )
    if widths and max(w for w, _ in widths) != bits:
        raise _fail(
            "manifest.weight_bits",
            f"{bits} but the widest layer has {max(w for w, _ in widths)} "
            f"(the bundle's weight_bits is its widest layer's)",
        )
