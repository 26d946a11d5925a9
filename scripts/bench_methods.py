#!/usr/bin/env python
"""Training-method benchmark: every method on full Fashion-MNIST with the same recipe
(the table of docs/results.md section 1; the gap-closing and n = 1..5 benchmark is
``scripts/bench_train.py``).

Runs the plan below in order, one run at a time, each in ``OUT/NAME`` with
``--resume`` semantics: an interrupted benchmark picks up where it stopped (a
finished run is skipped, a half-finished one continues from its last epoch).
Then it prints a markdown summary (mean ± std over seeds) and writes
``OUT/summary.json``.

    nohup python -m scripts.bench_methods --out bench_runs/fmnist > bench_methods.log 2>&1 &
    # or two workers, one thread each, splitting the plan with --only NAME ...
    python -m scripts.bench_methods --out bench_runs/fmnist --report   # summary only

Not part of CI: on this 2-core VM an epoch takes about 65 s with 2 threads, or about
135 s per run with two one-thread workers side by side (about 35 minutes per run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The recipe every method shares (the issue asks for identical epochs, optimizer, lr).
COMMON = dict(
    model="nbq-compact",
    dataset="fashion-mnist",
    epochs=15,
    batch_size=128,
    optimizer="sgd",
    lr=0.05,
    weight_decay=5e-4,
    lr_schedule="cosine",
    augment=True,
    bits=3,
)

#: (run name, method label, overrides), in the order they run.
PLAN: list[tuple[str, str, dict]] = [
    ("float-s0", "float", dict(method="float", seed=0)),
    ("rg-s0", "rg", dict(method="rg", seed=0)),
    ("rtn-s0", "rtn", dict(method="rtn", seed=0, init="float-s0")),
    ("ste-s0", "ste", dict(method="ste", seed=0)),
    ("rg-s1", "rg", dict(method="rg", seed=1)),
    ("float-s1", "float", dict(method="float", seed=1)),
    ("rg-s2", "rg", dict(method="rg", seed=2)),
    ("float-s2", "float", dict(method="float", seed=2)),
    ("inq-s0", "inq", dict(method="inq", seed=0)),
    (
        "rg-comp-s0",
        "rg, latent step compensated by 1/a",
        dict(method="rg", seed=0, rg_compensate=True),
    ),
    (
        "rg-lin1-s0",
        "rg, a linear 1.0 -> 0 (float to staircase)",
        dict(method="rg", seed=0, a_schedule="linear", a0=1.0),
    ),
    ("rg-authors-s0", "rg, authors' thresholds", dict(method="rg", seed=0, rule="authors")),
    ("rg-log-s0", "rg, log-domain rounding", dict(method="rg", seed=0, rule="log")),
    ("rg-moments-s0", "rg, moment-matching scale", dict(method="rg", seed=0, rule="moments")),
]

#: What the project's default reconstructed-gradient run uses (TrainConfig defaults
#: apart from COMMON), repeated here so the report can print it.
RG_DEFAULTS = dict(rule="nearest", a_schedule="authors", a0=0.5, rg_compensate=False)


def config_for(name: str, overrides: dict, out: Path):
    from host_train.train import TrainConfig

    kw = {**COMMON, **overrides}
    if kw["method"] == "rg":
        kw = {**COMMON, **RG_DEFAULTS, **overrides}
    if kw.get("init"):
        kw["init"] = str(out / kw["init"])
    return TrainConfig(**kw)


def run_plan(out: Path, only: list[str] | None) -> None:
    from host_train.train import load_checkpoint, train

    for name, _, overrides in PLAN:
        if only and name not in only:
            continue
        cfg = config_for(name, overrides, out)
        run_dir = out / name
        ck_path = run_dir / "checkpoint.pt"
        resume = ck_path.exists()
        if resume:
            ck = load_checkpoint(ck_path)
            if cfg.method == "rtn" or int(ck["epoch"]) >= cfg.epochs:
                print(f"[{name}] done already", flush=True)
                continue
        if cfg.init and not Path(cfg.init, "checkpoint.pt").exists():
            print(f"[{name}] skipped: needs {cfg.init}", flush=True)
            continue
        print(f"[{name}] {'resuming' if resume else 'starting'}", flush=True)
        train(
            cfg,
            run_dir,
            resume=resume,
            progress=False,
            log=lambda s, n=name: print(f"[{n}] {s}", flush=True),
        )


def summarise(out: Path) -> dict:
    from host_train.train import load_checkpoint

    rows: dict[str, dict] = {}
    for name, label, _ in PLAN:
        p = out / name / "checkpoint.pt"
        if not p.exists():
            continue
        ck = load_checkpoint(p)
        cfg = ck["config"]
        done = cfg["method"] == "rtn" or int(ck["epoch"]) >= cfg["epochs"]
        if not done:
            continue
        m = ck["metrics"]
        r = rows.setdefault(label, {"runs": [], "acc": [], "epoch_s": []})
        r["runs"].append(name)
        r["acc"].append(100 * m[-1]["test_acc"])
        secs = [e["epoch_seconds"] for e in m if "epoch_seconds" in e]
        if secs:
            r["epoch_s"].append(statistics.median(secs))
    for r in rows.values():
        r["mean"] = statistics.fmean(r["acc"])
        r["std"] = statistics.stdev(r["acc"]) if len(r["acc"]) > 1 else 0.0
        r["epoch_seconds_median"] = statistics.fmean(r["epoch_s"]) if r["epoch_s"] else None
    return rows


def report(rows: dict) -> str:
    lines = [
        "| method (3-bit unless float) | runs | test accuracy % (mean ± std) | s/epoch |",
        "|---|---|---|---|",
    ]
    for label, r in sorted(rows.items(), key=lambda kv: -kv[1]["mean"]):
        sec = f"{r['epoch_seconds_median']:.0f}" if r["epoch_seconds_median"] else "-"
        acc = f"{r['mean']:.2f} ± {r['std']:.2f}" if len(r["acc"]) > 1 else f"{r['mean']:.2f}"
        lines.append(f"| {label} | {', '.join(r['runs'])} | {acc} | {sec} |")
    if "float" in rows and "rg" in rows:
        f, q = rows["float"], rows["rg"]
        gap = f["mean"] - q["mean"]
        ok = q["mean"] >= 92.0 and gap <= 0.5
        lines.append("")
        lines.append(
            f"Gate (rg mean >= 92.0 and within 0.5 of float): rg {q['mean']:.2f} over "
            f"{len(q['acc'])} seed(s), float {f['mean']:.2f} over {len(f['acc'])}, "
            f"gap {gap:.2f} -> {'PASS' if ok else 'FAIL'}"
        )
        sem = [r["std"] / len(r["acc"]) ** 0.5 for r in (f, q)]
        lines.append(
            f"Margin to the 0.5-point line: {0.5 - gap:+.2f} points; standard error of "
            f"the float mean {sem[0]:.2f}, of the rg mean {sem[1]:.2f}"
        )
        if f["epoch_seconds_median"] and q["epoch_seconds_median"]:
            lines.append(
                f"Epoch time 3-bit rg / float: "
                f"{q['epoch_seconds_median'] / f['epoch_seconds_median']:.2f}x "
                "(runs that shared the machine differently; a clean ratio: "
                "scripts/bench_step.py)"
            )
    return "\n".join(lines)


def bench_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The options every resumable training benchmark takes (--out, --only, --report,
    --threads)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=out)
    ap.add_argument("--only", nargs="*", help="run only these plan entries")
    ap.add_argument("--report", action="store_true", help="print the summary, train nothing")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (two workers: 1 each)")
    return ap


def main() -> int:
    args = bench_parser(__doc__, "bench_runs/fmnist").parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        import torch

        torch.set_num_threads(args.threads)
        run_plan(out, args.only)
    rows = summarise(out)
    (out / "summary.json").write_text(
        json.dumps({"common": COMMON, "rg_defaults": RG_DEFAULTS, "rows": rows}, indent=1)
    )
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
