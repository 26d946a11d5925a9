"""Quantizer maths of n-BQ-NN: level sets, threshold/scale rules, gradients.

Pure functions on tensors; no modules here (see :mod:`host_train.layers`).

Levels (paper Eq. 4-6): n = 1 gives {-1, +1}; n >= 2 gives {0, +-2**-i},
i = 0..r-1 with r = 2**(n-1) - 1.  Every layer multiplies its levels by a
power-of-two scale 2**e, chosen per call by a *rule*:

==========  ===================================  ==========================================
rule        thresholds between levels            scale 2**e
==========  ===================================  ==========================================
authors     the authors' code (3-bit only):      2**round(log2 max|W|)
            |W| < .02m -> 0, < .07m -> 1/4,
            < .14m -> 1/2, else 1 (m = max|W|)
log         rounding in the log domain           e minimising ||W - Q(W)||^2
            (geometric midpoints; zero below
            the smallest level / sqrt 2)
nearest     nearest level in the linear domain   e minimising ||W - Q(W)||^2
moments     nearest level in the linear domain   e minimising the mismatch of mean and
                                                 variance of Q(W) against W (Eq. 18)
==========  ===================================  ==========================================

The scale search tries every integer e from floor(log2 max|W|) - r - 1 to
floor(log2 max|W|) + 1 (it is cheap: a handful of candidates per layer per step).

:func:`level_indices_per_channel` runs the same search for every output channel (row
of W's first axis) separately: one exponent per channel.  The datapath carries it for
free: batch norm's per-channel requantisation multiplier/shift absorbs the factor
2**(e_c - max e), so the bundle format and the integer kernel are unchanged
(``host_train.export``).  With ``scale_steps`` S > 1 the per-channel search also tries
the scales between powers of two, 2**(k/S) for every integer k in the same range: a
continuous (to 1/S of an octave) scale per channel, the MSE-optimal one under the
rule's loss, which the requantisation multiplier absorbs just the same (it is any
real number there, not only a power of two).  The weights stay n-bit shift codes.
"""

from __future__ import annotations

import math

import torch

from pynq_nbq import datapath as dp

RULES = ("authors", "log", "nearest", "moments")
SUPPORTED_BITS = dp.SVPE_BITS  #: the datapath's svpe widths (one definition)
num_magnitudes = dp.num_magnitudes  #: r = 2**(n-1) - 1 non-zero magnitudes (1 for n = 1)


def level_set(n_bits: int) -> list[float]:
    """The paper's levels for n bits, sorted ascending (scale 1)."""
    r = num_magnitudes(n_bits)
    mags = [2.0**-i for i in range(r)]
    if n_bits == 1:
        return [-1.0, 1.0]
    return sorted([-m for m in mags] + [0.0] + mags)


def _magnitude_index(absw: torch.Tensor, scale: float, n_bits: int, mode: str) -> torch.Tensor:
    """Index i of the level 2**-i*scale for each |w| (-1 means zero). Int64 tensor."""
    r = num_magnitudes(n_bits)
    x = absw / scale
    if n_bits == 1:
        return torch.zeros_like(x, dtype=torch.int64)
    if mode == "log":
        # round log2(x) to nearest integer; levels 2^0..2^-(r-1); zero below 2^-(r-1)/sqrt2
        lg = torch.log2(x.clamp_min(1e-30))
        i = (-lg).round().clamp(0, r - 1).to(torch.int64)
        zero = x < 2.0 ** -(r - 1) / math.sqrt(2.0)
    elif mode == "nearest":
        # thresholds at linear midpoints between adjacent levels (and 2^-(r-1)/2 to zero)
        lg = torch.log2(x.clamp_min(1e-30))
        i_hi = torch.floor(-lg).clamp(0, r - 1)  # level just above or equal: 2^-i_hi >= x
        lo = 2.0 ** -(i_hi + 1)
        hi = 2.0**-i_hi
        go_down = (i_hi < r - 1) & (x - lo < hi - x)
        i = torch.where(go_down, i_hi + 1, i_hi).to(torch.int64)
        zero = x < 2.0 ** -(r - 1) / 2  # below the midpoint between 0 and the smallest level
    else:
        raise ValueError(mode)
    return torch.where(zero, torch.full_like(i, -1), i)


def _levels(w: torch.Tensor, idx: torch.Tensor, scale: float) -> torch.Tensor:
    """Staircase values ``sign(w) * scale * 2**-idx`` (0 where idx < 0), w's dtype."""
    mag = torch.where(idx < 0, torch.zeros_like(w), scale * torch.pow(2.0, -idx.to(w.dtype)))
    sign = torch.where(w < 0, -1.0, 1.0).to(w.dtype)
    return sign * mag


def _codes(w: torch.Tensor, idx: torch.Tensor, n_bits: int) -> torch.Tensor:
    """int8 svpe codes ``sign(w) * (r - idx)`` (0 where idx < 0): integers throughout, the
    datapath's code of level ``2**-idx`` (``pynq_nbq.datapath``, module docstring)."""
    r = num_magnitudes(n_bits)
    m = torch.where(idx < 0, torch.zeros_like(idx), r - idx)
    return torch.where(w < 0, -m, m).to(torch.int8)


def _apply(w: torch.Tensor, scale: float, n_bits: int, mode: str) -> torch.Tensor:
    return _levels(w, _magnitude_index(w.abs(), scale, n_bits, mode), scale)


def _authors(w: torch.Tensor, n_bits: int) -> tuple[torch.Tensor, int]:
    """(level index, e) of the authors' 3-bit thresholds; index -1 means zero."""
    if n_bits != 3:
        raise ValueError("the authors' threshold rule is defined for 3-bit weights only")
    m = float(w.abs().max())
    e = 0 if m == 0 else int(round(math.log2(m)))
    a = w.abs()
    idx = torch.where(
        a < 0.02 * m,
        -1,
        torch.where(a < 0.07 * m, 2, torch.where(a < 0.14 * m, 1, 0)),
    )
    return idx.to(torch.int64), e


def _candidates(w: torch.Tensor, n_bits: int) -> range:
    m = float(w.abs().max())
    top = 0 if m == 0 else math.floor(math.log2(m))
    r = num_magnitudes(n_bits)
    return range(top - r - 1, top + 2)


def level_indices(
    w: torch.Tensor, n_bits: int, rule: str = "nearest", e: int | None = None
) -> tuple[torch.Tensor, int]:
    """The quantizer's integer answer: (level index per weight, layer exponent e).

    Index ``i`` >= 0 means the level ``sign(w) * 2**-i * 2**e``; -1 means zero.  The
    rule picks e (or ``e`` is given: INQ's frozen scale).  :func:`quantize` (the
    staircase values) and :func:`quantize_to_codes` (the datapath's codes) both derive
    from it, so export never re-derives codes from floats.
    """
    if rule not in RULES:
        raise ValueError(f"unknown quantizer rule {rule!r}; choose one of {RULES}")
    num_magnitudes(n_bits)  # validates n
    mode = "log" if rule == "log" else "nearest"
    with torch.no_grad():
        w = w.detach()
        if e is not None:
            return _magnitude_index(w.abs(), 2.0**e, n_bits, mode), int(e)
        if float(w.abs().max()) == 0.0:
            return torch.full_like(w, 0 if n_bits == 1 else -1, dtype=torch.int64), 0
        if rule == "authors":
            return _authors(w, n_bits)
        best: tuple[float, torch.Tensor, int] | None = None
        mean_w, var_w = float(w.mean()), float(w.var(unbiased=False))
        for cand in _candidates(w, n_bits):
            idx = _magnitude_index(w.abs(), 2.0**cand, n_bits, mode)
            q = _levels(w, idx, 2.0**cand)
            if rule == "moments":
                dv = float(q.var(unbiased=False)) - var_w
                dm = float(q.mean()) - mean_w
                loss = (dv / max(var_w, 1e-30)) ** 2 + dm * dm / max(var_w, 1e-30)
            else:
                loss = float(((w - q) ** 2).sum())
            if best is None or loss < best[0]:
                best = (loss, idx, cand)
        assert best is not None
        return best[1], best[2]


def quantize(w: torch.Tensor, n_bits: int, rule: str = "nearest") -> tuple[torch.Tensor, int]:
    """staircase(W): quantized weights and the layer exponent e (levels times 2**e).

    Runs without autograd; the returned tensor has W's shape and dtype and every
    entry lies in ``level_set(n_bits) * 2**e``.
    """
    idx, e = level_indices(w, n_bits, rule)
    with torch.no_grad():
        return _levels(w.detach(), idx, 2.0**e), e


def quantize_to_codes(
    w: torch.Tensor, n_bits: int, rule: str = "nearest", e: int | None = None
) -> tuple[torch.Tensor, int]:
    """Integer codes of staircase(W): (codes int8 tensor, layer exponent e).

    ``code = sign * m`` with ``m = r - i`` for level ``2**-i`` (m = 0 for zero), so that
    the integer weight is ``sign * 2**(m-1)`` and ``real = int_weight * 2**e_w`` with
    ``e_w = datapath.layer_exponent(e, n)`` (``docs/datapath.md`` section 1).  ``e``:
    a fixed scale exponent (INQ), else the rule's choice.
    """
    idx, e = level_indices(w, n_bits, rule, e)
    return _codes(w.detach(), idx, n_bits), e


#: The largest ``scale_steps`` (scale candidates per octave) of the per-channel search.
MAX_SCALE_STEPS = 64


def scale_steps_problem(scale_steps: int, per_channel: bool, rule: str = "nearest") -> str | None:
    """Why ``scale_steps`` cannot be used (with or without per-channel scales, with
    ``rule``), or None."""
    is_int = isinstance(scale_steps, int) and not isinstance(scale_steps, bool)
    ok = is_int and 1 <= scale_steps <= MAX_SCALE_STEPS
    if not ok or scale_steps & (scale_steps - 1):
        return (
            f"scale steps (--scale-steps) must be a power of two from 1 to {MAX_SCALE_STEPS} "
            f"(scale candidates per octave), not {scale_steps!r}"
        )
    if scale_steps > 1 and not per_channel:
        return "scale steps > 1 (continuous scales) need per-channel scales (--per-channel)"
    if scale_steps > 1 and rule not in ("nearest", "log"):
        return (
            "scale steps > 1 (continuous scales) search the squared error: use the rule "
            f"nearest or log, not {rule!r}"
        )
    return None


def scale_of(e: int | torch.Tensor, ndim: int) -> float | torch.Tensor:
    """2**e for a layer exponent (an int) or per-channel exponents (a tensor (C,): int64,
    or float64 multiples of 1/S for continuous scales), shaped to broadcast against a
    weight tensor with ``ndim`` axes (channels first)."""
    if isinstance(e, int):
        return 2.0**e
    shape = (-1, *([1] * (ndim - 1)))
    if e.is_floating_point():  # k/S: exact in float32, so this is the search's own scale
        return torch.pow(2.0, e.to(torch.float32)).view(shape)
    ones = torch.ones(e.shape, dtype=torch.float32, device=e.device)
    return torch.ldexp(ones, e.to(torch.int32)).view(shape)


def level_indices_per_channel(
    w: torch.Tensor, n_bits: int, rule: str = "nearest", scale_steps: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`level_indices` with one exponent per output channel (W's first axis).

    Returns (index per weight, e (C,)).  The search of :func:`level_indices` runs
    for all channels at once (the same candidates relative to each channel's max|W|,
    the same losses; ties go to the smaller exponent, as there).  An all-zero channel
    gets e = 0.  The authors' rule has one scale per layer by definition: refused.

    ``scale_steps`` S: candidates per octave.  S = 1 tries powers of two only and gives
    e as int64; S > 1 (a power of two) also tries 2**(k/S) in between and gives e as
    float64 multiples of 1/S (exact), the channel's scale being 2**e.
    """
    if rule not in RULES:
        raise ValueError(f"unknown quantizer rule {rule!r}; choose one of {RULES}")
    if rule == "authors":
        raise ValueError("the authors' rule has one scale per layer: use another rule per channel")
    problem = scale_steps_problem(scale_steps, per_channel=True, rule=rule)
    if problem:
        raise ValueError(problem)
    r = num_magnitudes(n_bits)
    mode = "log" if rule == "log" else "nearest"
    with torch.no_grad():
        flat = w.detach().reshape(w.shape[0], -1)
        m = flat.abs().amax(1)
        zero = m == 0
        top = torch.floor(torch.log2(torch.where(zero, torch.ones_like(m), m)))
        s = scale_steps
        steps = torch.arange((-r - 1) * s, 2 * s, dtype=flat.dtype, device=flat.device) / s
        cand = top[None, :] + steps[:, None]  # (K, C) candidate exponents
        chans = torch.arange(flat.shape[0], device=flat.device)
        if s > 1:  # continuous scales: losses from sorted weights, one staircase at the end
            k = sorted_squared_error(flat.abs(), torch.pow(2.0, cand), n_bits, mode).argmin(0)
            e = torch.where(zero, 0, cand[k, chans].to(torch.float64))
            best = _magnitude_index(flat.abs(), scale_of(e, 2), n_bits, mode)
        else:
            scales = torch.pow(2.0, cand)[..., None]  # (K, C, 1)
            big = flat.unsqueeze(0).expand(len(cand), -1, -1)
            idx = _magnitude_index(big.abs(), scales, n_bits, mode)  # (K, C, F)
            q = _levels(big, idx, scales)
            if rule == "moments":
                var_w = flat.var(1, unbiased=False).clamp_min(1e-30)
                dv = q.var(-1, unbiased=False) - var_w
                dm = q.mean(-1) - flat.mean(1)
                loss = (dv / var_w) ** 2 + dm * dm / var_w
            else:
                loss = ((flat.unsqueeze(0) - q) ** 2).sum(-1)
            k = loss.argmin(0)  # the first minimum: the smallest exponent on ties
            e = torch.where(zero, 0, cand[k, chans].to(torch.int64))
            best = idx[k, chans]
        best = torch.where(zero[:, None], 0 if n_bits == 1 else -1, best)
        return best.reshape(w.shape), e


def _level_bounds(n_bits: int, mode: str) -> list[float]:
    """Lower bound of every level's bin in units of the scale, top level first: level
    ``2**-j`` takes ``b[j] <= |w|/scale < b[j-1]`` (``b[-1]`` = infinity) and zero
    takes what lies below ``b[r-1]`` - the thresholds of :func:`_magnitude_index` (which
    compares in float32 after dividing by the scale, ``log`` through ``log2``: a weight
    within about an ulp of a bound may land in the other bin there; the search's loss
    is then off by that weight's share, the codes are not - they come from
    :func:`_magnitude_index` alone)."""
    r = num_magnitudes(n_bits)
    if n_bits == 1:
        return [0.0]  # no zero: every weight is +-1
    if mode == "log":  # geometric midpoints; zero below 2**-(r-1) / sqrt 2
        return [2.0**-j / math.sqrt(2.0) for j in range(r)]
    # linear midpoints 0.75 * 2**-j between 2**-(j+1) and 2**-j; zero below half the least
    return [0.75 * 2.0**-j for j in range(r - 1)] + [2.0 ** -(r - 1) / 2]


def sorted_squared_error(
    absw: torch.Tensor, scales: torch.Tensor, n_bits: int, mode: str
) -> torch.Tensor:
    """Sum over each row of ``(|w| - staircase(|w|))**2`` for every candidate scale,
    without building the staircases: (K, C) float64 for ``absw`` (C, F) and
    ``scales`` (K, C).

    Sorting each row once turns every level's bin into a slice, whose count, sum and
    sum of squares come from prefix sums (searchsorted on the bin bounds), so a
    candidate costs O(levels log F) instead of O(F) - what makes a fine scale search
    affordable in every training step.  Equals the direct sum up to rounding, but for
    weights within about an ulp of a bin bound (see :func:`_level_bounds`; tested).
    """
    a = absw.to(torch.float64).sort(1).values  # (C, F)
    C, F = a.shape
    zero = torch.zeros(C, 1, dtype=a.dtype, device=a.device)
    p1 = torch.cat([zero, a.cumsum(1)], 1)  # (C, F + 1)
    total = (a * a).sum(1)  # (C,)
    bounds = torch.tensor(_level_bounds(n_bits, mode), dtype=a.dtype, device=a.device)
    sc = scales.to(torch.float64)  # (K, C)
    K, J = sc.shape[0], len(bounds)
    thr = (sc[..., None] * bounds).permute(1, 0, 2).reshape(C, K * J)  # (C, K J)
    below = torch.searchsorted(a, thr.contiguous()).reshape(C, K, J)  # count < bound
    upper = torch.cat([torch.full_like(below[..., :1], F), below[..., :-1]], -1)
    count = (upper - below).to(a.dtype)  # (C, K, J): weights on level 2**-j
    s1 = p1.gather(1, upper.reshape(C, -1)) - p1.gather(1, below.reshape(C, -1))
    s1 = s1.reshape(C, K, J)
    v = sc.t()[..., None] * torch.pow(2.0, -torch.arange(J, dtype=a.dtype, device=a.device))
    err = total[:, None] + (v * v * count - 2.0 * v * s1).sum(-1)  # (C, K)
    return err.t()


def quantize_per_channel(
    w: torch.Tensor, n_bits: int, rule: str = "nearest", scale_steps: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """staircase(W) with one scale per output channel: (q, e (C,)); row c of q lies in
    ``level_set(n_bits) * 2**e[c]`` (e: see :func:`level_indices_per_channel`)."""
    idx, e = level_indices_per_channel(w, n_bits, rule, scale_steps)
    with torch.no_grad():
        return _levels(w.detach(), idx, scale_of(e, w.ndim)), e


def quantize_to_codes_per_channel(
    w: torch.Tensor, n_bits: int, rule: str = "nearest", scale_steps: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes of the per-channel staircase: (int8 codes, e (C,)); channel c's
    real weights are ``decode(code) * 2**(layer_exponent(0, n) + e[c])`` (e int64 for
    power-of-two scales, float64 multiples of 1/S for continuous ones)."""
    idx, e = level_indices_per_channel(w, n_bits, rule, scale_steps)
    return _codes(w.detach(), idx, n_bits), e


class ReconstructedGradient(torch.autograd.Function):
    """The paper's blend W~ = (1-a)·staircase(W) + a·W (Eq. 12-17).

    Forward returns W~ given the precomputed staircase(W) ``q``; backward hands
    ``a × (gradient w.r.t. W~)`` to W (the Dirac terms of d staircase/dW dropped)
    and nothing to ``q`` or ``a``.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: torch.Tensor, a: float) -> torch.Tensor:  # type: ignore[override]
        ctx.a = float(a)
        return (1.0 - a) * q + a * w

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return ctx.a * grad, None, None


class StraightThrough(torch.autograd.Function):
    """Plain straight-through estimator: forward staircase(W), backward identity."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return q.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


class ClippedActivationQuant(torch.autograd.Function):
    """Optional activation staircase (Theorem 3): uniform k-bit levels on [0, 1].

    Forward: ``round(clip(z, 0, 1) * (2**k - 1)) / (2**k - 1)``; backward: the
    clipped pass-through, gradient kept where ``|z| <= 1`` and zero elsewhere.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        steps = (1 << bits) - 1
        return torch.round(z.clamp(0.0, 1.0) * steps) / steps

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad * (z.abs() <= 1.0).to(grad.dtype), None


# --- schedules of a -------------------------------------------------------------------
A_SCHEDULES = ("authors", "constant", "linear", "cosine")


def alpha_at(schedule: str, epoch: int, epochs: int, a0: float = 0.5) -> float:
    """a for ``epoch`` (0-based) of ``epochs``; the last epoch always gets a = 0.

    authors: a = 1 - (1 - a0)·2**(t/E) (the authors' code: lambda = 1 - a starts at
    0.5 and doubles over the run); constant: a0; linear: a0 -> 0; cosine: a0 -> 0.
    """
    if schedule not in A_SCHEDULES:
        raise ValueError(f"unknown a-schedule {schedule!r}; choose one of {A_SCHEDULES}")
    if epoch >= epochs - 1:
        return 0.0
    t, e = epoch, max(epochs - 1, 1)
    if schedule == "authors":
        return max(0.0, 1.0 - (1.0 - a0) * 2.0 ** (t / epochs))
    if schedule == "constant":
        return a0
    if schedule == "linear":
        return a0 * (1.0 - t / e)
    return a0 * 0.5 * (1.0 + math.cos(math.pi * t / e))
