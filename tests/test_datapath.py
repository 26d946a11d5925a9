"""The rules of pynq_nbq.datapath, each defined once: codes, PE kinds, requant ranges."""

from __future__ import annotations

import numpy as np
import pytest

from pynq_nbq import datapath as dp


@pytest.mark.parametrize("n", dp.SVPE_BITS)
def test_svpe_codes_round_trip_in_integers(n):
    m = dp.num_magnitudes(n)
    codes = np.arange(-m, m + 1, dtype=np.int8)
    if n == 1:
        codes = codes[codes != 0]
    weights = dp.decode_svpe(codes, n)
    assert np.abs(weights).max() == 1 << dp.max_shift(n) == dp.max_abs_weight("svpe", n)
    assert np.array_equal(dp.encode_svpe(weights, n), codes)


def test_encode_svpe_names_the_bad_weight():
    with pytest.raises(ValueError, match="weight 3 at"):
        dp.encode_svpe(np.array([1, 3]), 5)
    with pytest.raises(ValueError, match="s <= 2"):
        dp.encode_svpe(np.array([8]), 3)
    with pytest.raises(ValueError, match="0 excluded"):
        dp.encode_svpe(np.array([0, 1]), 1)
    assert dp.encode_svpe(np.array([-(1 << 14), 0, 1]), 5).tolist() == [-15, 0, 1]


def test_levels_and_exponent():
    assert [dp.num_magnitudes(n) for n in dp.SVPE_BITS] == [1, 1, 3, 7, 15]
    assert dp.layer_exponent(0, 1) == 0 and dp.layer_exponent(0, 3) == -2
    with pytest.raises(ValueError, match="n_bits"):
        dp.num_magnitudes(dp.SVPE_MAX_BITS + 1)


def test_pe_kind_is_one_enum_that_reads_as_a_string():
    assert dp.PEKind.parse("svpe") is dp.PEKind.SVPE and dp.PEKind.VPE == "vpe"
    assert f"{dp.PEKind.VPE}" == "vpe"
    with pytest.raises(ValueError, match="expected one of"):
        dp.PEKind.parse("mpe")
    assert dp.weight_bits_problem("vpe", 8) and dp.weight_bits_problem("svpe", 6)
    assert dp.weight_bits_problem("svpe", 5) is None


def test_requant_problems_list_every_range():
    ok = (np.array([1, -1]), np.array([0, 5]), np.array([0, 62]))
    assert dp.requant_problems(*ok, acc_max=1 << 40) == []
    bad = dp.requant_problems(np.array([1 << 15]), np.array([0]), np.array([63]))
    assert len(bad) == 2 and "int16" in bad[0] and "0..62" in bad[1]
    over = dp.requant_problems(np.array([-(1 << 15)]), np.array([0]), np.array([0]), 1 << 48)
    assert over and "64 bits" in over[0]


def test_conv_output_size_and_rounding():
    assert dp.conv_output_size(7, 3, 2, 1) == 4 and dp.conv_output_size(8, 2, 2) == 4
    assert dp.conv_output_hw(7, 5, 3, 1, 1, pool=2) == (3, 2)
    assert dp.rounding_shift(np.array([-3, -2, 2, 3]), 1).tolist() == [-1, -1, 1, 2]
    assert dp.div_round_half_up(np.array([-3, 3, 5]), 2).tolist() == [-1, 2, 3]
    assert dp.round_half_up([-0.5, 0.5, 1.49]).tolist() == [0.0, 1.0, 1.0]
