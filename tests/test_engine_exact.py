"""The numpy engine is exact: equal to the slow integer loops on random layers."""

import numpy as np
import pytest
import reference_loops as ref
from hypothesis import given, settings
from hypothesis import strategies as st

from pynq_nbq import datapath as dp
from pynq_nbq import ops


def _random_layer(
    rng,
    n_bits,
    datapath,
    cin,
    cout,
    k,
    stride,
    padding,
    groups,
    relu,
    pool,
    weights="random",
    inputs="random",
    h=7,
    w=5,
):
    shape = (cout, cin // groups, k, k)
    if datapath == "svpe":
        mc = dp.num_magnitudes(n_bits)
        if weights == "zero":
            codes = np.zeros(shape, np.int8) if n_bits > 1 else np.ones(shape, np.int8)
        elif weights == "largest":
            codes = (rng.choice([-1, 1], size=shape) * mc).astype(np.int8)
        else:
            codes = rng.integers(-mc, mc + 1, size=shape).astype(np.int8)
            if n_bits == 1:
                codes = np.where(codes >= 0, 1, -1).astype(np.int8)
        wint = dp.decode_svpe(codes, n_bits)
    else:
        codes = None
        if weights == "zero":
            wint = np.zeros(shape, np.int64)
        elif weights == "largest":
            wint = rng.choice([dp.VPE_WEIGHT_MIN, dp.VPE_WEIGHT_MAX], size=shape).astype(np.int64)
        else:
            wint = rng.integers(dp.VPE_WEIGHT_MIN, dp.VPE_WEIGHT_MAX + 1, size=shape)
    if inputs == "saturating":
        x = rng.choice([dp.ACT_MIN, dp.ACT_MAX, -1, 0, 1], size=(2, h, w, cin)).astype(np.int16)
    else:
        x = rng.integers(dp.ACT_MIN, dp.ACT_MAX + 1, size=(2, h, w, cin)).astype(np.int16)
    mult = rng.integers(dp.REQUANT_MULT_MIN, dp.REQUANT_MULT_MAX + 1, size=cout)
    shift = rng.integers(0, 40, size=cout)
    bias = rng.integers(-(1 << 40), 1 << 40, size=cout)
    spec = ops.ConvSpec(
        "t",
        wint.astype(np.int64),
        mult.astype(np.int64),
        bias.astype(np.int64),
        shift.astype(np.int64),
        stride,
        padding,
        groups,
        relu,
        pool,
        datapath,
        n_bits if datapath == "svpe" else 16,
        codes,
    )
    return spec, x


def _check(spec, x, got=None):
    """``got`` (default: the numpy engine's output) equals the integer loops."""
    got = ops.conv_layer(x, spec) if got is None else got
    for b in range(x.shape[0]):
        want = ref.conv_layer(
            x[b].tolist(),
            spec.weights.tolist(),
            spec.mult.tolist(),
            spec.bias.tolist(),
            spec.shift.tolist(),
            spec.stride,
            spec.padding,
            spec.groups,
            spec.relu,
            spec.pool,
        )
        assert got[b].tolist() == want, spec


CASES = [
    # cin, cout, k, stride, padding, groups, relu, pool
    (3, 4, 3, 1, 1, 1, True, 0),
    (3, 4, 3, 1, 1, 1, True, 2),
    (5, 3, 1, 1, 0, 1, False, 0),
    (4, 6, 3, 2, 1, 1, True, 0),
    (4, 4, 3, 1, 1, 2, False, 0),
    (2, 3, 1, 2, 0, 1, True, 0),
]


@pytest.mark.parametrize("n_bits", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("case", CASES)
def test_svpe_conv_matches_integer_loops(n_bits, case):
    rng = np.random.default_rng(hash((n_bits, case)) % 2**32)
    spec, x = _random_layer(rng, n_bits, "svpe", *case)
    _check(spec, x)


@pytest.mark.parametrize("case", CASES)
def test_vpe_conv_matches_integer_loops(case):
    rng = np.random.default_rng(hash(case) % 2**32)
    spec, x = _random_layer(rng, 16, "vpe", *case)
    _check(spec, x)


@pytest.mark.parametrize("datapath,n_bits", [("svpe", 1), ("svpe", 3), ("svpe", 5), ("vpe", 16)])
@pytest.mark.parametrize("weights", ["zero", "largest"])
@pytest.mark.parametrize("inputs", ["random", "saturating"])
def test_edge_values(datapath, n_bits, weights, inputs):
    rng = np.random.default_rng(7)
    spec, x = _random_layer(rng, n_bits, datapath, 3, 4, 3, 1, 1, 1, True, 2, weights, inputs)
    _check(spec, x)


def test_odd_sizes_and_one_by_one_maps():
    rng = np.random.default_rng(3)
    for h, w in [(1, 1), (3, 1), (5, 9), (2, 2)]:
        spec, x = _random_layer(rng, 3, "svpe", 3, 2, 3, 1, 1, 1, True, 0, h=h, w=w)
        _check(spec, x)


def test_requantisation_saturates_both_ways():
    spec = ops.ConvSpec(
        "s",
        np.ones((2, 1, 1, 1), np.int64),
        np.array([32767, -32768]),
        np.zeros(2, np.int64),
        np.zeros(2, np.int64),
        relu=False,
    )
    x = np.full((1, 1, 1, 1), 1000, np.int16)
    assert ops.conv_layer(x, spec).ravel().tolist() == [32767, -32768]


def test_rounding_is_half_up():
    x = np.array([-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5], dtype=np.int64)
    got = dp.rounding_shift(x, 1).tolist()
    assert got == [ref.rshift_round(int(v), 1) for v in x] == [-2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3]


@pytest.mark.parametrize("fa,fb,fo", [(8, 8, 8), (10, 7, 8), (5, 12, 12), (12, 3, 0)])
def test_residual_add_and_concat_with_different_formats(fa, fb, fo):
    rng = np.random.default_rng(fa * 100 + fb)
    a = rng.integers(dp.ACT_MIN, dp.ACT_MAX + 1, size=(2, 3, 3, 4)).astype(np.int16)
    b = rng.integers(dp.ACT_MIN, dp.ACT_MAX + 1, size=(2, 3, 3, 4)).astype(np.int16)
    for relu in (False, True):
        got = ops.add([(a, fa), (b, fb)], fo, relu)
        want = [
            ref.sat(max(v, 0) if relu else v)
            for v in (
                ref.align(int(p), fa, fo) + ref.align(int(q), fb, fo)
                for p, q in zip(a.ravel(), b.ravel())
            )
        ]
        assert got.ravel().tolist() == want
    cat = ops.concat([(a, fa), (b, fb)], fo)
    assert cat.shape == (2, 3, 3, 8)
    assert cat[..., :4].ravel().tolist() == [ref.sat(ref.align(int(v), fa, fo)) for v in a.ravel()]


def test_global_average_pool_and_maxpool():
    rng = np.random.default_rng(5)
    x = rng.integers(dp.ACT_MIN, dp.ACT_MAX + 1, size=(2, 5, 3, 4)).astype(np.int16)
    for fi, fo in [(0, 0), (8, 8), (8, 11), (11, 8), (3, 0)]:
        got = ops.global_avg_pool(x, fi, fo)
        for b in range(2):
            assert got[b].tolist() == ref.gap(x[b].tolist(), fi, fo), (fi, fo)
    mp = ops.maxpool(x, 3, 2)
    assert mp.shape == (2, 2, 1, 4)
    assert mp[0, 1, 0, 2] == x[0, 2:5, 0:3, 2].max()


def test_float64_exactness_is_guarded():
    big = np.full((1, 2, 3, 3), 1 << 40, np.int64)  # fan-in * 2^15 * 2^40 >= 2^53
    with pytest.raises(ValueError, match="exact in float64"):
        ops.ConvSpec(
            "big", big, np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64)
        )


@settings(max_examples=300, deadline=None)
@given(
    fan_in=st.integers(1, 1 << 20),
    kind=st.sampled_from([("svpe", n) for n in dp.SVPE_BITS] + [("vpe", 16)]),
)
def test_accumulator_bits_hold_both_signs(fan_in, kind):
    """Property: +V and -V both fit in a signed acc_bits integer, and no fewer bits do."""
    mw = dp.max_abs_weight(*kind)
    bits = dp.accumulator_bits(fan_in, mw)
    v = fan_in * 2**15 * mw
    assert -(2 ** (bits - 1)) <= -v and v <= 2 ** (bits - 1) - 1
    assert not (v <= 2 ** (bits - 2) - 1)  # bits - 1 would not hold +V


def test_accumulator_bound_examples():
    # +V is reached: -32768 x the most negative weight, summed fan_in times
    w = np.full((1, 16384, 1, 1), -4, np.int64)
    x = np.full((1, 1, 1, 16384), dp.ACT_MIN, np.int16)
    acc = int(
        ops.conv_accumulate(x, ops.ConvSpec("v", w, *[np.zeros(1, np.int64)] * 3))[0, 0, 0, 0]
    )
    assert acc == 2**31 == dp.accumulator_bound(16384, 4)
    assert dp.accumulator_bits(16384, 4) == 33  # 2**31 does not fit 32 signed bits
    assert dp.accumulator_bits(16383, 4) == 32 and dp.accumulator_bits(4608, 1 << 15) == 44
    # the guard refuses V = 2**47 (needs 49 bits), lets 2**47 - 2**15 through
    assert dp.accumulator_problem(1 << 17, 1 << 15) is not None
    assert dp.accumulator_problem((1 << 17) - 1, 1 << 15) is None


def test_fold_requant_reproduces_affine_map():
    scale = np.array([0.37, -1.9, 1e-4, 0.0])
    offset = np.array([0.5, -2.0, 3.0, 1.25])
    mult, bias, shift = dp.fold_requant(scale, offset, acc_exp=-14, frac_out=9, acc_max=1 << 30)
    acc = np.array([[12345, -999, 77, 5]], dtype=np.int64).repeat(1, 0)
    y = dp.rounding_shift(acc * mult + bias, shift)
    real = scale * acc * 2.0**-14 + offset
    assert np.all(np.abs(y * 2.0**-9 - real) <= 2.0**-9 * 1.01)
    assert np.all(np.abs(mult) <= dp.REQUANT_MULT_MAX)
