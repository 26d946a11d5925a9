"""The model bundle (contract 1): read, validate and write, without pickle.

A bundle is a directory with ``manifest.json`` and ``arrays.npz``; the schema is in
``docs/datapath.md`` section 4.  :func:`load_bundle` checks everything and raises
:class:`BundleError` naming the field at fault; a loaded :class:`Bundle` is safe to
run (checksums match, codes in range, accumulators provably within 48 bits).  Its
``spec`` (a frozen :class:`Manifest`, :mod:`pynq_nbq.manifest`) is the one view of
the bundle the rest of the package reads; the rules are :mod:`pynq_nbq.validation`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import datapath as dp
from . import safe_files
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
from .validation import array_sha256, parse_manifest

__all__ = [
    "ARRAYS",
    "MANIFEST",
    "RESIZE_MODES",
    "ROLES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleError",
    "InputSpec",
    "LayerSpec",
    "Manifest",
    "TensorSpec",
    "array_sha256",
    "load_bundle",
    "npz_bytes",
    "save_bundle",
    "validate",
    "weighted_fields",
]

MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"


@dataclass
class Bundle:
    """A validated bundle: the manifest dict, its arrays, where it came from, and
    ``spec``, the manifest parsed into frozen descriptions (set by :func:`validate`)."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path | None = None
    spec: Manifest | None = field(default=None, repr=False)

    @property
    def view(self) -> Manifest:
        """The typed manifest (``spec``); BundleError if the bundle was never validated."""
        if self.spec is None:
            raise BundleError("the bundle has not been validated (use bundle.load_bundle)")
        return self.spec

    @property
    def datapath(self) -> str:
        """The PE kind as its manifest string (``"svpe"``/``"vpe"``)."""
        return self.view.pe.value

    @property
    def pe(self) -> dp.PEKind:
        return self.view.pe

    @property
    def weight_bits(self) -> int:
        """The bundle's weight width: its widest layer's (``Manifest.weight_bits``)."""
        return self.view.weight_bits

    @property
    def classes(self) -> list[str]:
        return list(self.view.classes)

    @property
    def layers(self) -> list[dict[str, Any]]:
        """The raw manifest layers (for writers and tools; readers use ``spec.layers``)."""
        return self.manifest["layers"]

    @property
    def tensors(self) -> dict[str, dict[str, Any]]:
        """The raw manifest tensors (for writers and tools; readers use ``spec.tensors``)."""
        return self.manifest["tensors"]

    def layer_arrays(self, layer: dict[str, Any] | LayerSpec) -> dict[str, np.ndarray]:
        """role -> array of a conv/linear layer (a manifest dict or a LayerSpec)."""
        pairs = layer.arrays if isinstance(layer, LayerSpec) else layer.get("arrays", {}).items()
        return {role: self.arrays[name] for role, name in pairs}

    @property
    def sha256(self) -> str:
        """Checksum of the arrays file (identifies the bundle's numbers)."""
        return self.manifest["arrays_sha256"]


# --- reading ----------------------------------------------------------------------------
def load_bundle(
    path: str | os.PathLike,
    within: str | os.PathLike | None = None,
    within_name: str = "the bundle directory",
) -> Bundle:
    """Load and validate the bundle directory at ``path``.

    Its files are read only as bounded regular files inside ``within`` (default: the
    bundle directory itself; ``nbq serve`` passes its models directory), named
    ``within_name`` in errors, and the arrays' declared sizes are checked before anything
    is decompressed (:mod:`pynq_nbq.safe_files`).
    """
    root = Path(path)
    mpath, apath = root / MANIFEST, root / ARRAYS
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    if not mpath.exists():
        raise BundleError(f"{root}: missing {MANIFEST}")
    if not apath.exists():
        raise BundleError(f"{root}: missing {ARRAYS}")
    base = Path(within) if within is not None else root
    rel = Path()
    if within is not None:
        try:
            rel = root.resolve().relative_to(base.resolve())
        except ValueError:
            raise BundleError(f"{root}: not inside {within_name}") from None
    try:
        text = safe_files.read_regular(
            base, rel / MANIFEST, safe_files.MAX_MANIFEST_BYTES, within_name
        )
        raw = safe_files.read_regular(
            base, rel / ARRAYS, safe_files.MAX_ARRAYS_FILE_BYTES, within_name
        )
    except safe_files.UnsafeFile as exc:
        raise BundleError(f"{root}: {exc}") from None
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: bad JSON ({exc})") from exc
    except RecursionError:
        raise BundleError(f"{mpath}: bad JSON (nested too deeply)") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: the manifest must be a JSON object")
    try:
        safe_files.check_npz(raw, str(rel / ARRAYS), headers=False)  # a zip bomb, unopened
    except safe_files.UnsafeFile as exc:
        raise BundleError(f"{root}: {exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if manifest.get("arrays_sha256") != digest:
        raise BundleError(
            f"{apath}: checksum mismatch (manifest arrays_sha256 "
            f"{manifest.get('arrays_sha256')!r}, file {digest})"
        )
    try:
        safe_files.check_npz(raw, str(rel / ARRAYS))  # .npy headers vs members, before np.load
    except safe_files.UnsafeFile as exc:
        raise BundleError(f"{root}: {exc}") from None
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


def validate(b: Bundle) -> Manifest:
    """Check every field of ``b``, raising :class:`BundleError` at the first problem, and
    return the parsed :class:`Manifest` (also stored as ``b.spec``)."""
    b.spec = parse_manifest(b.manifest, b.arrays)
    return b.spec


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
    # a fresh hidden sibling made with mkdir, so the bundle gets the user's umask (mkdtemp
    # would leave the published directory mode 0700)
    tmp = root.with_name(f".{root.name}.{secrets.token_hex(8)}")
    tmp.mkdir()
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
