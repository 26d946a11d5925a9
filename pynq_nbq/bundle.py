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
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import datapath as dp

SCHEMA = "pynq-nbq-bundle"
SCHEMA_VERSION = 1
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


class BundleError(ValueError):
    """A bundle failed validation; the message names the file and field."""


@dataclass
class Bundle:
    """A validated bundle: the manifest dict, its arrays and where it came from."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path | None = None

    @property
    def datapath(self) -> str:
        return self.manifest["datapath"]

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

    def layer_arrays(self, layer: dict[str, Any]) -> dict[str, np.ndarray]:
        return {role: self.arrays[name] for role, name in layer.get("arrays", {}).items()}

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


def _is_int(v: Any) -> bool:
    """A JSON integer (``True``/``False`` are not)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _as_tuple(t) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def validate(b: Bundle) -> None:
    """Check every field of ``b``; raise :class:`BundleError` at the first problem."""
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
    if datapath == "svpe":
        if bits not in dp.SVPE_BITS:
            raise _fail("manifest.weight_bits", f"svpe needs n in {dp.SVPE_BITS}, got {bits}")
    elif datapath == "vpe":
        if bits != dp.VPE_WEIGHT_BITS:
            raise _fail("manifest.weight_bits", f"vpe weights are 16-bit, got {bits}")
    else:
        raise _fail("manifest.datapath", f"must be 'svpe' or 'vpe', got {datapath!r}")
    classes = _req(m, "classes", "manifest", list)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise _fail("manifest.classes", "must be a non-empty list of strings")
    _validate_input(_req(m, "input", "manifest", dict))
    tensors = _req(m, "tensors", "manifest", dict)
    for name, t in tensors.items():
        where = f"manifest.tensors[{name!r}]"
        shape = _req(t, "shape", where, list)
        if not shape or not all(_is_int(s) and s > 0 for s in shape):
            raise _fail(where, f"bad shape {shape}")
        frac = _req(t, "frac", where, int)
        if not dp.FRAC_MIN <= frac <= dp.FRAC_MAX:
            raise _fail(where, f"frac {frac} outside [{dp.FRAC_MIN}, {dp.FRAC_MAX}]")
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
    for i, layer in enumerate(layers):
        _validate_layer(b, layer, i, available, used)
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


def _validate_input(inp: dict) -> None:
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
    if inp.get("resize", "stretch") not in ("stretch", "center-crop"):
        raise _fail(where, f"resize must be 'stretch' or 'center-crop', got {inp['resize']!r}")
    for k in ("mean", "std"):
        v = _req(inp, k, where, list)
        if len(v) != inp["channels"] or not all(isinstance(x, (int, float)) for x in v):
            raise _fail(where, f"{k} must list one number per channel")
    if any(s <= 0 for s in inp["std"]):
        raise _fail(where, "std must be positive")


def _validate_layer(b: Bundle, layer: Any, i: int, available: set, used: set) -> None:
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
        _validate_weighted(b, layer, in_shapes[0], out_shape, where, used)


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
        if layer["pool"] not in (0, 2):
            raise _fail(where, f"pool must be 0 or 2, got {layer['pool']}")
        oh, ow = (s[1] + 2 * p - k) // st + 1, (s[2] + 2 * p - k) // st + 1
        if layer["pool"]:
            oh, ow = oh // 2, ow // 2
        return None if oh < 1 or ow < 1 else [None, oh, ow]  # channels checked with weights
    if op == "linear":
        if len(s) != 1:
            raise _fail(where, f"linear input must be [C], got {s}")
        return None
    if op == "maxpool":
        k, st = layer["kernel"], layer["stride"]
        if len(s) != 3:
            raise _fail(where, f"maxpool input must be [C,H,W], got {s}")
        if not (_is_int(k) and k >= 1 and _is_int(st) and st >= 1):
            raise _fail(where, "kernel/stride must be positive integers")
        return [s[0], (s[1] - k) // st + 1, (s[2] - k) // st + 1]
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
) -> None:
    arrs = layer["arrays"]
    if not isinstance(arrs, dict) or sorted(arrs) != sorted(ROLES):
        raise _fail(where, f"arrays must name exactly {list(ROLES)}")
    for role, name in arrs.items():
        if not isinstance(name, str) or name not in b.arrays:
            raise _fail(where, f"array {name!r} ({role}) not in arrays.npz")
        used.add(name)
    w = b.arrays[arrs["weights"]]
    datapath, bits = b.manifest["datapath"], b.manifest["weight_bits"]
    if layer["weight_bits"] != bits and datapath == "vpe":
        raise _fail(where, f"weight_bits {layer['weight_bits']} != 16 in a vpe bundle")
    lbits = layer["weight_bits"]
    if datapath == "svpe":
        if lbits not in dp.SVPE_BITS:
            raise _fail(where, f"weight_bits {lbits} not in {dp.SVPE_BITS}")
        if w.dtype != dp.WEIGHT_CODE_DTYPE:
            raise _fail(where, f"svpe weights must be int8 codes, got {w.dtype}")
        try:
            dp.check_svpe_codes(w, lbits)
        except ValueError as exc:
            raise _fail(where, str(exc)) from exc
    elif w.dtype != np.int16:
        raise _fail(where, f"vpe weights must be int16, got {w.dtype}")
    c_out = out_shape[0]
    if layer["op"] == "conv":
        k, g = layer["kernel"], layer["groups"]
        if not isinstance(g, int) or g < 1 or in_shape[0] % g or c_out % g:
            raise _fail(where, f"groups {g} does not divide the channels")
        want = [c_out, in_shape[0] // g, k, k]
        fan_in = in_shape[0] // g * k * k
    else:
        want = [c_out, in_shape[0]]
        fan_in = in_shape[0]
    if list(w.shape) != want:
        raise _fail(where, f"weights shape {list(w.shape)} != expected {want}")
    for role in ("mult", "bias", "shift"):
        a = b.arrays[arrs[role]]
        if a.dtype != np.int64 or list(a.shape) != [c_out]:
            raise _fail(where, f"{role} must be int64 of shape [{c_out}]")
    mult, shift = b.arrays[arrs["mult"]], b.arrays[arrs["shift"]]
    if mult.min() < dp.REQUANT_MULT_MIN or mult.max() > dp.REQUANT_MULT_MAX:
        raise _fail(where, "requantisation multiplier out of int16 range")
    if shift.min() < 0 or shift.max() > dp.MAX_REQUANT_SHIFT:
        raise _fail(where, f"requantisation shift outside 0..{dp.MAX_REQUANT_SHIFT}")
    max_w = dp.max_abs_weight(datapath, lbits)
    need = dp.accumulator_bits(fan_in, max_w)
    if layer["acc_bits"] != need:
        raise _fail(where, f"acc_bits {layer['acc_bits']} != worst-case bound {need}")
    if need > dp.ACC_BITS:
        raise _fail(
            where, f"possible overflow: worst-case accumulator needs {need} bits > {dp.ACC_BITS}"
        )
    acc_max = fan_in * (1 << (dp.ACT_BITS - 1)) * max_w
    bias = b.arrays[arrs["bias"]]
    worst = acc_max * int(np.abs(mult).max()) + int(np.abs(bias).max()) + (1 << 62)
    if worst >= 1 << (dp.REQUANT_BITS - 1):
        raise _fail(where, "possible overflow: requantisation exceeds 64 bits")
    if not isinstance(layer["weight_exp"], int):
        raise _fail(where, "weight_exp must be an integer")


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
