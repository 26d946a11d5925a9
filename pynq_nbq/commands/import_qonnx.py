"""``nbq import MODEL.onnx --out DIR``: a QONNX graph -> a model bundle (needs ``onnx``).

Also the QONNX side of ``nbq export``: ``nbq export BUNDLE_OR_CHECKPOINT --format qonnx
--out PATH`` (:func:`add_export_options`, :func:`export_qonnx_file`).  Both are
described in ``docs/interop.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import datapath as dp
from ..cli import CommandError

EXPORT_FORMATS = ("bundle", "qonnx")


def register(sub) -> None:
    p = sub.add_parser(
        "import",
        help="turn a QONNX model (power-of-two or 16-bit weights) into a bundle",
        description="Turn a QONNX graph into a model bundle. Every op or attribute the "
        "integer datapath cannot run is refused, naming the node.",
    )
    p.add_argument("model", help="the .onnx file (QONNX: Quant nodes give the formats)")
    p.add_argument("--out", required=True, help="bundle directory to write (atomically)")
    p.add_argument(
        "--datapath",
        choices=[str(k) for k in dp.PEKind],
        default=None,
        help="default: svpe when every layer's weights are powers of two, else vpe",
    )
    p.add_argument("--name", default=None, help="model name in the manifest")
    p.add_argument("--classes", default=None, help="class names, comma-separated")
    p.add_argument("--mean", default=None, help="input mean per channel on 0..1 pixels, a,b,c")
    p.add_argument("--std", default=None, help="input std per channel on 0..1 pixels, a,b,c")
    p.add_argument("--invert", action="store_true", default=None, help="pixels p -> 255 - p")
    p.set_defaults(func=run)


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise CommandError(f"--{what} must be comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    try:
        from ..interop.qonnx_import import import_qonnx
    except ImportError as exc:
        raise CommandError(
            f"nbq import needs onnx: pip install 'pynq-nbq[interop]' ({exc})"
        ) from None
    from ..bundle import save_bundle

    path = Path(args.model)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    result = import_qonnx(
        path,
        datapath=args.datapath,
        name=args.name,
        classes=args.classes.split(",") if args.classes else None,
        mean=_floats(args.mean, "mean"),
        std=_floats(args.std, "std"),
        invert=args.invert,
    )
    out = Path(args.out)
    bundle = save_bundle(result.manifest, result.arrays, out)
    if result.notes:
        (out / "import_notes.json").write_text(json.dumps(result.notes, indent=1) + "\n")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {bundle.path} ({bundle.datapath}, arrays sha256 {bundle.sha256[:16]}...)")
    return 0


# --- nbq export --format qonnx ---------------------------------------------------------------
def add_export_options(p: argparse.ArgumentParser) -> None:
    """``--format`` and ``--requant`` for ``nbq export``."""
    p.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="bundle",
        help="qonnx: also (or, from a bundle, only) write the QONNX graph, OUT.onnx",
    )
    p.add_argument(
        "--requant",
        choices=("exact", "fused"),
        default="exact",
        help="QONNX requantisation: exact (float64, bit-exact) or fused (float32, for hls4ml)",
    )


def export_qonnx_file(bundle_path: str | Path, out: str | Path, requant: str) -> Path:
    """Write the QONNX graph of the bundle at ``bundle_path`` to ``out`` (``.onnx``
    added when missing); returns the file's path."""
    try:
        import onnx

        from ..interop.qonnx_export import export_qonnx
    except ImportError as exc:
        raise CommandError(
            f"--format qonnx needs onnx: pip install 'pynq-nbq[interop]' ({exc})"
        ) from None
    from ..bundle import load_bundle

    target = Path(out)
    if target.suffix != ".onnx":
        target = target.with_name(target.name + ".onnx")
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(export_qonnx(load_bundle(bundle_path), requant), str(target))
    return target


def export_from_bundle(args: argparse.Namespace) -> int | None:
    """``nbq export BUNDLE --format qonnx --out FILE``: no torch needed.  Returns None
    when ``args.checkpoint`` is not a bundle directory (the checkpoint path runs)."""
    if args.format != "qonnx" or not (Path(args.checkpoint) / "manifest.json").is_file():
        return None
    target = export_qonnx_file(args.checkpoint, args.out, args.requant)
    print(f"wrote {target} (QONNX, requant {args.requant})")
    return 0
