"""Statements of docs/datapath.md and docs/native.md about accumulators, recomputed from the
code: which sign of the bound V is reachable, when the native engine splits a layer, and how
wide the embedded models' accumulators are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pynq_nbq import api, native, ops
from pynq_nbq import datapath as dp

DOCS = Path(__file__).resolve().parent.parent / "docs"
INT16 = np.iinfo(np.int16)


def conv_specs(model_name: str) -> list[ops.ConvSpec]:
    engine = api.load_model(model_name, backend="numpy").engine
    return [st.spec for st in engine.steps if getattr(st, "spec", None) is not None]


def one_by_one(fan_in: int, weight: int, datapath: str, n_bits: int) -> ops.ConvSpec:
    """A 1x1 layer with ``fan_in`` inputs whose largest weight is ``weight`` (others 1)."""
    w = np.ones((1, fan_in, 1, 1), np.int64)
    w[0, 0, 0, 0] = weight
    one = np.ones(1, np.int64)
    return ops.ConvSpec("l", w, one, 0 * one, 16 * one, datapath=datapath, n_bits=n_bits)


def split_from(max_abs_w: int) -> int:
    """The smallest fan-in whose bound needs more than int32 at this largest weight."""
    lo, hi = 1, 1 << 20
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if dp.accumulator_bits(mid, max_abs_w) > 32 else (mid + 1, hi)
    return lo


def test_plus_v_always_reachable_minus_v_only_below_2_15():
    for pe, n in [(dp.PEKind.SVPE, b) for b in range(1, 6)] + [(dp.PEKind.VPE, 16)]:
        m = dp.max_abs_weight(pe, n)
        v = dp.accumulator_bound(1, m)
        assert INT16.min * -m == v  # every input -32768 times the weight -max|w|: +V
        reachable_minus = INT16.min * m if m <= INT16.max else INT16.min * INT16.max
        assert (reachable_minus == -v) == (m <= INT16.max), (pe, n)
    # vpe: -32768 is an int16 weight, +32768 is not
    assert dp.max_abs_weight(dp.PEKind.VPE, 16) == -INT16.min
    text = " ".join((DOCS / "datapath.md").read_text().replace("**", "").split())
    assert "Both signs are reachable" not in text
    assert "+V is always reachable" in text
    assert "-V is reachable only when `max|w|` ≤ 32767" in text


def test_native_chooses_int32_or_split_from_the_layers_own_weights():
    """A vpe layer of fan-in 576 with small weights runs in int32; one -32768 splits it."""
    assert native.layer_rows(one_by_one(576, 100, "vpe", 16))[0] == "int32"
    assert native.layer_rows(one_by_one(576, -32768, "vpe", 16))[0] == "split"
    assert native.layer_rows(one_by_one(576, 1 << 14, "svpe", 5))[0] == "split"
    assert native.layer_rows(one_by_one(576, 4, "svpe", 5))[0] == "int32"


def test_native_md_split_thresholds_and_embedded_widths():
    text = " ".join((DOCS / "native.md").read_text().split())
    widest = {n: split_from(dp.max_abs_weight(dp.PEKind.SVPE, n)) for n in (3, 4, 5)}
    vpe = split_from(dp.max_abs_weight(dp.PEKind.VPE, 16))
    assert (
        f"splits from a fan-in of {widest[3]:,} (3-bit svpe, max|w| = 4), {widest[4]:,} "
        f"(4-bit, 2^6), {widest[5]} (5-bit, 2^14) and {vpe} (vpe, the weight -32768)" in text
    )

    def widths(name):
        return [
            dp.accumulator_bits(s.fan_in, int(np.abs(s.weights).max())) for s in conv_specs(name)
        ]

    svpe_bits, vpe_bits = widths("fmnist-svpe"), widths("fmnist-vpe")
    assert f"The embedded svpe layers need at most {max(svpe_bits)} bits." in text
    assert f"splits ({min(vpe_bits)} to {max(vpe_bits)} bits)" in text
    assert {native.layer_rows(s)[0] for s in conv_specs("fmnist-vpe")} == {"split"}
    assert {native.layer_rows(s)[0] for s in conv_specs("fmnist-svpe")} == {"int32"}


@pytest.mark.parametrize("pe,n_bits", [("svpe", 3), ("svpe", 4), ("svpe", 5), ("vpe", 16)])
def test_split_threshold_is_the_first_fan_in_over_32_bits(pe, n_bits):
    """split_from (what the doc's numbers are) is where the native engine starts to split."""
    m = dp.max_abs_weight(pe, n_bits)
    f = split_from(m)
    assert native.layer_rows(one_by_one(f, -m, pe, n_bits))[0] == "split"
    if f > 1:
        assert native.layer_rows(one_by_one(f - 1, -m, pe, n_bits))[0] == "int32"
