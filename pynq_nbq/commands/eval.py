"""``nbq eval CKPT``: float and quantized accuracy, confusion matrix, weight levels."""

from __future__ import annotations

import argparse
import json

from ..cli import CommandError
from ._torch import require_torch


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (needs torch)")
    p.add_argument("checkpoint", help="checkpoint.pt or its run directory")
    p.add_argument("--out", default=None, help="write eval.json, confusion.png, weight_levels.png")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_torch()
    from host_train.data import DatasetMissing
    from host_train.evaluate import evaluate

    try:
        res = evaluate(args.checkpoint, args.out, args.data_dir)
    except (ValueError, FileNotFoundError, DatasetMissing) as exc:
        raise CommandError(str(exc)) from exc
    short = {k: v for k, v in res.items() if k not in ("confusion_matrix", "weight_levels")}
    print(json.dumps(short, indent=1))
    for name, h in res.get("weight_levels", {}).items():
        print(f"{name:24s} n={h['n_bits']} e={h['exp']:3d} zeros={100 * h['zero_fraction']:.1f}%")
    return 0
