"""scripts/bench_train.py's plan logic on fake finished runs: the choice is made on
validation accuracy (never test), gate and bits rows follow it, the gate arithmetic."""

from __future__ import annotations

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
