#!/usr/bin/env python
"""Relative squared error of the n-bit staircase of a model's weights, per layer, for
one power-of-two scale per layer, one per channel, and continuous per-channel scales
with S candidates an octave (``--per-channel --scale-steps S``, host_train.quant).

    python -m scripts.bench_scale_error                      # the shipped 3-bit model
    python -m scripts.bench_scale_error --checkpoint X.npz --bits 4

Error = ||W - staircase(W)||^2 / ||W||^2 of the latent weights (the rule ``nearest``).
The shipped model was trained with one scale per layer, so its weights have already
settled on that grid: this measures fit, not accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "pynq_nbq" / "models" / "checkpoints" / "fmnist-rg3.npz"
STEPS = (1, 2, 4, 8, 16)


def table(checkpoint: Path, bits: int) -> str:
    """Markdown table: one row per conv/linear weight of the portable checkpoint."""
    import numpy as np
    import torch

    from host_train import quant

    head = "| layer | shape | per layer | " + " | ".join(
        "per channel" if s == 1 else f"S = {s}" for s in STEPS
    )
    lines = [head + " |", "|---|---|" + "---:|" * (len(STEPS) + 1)]
    with np.load(checkpoint, allow_pickle=False) as z:
        weights = [k for k in z.files if k.endswith("weight") and z[k].ndim in (2, 4)]
        names = sorted(weights, key=lambda k: [int(t) if t.isdigit() else t for t in k.split(".")])
        for name in names:
            w = torch.from_numpy(z[name]).float()
            norm = float((w * w).sum())
            errs = [float(((w - quant.quantize(w, bits)[0]) ** 2).sum()) / norm]
            for s in STEPS:
                q, _ = quant.quantize_per_channel(w, bits, "nearest", s)
                errs.append(float(((w - q) ** 2).sum()) / norm)
            cells = " | ".join(f"{e:.4f}" for e in errs)
            lines.append(f"| {name} | {tuple(w.shape)} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=DEFAULT, help="portable .npz checkpoint")
    p.add_argument("--bits", type=int, default=3, help="weight bits n")
    args = p.parse_args(argv)
    print(table(args.checkpoint, args.bits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
