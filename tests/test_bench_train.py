"""scripts/bench_train.py's plan logic on fake finished runs: the choice is made on
validation accuracy (never test), gate and bits rows follow it, the gate arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from scripts import bench_train as bt  # noqa: E402


def _fake_run(out, name, val, test, done=True):
    """A checkpoint of a 15-epoch run, finished or stopped after 14 epochs."""
    (out / name).mkdir(parents=True, exist_ok=True)
    rec = {"val_acc": val / 100, "test_acc": test / 100, "train_loss": 0.2, "epoch_seconds": 9.0}
    ck = {"config": {"epochs": 15}, "epoch": 15 if done else 14, "metrics": [rec]}
    torch.save(ck, out / name / "checkpoint.pt")


def _choices(out, val_of):
    """Finish every choice row; test accuracy ranks opposite to validation accuracy."""
    for name, _, _ in bt.CHOICES:
        _fake_run(out, name, val_of(name), 200 - val_of(name) - 100)
    assert bt.summarise(out)["rows"]["float-s0"]["val_acc"] == pytest.approx(val_of("float-s0"))


def test_nothing_finished_plans_the_choice_stage_only(tmp_path):
    names = [r[0] for r in bt.plan(tmp_path)]
    assert names == [n for n, _, _ in bt.CHOICES]
    assert "waiting" in bt.report(bt.summarise(tmp_path))
    _fake_run(tmp_path, "float-s0", 90, 90)
    _fake_run(tmp_path, "rg-s0", 90, 90, done=False)
    assert bt.best_choices(tmp_path) == (None, None)


def test_choice_on_validation_then_gate_and_bits_rows(tmp_path):
    vals = {"rg-pc-kd-s0": 93.0, "float-kd-s0": 93.5, "float-s0": 93.4}
    _choices(tmp_path, lambda n: vals.get(n, 92.0))
    (q_name, q_over), (f_name, f_over) = bt.best_choices(tmp_path)
    assert (q_name, f_name) == ("rg-pc-kd-s0", "float-kd-s0")  # the lowest test accuracies
    rows = {r[0]: r for r in bt.plan(tmp_path)}
    assert rows["gate-q3-s2"][2] == q_over and rows["gate-q3-s2"][3] == 2
    assert rows["gate-float-s1"][2] == f_over
    assert [rows[f"bits{n}-s0"][2]["bits"] for n in bt.OTHER_BITS] == list(bt.OTHER_BITS)
    cfg = bt.config_for(rows["bits1-s0"][2], tmp_path, 0)
    assert cfg.per_channel and cfg.bits == 1 and cfg.teacher == str(tmp_path / bt.TEACHER)
    assert cfg.val_split == bt.VAL_SPLIT and cfg.epochs == bt.COMMON["epochs"]


@pytest.mark.parametrize("q_shift,verdict", [(0.0, "PASS"), (-0.5, "FAIL")])
def test_gate_report(tmp_path, q_shift, verdict):
    for name, _, _ in bt.CHOICES:  # rg-s0 and float-s0 win their choices on validation
        best = name in ("rg-s0", "float-s0")
        test = {"rg-s0": 93.0 + q_shift, "float-s0": 93.1}.get(name, 50.0)
        _fake_run(tmp_path, name, 95.0 if best else 92.0, test)
    for seed in (1, 2):
        _fake_run(tmp_path, f"gate-q3-s{seed}", 90, 93.0 + q_shift + 0.1 * seed)
        _fake_run(tmp_path, f"gate-float-s{seed}", 90, 93.1 + 0.1 * seed)
    for n in bt.OTHER_BITS:
        _fake_run(tmp_path, f"bits{n}-s0", 90, 80 + n)
    s = bt.summarise(tmp_path)
    assert s["gate"]["q3"]["runs"] == ["rg-s0", "gate-q3-s1", "gate-q3-s2"]
    assert s["gate"]["float"]["runs"] == ["float-s0", "gate-float-s1", "gate-float-s2"]
    text = bt.report(s)
    gap = 0.1 - q_shift
    assert f"gap {gap:.2f}" in text and verdict in text
    se = (0.1 / 3**0.5) * 2**0.5  # both groups: values x, x+0.1, x+0.2
    assert f"(s.e. {se:.2f})" in text
    assert sorted(s["bits_rows"]) == [1, 2, 3, 4, 5] and len(s["bits_rows"][3]) == 3
    assert s["bits_rows"][1] == [81.0]
    assert bt.plot_bits(s, tmp_path / "bits.png") and (tmp_path / "bits.png").stat().st_size
    # the n table's agreement column names the curve's runs only, not other 3-bit choices
    for name, pct in (("rg-s0", 1.0), ("gate-q3-s1", 0.9999), ("rg-pc-s0", 0.5)):
        s["rows"][name]["agreement"] = {
            "top1_agreement": pct,
            "images": 10,
            "torch_accuracy": 0.9,
            "engine_accuracy": 0.9,
        }
    n3 = next(line for line in bt.report(s).splitlines() if line.startswith("| 3 |"))
    assert "100.00 % of 10" in n3 and "99.99 % of 10" in n3 and "50.00" not in n3


def test_copy_finished_copies_only_finished_runs(tmp_path):
    out, dest = tmp_path / "runs", tmp_path / "copy"
    _fake_run(out, "float-s0", 90, 90)
    (out / "float-s0" / "metrics.json").write_text("[]")
    _fake_run(out, "rg-s0", 90, 90, done=False)
    assert bt.copy_finished(out, dest) == ["float-s0"]
    assert (dest / "float-s0" / "checkpoint.pt").exists() and not (dest / "rg-s0").exists()


def test_a_run_is_claimed_by_one_live_worker(tmp_path):
    import os
    import subprocess
    import sys

    run = tmp_path / "rg-s0"
    assert bt._claim(run) and (run / bt.LOCK).read_text() == str(os.getpid())
    assert not bt._claim(run)  # this (live) process holds it
    code = "import os; print(os.getpid())"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True)
    (run / bt.LOCK).write_text(gone.stdout.decode().strip())  # a finished process: stale
    assert bt._claim(run) and (run / bt.LOCK).read_text() == str(os.getpid())


@pytest.fixture
def round2():
    bt.use_round(2)
    yield
    bt.use_round(1)
    bt.LEDGER = None


def _fake_round2_run(out, name, overrides, seed, val_test: dict):
    """A finished round-2 run with its real config and every finish's accuracies
    (``val_test``: finish -> (val %, test %))."""
    import dataclasses

    from host_train.finish import metric_suffix

    cfg = dataclasses.asdict(bt.config_for(overrides, out, seed))
    rec = {"train_loss": 0.2, "epoch_seconds": 9.0}
    for fin, (val, test) in val_test.items():
        rec |= {
            "val_acc" + metric_suffix(fin): val / 100,
            "test_acc" + metric_suffix(fin): test / 100,
        }
    (out / name).mkdir(parents=True, exist_ok=True)
    ck = {"config": cfg, "epoch": cfg["epochs"], "metrics": [rec]}
    torch.save(ck, out / name / "checkpoint.pt")


def test_round2_picks_run_and_finish_on_validation(tmp_path, round2):
    vt = {
        "float-s0": {"none": (94.0, 93.0), "bn": (94.1, 93.1), "ema-bn": (94.0, 93.9)},
        "rg-s0": {"none": (93.0, 92.0), "bn": (93.6, 92.1), "ema-bn": (93.2, 92.9)},
        "rg-long-s0": {"none": (93.1, 92.5), "bn": (93.2, 92.6), "ema-bn": (93.3, 92.7)},
        "float-long-s0": {"none": (93.9, 93.5), "bn": (93.8, 93.4), "ema-bn": (93.7, 93.3)},
        "rg-cs-s0": {"none": (93.2, 92.4), "bn": (93.1, 92.3), "ema-bn": (93.0, 92.2)},
    }
    for name, _, o in bt.CHOICES:
        _fake_round2_run(tmp_path, name, o, 0, vt[name])
    (q_name, q_over), (f_name, f_over) = bt.best_choices(tmp_path)
    assert (q_name, q_over["finish"]) == ("rg-s0", "bn")  # not ema-bn's better test figure
    assert (f_name, f_over["finish"]) == ("float-s0", "bn")
    names = [r[0] for r in bt.plan(tmp_path)]
    # the gate alternates 3-bit and float seed by seed; the 30-epoch rows and the
    # continuous scales come after it
    assert names[2:9] == [
        "gate-q3-s1", "gate-float-s1", "gate-q3-s2", "gate-float-s2", "rg-long-s0",
        "float-long-s0", "rg-cs-s0",
    ]  # fmt: skip
    for name, _, o in bt.AFTER_GATE:
        cfg = bt.config_for(o, tmp_path)
        assert cfg.epochs == (30 if "long" in name else 15)
        assert (cfg.per_channel, cfg.scale_steps) == ((True, 16) if "cs" in name else (False, 1))
        _fake_round2_run(tmp_path, name, o, 0, vt[name])
    rows = {r[0]: r for r in bt.plan(tmp_path)}
    cfg = bt.config_for(rows["gate-q3-s1"][2], tmp_path, 1)
    assert cfg.finish == "bn" and cfg.ema_decay == 0.999 and cfg.method == "rg"
    s = bt.summarise(tmp_path)
    assert s["gate"]["q3"]["acc"] == [pytest.approx(92.1)]  # seed 0 at the picked finish
    assert s["gate"]["q3"]["setting"] == "rg-s0 [bn]"
    text = bt.report(s)
    assert "| rg-s0 [ema-bn] |" in text and "| float-long-s0 [none] |" in text


def test_ledger_carries_finished_runs_to_a_new_machine(tmp_path, round2, monkeypatch):
    old, new, ledger = tmp_path / "old", tmp_path / "new", tmp_path / "ledger.json"
    for name, _, o in bt.CHOICES[:2]:
        _fake_round2_run(old, name, o, 0, {"none": (93.0, 92.0), "bn": (93.5, 92.5)})
    assert bt.update_ledger(old, ledger) == ["float-s0", "rg-s0"]
    bt.LEDGER = ledger
    assert bt._finished(new, "rg-s0")["from_ledger"]
    assert bt._finished(new, "rg-long-s0") is None
    trained = []
    import host_train.train as ht

    monkeypatch.setattr(ht, "train", lambda cfg, out, **kw: trained.append(Path(out).name))
    bt.run_plan(new, ["float-s0", "rg-s0", "rg-long-s0"], stop_after=1)
    assert trained == ["rg-long-s0"]  # the ledger's runs are not trained again
    s = bt.summarise(new)
    assert s["rows"]["rg-s0"]["from_ledger"] and s["rows"]["rg-s0"]["variants"]["bn"]
    # a ledger run whose config differs from the plan's is trained again
    data = json.loads(ledger.read_text())
    data["runs"]["rg-s0"]["config"]["lr"] = 0.1
    ledger.write_text(json.dumps(data))
    trained.clear()
    bt.run_plan(new, ["rg-s0"], stop_after=1)
    assert trained == ["rg-s0"]


def test_committed_round2_ledger_matches_the_plan(round2):
    """Every run in the committed ledger has the config the round-2 plan gives its row
    today (else a new machine would train it again), and the report reads it."""
    ledger = bt.ROOT / "docs" / "runs" / "train-gap-round2.json"
    runs = json.loads(ledger.read_text())["runs"]
    assert runs, "empty ledger"
    bt.LEDGER = ledger
    empty = bt.ROOT / "bench_runs" / "__no_such_dir__"
    rows = {name: (o, seed) for name, _, o, seed, _ in bt.plan(empty)}
    for name, entry in runs.items():
        assert name in rows, f"{name}: not a row of the plan"
        cfg = bt.config_for(rows[name][0], empty, rows[name][1])
        assert bt.config_matches(entry["config"], cfg), name
        assert not bt.config_matches({**entry["config"], "lr": 1.0}, cfg)
    assert set(bt.summarise(empty)["rows"]) == set(runs)


def test_the_ledger_keeps_a_runs_bundle_check(tmp_path, round2):
    """--agreement's result for a run is written to the ledger with it (and kept when a
    later report has no agreement.json), and a plan on a new machine (no checkpoint)
    reports it - unless the picked finish is not the checked model's."""
    old, new, ledger = tmp_path / "old", tmp_path / "new", tmp_path / "ledger.json"
    own = bt.COMMON["finish"]  # every round-2 run's own final model: ema-bn
    for name, _, o in bt.CHOICES:
        _fake_round2_run(old, name, o, 0, {"none": (92.0, 91.0), own: (93.0, 92.0)})
    check = {"images": 100, "top1_agreement": 1.0, "torch_accuracy": 0.92, "engine_accuracy": 0.92}
    (old / "rg-s0" / bt.AGREEMENT).write_text(json.dumps(check))
    bt.update_ledger(old, ledger)
    (old / "rg-s0" / bt.AGREEMENT).unlink()
    bt.update_ledger(old, ledger)  # reported again without the file: the check stays
    data = json.loads(ledger.read_text())["runs"]
    assert data["rg-s0"]["agreement"] == check and "agreement" not in data["float-s0"]
    bt.LEDGER = ledger
    s = bt.summarise(new)
    assert s["rows"]["rg-s0"]["from_ledger"] and s["rows"]["rg-s0"]["agreement"] == check
    assert "| 3 | 1 | 92.00 ± 0.00 | 100.00 % of 100 |" in bt.report(s)
    # the pick is "none" now: the check was of the ema-bn model, so it is not reported
    for name, _, o in bt.CHOICES:
        _fake_round2_run(old, name, o, 0, {"none": (94.0, 91.0), own: (93.0, 92.0)})
    bt.update_ledger(old, ledger)
    s = bt.summarise(new)
    assert s["rows"]["rg-s0"]["finish"] == "none" and "agreement" not in s["rows"]["rg-s0"]
    assert "| 3 | 1 | 91.00 ± 0.00 | - |" in bt.report(s)


def test_a_saved_config_with_an_unknown_field_is_not_the_plan(round2, tmp_path):
    import dataclasses

    cfg = bt.config_for({"method": "rg"}, tmp_path)
    saved = dataclasses.asdict(cfg)
    assert bt.config_matches(saved, cfg)
    assert not bt.config_matches({**saved, "no_such_field": 1}, cfg)


def _round2_through_gate(out, vt_q=(93.0, 92.0), vt_f=(94.0, 93.0)):
    """Choice and gate rows of round 2 finished (every finish at the given (val, test))."""
    for name, _, o in bt.CHOICES:
        vt = vt_f if o["method"] == "float" else vt_q
        _fake_round2_run(out, name, o, 0, {"none": vt, "bn": vt, "ema-bn": vt})
    for name, _, o, seed, stage in bt.plan(out):
        if stage == "gate":
            vt = vt_f if o["method"] == "float" else vt_q
            _fake_round2_run(out, name, o, seed, {"none": vt, "bn": vt, "ema-bn": vt})


def _finish_after_gate(out, vals: dict):
    for name, _, o in bt.AFTER_GATE:
        v = vals.get(name, 90.0)
        _fake_round2_run(out, name, o, 0, {"none": (v, v - 1), "bn": (v - 1, v - 1)})


def test_round2_n_rows_wait_for_the_after_gate_rows_and_ties_keep_the_pick(tmp_path, round2):
    _round2_through_gate(tmp_path)
    assert not any(r[0].startswith("bits") for r in bt.plan(tmp_path))
    _finish_after_gate(tmp_path, {"rg-long-s0": 93.0, "rg-cs-s0": 93.0})  # ties with rg-s0
    assert bt.winners(tmp_path) == bt.best_choices(tmp_path)
    rows = {r[0]: r for r in bt.plan(tmp_path)}
    assert not any(n.startswith("final-") for n in rows)
    assert bt.config_for(rows["bits2-s0"][2], tmp_path).epochs == 15
    s = bt.summarise(tmp_path)
    assert "final_gate" not in s and s["curve_runs"] == ["rg-s0", "gate-q3-s1", "gate-q3-s2"]


def test_a_longer_schedule_that_wins_gets_its_own_gate_and_the_n_rows(tmp_path, round2):
    _round2_through_gate(tmp_path)
    _finish_after_gate(tmp_path, {"rg-long-s0": 93.5, "float-long-s0": 94.2, "rg-cs-s0": 93.2})
    (q, qo), (f, fo) = bt.winners(tmp_path)
    assert (q, f) == ("rg-long-s0", "float-long-s0")
    assert qo == {"method": "rg", "epochs": 30, "finish": "none"}  # the finish picked on val
    rows = {r[0]: r for r in bt.plan(tmp_path)}
    for tag, o in (("q3", qo), ("float", fo)):
        for seed in (1, 2):
            name, _, over, s_, stage = rows[f"final-{tag}-s{seed}"]
            assert (over, s_, stage) == (o, seed, "final gate")
            assert bt.config_for(over, tmp_path, seed).epochs == 30
    assert bt.config_for(rows["bits4-s0"][2], tmp_path).epochs == 30
    stages = [r[4] for r in bt.plan(tmp_path)]  # the n rows first, then the final gate
    assert stages[-8:] == ["bits"] * 4 + ["final gate"] * 4
    for name, _, o, seed, stage in bt.plan(tmp_path):
        if stage == "final gate":
            v = 93.4 if "q3" in name else 93.6
            _fake_round2_run(
                tmp_path, name, o, seed, {"none": (v, v), "bn": (v, v), "ema-bn": (v, v)}
            )
    s = bt.summarise(tmp_path)
    assert s["final_gate"]["q3"]["runs"] == ["rg-long-s0", "final-q3-s1", "final-q3-s2"]
    assert s["final_gate"]["float"]["runs"] == ["float-long-s0", "final-float-s1", "final-float-s2"]
    assert s["curve_runs"] == ["rg-long-s0", "final-q3-s1", "final-q3-s2"]
    text = bt.report(s)
    assert "Gate of the winning setting after the gate stage" in text and "-> FAIL" in text


def test_continuous_scales_that_win_keep_the_float_side_of_the_gate(tmp_path, round2):
    _round2_through_gate(tmp_path)
    _finish_after_gate(tmp_path, {"rg-cs-s0": 93.5, "rg-long-s0": 93.1, "float-long-s0": 95.0})
    (q, qo), (f, fo) = bt.winners(tmp_path)
    assert q == "rg-cs-s0" and (f, fo) == bt.best_choices(tmp_path)[1]  # 15 epochs: float-s0
    names = [r[0] for r in bt.plan(tmp_path)]
    assert "final-q3-s1" in names and not any(n.startswith("final-float") for n in names)
    cfg = bt.config_for({**qo, "bits": 2}, tmp_path)
    assert (cfg.per_channel, cfg.scale_steps, cfg.epochs) == (True, 16, 15)
    s = bt.summarise(tmp_path)
    assert s["final_gate"]["float"]["runs"] == ["float-s0", "gate-float-s1", "gate-float-s2"]
