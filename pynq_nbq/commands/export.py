"""``nbq export CKPT --datapath svpe|vpe --out DIR``: checkpoint -> model bundle (needs torch).

``--format qonnx`` also writes ``DIR.onnx`` beside the bundle; given a bundle directory
instead of a checkpoint it writes only the QONNX graph, ``--out`` (no torch needed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import datapath as dp
from ..cli import CommandError
from . import import_qonnx
from ._torch import require_torch


def register(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to a model bundle (needs torch)")
    p.add_argument("checkpoint", help="checkpoint.pt or its run directory")
    p.add_argument(
        "--datapath",
        choices=[str(k) for k in dp.PEKind],
        default=str(dp.PEKind.SVPE),
        help="svpe: n-bit shift codes (power-of-two checkpoint); vpe: int16 weights",
    )
    p.add_argument("--out", required=True, help="bundle directory to write (atomically)")
    p.add_argument("--name", default=None, help="model name in the manifest")
    p.add_argument("--calib-images", type=int, default=512, help="training images to calibrate")
    p.add_argument("--report-images", type=int, default=256, help="images for the SQNR report")
    p.add_argument("--data-dir", default=None)
    import_qonnx.add_export_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if import_qonnx.export_from_bundle(args) is not None:  # a bundle -> QONNX, no torch
        return 0
    require_torch()
    from host_train.data import DatasetMissing
    from host_train.export import export

    from ..errors import NbqError

    try:
        bundle, report = export(
            args.checkpoint,
            args.out,
            args.datapath,
            args.calib_images,
            args.report_images,
            args.data_dir,
            args.name,
        )
    except (NbqError, ValueError, FileNotFoundError, DatasetMissing) as exc:
        raise CommandError(str(exc)) from exc
    out = Path(args.out)  # where save_bundle wrote it (bundle.path is that directory)
    (out / "export_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {bundle.path} ({bundle.datapath}, arrays sha256 {bundle.sha256[:16]}...)")
    if args.format == "qonnx":
        target = import_qonnx.export_qonnx_file(out, out, args.requant)
        print(f"wrote {target} (QONNX, requant {args.requant})")
    return 0
