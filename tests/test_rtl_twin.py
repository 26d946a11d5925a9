"""The RTL twin of the kernel's arithmetic (``hls/rtl/``): bit-exact and its cost reproducible.

* iverilog simulates one output lane (Pm 3x3 arrays, the adder tree sized per level,
  the int48 accumulator) of every build width (svpe code width 2..5 running every
  bundle n <= width; vpe) on random and worst-case vectors, and the requantisation
  stage, against :mod:`pynq_nbq.datapath`;
* yosys re-synthesises the small designs of the committed report
  (``pynq_nbq/perfmodel/yosys_report.json``, written by ``scripts/rtl_synth.py``) and
  must give the same cell counts (exactly with the same yosys version).
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from pynq_nbq import datapath as D
from pynq_nbq.perfmodel import costs
from pynq_nbq.streams import HLS_DIR

sys.path.insert(0, str(HLS_DIR / "rtl"))
import rtl_twin as R  # noqa: E402

needs_iverilog = pytest.mark.skipif(
    shutil.which("iverilog") is None or shutil.which("vvp") is None,
    reason="needs iverilog (apt-get install --no-install-recommends iverilog)",
)
needs_yosys = pytest.mark.skipif(
    shutil.which("yosys") is None,
    reason="needs yosys (apt-get install --no-install-recommends yosys)",
)


def _lane_reference(cycles, weights_of):
    """Running accumulator after each cycle, exactly as datapath step 1 defines it."""
    out, acc = [], 0
    for c in cycles:
        s = int((np.asarray(c.x, dtype=np.int64) * weights_of(c.w)).sum())
        acc = s if c.first else acc + s
        out.append(acc)
    assert all(abs(a) < 2 ** (D.ACC_BITS - 1) for a in out)
    return out


def _random_cycles(rng, pm, w_of_n, n_cycles, group):
    cycles = []
    for t in range(n_cycles):
        x = rng.integers(D.ACT_MIN, D.ACT_MAX + 1, 9 * pm)
        x[rng.random(9 * pm) < 0.1] = D.ACT_MIN  # the edge values
        x[rng.random(9 * pm) < 0.1] = D.ACT_MAX
        cycles.append(R.LaneCycle(x, w_of_n(rng), first=(t % group == 0)))
    return cycles


@needs_iverilog
@pytest.mark.parametrize("style", [0, 1])
@pytest.mark.parametrize("nb", [2, 3, 4, 5])
def test_svpe_lane_is_bit_exact_for_every_n_it_runs(nb, style):
    """A build of code width nb runs every bundle with n <= nb, random and worst case."""
    rng = np.random.default_rng(100 + nb)
    pm = 3
    cycles = []
    for n in range(1, nb + 1):
        top = D.max_code(n)

        def codes(rng, n=n, top=top):
            c = rng.integers(-top, top + 1, 9 * pm)
            if n == 1:
                c[c == 0] = 1  # n = 1 has no zero
            return c.astype(np.int8)

        cycles += _random_cycles(rng, pm, codes, 12, group=4)
        # worst case: every input -32768 and every weight the largest, one sign, 3 cycles
        for sign in (1, -1):
            for t in range(3):
                x = np.full(9 * pm, D.ACT_MIN)
                cycles.append(R.LaneCycle(x, np.full(9 * pm, sign * top, np.int8), t == 0))
    # a bubble (valid = 0) must neither add nor clear
    cycles.insert(5, R.LaneCycle(np.full(9 * pm, 7), np.ones(9 * pm, np.int8), False, False))
    valid = [c for c in cycles if c.valid]
    expected = _lane_reference(valid, lambda w: D.decode_svpe(np.asarray(w, np.int8), nb))
    assert R.simulate_lane(R.SVPE, nb, pm, cycles, style) == expected


@needs_iverilog
@pytest.mark.parametrize("style", [0, 1])
def test_vpe_lane_is_bit_exact(style):
    rng = np.random.default_rng(7)
    pm = 2

    def weights(rng):
        w = rng.integers(-32768, 32768, 9 * pm)
        w[rng.random(9 * pm) < 0.2] = -32768
        return w

    cycles = _random_cycles(rng, pm, weights, 24, group=5)
    for t in range(3):  # worst case: (-32768) x (-32768) everywhere
        cycles.append(R.LaneCycle(np.full(9 * pm, -32768), np.full(9 * pm, -32768), t == 0))
    expected = _lane_reference(cycles, lambda w: np.asarray(w, dtype=np.int64))
    assert R.simulate_lane(R.VPE, 16, pm, cycles, style) == expected


@needs_iverilog
def test_requant_is_bit_exact():
    rng = np.random.default_rng(3)
    n = 400
    acc = rng.integers(-(2**47), 2**47, n)
    acc[: n // 2] >>= rng.integers(0, 47, n // 2)  # small accumulators too
    mult = rng.integers(-32768, 32768, n)
    shift = rng.integers(0, D.MAX_REQUANT_SHIFT + 1, n)
    shift[:20] = 0
    shift[20:40] = D.MAX_REQUANT_SHIFT
    bias = rng.integers(-(2**61), 2**61, n) >> rng.integers(0, 61, n)
    relu = rng.integers(0, 2, n)
    got = R.simulate_requant(acc, mult, bias, shift, relu)
    want = [
        int(D.requantize(np.array([a]), np.array([m]), np.array([b]), np.array([s]), bool(r))[0])
        for a, m, b, s, r in zip(acc, mult, bias, shift, relu)
    ]
    assert got == want
    assert {D.ACT_MIN, D.ACT_MAX, 0} <= set(got)  # saturation and ReLU were exercised


@needs_yosys
@pytest.mark.parametrize("name", costs.CI_DESIGNS)
def test_yosys_report_reproduces(name):
    report = costs.load_report()
    entry = report["designs"][name]
    design = R.Design(name, entry["top"], entry["params"], family=costs.family_of(entry))
    fresh = R.synthesize(design)
    if R.yosys_version() == report["yosys"]:
        assert fresh == entry["cells"], f"{name}: fresh {fresh} != committed {entry['cells']}"
    else:  # another yosys: ABC's mapping moves a little, the design must not
        for k in ("lut", "ff", "dsp", "carry"):
            want = entry["cells"][k]
            assert abs(fresh[k] - want) <= max(4, 0.2 * want), (name, k, fresh[k], want)
