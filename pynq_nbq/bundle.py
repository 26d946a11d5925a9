"""The model bundle (contract 1): read, validate and write, without pickle.

A bundle is a directory with ``manifest.json`` and ``arrays.npz``; the schema is in
``docs/datapath.md`` section 4.  :func:`load_bundle` checks everything and raises
:class:`BundleError` naming the field at fault; a loaded :class:`Bundle` is safe to
run (checksums match, codes in range, accumulators provably within 48 bits).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import datapath as dp
from .errors import NbqError

#: the input block's ``resize`` values (``preprocess.preprocess`` implements them)
RESIZE_MODES = ("stretch", "center-crop")
SCHEMA = "pynq-nbq-bundle"
#: 2: acc_bits holds +V as well as -V (one bit more when V is a power of two), and the
#: input is quantised from 8-bit pixels exactly (datapath.pixel_table)
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"

#: ops and the attributes each one needs (beyond name/op/inputs/output/in_shape/out_shape)
OPS: dict[str, tuple[str, ...]] = {
    "conv": (
        "kernel",
        "stride",
        "padding",
        "groups",
        "relu",
        "pool",
        "weight_bits",
        "weight_exp",
        "acc_bits",
        "arrays",
    ),
    "linear": ("relu", "weight_bits", "weight_exp", "acc_bits", "arrays"),
    "maxpool": ("kernel", "stride"),
    "gap": (),
    "add": ("relu",),
    "concat": (),
    "flatten": (),
}
WEIGHTED = ("conv", "linear")
ROLES = ("weights", "mult", "bias", "shift")


@dataclass(frozen=True)
class TensorSpec:
    """One activation tensor: ``shape`` [C, H, W] or [C], ``frac`` fractional bits."""

    name: str
    shape: tuple[int, ...]
    frac: int


@dataclass(frozen=True)
class InputSpec:
    """The bundle's ``input`` block: how an image becomes the input tensor.

    ``mean``/``std`` per channel on 0..1 pixels; ``resize`` "stretch" or
    "center-crop"; ``invert`` flips 8-bit pixels (p -> 255 - p)."""

    tensor: str
    channels: int
    height: int
    width: int
    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "stretch"
    invert: bool = False


@dataclass(frozen=True)
class LayerSpec:
    """One validated layer of a bundle, parsed once (``docs/datapath.md`` section 4).

    Shapes are [C, H, W] or [C] tuples; ``in_fracs``/``out_frac`` the tensors'
    formats.  Conv/linear layers also carry ``weight_bits``, ``weight_exp``,
    ``fan_in`` (inputs per output), ``acc_bound`` (largest |accumulator|, V) and
    ``acc_bits`` (its signed width), and ``arrays`` (role -> array name, as pairs).
    A linear layer has kernel 1, stride 1, padding 0, groups 1; ``pool`` is 0 or 2
    (a fused 2x2/2 max-pool).  ``kernel``/``stride`` of a maxpool are its window.
    """

    index: int
    name: str
    op: str
    inputs: tuple[str, ...]
    output: str
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    in_fracs: tuple[int, ...]
    out_frac: int
    relu: bool = False
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    pool: int = 0
    weight_bits: int | None = None
    weight_exp: int | None = None
    fan_in: int | None = None
    acc_bound: int | None = None
    acc_bits: int | None = None
    arrays: tuple[tuple[str, str], ...] = ()

    @property
    def weighted(self) -> bool:
        """True for conv and linear (layers with weights and requantisation)."""
        return self.op in WEIGHTED

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of the first (for most ops the only) input."""
        return self.in_shapes[0]

    @property
    def on_conv_engine(self) -> bool:
        """True for a conv the hardware conv engine runs (``datapath.conv_engine_takes``)."""
        return self.op == "conv" and dp.conv_engine_takes(
            self.kernel, self.stride, self.padding, self.groups
        )

    def array_name(self, role: str) -> str:
        """The array name of ``role`` (weights, mult, bias, shift)."""
        return dict(self.arrays)[role]


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest, validated and parsed into frozen descriptions."""

    name: str
    pe: dp.PEKind
    weight_bits: int
    classes: tuple[str, ...]
    input: InputSpec
    tensors: dict[str, TensorSpec]
    layers: tuple[LayerSpec, ...]
    output: str

    @property
    def input_frac(self) -> int:
        return self.tensors[self.input.tensor].frac

    @property
    def output_frac(self) -> int:
        return self.tensors[self.output].frac


def weighted_fields(
    pe: dp.PEKind | str, weight_bits: int, weight_shape: tuple[int, ...]
) -> dict[str, int]:
    """``fan_in``, ``acc_bound`` and ``acc_bits`` of a conv (C_out, C_in/g, k, k) or linear
    (C_out, C_in) weight array: what the manifest's ``acc_bits`` must say."""
    fan_in = int(np.prod(weight_shape[1:]))
    max_w = dp.max_abs_weight(pe, weight_bits)
    return {
        "fan_in": fan_in,
        "acc_bound": dp.accumulator_bound(fan_in, max_w),
        "acc_bits": dp.accumulator_bits(fan_in, max_w),
    }


class BundleError(NbqError):
    """A bundle failed validation; the message names the file and field."""


@dataclass
class Bundle:
    """A validated bundle: the manifest dict, its arrays, where it came from, and
    ``spec``, the manifest parsed into frozen descriptions (set by :func:`validate`)."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path | None = None
    spec: Manifest | None = field(default=None, repr=False)

    @property
    def datapath(self) -> str:
        return self.manifest["datapath"]

    @property
    def pe(self) -> dp.PEKind:
        return dp.PEKind(self.manifest["datapath"])

    @property
    def weight_bits(self) -> int:
        return int(self.manifest["weight_bits"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.manifest["layers"]

    @property
    def tensors(self) -> dict[str, dict[str, Any]]:
        return self.manifest["tensors"]

    def layer_arrays(self, layer: dict[str, Any] | LayerSpec) -> dict[str, np.ndarray]:
        """role -> array of a conv/linear layer (a manifest dict or a LayerSpec)."""
        pairs = layer.arrays if isinstance(layer, LayerSpec) else layer.get("arrays", {}).items()
        return {role: self.arrays[name] for role, name in pairs}

    @property
    def sha256(self) -> str:
        """Checksum of the arrays file (identifies the bundle's numbers)."""
        return self.manifest["arrays_sha256"]


def array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _fail(where: str, msg: str) -> BundleError:
    return BundleError(f"{where}: {msg}")


# --- reading ----------------------------------------------------------------------------
def load_bundle(path: str | os.PathLike) -> Bundle:
    """Load and validate the bundle directory at ``path``."""
    root = Path(path)
    mpath, apath = root / MANIFEST, root / ARRAYS
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    if not mpath.exists():
        raise BundleError(f"{root}: missing {MANIFEST}")
    if not apath.exists():
        raise BundleError(f"{root}: missing {ARRAYS}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: bad JSON ({exc})") from exc
    except RecursionError:
        raise BundleError(f"{mpath}: bad JSON (nested too deeply)") from None
    raw = apath.read_bytes()
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: the manifest must be a JSON object")
    digest = hashlib.sha256(raw).hexdigest()
    if manifest.get("arrays_sha256") != digest:
        raise BundleError(
            f"{apath}: checksum mismatch (manifest arrays_sha256 "
            f"{manifest.get('arrays_sha256')!r}, file {digest})"
        )
    arrays = _read_npz(raw, apath)
    bundle = Bundle(manifest, arrays, root)
    validate(bundle)
    return bundle


def _read_npz(raw: bytes, where: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{where}: unreadable arrays file ({exc})") from exc


def _req(d: Any, key: str, where: str, types) -> Any:
    if not isinstance(d, dict):
        raise _fail(where, f"must be an object, got {type(d).__name__}")
    if key not in d:
        raise _fail(where, f"missing field {key!r}")
    v = d[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in _as_tuple(types)):
        raise _fail(where, f"field {key!r} has the wrong type ({type(v).__name__})")
    return v


def _as_tuple(t) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def validate(b: Bundle) -> Manifest:
    """Check every field of ``b``, raising :class:`BundleError` at the first problem, and
    return the parsed :class:`Manifest` (also stored as ``b.spec``)."""
    m = b.manifest
    if m.get("schema") != SCHEMA:
        raise _fail("manifest", f"unknown schema {m.get('schema')!r} (expected {SCHEMA!r})")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise _fail(
            "manifest",
            f"unknown schema_version {m.get('schema_version')!r} "
            f"(this pynq_nbq reads version {SCHEMA_VERSION})",
        )
    datapath = _req(m, "datapath", "manifest", str)
    bits = _req(m, "weight_bits", "manifest", int)
    try:
        pe = dp.PEKind.parse(datapath)
    except ValueError as exc:
        raise _fail("manifest.datapath", str(exc)) from None
    problem = dp.weight_bits_problem(pe, bits)
    if problem:
        raise _fail("manifest.weight_bits", problem)
    classes = _req(m, "classes", "manifest", list)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise _fail("manifest.classes", "must be a non-empty list of strings")
    input_spec = _validate_input(_req(m, "input", "manifest", dict))
    tensors = _req(m, "tensors", "manifest", dict)
    specs: dict[str, TensorSpec] = {}
    for name, t in tensors.items():
        where = f"manifest.tensors[{name!r}]"
        if not isinstance(t, dict):
            raise _fail(where, "must be an object")
        shape = _req(t, "shape", where, list)
        if not shape or not all(_is_int(s) and s > 0 for s in shape):
            raise _fail(where, f"bad shape {shape}")
        frac = _req(t, "frac", where, int)
        if not dp.FRAC_MIN <= frac <= dp.FRAC_MAX:
            raise _fail(where, f"frac {frac} outside [{dp.FRAC_MIN}, {dp.FRAC_MAX}]")
        specs[name] = TensorSpec(name, tuple(shape), frac)
    inp = m["input"]["tensor"]
    if inp not in tensors:
        raise _fail("manifest.input.tensor", f"unknown tensor {inp!r}")
    expect = [m["input"]["channels"], m["input"]["height"], m["input"]["width"]]
    if tensors[inp]["shape"] != expect:
        raise _fail("manifest.input", f"tensor shape {tensors[inp]['shape']} != {expect}")
    declared = _req(m, "arrays", "manifest", dict)
    extra = sorted(set(b.arrays) - set(declared))
    missing = sorted(set(declared) - set(b.arrays))
    if missing:
        raise _fail("arrays.npz", f"missing arrays {missing}")
    if extra:
        raise _fail("arrays.npz", f"arrays not in the manifest {extra}")
    for name, spec in declared.items():
        a = b.arrays[name]
        where = f"manifest.arrays[{name!r}]"
        if not isinstance(spec, dict):
            raise _fail(where, f"must be an object, got {type(spec).__name__}")
        if str(a.dtype) != spec.get("dtype"):
            raise _fail(where, f"dtype {a.dtype} != manifest {spec.get('dtype')}")
        if list(a.shape) != spec.get("shape"):
            raise _fail(where, f"shape {list(a.shape)} != manifest {spec.get('shape')}")
        if array_sha256(a) != spec.get("sha256"):
            raise _fail(where, "checksum mismatch")
    available = {inp}
    used: set[str] = set()
    layers = _req(m, "layers", "manifest", list)
    if not layers:
        raise _fail("manifest.layers", "no layers")
    parsed = []
    for i, layer in enumerate(layers):
        parsed.append(_validate_layer(b, layer, i, available, used))
        available.add(layer["output"])
    out = _req(m, "output", "manifest", str)
    if out not in available:
        raise _fail("manifest.output", f"tensor {out!r} is not produced by any layer")
    if tensors[out]["shape"] != [len(classes)]:
        raise _fail(
            "manifest.output",
            f"shape {tensors[out]['shape']} != [{len(classes)}] (one logit per class)",
        )
    unused = sorted(set(declared) - used)
    if unused:
        raise _fail("manifest.arrays", f"arrays no layer uses: {unused}")
    b.spec = Manifest(
        name=str(m.get("name", "")),
        pe=pe,
        weight_bits=bits,
        classes=tuple(classes),
        input=input_spec,
        tensors=specs,
        layers=tuple(parsed),
        output=out,
    )
    return b.spec


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_input(inp: dict) -> InputSpec:
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
    if any(s <= 0 for s in inp["std"]):
        raise _fail(where, "std must be positive")
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


def _validate_layer(b: Bundle, layer: Any, i: int, available: set, used: set) -> LayerSpec:
    where = f"manifest.layers[{i}]"
    if not isinstance(layer, dict):
        raise _fail(where, "must be an object")
    name = _req(layer, "name", where, str)
    where = f"manifest.layers[{i}] ({name})"
    op = _req(layer, "op", where, str)
    if op not in OPS:
        raise _fail(where, f"unknown op {op!r} (known: {sorted(OPS)})")
    inputs = _req(layer, "inputs", where, list)
    for t in inputs:
        if not isinstance(t, str):
            raise _fail(where, f"inputs must be tensor names, got {t!r:.60}")
        if t not in available:
            raise _fail(where, f"input {t!r} is not available at this point")
    want_inputs = {"add": None, "concat": None}.get(op, 1)
    if want_inputs == 1 and len(inputs) != 1:
        raise _fail(where, f"op {op!r} takes one input, got {len(inputs)}")
    if want_inputs is None and len(inputs) < 2:
        raise _fail(where, f"op {op!r} needs at least two inputs")
    output = _req(layer, "output", where, str)
    tensors = b.manifest["tensors"]
    if output not in tensors:
        raise _fail(where, f"output tensor {output!r} not in manifest.tensors")
    if output in available:
        raise _fail(where, f"output tensor {output!r} is written twice")
    for k in OPS[op]:
        if k not in layer:
            raise _fail(where, f"missing field {k!r}")
    attrs: dict[str, Any] = {}
    for k in ("relu", "kernel", "stride", "padding", "groups", "pool"):
        if k in OPS[op]:
            v = layer[k]
            if k == "relu" and not isinstance(v, bool):
                raise _fail(where, "relu must be true or false")
            if k != "relu" and not _is_int(v):
                raise _fail(where, f"{k} must be an integer")
            attrs[k] = v
    if op == "maxpool" and (attrs["kernel"] < 1 or attrs["stride"] < 1):
        raise _fail(where, "maxpool kernel and stride must be positive")
    in_shapes = [tensors[t]["shape"] for t in inputs]
    out_shape = tensors[output]["shape"]
    expect = _expected_shape(op, layer, in_shapes, where)
    if expect is not None and (
        len(expect) != len(out_shape)
        or any(e is not None and e != o for e, o in zip(expect, out_shape))
    ):
        raise _fail(where, f"output shape {out_shape} != expected {expect}")
    if op in ("maxpool", "flatten") and tensors[inputs[0]]["frac"] != tensors[output]["frac"]:
        raise _fail(
            where,
            f"{op} cannot change the fixed-point format (frac "
            f"{tensors[inputs[0]]['frac']} -> {tensors[output]['frac']})",
        )
    if op in WEIGHTED:
        attrs.update(_validate_weighted(b, layer, in_shapes[0], out_shape, where, used))
    return LayerSpec(
        index=i,
        name=name,
        op=op,
        inputs=tuple(inputs),
        output=output,
        in_shapes=tuple(tuple(s) for s in in_shapes),
        out_shape=tuple(out_shape),
        in_fracs=tuple(tensors[t]["frac"] for t in inputs),
        out_frac=tensors[output]["frac"],
        **attrs,
    )


def _expected_shape(op: str, layer: dict, in_shapes: list, where: str) -> list | None:
    s = in_shapes[0]
    if op == "conv":
        if len(s) != 3:
            raise _fail(where, f"conv input must be [C,H,W], got {s}")
        k, st, p = layer["kernel"], layer["stride"], layer["padding"]
        if not (
            isinstance(k, int)
            and k >= 1
            and isinstance(st, int)
            and st >= 1
            and isinstance(p, int)
            and p >= 0
        ):
            raise _fail(where, "kernel/stride/padding must be positive integers")
        if layer["pool"] not in dp.POOL_CHOICES:
            raise _fail(where, f"pool must be one of {dp.POOL_CHOICES}, got {layer['pool']}")
        oh, ow = dp.conv_output_hw(s[1], s[2], k, st, p, layer["pool"])
        return None if oh < 1 or ow < 1 else [None, oh, ow]  # channels checked with weights
    if op == "linear":
        if len(s) != 1:
            raise _fail(where, f"linear input must be [C], got {s}")
        return None
    if op == "maxpool":
        if len(s) != 3:
            raise _fail(where, f"maxpool input must be [C,H,W], got {s}")
        k, st = layer["kernel"], layer["stride"]
        if not (_is_int(k) and k >= 1 and _is_int(st) and st >= 1):
            raise _fail(where, "kernel/stride must be positive integers")
        return [s[0], *dp.conv_output_hw(s[1], s[2], k, st)]
    if op == "gap":
        return [s[0]]
    if op == "flatten":
        return [int(np.prod(s))]
    if op == "add":
        if any(x != s for x in in_shapes):
            raise _fail(where, f"add inputs differ in shape: {in_shapes}")
        return list(s)
    if op == "concat":
        if any(x[1:] != s[1:] for x in in_shapes):
            raise _fail(where, f"concat inputs differ in H, W: {in_shapes}")
        return [sum(x[0] for x in in_shapes)] + list(s[1:])
    return None


def _validate_weighted(
    b: Bundle, layer: dict, in_shape: list, out_shape: list, where: str, used: set
) -> dict[str, Any]:
    """Check a conv/linear layer's weights and requantisation; return its typed fields."""
    arrs = layer["arrays"]
    if not isinstance(arrs, dict) or sorted(arrs) != sorted(ROLES):
        raise _fail(where, f"arrays must name exactly {list(ROLES)}")
    for role, name in arrs.items():
        if not isinstance(name, str) or name not in b.arrays:
            raise _fail(where, f"array {name!r} ({role}) not in arrays.npz")
        used.add(name)
    w = b.arrays[arrs["weights"]]
    pe, bits = dp.PEKind(b.manifest["datapath"]), b.manifest["weight_bits"]
    lbits = layer["weight_bits"]
    problem = dp.weight_bits_problem(pe, lbits) if _is_int(lbits) else "must be an integer"
    if problem:
        raise _fail(where, f"weight_bits: {problem}")
    if pe is dp.PEKind.VPE and lbits != bits:
        raise _fail(where, f"weight_bits {lbits} != {bits} in a vpe bundle")
    if pe is dp.PEKind.SVPE:
        if w.dtype != dp.WEIGHT_CODE_DTYPE:
            raise _fail(where, f"svpe weights must be int8 codes, got {w.dtype}")
        try:
            dp.check_svpe_codes(w, lbits)
        except ValueError as exc:
            raise _fail(where, str(exc)) from exc
    elif w.dtype != dp.VPE_WEIGHT_DTYPE:
        raise _fail(where, f"vpe weights must be int16, got {w.dtype}")
    c_out = out_shape[0]
    if layer["op"] == "conv":
        k, g = layer["kernel"], layer["groups"]
        if not _is_int(g) or g < 1 or in_shape[0] % g or c_out % g:
            raise _fail(where, f"groups {g} does not divide the channels")
        want = [c_out, in_shape[0] // g, k, k]
    else:
        want = [c_out, in_shape[0]]
    if list(w.shape) != want:
        raise _fail(where, f"weights shape {list(w.shape)} != expected {want}")
    for role in ("mult", "bias", "shift"):
        a = b.arrays[arrs[role]]
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
    problems = dp.requant_problems(
        *(b.arrays[arrs[r]] for r in ("mult", "bias", "shift")), derived["acc_bound"]
    )
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


# --- writing ----------------------------------------------------------------------------
def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    """An .npz archive of ``arrays`` whose bytes depend only on the arrays (sorted
    names, fixed timestamps), so re-exports reproduce checksums."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = method
            member = io.BytesIO()
            np.lib.format.write_array(
                member, np.ascontiguousarray(arrays[name]), allow_pickle=False
            )
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def save_bundle(
    manifest: dict[str, Any], arrays: dict[str, np.ndarray], path: str | os.PathLike
) -> Bundle:
    """Write a bundle atomically (temp dir + rename) and return it, validated.

    Fills in ``schema``, ``schema_version``, ``arrays`` and ``arrays_sha256``.
    An existing bundle at ``path`` is replaced only once the new one is complete.
    """
    root = Path(path)
    m = dict(manifest)
    m["schema"], m["schema_version"] = SCHEMA, SCHEMA_VERSION
    m["arrays"] = {
        k: {"dtype": str(v.dtype), "shape": list(v.shape), "sha256": array_sha256(v)}
        for k, v in sorted(arrays.items())
    }
    raw = npz_bytes(arrays)
    m["arrays_sha256"] = hashlib.sha256(raw).hexdigest()
    bundle = Bundle(m, {k: np.asarray(v) for k, v in arrays.items()}, root)
    validate(bundle)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / ARRAYS).write_bytes(raw)
        (tmp / MANIFEST).write_text(json.dumps(m, indent=1) + "\n", encoding="utf-8")
        if root.exists():
            old = root.with_name(f".{root.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old)
        else:
            os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return bundle
