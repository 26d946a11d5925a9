#!/usr/bin/env python
"""Training-step time of each method against float, in one process.

The training benchmark's epoch times come from runs that shared the machine
differently, so their ratio is not clean.  This script times the training step
(forward, backward, optimizer step) of the benchmark's network and recipe for
float and for each power-of-two method on the same batch, in interleaved rounds
in one process, and reports the median milliseconds per step and the ratio to
float:

    python -m scripts.bench_step                  # 2 threads, batch 128, 3-bit
    python -m scripts.bench_step --threads 1 --json step.json

Synthetic input of the benchmark's shape (1x28x28, 10 classes): the step's cost
does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from scripts.bench_methods import COMMON, RG_DEFAULTS  # noqa: E402

#: timed variants: name -> TrainConfig overrides on the benchmark recipe
VARIANTS = {
    "float": dict(method="float"),
    "rg": dict(method="rg", **RG_DEFAULTS),
    "ste": dict(method="ste"),
    "inq": dict(method="inq"),
    "rg-pc": dict(method="rg", per_channel=True, **RG_DEFAULTS),  # per-channel scales
    # continuous per-channel scales, 16 candidates an octave (the fast sorted search)
    "rg-cs": dict(method="rg", per_channel=True, scale_steps=16, **RG_DEFAULTS),
}
METHODS = tuple(VARIANTS)


def step_times(threads: int, rounds: int, steps: int, batch: int) -> dict:
    """Median ms per training step per method, measured in interleaved rounds."""
    import torch
    import torch.nn.functional as F

    from host_train import layers as L
    from host_train.train import TrainConfig, _optimizer, make_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    setups = {}
    for method in METHODS:
        cfg = TrainConfig(**{**COMMON, **VARIANTS[method]})
        model = make_model(cfg, (1, 28, 28), 10).train()
        if cfg.method == "rg":
            L.set_alpha(model, 0.3)
        if cfg.method == "inq":
            for _, m in L.pow2_layers(model):
                m.inq_freeze(0.5)
        setups[method] = (model, _optimizer(cfg, model))

    def one_step(model, opt) -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for model, opt in setups.values():  # warm-up
        for _ in range(3):
            one_step(model, opt)
    samples: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(rounds):
        for method, (model, opt) in setups.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                one_step(model, opt)
            samples[method].append(1e3 * (time.perf_counter() - t0) / steps)
    res: dict = {"threads": threads, "batch": batch, "bits": COMMON["bits"]}
    base = statistics.median(samples["float"])
    for method in METHODS:
        ms = statistics.median(samples[method])
        res[f"{method}_ms_per_step"] = ms
        res[f"{method}_over_float"] = ms / base
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    ap.add_argument("--steps", type=int, default=10, help="steps per method per round")
    ap.add_argument("--batch", type=int, default=COMMON["batch_size"])
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    res = step_times(args.threads, args.rounds, args.steps, args.batch)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
