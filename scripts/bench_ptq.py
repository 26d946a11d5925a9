#!/usr/bin/env python
"""Round-to-nearest post-training quantisation of the shipped float Fashion-MNIST model
(``pynq_nbq/models/checkpoints/fmnist-float``, 93.70 % in float) at every n = 1..5,
with one power-of-two scale per layer against one per output channel.

Each row is ``nbq train --method rtn --init CKPT --bits n [--per-channel]``: the
staircase of the float weights, batch norm re-estimated on 1,000 training images,
accuracy on the 10,000 test images (reported only: nothing is chosen here).  Minutes
on one core; an early, cheap look at what per-channel scales buy before the trained
rows of ``scripts/bench_train.py`` finish.

    python -m scripts.bench_ptq --out bench_runs/ptq            # table + OUT/ptq.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLOAT = ROOT / "pynq_nbq" / "models" / "checkpoints" / "fmnist-float.npz"


def run(out: Path, bits: list[int]) -> list[dict]:
    from host_train.data import load_dataset
    from host_train.train import TrainConfig, train

    ds = load_dataset("fashion-mnist")
    rows = []
    for n in bits:
        for per_channel in (False, True):
            name = f"rtn-n{n}-{'channel' if per_channel else 'layer'}"
            cfg = TrainConfig(method="rtn", init=str(FLOAT), bits=n, per_channel=per_channel)
            ck = train(cfg, out / name, progress=False, dataset=ds, log=lambda s: None)
            m = ck["metrics"][-1]
            rows.append(
                {
                    "bits": n,
                    "scale": "per channel" if per_channel else "per layer",
                    "test_acc": 100 * m["test_acc"],
                    "before_bn_reestimate": 100 * m["test_acc_before_bn_reestimate"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| n | scale | test acc % (BN re-estimated) | before BN re-estimation |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        accs = f"{r['test_acc']:.2f} | {r['before_bn_reestimate']:.2f}"
        lines.append(f"| {r['bits']} | {r['scale']} | {accs} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="bench_runs/ptq")
    ap.add_argument("--bits", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows = run(out, args.bits)
    (out / "ptq.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
