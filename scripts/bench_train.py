#!/usr/bin/env python
"""Training benchmark: float against n-bit power-of-two networks on Fashion-MNIST,
every row with the same recipe; resumable.

Runs the plan below in order, one run at a time, each in ``OUT/NAME``: a finished run
is skipped, a half-finished one continues from its last epoch (bit-identically), a run
whose inputs are not ready yet (a teacher, or the choice it depends on) is skipped
with a message.  ``--report`` prints the tables, the gate with standard errors, and
writes ``OUT/summary.json`` and the accuracy-vs-bits plot (``--plot``).

    nohup nice -n 19 python -m scripts.bench_train --out bench_runs/fmnist-gap \\
        > bench_runs/gap.log 2>&1 &
    # two workers, one thread each, splitting the plan:
    python -m scripts.bench_train --out bench_runs/fmnist-gap --threads 1 --only float-s0
    python -m scripts.bench_train --out bench_runs/fmnist-gap --report --plot docs/bits.png \
        --agreement 10000      # + export each n row to svpe, engine vs torch on the test set

The plan has these stages:

1. **choice** (seed 0): float and the 3-bit reconstructed gradient (rg) with each
   gap-closing method (per-channel power-of-two scales, distillation from the float
   run ``float-s0``, an a-schedule from 1.0) and their combination.  Every run holds
   out ``VAL_SPLIT`` training images; **the best setting is chosen on their
   validation accuracy, never on the test set**.  Float gets distillation too if it
   helps float's validation accuracy (the gap is measured like for like).
2. **gate**: seeds 1 and 2 of the best 3-bit setting and of the best float setting;
   the gate is the 3-bit mean within ``GATE_POINTS`` of the float mean (3 seeds each).
3. **after gate** (round 2): seed-0 rows of other recipes (a longer schedule for both
   sides, continuous per-channel scales), compared with the picks on validation
   accuracy (:func:`winners`; a float row counts only on the 3-bit winner's schedule).
4. **bits**: n = 1, 2, 4, 5 with the winning 3-bit setting (seed 0), for the
   accuracy-vs-bits table and plot (n = 3 comes from the winner's gate rows).
5. **final gate**: a winner that is not the choice pick gets seeds 1 and 2 of its own
   (and of float on its schedule), after the n rows.

Not part of CI: about 35 minutes per run on 2 quiet cores (an epoch ~65 s with 2
threads); far longer on a shared machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Training images held out for choices (the same fixed subset for every run).
VAL_SPLIT = 5000

from scripts.bench_methods import COMMON as METHODS_COMMON  # noqa: E402
from scripts.bench_methods import RG_DEFAULTS, bench_parser  # noqa: E402

#: The recipe every row shares: same network, data, epochs, optimizer, augmentation -
#: the method benchmark's recipe (docs/results.md section 1) with the hold-out added.
COMMON = {**METHODS_COMMON, "val_split": VAL_SPLIT}

#: The float run every distilled row learns from (its run directory's name).
TEACHER = "float-s0"
#: The gate: 3-bit mean within this many points of the float mean.
GATE_POINTS = 0.2
GATE_SEEDS = (0, 1, 2)
OTHER_BITS = (1, 2, 4, 5)

#: Stage 1: (run name, label, overrides), seed 0, chosen on validation accuracy.
CHOICES: list[tuple[str, str, dict]] = [
    ("float-s0", "float", dict(method="float")),
    ("rg-s0", "rg, project defaults", dict(method="rg")),
    ("rg-pc-s0", "rg, per-channel scales", dict(method="rg", per_channel=True)),
    ("rg-kd-s0", "rg, distilled from float", dict(method="rg", teacher=TEACHER)),
    (
        "rg-pc-kd-s0",
        "rg, per-channel scales + distillation",
        dict(method="rg", per_channel=True, teacher=TEACHER),
    ),
    (
        "rg-pc-lin1-s0",
        "rg, per-channel scales, a linear 1.0 -> 0",
        dict(method="rg", per_channel=True, a_schedule="linear", a0=1.0),
    ),
    ("float-kd-s0", "float, distilled from float", dict(method="float", teacher=TEACHER)),
]

#: Round 2 (issue 28): every run keeps a weight average and, after its last epoch,
#: reports three finishes (host_train.finish: as trained, batch norm re-estimated, the
#: weight average with batch norm re-estimated), each a row of the choice.  The gate
#: stays last round's recipe (15 epochs), like for like; a schedule twice as long for
#: both sides comes after the gate (stage "after gate", seed 0 each: run after the gate so
#: that the gate's seeds are not held up by two 30-epoch runs).  Distillation is left
#: out: in round 1 it helped float as much as 3-bit.
COMMON_R2 = {**COMMON, "ema_decay": 0.999, "finish": "ema-bn", "bn_images": 5000}
CHOICES_R2: list[tuple[str, str, dict]] = [
    ("float-s0", "float", dict(method="float")),
    ("rg-s0", "rg, project defaults", dict(method="rg")),
]
#: Then (seed 0, against rg-s0 on the held-out images) a continuous per-channel weight
#: scale, 2**(k/16), MSE-optimal each step (``--per-channel --scale-steps 16``): free in
#: the datapath, the requantisation multiplier takes it (the issue's third idea; round 1's
#: power-of-two per-channel scales, rg-pc-s0, gave nothing).
AFTER_GATE_R2: list[tuple[str, str, dict]] = [
    ("rg-long-s0", "rg, 30 epochs", dict(method="rg", epochs=30)),
    ("float-long-s0", "float, 30 epochs", dict(method="float", epochs=30)),
    (
        "rg-cs-s0",
        "rg, continuous per-channel scales (16 per octave)",
        dict(method="rg", per_channel=True, scale_steps=16),
    ),
]
#: round -> (recipe, choice rows, rows after the gate, default output folder)
ROUNDS = {
    1: (COMMON, CHOICES, [], "bench_runs/fmnist-gap"),
    2: (COMMON_R2, CHOICES_R2, AFTER_GATE_R2, "bench_runs/fmnist-gap2"),
}
#: rows run with seed 0 after the gate stage, whatever it picked (stage "after gate")
AFTER_GATE: list[tuple[str, str, dict]] = []


ROUND = 1


def use_round(n: int) -> None:
    """Make round ``n``'s recipe and choice rows the plan's (module state: the script
    runs one round per process)."""
    global COMMON, CHOICES, AFTER_GATE, ROUND
    COMMON, CHOICES, AFTER_GATE = ROUNDS[n][0], ROUNDS[n][1], ROUNDS[n][2]
    ROUND = n


def config_for(overrides: dict, out: Path, seed: int = 0):
    """The TrainConfig of a row: COMMON (+ rg defaults) + overrides; run paths (the
    teacher) are resolved under ``out``."""
    from host_train.train import TrainConfig

    kw = {**COMMON, **overrides, "seed": seed}
    if kw["method"] == "rg":
        kw = {**COMMON, **RG_DEFAULTS, **overrides, "seed": seed}
    if kw.get("teacher"):
        kw["teacher"] = str(out / kw["teacher"])
    return TrainConfig(**kw)


#: The ledger of finished runs (``--ledger``; module state like the round): a committed
#: JSON file of each finished run's config, last metrics record and machine, so that a
#: plan that runs for longer than one machine lives can go on where it stopped on
#: another.  A run found there counts as finished (its checkpoint is not: no bundle
#: checks for it); the run's own checkpoint in OUT, where there is one, comes first.
LEDGER: Path | None = None
#: Where ``--agreement`` caches a run's bundle check (and the ledger picks it up).
AGREEMENT = "agreement.json"


def _ledger() -> dict:
    if LEDGER is None or not LEDGER.exists():
        return {}
    return json.loads(LEDGER.read_text())["runs"]


def _finished(out: Path, name: str) -> dict | None:
    """The checkpoint of a finished run (or its :data:`LEDGER` entry, marked
    ``from_ledger``), else None."""
    from host_train.train import load_checkpoint

    p = out / name / "checkpoint.pt"
    if not p.exists():
        entry = _ledger().get(name)
        return None if entry is None else {**entry, "from_ledger": True}
    ck = load_checkpoint(p)
    return ck if int(ck["epoch"]) >= ck["config"]["epochs"] else None


def config_matches(saved: dict, cfg) -> bool:
    """Whether a run's saved config is ``cfg`` (a :class:`TrainConfig`): the same fields
    (a field added since the run was saved counts at its default), with what training
    resolves itself (``flip`` None -> the dataset's default) taken as the run resolved
    it."""
    from host_train.train import saved_config

    try:
        saved = saved_config(saved)
    except ValueError:  # a field this version does not know: not today's plan
        return False
    want = dataclasses.asdict(cfg)
    if want.get("flip") is None:
        want["flip"] = saved.get("flip")
    return saved == want


def update_ledger(out: Path, path: Path) -> list[str]:
    """Add every run finished in ``out`` (config, last metrics, epoch times, machine and,
    where ``--agreement`` measured it, its svpe bundle's engine-vs-torch agreement) to the
    ledger at ``path``, keeping the entries already there; returns the names added."""
    import platform

    import torch

    data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    data.update(round=ROUND, common=COMMON, note=LEDGER_NOTE)
    added = []
    for name, *_ in plan(out):
        ck = _finished(out, name)
        if ck is None or ck.get("from_ledger"):
            continue
        old = data["runs"].get(name)
        data["runs"][name] = {
            "config": ck["config"],
            "epoch": int(ck["epoch"]),
            "metrics": [ck["metrics"][-1]],
            "epoch_seconds": [round(e["epoch_seconds"], 1) for e in ck["metrics"]],
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        }
        agreement = out / name / AGREEMENT
        if agreement.exists():  # the bundle check outlives the checkpoint
            data["runs"][name]["agreement"] = json.loads(agreement.read_text())
        elif (old or {}).get("config") == ck["config"] and "agreement" in old:
            data["runs"][name]["agreement"] = old["agreement"]  # the same run, checked before
        added.append(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return added


LEDGER_NOTE = (
    "Finished runs of scripts/bench_train.py (written by --report --ledger FILE): each "
    "run's config, last metrics record (fractions; *_bn, *_ema_bn: host_train.finish) "
    "and per-epoch seconds. The plan counts a run listed here as finished."
)


def variants(ck: dict) -> dict[str, dict[str, float]]:
    """finish -> {"val_acc", "test_acc"} of every finish a finished run reported
    (host_train.finish; runs without a weight average report ``none`` only)."""
    from host_train.finish import FINISHES, metric_suffix

    last = ck["metrics"][-1]
    out = {}
    for f in FINISHES:
        sfx = metric_suffix(f)
        if "test_acc" + sfx in last:
            out[f] = {k: float(last.get(k + sfx, float("nan"))) for k in ("val_acc", "test_acc")}
    return out


def own_finish(ck: dict) -> str:
    """The finish a run's own final model has (its config's; ``none`` before round 2)."""
    return ck["config"].get("finish", "none")


Pick = tuple[str, dict]  #: (run name, overrides incl. the picked finish) of a setting


def _pick(out: Path, rows: list[tuple[str, dict]]) -> Pick | None:
    """The best (row, finish) of ``rows`` (name, overrides) by validation accuracy; ties:
    the later row wins.  None until every row has finished."""
    cks = [_finished(out, n) for n, _ in rows]
    if not rows or any(ck is None for ck in cks):
        return None
    scored = [
        (v["val_acc"], i, f)
        for i, ck in enumerate(cks)
        for f, v in variants(ck).items()
        if v["val_acc"] == v["val_acc"]  # not NaN
    ]
    _, i, f = max(scored, key=lambda t: (t[0], t[1]))
    name, o = rows[i]
    base = {k: v for k, v in o.items() if k != "finish"}
    return name, base if f == own_finish(cks[i]) else {**base, "finish": f}


def best_choices(out: Path) -> tuple[Pick | None, Pick | None]:
    """((name, overrides) of the best 3-bit choice, same of the best float choice) by
    validation accuracy, each None until all its choice rows have finished (ties: the
    later row - more methods - wins)."""
    picks = []
    for method in ("rg", "float"):
        picks.append(_pick(out, [(n, o) for n, _, o in CHOICES if o["method"] == method]))
    return picks[0], picks[1]


def _epochs(o: dict) -> int:
    return int(o.get("epochs", COMMON["epochs"]))


def winners(
    out: Path, picks: tuple[Pick | None, Pick | None] | None = None
) -> tuple[Pick, Pick] | None:
    """The settings the n rows use, once the choice stage and every after-gate row have
    finished (else None): the best 3-bit setting by validation accuracy among the 3-bit
    choice pick and the after-gate 3-bit rows (ties keep the pick), and the best float
    setting on the same schedule (epochs) among the float choice rows and the after-gate
    float rows.  Without after-gate rows (round 1): the choice picks.  ``picks``: the
    caller's :func:`best_choices` (else computed here)."""
    best_q, best_f = best_choices(out) if picks is None else picks
    if best_q is None or best_f is None:
        return None
    after = [(n, o) for n, _, o in AFTER_GATE]
    if any(_finished(out, n) is None for n, _ in after):
        return None
    # every candidate has finished here, so _pick answers
    q = _pick(out, [(n, o) for n, o in after if o["method"] != "float"] + [best_q])
    assert q is not None
    floats = [(n, o) for n, _, o in CHOICES if o["method"] == "float"]
    floats += [(n, o) for n, o in after if o["method"] == "float"]
    f = _pick(out, [(n, o) for n, o in floats if _epochs(o) == _epochs(q[1])])
    if f is None:  # no float row on the winner's schedule: keep the picks
        return best_q, best_f
    return (best_q if q[0] == best_q[0] else q), (best_f if f[0] == best_f[0] else f)


def plan(out: Path) -> list[tuple[str, str, dict, int, str]]:
    """Every row known now: (name, label, overrides, seed, stage).  Gate rows appear once
    the choice stage has picked their settings (alternating 3-bit and float seed by seed:
    two workers finish a like-for-like pair together), then the after-gate rows; the n
    rows once :func:`winners` has settled their setting.  A winner that is not the
    choice pick gets a gate of its own (stage "final gate", rows ``final-{q3,float}-sN``),
    planned after the n rows: those are what the issue asks of the winning setting, the
    final gate only adds seeds to a comparison already measured on seed 0."""
    rows = [(n, lab, o, 0, "choice") for n, lab, o in CHOICES]
    best_q, best_f = best_choices(out)
    for seed in GATE_SEEDS[1:]:
        for best, tag in ((best_q, "q3"), (best_f, "float")):
            if best is not None:
                name, o = best
                rows.append((f"gate-{tag}-s{seed}", f"{name} settings", o, seed, "gate"))
    if best_q is not None and best_f is not None:
        rows += [(n, lab, o, 0, "after gate") for n, lab, o in AFTER_GATE]
    won = winners(out, (best_q, best_f))
    if won is None:
        return rows
    name, o = won[0]
    for n in OTHER_BITS:
        rows.append((f"bits{n}-s0", f"{name} settings, n = {n}", {**o, "bits": n}, 0, "bits"))
    for seed in GATE_SEEDS[1:]:
        for (name, o), tag, pick in ((won[0], "q3", best_q), (won[1], "float", best_f)):
            if (name, o) != pick:
                rows.append((f"final-{tag}-s{seed}", f"{name} settings", o, seed, "final gate"))
    return rows


def copy_finished(out: Path, dest: Path) -> list[str]:
    """Copy every finished run's checkpoint and metrics to ``dest/NAME/`` (a second
    home for results on a machine whose work tree may go); returns the names copied."""
    copied = []
    for name, *_ in plan(out):
        ck = _finished(out, name)
        if ck is None or ck.get("from_ledger"):
            continue
        (dest / name).mkdir(parents=True, exist_ok=True)
        for f in ("checkpoint.pt", "metrics.json", AGREEMENT):
            if (out / name / f).exists():
                shutil.copy2(out / name / f, dest / name / f)
        copied.append(name)
    return copied


LOCK = "worker.pid"


def _claim(run_dir: Path) -> bool:
    """Take ``run_dir`` for this process (a pid file made with O_EXCL) unless a live
    process holds it already; a stale file (its process gone) is taken over.  Lets
    several workers share one plan."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or "0"), 0)
                return False  # a live worker has it
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)  # stale: its worker is gone
                continue
            except PermissionError:
                return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def run_plan(
    out: Path, only: list[str] | None, stop_after: int | None, copy_to: Path | None = None
) -> None:
    """Train the plan's unfinished rows in order (see the module docstring); with
    ``copy_to``, copy the finished runs there after each run."""
    from host_train.train import train

    done_any = True
    while done_any:  # the choice stage unlocks the later ones
        done_any = False
        for name, _, overrides, seed, _ in plan(out):
            done = _finished(out, name)
            if only and name not in only:
                continue
            cfg = config_for(overrides, out, seed)
            if done is not None and config_matches(done["config"], cfg):
                continue
            if done is not None and not done.get("from_ledger"):
                continue  # a finished checkpoint of another config: kept as it is
            if done is not None:
                print(f"[{name}] the ledger's run had another config: training it", flush=True)
            if cfg.teacher and _finished(out, Path(cfg.teacher).name) is None:
                print(f"[{name}] waits for its teacher {cfg.teacher}", flush=True)
                continue
            if not _claim(out / name):
                print(f"[{name}] another worker is training it", flush=True)
                continue
            resume = (out / name / "checkpoint.pt").exists()
            print(f"[{name}] {'resuming' if resume else 'starting'}", flush=True)
            try:
                train(
                    cfg,
                    out / name,
                    resume=resume,
                    progress=False,
                    log=lambda s, n=name: print(f"[{n}] {s}", flush=True),
                    stop_after=stop_after,
                )
            finally:
                (out / name / LOCK).unlink(missing_ok=True)
            if copy_to is not None:
                copy_finished(out, copy_to)
            if stop_after is not None:
                return
            done_any = True


def _mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (0 for one value)."""
    m = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return m, se


def summarise(out: Path) -> dict:
    """Finished rows (test and validation accuracy %) and the gate/bits groupings."""
    rows = {}
    for name, label, overrides, seed, stage in plan(out):
        ck = _finished(out, name)
        if ck is None:
            continue
        m = ck["metrics"][-1]
        vs = {f: {k: 100 * a for k, a in v.items()} for f, v in variants(ck).items()}
        own = own_finish(ck)
        rows[name] = {
            "label": label,
            "stage": stage,
            "bits": None if overrides["method"] == "float" else overrides.get("bits", 3),
            "seed": seed,
            "finish": own,
            "model_finish": own,  #: the finish of the checkpoint's own final model
            "from_ledger": bool(ck.get("from_ledger")),
            "test_acc": vs.get(own, vs["none"])["test_acc"],
            "val_acc": vs.get(own, vs["none"])["val_acc"],
            "variants": vs,
            "train_loss": m["train_loss"],
            "epoch_seconds_median": statistics.median(e["epoch_seconds"] for e in ck["metrics"]),
        }
        if "agreement" in ck:  # a ledger run's bundle check
            rows[name]["agreement"] = ck["agreement"]
    best_q, best_f = best_choices(out)
    won = winners(out, (best_q, best_f))
    gates = {"gate": _gate_groups(rows, [(best_q, "q3", "gate"), (best_f, "float", "gate")])}
    if won is not None and won != (best_q, best_f):
        sides = [(w, tag, "gate" if w == pick else "final") for w, tag, pick in
                 ((won[0], "q3", best_q), (won[1], "float", best_f))]  # fmt: skip
        gates["final_gate"] = _gate_groups(rows, sides)
    curve = gates.get("final_gate", gates["gate"]).get("q3", {}).get("runs", [])
    curve = [n for n in rows if n in curve or n.startswith("bits")]
    bits_rows: dict[int, list[float]] = {}
    for name in curve:
        bits_rows.setdefault(rows[name]["bits"], []).append(rows[name]["test_acc"])
    return {
        "rows": rows,
        **gates,
        "curve_runs": curve,
        "bits_rows": dict(sorted(bits_rows.items())),
    }


def _gate_groups(rows: dict, sides: list[tuple[Pick | None, str, str]]) -> dict:
    """tag -> {choice, setting, runs, acc} of a gate, for each side (setting, tag, prefix
    of its seed rows): the setting's seed-0 row (set to the picked finish in ``rows``)
    and its seeds 1, 2 (``{prefix}-{tag}-sN``)."""
    groups = {}
    for best, tag, prefix in sides:
        if best is None:
            continue
        fin = best[1].get("finish", COMMON.get("finish", "none"))
        if best[0] in rows:  # seed 0 is the row itself, at the picked finish
            rows[best[0]].update(rows[best[0]]["variants"][fin], finish=fin)
            if fin != rows[best[0]]["model_finish"]:  # a check of another finish's model
                rows[best[0]].pop("agreement", None)
        names = [best[0]] + [f"{prefix}-{tag}-s{s}" for s in GATE_SEEDS[1:]]
        groups[tag] = {
            "choice": best[0],
            "setting": best[0] + ("" if fin == "none" else f" [{fin}]"),
            "runs": [n for n in names if n in rows],
            "acc": [rows[n]["test_acc"] for n in names if n in rows],
        }
    return groups


def add_agreement(out: Path, summary: dict, images: int) -> None:
    """Export every finished power-of-two row to an svpe bundle
    (``OUT/NAME/bundle-svpe``) and measure engine-vs-torch agreement on the first
    ``images`` test images; cached in ``OUT/NAME/agreement.json``."""
    from host_train.agreement import agreement
    from host_train.export import export

    for name, r in summary["rows"].items():
        if r["bits"] is None:  # float rows have no svpe form
            continue
        if r["finish"] != r["model_finish"] or r["from_ledger"]:  # no such model here
            continue
        cache = out / name / AGREEMENT
        if cache.exists() and json.loads(cache.read_text()).get("images") == images:
            r["agreement"] = json.loads(cache.read_text())
            continue
        bundle = out / name / "bundle-svpe"
        export(str(out / name), str(bundle), "svpe", log=lambda s: None)
        res = agreement(str(out / name), str(bundle), limit=images)
        cache.write_text(json.dumps(res, indent=1))
        r["agreement"] = res


def report(summary: dict) -> str:
    rows, gate = summary["rows"], summary["gate"]
    lines = [
        f"| run | setting | n | val acc % ({VAL_SPLIT} held out) | test acc % | train loss "
        "| s/epoch |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        n = "float" if r["bits"] is None else str(r["bits"])
        many = len(r["variants"]) > 1
        for fin, v in r["variants"].items() if many else [("none", r)]:
            tag = f" [{fin}]" if many else ""
            lines.append(
                f"| {name}{tag} | {r['label']} | {n} | {v['val_acc']:.2f} | {v['test_acc']:.2f} "
                f"| {r['train_loss']:.3f} | {r['epoch_seconds_median']:.0f} |"
            )
    agreed = [(n, r["agreement"]) for n, r in rows.items() if "agreement" in r]
    if agreed:
        lines += ["", "| run | svpe bundle: engine = torch top-1 | torch acc % | engine acc % |"]
        lines.append("|---|---:|---:|---:|")
        for n, a in agreed:
            lines.append(
                f"| {n} | {100 * a['top1_agreement']:.2f} % of {a['images']} "
                f"| {100 * a['torch_accuracy']:.2f} | {100 * a['engine_accuracy']:.2f} |"
            )
    lines.append("")
    if "q3" in gate and "float" in gate:
        lines.append(_gate_line("Gate", gate))
    else:
        lines.append("Gate: waiting for the choice stage to finish")
    final = summary.get("final_gate", {})
    if "q3" in final and "float" in final:
        lines.append(_gate_line("Gate of the winning setting after the gate stage", final))
    if summary["bits_rows"]:
        lines += [
            "",
            "| weight bits n | runs | test acc % (mean ± s.e.) | engine = torch top-1 (svpe) |",
            "|---|---|---:|---|",
        ]
        agree = {}
        for name in summary["curve_runs"]:
            if "agreement" in rows[name]:
                a = rows[name]["agreement"]
                agree.setdefault(rows[name]["bits"], []).append(
                    f"{100 * a['top1_agreement']:.2f} % of {a['images']}"
                )
        for n, accs in summary["bits_rows"].items():
            m, se = _mean_se(accs)
            ag = ", ".join(agree.get(n, [])) or "-"
            lines.append(f"| {n} | {len(accs)} | {m:.2f} ± {se:.2f} | {ag} |")
        floats = summary.get("final_gate", gate).get("float")
        if floats:
            m, se = _mean_se(floats["acc"])
            lines.append(f"| float | {len(floats['acc'])} | {m:.2f} ± {se:.2f} |")
    return "\n".join(lines)


def _gate_line(title: str, gate: dict) -> str:
    """One gate's verdict: each side's mean ± s.e. over its seeds, the gap, PASS/FAIL
    once both sides have every seed."""
    q, f = gate["q3"], gate["float"]
    (mq, sq), (mf, sf) = _mean_se(q["acc"]), _mean_se(f["acc"])
    gap = mf - mq
    full = len(q["acc"]) == len(f["acc"]) == len(GATE_SEEDS)
    verdict = ("PASS" if gap <= GATE_POINTS else "FAIL") if full else "incomplete"
    return (
        f"{title} (3-bit mean within {GATE_POINTS} points of float, {len(GATE_SEEDS)} seeds "
        f"each): 3-bit [{q['setting']}] {mq:.2f} ± {sq:.2f} (s.e., {len(q['acc'])} "
        f"seed(s)), float [{f['setting']}] {mf:.2f} ± {sf:.2f} ({len(f['acc'])}); "
        f"gap {gap:.2f} (s.e. {(sq * sq + sf * sf) ** 0.5:.2f}) -> {verdict}"
    )


def plot_bits(summary: dict, path: Path) -> bool:
    """Accuracy against weight bits (mean ± s.e.), float as a band; False if no data."""
    bits = summary["bits_rows"]
    if not bits:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = list(bits)
    ms = [_mean_se(bits[n]) for n in ns]
    gate = summary.get("final_gate", summary["gate"])  # the winning settings' gate
    q_setting = gate.get("q3", {}).get("setting", "rg")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(
        ns,
        [m for m, _ in ms],
        yerr=[s for _, s in ms],
        marker="o",
        capsize=3,
        label=f"power-of-two weights ({q_setting} settings)",
    )
    if "float" in gate:
        m, se = _mean_se(gate["float"]["acc"])
        label = f"float ({gate['float']['setting']} settings, mean ± s.e.)"
        ax.axhline(m, color="k", ls="--", lw=1, label=label)
        ax.axhspan(m - se, m + se, color="k", alpha=0.1)
    ax.set_xlabel("weight bits n")
    ax.set_ylabel("Fashion-MNIST test accuracy %")
    ax.set_xticks([1, 2, 3, 4, 5])
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main() -> int:
    ap = bench_parser(__doc__, None)
    ap.add_argument(
        "--round",
        type=int,
        choices=sorted(ROUNDS),
        default=2,
        help="1: issue 17's plan (distillation, per-channel scales); 2: issue 28's "
        "(finishes: batch-norm re-estimation, weight average; a longer schedule; continuous "
        "per-channel scales)",
    )
    ap.add_argument("--stop-after", type=int, default=None, help="epochs to train, then stop")
    ap.add_argument("--plot", default=None, help="write the accuracy-vs-bits plot here (PNG)")
    ap.add_argument("--copy-to", default=None, help="copy finished runs to this directory")
    ap.add_argument(
        "--ledger",
        default=None,
        help="the committed ledger of finished runs (JSON): runs listed there count as "
        "finished; with --report, the runs finished in --out are added to it",
    )
    ap.add_argument(
        "--agreement",
        type=int,
        default=0,
        help="export the n rows to svpe and compare engine and torch on this many test images",
    )
    args = ap.parse_args()
    use_round(args.round)
    global LEDGER
    LEDGER = Path(args.ledger) if args.ledger else None
    out = Path(args.out or ROUNDS[args.round][3])
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        import torch

        torch.set_num_threads(args.threads)
        run_plan(out, args.only, args.stop_after, Path(args.copy_to) if args.copy_to else None)
    if args.copy_to:
        print("copied:", ", ".join(copy_finished(out, Path(args.copy_to))) or "nothing")
    summary = summarise(out)
    if args.agreement:
        add_agreement(out, summary, args.agreement)
    if args.report and LEDGER is not None:  # after the bundle checks: the ledger keeps them
        print("ledger: added", ", ".join(update_ledger(out, LEDGER)) or "nothing")
    (out / "summary.json").write_text(
        json.dumps(
            {"round": args.round, "common": COMMON, "rg_defaults": RG_DEFAULTS, **summary},
            indent=1,
        )
    )
    print(report(summary))
    if args.plot and plot_bits(summary, Path(args.plot)):
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
