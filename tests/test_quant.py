"""Quantizer maths: level sets, rules, gradients (host_train.quant)."""

import math

import pytest

torch = pytest.importorskip("torch")

from host_train import quant  # noqa: E402

EXPECTED_LEVELS = {
    1: [-1.0, 1.0],
    2: [-1.0, 0.0, 1.0],
    3: [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0],
    4: sorted([0.0] + [s * 2.0**-i for i in range(7) for s in (1, -1)]),
    5: sorted([0.0] + [s * 2.0**-i for i in range(15) for s in (1, -1)]),
}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_level_sets_are_exactly_the_papers(n):
    assert quant.level_set(n) == EXPECTED_LEVELS[n]
    assert len(quant.level_set(n)) == (2 if n == 1 else 2**n - 1)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("rule", ["log", "nearest", "moments", "authors"])
def test_quantized_weights_lie_in_level_set_times_scale(n, rule):
    if rule == "authors" and n != 3:
        with pytest.raises(ValueError, match="3-bit"):
            quant.quantize(torch.randn(10), n, rule)
        return
    g = torch.Generator().manual_seed(n)
    for scale in (1e-3, 0.05, 1.0, 30.0):
        w = torch.randn(4, 3, 3, 3, generator=g) * scale
        q, e = quant.quantize(w, n, rule)
        allowed = torch.tensor(EXPECTED_LEVELS[n]) * 2.0**e
        assert q.shape == w.shape
        assert torch.isin(q, allowed).all(), (n, rule, scale, e)
        # signs agree wherever the weight is not zeroed
        nz = q != 0
        assert (torch.sign(q[nz]) == torch.sign(w[nz])).all() or n == 1


def test_nearest_rule_picks_the_nearest_level():
    w = torch.tensor([0.9, 0.74, 0.76, 0.3, 0.2, 0.13, 0.12, 0.0, -0.6])
    q = quant._apply(w, 1.0, 3, "nearest")
    assert q.tolist() == [1.0, 0.5, 1.0, 0.25, 0.25, 0.25, 0.0, 0.0, -0.5]


def test_log_rule_rounds_in_the_log_domain():
    w = torch.tensor([0.71, 0.70, 0.36, 0.35, 0.18, 0.17])
    q = quant._apply(w, 1.0, 3, "log")
    # geometric midpoints: 2**-0.5 = 0.707, 2**-1.5 = 0.354, zero below 0.25/sqrt2 = 0.177
    assert q.tolist() == [1.0, 0.5, 0.5, 0.25, 0.25, 0.0]


def test_mse_scale_beats_max_scale():
    w = torch.randn(2000, generator=torch.Generator().manual_seed(0)) * 0.1
    q, e = quant.quantize(w, 3, "nearest")
    m = float(w.abs().max())
    q_max = quant._apply(w, 2.0 ** math.floor(math.log2(m)), 3, "nearest")
    assert ((w - q) ** 2).sum() <= ((w - q_max) ** 2).sum()


def test_moments_rule_keeps_variance_close():
    w = torch.randn(5000, generator=torch.Generator().manual_seed(1)) * 0.2
    q, _ = quant.quantize(w, 3, "moments")
    assert abs(float(q.var()) / float(w.var()) - 1) < 0.35


def test_zero_tensor():
    q, e = quant.quantize(torch.zeros(5), 3)
    assert q.abs().sum() == 0 and e == 0


def test_unknown_rule_and_bits_rejected():
    with pytest.raises(ValueError, match="rule"):
        quant.quantize(torch.ones(3), 3, "bogus")
    with pytest.raises(ValueError, match="n_bits"):
        quant.level_set(6)


@pytest.mark.parametrize("a", [0.0, 0.05, 0.3, 0.9])
def test_reconstructed_gradient_backward_is_a_times_upstream(a):
    w = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    q, _ = quant.quantize(w, 3)
    q = q.to(torch.float64)
    out = quant.ReconstructedGradient.apply(w, q, a)
    assert torch.allclose(out, (1 - a) * q + a * w)
    up = torch.randn(6, 5, dtype=torch.float64)
    (out * up).sum().backward()
    assert torch.allclose(w.grad, a * up)
    # numerically: d/dw of the blend with q held fixed is a
    eps = 1e-6
    w2 = w.detach().clone()
    w2[0, 0] += eps
    out2 = quant.ReconstructedGradient.apply(w2, q, a)
    num = ((out2 - out.detach()) * up).sum() / eps
    assert abs(float(num) - float(a * up[0, 0])) < 1e-6


def test_straight_through_passes_gradient():
    w = torch.randn(4, requires_grad=True)
    q, _ = quant.quantize(w, 3)
    out = quant.StraightThrough.apply(w, q)
    assert torch.equal(out, q)
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones(4))


def test_clipped_activation_pass_through():
    z = torch.tensor([-2.0, -0.5, 0.3, 0.99, 1.5], requires_grad=True)
    y = quant.ClippedActivationQuant.apply(z, 2)
    assert y.tolist() == pytest.approx([0.0, 0.0, 1 / 3, 1.0, 1.0])
    y.sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("schedule", quant.A_SCHEDULES)
def test_a_schedules_end_at_zero(schedule):
    vals = [quant.alpha_at(schedule, t, 10) for t in range(10)]
    assert vals[-1] == 0.0
    assert all(0.0 <= v <= 1.0 for v in vals)
    if schedule != "constant":
        assert all(x >= y for x, y in zip(vals, vals[1:]))


def test_authors_schedule_matches_their_code():
    # lambda = 1 - a starts at 0.5 and is multiplied by 2**(1/E) every epoch
    E = 8
    for t in range(E - 1):
        assert quant.alpha_at("authors", t, E) == pytest.approx(1 - 0.5 * 2 ** (t / E))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_codes_decode_to_staircase(n):
    from pynq_nbq import datapath as dp

    w = torch.randn(3, 4, 3, 3, generator=torch.Generator().manual_seed(n))
    q, e = quant.quantize(w, n)
    codes, e2 = quant.quantize_to_codes(w, n)
    assert e == e2
    ints = dp.decode_svpe(codes.numpy(), n)
    real = ints * 2.0 ** dp.layer_exponent(e, n)
    assert (real == q.numpy()).all()
