"""Gap-closing training methods and their plumbing: per-channel power-of-two scales
(quantizer -> export -> engine, bit-exact against the reference), distillation,
the validation hold-out, per-dataset flip defaults, ``nbq train --nproc``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bundle_support import assert_engine_matches_reference, train_and_export  # noqa: E402

from host_train import quant  # noqa: E402
from host_train.data import hold_out, load_digits  # noqa: E402
from host_train.train import (  # noqa: E402
    TrainConfig,
    apply_augment,
    batch_loss,
    load_checkpoint,
    model_from_checkpoint,
    train,
)
from pynq_nbq import datapath as dp  # noqa: E402
from pynq_nbq.bundle import load_bundle  # noqa: E402
from pynq_nbq.cli import main  # noqa: E402

TINY = dict(dataset="digits", width=0.25, batch_size=64, train_limit=256)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _quiet(cfg, out, ds, **kw):
    return train(cfg, out, progress=False, dataset=ds, log=lambda s: None, **kw)


# --- per-channel power-of-two scales ----------------------------------------------------
def _uneven_weights(seed: int, shape=(6, 3, 3, 3)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return w * torch.logspace(-3, 1, shape[0], base=2.0).view(-1, 1, 1, 1)  # 8x range


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("rule", ["nearest", "log", "moments"])
def test_per_channel_search_equals_the_layer_search_on_each_channel(n, rule):
    w = _uneven_weights(n)
    w[2] = 0.0  # an all-zero channel
    q, e = quant.quantize_per_channel(w, n, rule)
    assert e.dtype == torch.int64 and e.shape == (w.shape[0],)
    for c in range(w.shape[0]):
        qc, ec = quant.quantize(w[c], n, rule)
        assert torch.equal(q[c], qc), c
        assert int(e[c]) == ec, c
    levels = torch.tensor(quant.level_set(n))
    scaled = q / quant.scale_of(e, q.ndim)
    assert bool(torch.isin(scaled, levels).all())


def test_per_channel_codes_decode_to_the_staircase():
    for n in (1, 2, 3, 4, 5):
        w = _uneven_weights(10 + n)
        q, e = quant.quantize_per_channel(w, n)
        codes, e2 = quant.quantize_to_codes_per_channel(w, n)
        assert torch.equal(e, e2)
        ints = dp.decode_svpe(codes.numpy(), n).astype(np.float64)
        exp = np.array([dp.layer_exponent(int(ec), n) for ec in e])
        real = ints * np.ldexp(1.0, exp).reshape(-1, 1, 1, 1)
        assert np.array_equal(real, q.double().numpy())


def test_per_channel_fits_uneven_channels_better_than_one_scale():
    w = _uneven_weights(3)
    q1, _ = quant.quantize(w, 3)
    qc, _ = quant.quantize_per_channel(w, 3)
    assert float(((w - qc) ** 2).sum()) < float(((w - q1) ** 2).sum())


def test_per_channel_refuses_inq_and_the_authors_rule():
    with pytest.raises(ValueError, match="per-channel"):
        TrainConfig(method="inq", per_channel=True).validate()
    with pytest.raises(ValueError, match="authors"):
        quant.quantize_per_channel(torch.ones(2, 3), 3, "authors")


@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_a_power_of_two_channel_factor_only_moves_the_shift(k):
    rng = np.random.default_rng(k)
    scale = rng.uniform(0.05, 3.0, 8) * rng.choice([-1, 1], 8)
    offset = rng.normal(size=8)
    m0, b0, s0 = dp.fold_requant(scale, offset, -9, 8, 1 << 20)
    m1, b1, s1 = dp.fold_requant(scale * 2.0**-k, offset, -9, 8, 1 << 20)
    assert np.array_equal(m0, m1) and np.array_equal(s1, s0 + k)
    assert np.array_equal(b1, dp.round_half_up(offset * 2.0 ** (8 + s1.astype(float))))


@pytest.fixture(scope="module")
def per_channel_bundle(tmp_path_factory, digits):
    d = tmp_path_factory.mktemp("pc")
    cfg = TrainConfig(model="nbq-compact", method="rg", per_channel=True, epochs=2, **TINY)
    return d, train_and_export(cfg, d, digits)


def test_per_channel_checkpoint_exports_with_per_channel_shifts(per_channel_bundle):
    d, report = per_channel_bundle
    model, _ = model_from_checkpoint(load_checkpoint(d / "run"))
    bundle = load_bundle(d / "bundle")
    spread = 0
    for layer in bundle.layers:
        if layer["op"] != "conv":
            continue
        module = dict(model.named_modules())[layer["name"]]
        codes, e = module.codes()
        assert layer["weight_exp"] == dp.layer_exponent(int(e.max()), module.n_bits)
        assert np.array_equal(bundle.arrays[layer["arrays"]["weights"]], codes.numpy())
        spread = max(spread, int(e.max() - e.min()))
    assert spread >= 1  # the channels did get different scales
    assert report["top1_agreement"] >= 0.95
    assert min(r["sqnr_db"] for r in report["layers"]) > 25


def test_per_channel_bundle_runs_exactly_like_the_reference(per_channel_bundle):
    d, _ = per_channel_bundle
    assert_engine_matches_reference(d / "bundle", load_digits().test_x[:2])


# --- distillation -------------------------------------------------------------------------
def test_distillation_loss():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.randint(0, 4, (5,), generator=g)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.equal(batch_loss(TrainConfig(), s, y), ce)
    assert torch.allclose(batch_loss(TrainConfig(distill_weight=0.0), s, y, t), ce)
    only_kd = TrainConfig(distill_weight=1.0, distill_temperature=2.0)
    assert float(batch_loss(only_kd, t, y, t)) == pytest.approx(0.0, abs=1e-6)
    p_s, p_t = torch.softmax(s / 2, 1), torch.softmax(t / 2, 1)
    kl = float((p_t * (p_t.log() - p_s.log())).sum(1).mean())
    assert float(batch_loss(only_kd, s, y, t)) == pytest.approx(4 * kl, rel=1e-5)


def test_training_with_a_teacher(tmp_path, digits):
    _quiet(TrainConfig(method="float", epochs=1, **TINY), tmp_path / "teacher", digits)
    # 2 epochs: the latent weights train in the first (the last has a = 0)
    cfg = TrainConfig(method="rg", epochs=2, teacher=str(tmp_path / "teacher"), **TINY)
    ck = _quiet(cfg, tmp_path / "student", digits)
    assert ck["config"]["teacher"] == str(tmp_path / "teacher")
    plain = _quiet(TrainConfig(method="rg", epochs=2, **TINY), tmp_path / "plain", digits)
    assert not torch.equal(ck["model"]["features.0.weight"], plain["model"]["features.0.weight"])
    other = TrainConfig(
        method="rg", epochs=1, teacher=str(tmp_path / "teacher"), model="tiny-resnet"
    )
    with pytest.raises(ValueError, match="teacher"):
        _quiet(other, tmp_path / "x", _with_classes(digits, 3))


def _with_classes(ds, k):
    from dataclasses import replace

    return replace(ds, classes=ds.classes[:k])


# --- hold-out -----------------------------------------------------------------------------
def test_hold_out_is_fixed_disjoint_and_reported(tmp_path, digits):
    x = np.arange(100)[:, None]
    y = np.arange(100)
    tx, ty, vx, vy = hold_out(x, y, 20)
    assert len(vy) == 20 and len(ty) == 80 and not set(vy) & set(ty)
    assert np.array_equal(hold_out(x, y, 20)[3], vy) and np.all(np.diff(vy) > 0)
    assert len(hold_out(x, y, 0)[3]) == 0
    with pytest.raises(ValueError, match="val-split"):
        hold_out(x, y, 100)
    cfg = TrainConfig(method="float", epochs=1, val_split=300, **TINY)
    ck = _quiet(cfg, tmp_path, digits)
    assert 0.0 <= ck["metrics"][-1]["val_acc"] <= 1.0


# --- augmentation defaults ----------------------------------------------------------------
def test_flip_default_follows_the_dataset(tmp_path, digits):
    assert digits.mirror_symmetric is False
    ck = _quiet(TrainConfig(epochs=1, **TINY), tmp_path / "a", digits)
    assert ck["config"]["flip"] is False
    ck = _quiet(TrainConfig(epochs=1, flip=True, **TINY), tmp_path / "b", digits)
    assert ck["config"]["flip"] is True


def test_fashion_and_cifar_are_mirror_symmetric(tmp_path):
    from host_train.data import DATASETS, MIRROR_SYMMETRIC, load_dataset

    assert MIRROR_SYMMETRIC == {"fashion-mnist": True, "digits": False, "cifar10": True}
    assert set(MIRROR_SYMMETRIC) == set(DATASETS)
    rec = np.zeros((2, 3073), dtype=np.uint8)
    (tmp_path / "data_batch_1.bin").write_bytes(rec.tobytes())
    (tmp_path / "test_batch.bin").write_bytes(rec.tobytes())
    assert load_dataset("cifar10", str(tmp_path)).mirror_symmetric is True


def test_apply_augment_flips_only_when_asked():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    zero = torch.full((2,), 1, dtype=torch.int64)  # offset = pad: no shift
    flips = torch.tensor([True, False])
    same = apply_augment(x, zero, zero, flips, pad=1, flip=False)
    assert torch.equal(same, x)
    flipped = apply_augment(x, zero, zero, flips, pad=1, flip=True)
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])


def test_cli_flip_flag(tmp_path):
    args = ["train", "--dataset", "digits", "--width", "0.25", "--epochs", "1"]
    args += ["--train-limit", "64", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a"), "--flip"]) == 0
    assert load_checkpoint(tmp_path / "a")["config"]["flip"] is True


# --- nbq train --nproc ----------------------------------------------------------------------
def test_cli_nproc_launches_torchrun(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--nproc", "2", "--out", str(out), "--dataset", "digits"]
    args += ["--width", "0.25", "--epochs", "1", "--train-limit", "64", "--quiet"]
    assert main(args) == 0
    assert "torch.distributed.run" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[0]["processes"] == 2
    cfg = json.loads((out / "launch-config.json").read_text())
    assert cfg["train_limit"] == 64 and load_checkpoint(out)["config"]["flip"] is False
    assert math.isfinite(metrics[0]["train_loss"])
