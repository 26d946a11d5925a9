"""Continuous per-channel weight scales (``--per-channel --scale-steps S``, issue 28):
the fast squared-error search against the direct one, the chosen scales, the codes,
the option's checks, and a trained checkpoint exported and run bit-exactly against
the reference (the scale lands in the requantisation multiplier)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bundle_support import assert_engine_matches_reference, train_and_export  # noqa: E402

from host_train import quant  # noqa: E402
from host_train.data import load_digits  # noqa: E402
from host_train.train import (  # noqa: E402
    TrainConfig,
    load_checkpoint,
    model_from_checkpoint,
    saved_config,
)
from pynq_nbq import datapath as dp  # noqa: E402
from pynq_nbq.bundle import load_bundle  # noqa: E402

MODES = ("nearest", "log")


def _weights(seed: int, shape=(8, 4, 3, 3)) -> torch.Tensor:
    """Random weights whose channels span an 8x range of sizes, one channel all zero."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * torch.logspace(-3, 1, shape[0], base=2.0).view(
        -1, *([1] * (len(shape) - 1))
    )
    w[3] = 0.0
    return w


def _direct_error(w: torch.Tensor, scales: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """(K, C) squared error of the staircase built for every candidate scale, float64."""
    flat = w.reshape(w.shape[0], -1).double()
    big = flat.unsqueeze(0).expand(scales.shape[0], -1, -1)
    sc = scales.double()[..., None]
    q = quant._levels(big, quant._magnitude_index(big.abs(), sc, n, mode), sc)
    return ((big - q) ** 2).sum(-1)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("mode", MODES)
def test_sorted_error_equals_the_direct_sum(n, mode):
    w = _weights(n)
    flat = w.reshape(w.shape[0], -1)
    top = torch.floor(torch.log2(flat.abs().amax(1).clamp_min(1e-30)))
    scales = torch.pow(2.0, top[None, :] + torch.arange(-48, 16)[:, None] / 16)
    fast = quant.sorted_squared_error(flat.abs(), scales, n, mode)
    direct = _direct_error(w, scales, n, mode)
    assert fast.shape == direct.shape == (64, w.shape[0]) and fast.dtype == torch.float64
    assert torch.allclose(fast, direct, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_sorted_error_on_the_bin_bounds(n):
    """Weights placed exactly on every bound (and either side of it), power-of-two scales,
    rule nearest: the bins of the search are the quantizer's exactly (both compare
    exactly there), so the sums agree to rounding."""
    bounds = torch.tensor(quant._level_bounds(n, "nearest"), dtype=torch.float64)
    row = torch.cat([bounds, bounds * (1 + 2**-20), bounds * (1 - 2**-20), torch.tensor([0.0])])
    w = torch.stack([row * 2.0**k for k in (-3, 0, 2)]).float()  # 3 channels, scales 2**k
    scales = torch.pow(2.0, torch.tensor([[-3.0, 0.0, 2.0], [-4.0, 1.0, 2.0]]))
    fast = quant.sorted_squared_error(w.abs(), scales, n, "nearest")
    direct = _direct_error(w, scales, n, "nearest")
    assert torch.allclose(fast, direct, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("steps", [2, 8, 16])
def test_continuous_search_picks_the_least_error_of_its_candidates(n, mode, steps):
    """The chosen scale has the least direct error of every candidate 2**(top + k/S) (up
    to rounding: with many levels, scales an octave apart can tie exactly); it is never
    worse than the power-of-two search (whose candidates it contains)."""
    w = _weights(10 * n + steps)
    rule = "log" if mode == "log" else "nearest"
    q, e = quant.quantize_per_channel(w, n, rule, steps)
    q1, _ = quant.quantize_per_channel(w, n, rule, 1)
    assert e.dtype == torch.float64 and e.shape == (w.shape[0],)
    assert torch.equal(e * steps, torch.round(e * steps))  # multiples of 1/S
    flat = w.reshape(w.shape[0], -1)
    top = torch.floor(torch.log2(flat.abs().amax(1).clamp_min(1e-30)))
    r = quant.num_magnitudes(n)
    cand = top[None, :] + torch.arange((-r - 1) * steps, 2 * steps)[:, None] / steps
    live = flat.abs().amax(1) > 0  # channel 3 is all zero: e = 0
    assert bool((e == cand.double()).any(0)[live].all()) and float(e[3]) == 0.0
    least = _direct_error(w, torch.pow(2.0, cand), n, mode).min(0).values
    chosen = _direct_error(w, torch.pow(2.0, e.float())[None], n, mode)[0]
    assert torch.allclose(chosen[live], least[live], rtol=1e-6, atol=1e-9)
    err = ((w - q) ** 2).reshape(w.shape[0], -1).sum(1)
    err1 = ((w - q1) ** 2).reshape(w.shape[0], -1).sum(1)
    assert bool((err <= err1 + 1e-6).all())
    levels = torch.tensor(quant.level_set(n), dtype=torch.float64)
    ratio = q.double() / torch.pow(2.0, e).view(-1, 1, 1, 1)
    assert bool(torch.isclose(ratio[..., None], levels).any(-1).all())


def test_continuous_scales_fit_better_than_powers_of_two():
    """On the shipped 3-bit model's largest layer: less squared error at S = 16."""
    z = np.load(Path(__file__).parents[1] / "pynq_nbq/models/checkpoints/fmnist-rg3.npz")
    w = torch.from_numpy(z["features.14.weight"]).float()
    errs = [
        float(((w - quant.quantize_per_channel(w, 3, "nearest", s)[0]) ** 2).sum()) for s in (1, 16)
    ]
    assert errs[1] < 0.95 * errs[0]


def test_codes_decode_to_the_continuous_staircase():
    for n in (1, 2, 3, 4, 5):
        w = _weights(20 + n)
        q, e = quant.quantize_per_channel(w, n, "nearest", 8)
        codes, e2 = quant.quantize_to_codes_per_channel(w, n, "nearest", 8)
        assert torch.equal(e, e2)
        ints = dp.decode_svpe(codes.numpy(), n).astype(np.float64)
        real = ints * np.exp2(dp.layer_exponent(0, n) + e.numpy()).reshape(-1, 1, 1, 1)
        assert np.allclose(real, q.double().numpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "steps,per_channel,rule,match",
    [
        (0, True, "nearest", "power of two"),
        (3, True, "nearest", "power of two"),
        (128, True, "nearest", "power of two"),
        (8, False, "nearest", "per-channel"),
        (8, True, "moments", "nearest or log"),
        (2.0, True, "nearest", "power of two"),
        (True, True, "nearest", "power of two"),
    ],
)
def test_scale_steps_are_checked(steps, per_channel, rule, match):
    assert quant.scale_steps_problem(steps, per_channel, rule)
    with pytest.raises(ValueError, match=match):
        TrainConfig(scale_steps=steps, per_channel=per_channel, rule=rule).validate()
    if per_channel:
        with pytest.raises(ValueError, match=match):
            quant.quantize_per_channel(torch.ones(2, 3), 3, rule, steps)
    assert quant.scale_steps_problem(1, False, "moments") is None
    assert quant.scale_steps_problem(quant.MAX_SCALE_STEPS, True, "log") is None


def test_a_config_saved_before_scale_steps_still_matches():
    old = {k: v for k, v in saved_config({}).items() if k != "scale_steps"}
    assert saved_config(old) == saved_config({}) and saved_config(old)["scale_steps"] == 1


@pytest.fixture(scope="module")
def continuous_bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("cs")
    cfg = TrainConfig(
        model="nbq-compact", method="rg", per_channel=True, scale_steps=16, epochs=2,
        dataset="digits", width=0.25, batch_size=64, train_limit=256,
    )  # fmt: skip
    return d, train_and_export(cfg, d, load_digits())


def test_continuous_scales_export_into_the_multiplier(continuous_bundle):
    d, report = continuous_bundle
    model, cfg = model_from_checkpoint(load_checkpoint(d / "run"))
    assert cfg.scale_steps == 16
    bundle = load_bundle(d / "bundle")
    fractional = 0
    for layer in bundle.layers:
        if layer["op"] not in ("conv", "linear"):
            continue
        module = dict(model.named_modules())[layer["name"]]
        codes, e = module.codes()
        assert e.dtype == torch.float64
        assert layer["weight_exp"] == dp.layer_exponent(
            int(np.floor(float(e.max()))), module.n_bits
        )
        assert np.array_equal(bundle.arrays[layer["arrays"]["weights"]], codes.numpy())
        fractional += int((e != torch.floor(e)).sum())
    assert fractional > 0  # some channels did get scales between powers of two
    _check_multipliers(model, bundle)
    assert report["top1_agreement"] >= 0.95
    assert min(r["sqnr_db"] for r in report["layers"]) > 25


def _check_multipliers(model, bundle) -> None:
    """Every channel's requantisation multiplier mult * 2**-shift is batch norm's scale
    times the channel's factor 2**(e_c - floor(max e)) in the layer's units, to the
    multiplier's rounding - and the factor is not a power of two for some channel."""
    from host_train.export import _bn_affine
    from host_train.fuse import _Tracer, fuse_graph

    gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    fused = {lay.name: lay for lay in fuse_graph(gm)[0]}
    tensors = bundle.manifest["tensors"]
    off_octave = 0
    for layer in bundle.layers:
        if layer["op"] not in ("conv", "linear"):
            continue
        _, e = dict(model.named_modules())[layer["name"]].codes()
        factor = np.exp2(e.numpy() - np.floor(float(e.max())))
        bn_scale, _ = _bn_affine(fused[layer["name"]].bn)
        f_in, f_out = tensors[layer["inputs"][0]]["frac"], tensors[layer["output"]]["frac"]
        want = bn_scale * factor * 2.0 ** (layer["weight_exp"] - f_in + f_out)
        arr = layer["arrays"]
        got = bundle.arrays[arr["mult"]] * np.exp2(-bundle.arrays[arr["shift"]].astype(float))
        assert np.allclose(got, want, rtol=2**-13, atol=0), layer["name"]
        frac = np.log2(factor) % 1.0
        off_octave += int(((frac > 1e-9) & (frac < 1 - 1e-9)).sum())
    assert off_octave > 0


def test_continuous_scale_bundle_runs_exactly_like_the_reference(continuous_bundle):
    d, _ = continuous_bundle
    assert_engine_matches_reference(d / "bundle", load_digits().test_x[:3])


def test_scale_error_table_of_the_shipped_model():
    from scripts import bench_scale_error

    rows = bench_scale_error.table(bench_scale_error.DEFAULT, 3).splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows][:2] == ["| features.0.weight", "| features.3.weight"]
    for r in rows:
        errs = [float(c) for c in r.strip("| ").split(" | ")[2:]]
        assert len(errs) == 6 and errs[-1] < errs[1] <= errs[0] + 1e-4  # S = 16 < per channel


def test_cli_passes_scale_steps_and_names_the_problem(tmp_path, capsys):
    import argparse

    from pynq_nbq.cli import main
    from pynq_nbq.commands import train as train_cmd

    sub = argparse.ArgumentParser().add_subparsers(dest="cmd")
    train_cmd.register(sub)
    args = sub._name_parser_map["train"].parse_args(
        ["--out", str(tmp_path), "--per-channel", "--scale-steps", "8"]
    )
    assert train_cmd._config(args).scale_steps == 8
    rc = main(["train", "--out", str(tmp_path), "--dataset", "digits", "--scale-steps", "8"])
    assert rc == 2 and "--per-channel" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint.pt").exists()
