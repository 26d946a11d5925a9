"""The kernel's build widths: a 3-bit svpe build (NBQ_CODE_BITS=3, n <= 3) is bit-exact too.

tests/test_hls_csim.py covers the default builds (5-bit svpe, vpe); here the narrower
svpe build that issue 11's cost model picks for 3-bit bundles runs random layers of
every n it supports (1..3), edge values and tiling, through the real protocol.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest

from pynq_nbq import streams as S
from pynq_nbq.backends import csim
from pynq_nbq.ops import conv_layer

sys.path.insert(0, str(S.HLS_DIR))
import gen_vectors  # noqa: E402
from gen_vectors import random_input, random_spec  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None
    or importlib.util.find_spec("hls4ml") is None,
    reason="the csim backend needs g++ and the hls4ml wheel's ap_int headers",
)

#: A 3-bit build with small buffers and odd parallelism, so that small layers tile.
SMALL3 = {
    "NBQ_CODE_BITS": 3,
    "NBQ_MAX_W": 8,
    "NBQ_MAX_H": 12,
    "NBQ_MAX_CIN": 19,
    "NBQ_MAX_COUT": 6,
    "NBQ_PM": 5,
    "NBQ_PN": 3,
}


def test_three_bit_build_is_bit_exact_for_n_up_to_3():
    backend = csim.CsimBackend("svpe", SMALL3, max_packet_bytes=1024)
    info = csim.get_kernel("svpe", SMALL3).info
    rng = np.random.default_rng(31)
    for i in range(18):
        n = 1 + i % 3
        k, pool = (3, 1)[i % 2], 2 * (i // 2 % 2)
        cin = int(rng.integers(1, info.max_cin + 1))
        cout = int(rng.integers(1, 2 * info.max_cout + 3))
        h, w = int(rng.integers(1, 3 * info.max_w)), int(rng.integers(1, 3 * info.max_w))
        edge = i % 3 == 2
        spec = random_spec(rng, "svpe", cin, cout, k, pool, i % 4 != 3, n, edge, name=f"b{i}")
        x = random_input(rng, 2, h, w, cin, edge=edge or i % 5 == 0)
        assert np.array_equal(backend.run_conv(x, spec), conv_layer(x, spec)), spec.name


def test_three_bit_build_reports_weight_bits_and_refuses_wider_bundles():
    """Protocol 2.1's WEIGHT_BITS register: a 3-bit build says so, and a host refuses an
    n = 4 bundle on it (its codes would not fit the PEs) while an n = 3 bundle passes."""
    from pynq_nbq.testing import conv_manifest

    info = csim.get_kernel("svpe", SMALL3).info
    assert info.weight_bits == 3
    assert info.version == S.VERSION
    S.check_manifest(conv_manifest("svpe", 3, [("c1", 4, 3, 1, 30)]), info)
    with pytest.raises(ValueError, match="4-bit weights > WEIGHT_BITS 3"):
        S.check_manifest(conv_manifest("svpe", 4, [("c1", 4, 3, 1, 30)]), info)
    assert csim.get_kernel("svpe").info.weight_bits == 5
    assert csim.get_kernel("vpe").info.weight_bits == 16


# --- every board's default builds (issue 26: pynq_nbq/kernel/builds.py) ----------------------
def _board_builds():
    from pynq_nbq.kernel import builds

    return [(board, kind) for board in builds.TABLE for kind in ("vpe", "svpe")]


@pytest.mark.parametrize(("board", "kind"), _board_builds())
def test_each_boards_build_compiles_reports_its_defines_and_is_bit_exact(board, kind):
    """The csim kernel compiled with a board's build defines (Pm, Pn, the maxima sized for
    the embedded networks, the URAM switches) reports that build in its read-only
    registers and runs the testbench's vector layers (every n the build takes, 3x3 and
    1x1, ReLU, pool, edge values, a layer over MAX_W and MAX_COUT that tiles) bit-exact."""
    from pynq_nbq.kernel import builds

    kb = builds.build(board, kind)
    defs = builds.defines(board, kind)
    info = csim.get_kernel(kind, defs).info
    assert info == kb.info  # every register: PE kind, Pm x Pn, maxima, code width
    backend = csim.CsimBackend(kind, defs, max_packet_bytes=4096)
    rng = np.random.default_rng(sorted(builds.TABLE).index(board) * 2 + (kind == "svpe"))
    cases = gen_vectors.vector_layers(info, rng)
    assert any(x.shape[2] > info.max_w for _spec, x in cases)  # one layer tiles its columns
    for spec, x in cases:
        assert np.array_equal(backend.run_conv(x, spec), conv_layer(x, spec)), (board, spec.name)


def test_every_storage_switch_flipped_compiles_and_is_bit_exact():
    """The other binding of every storage switch (the small RAMs hist / inbuf / prow in
    LUTRAM, the line buffers and weight banks in UltraRAM) on the KV260's svpe build: the
    csim kernel compiles with them and runs the vector layers bit-exact (the switches
    only change BIND_STORAGE, the same for both PE kinds; tests/test_hls_synth_guards.py
    checks the pragmas)."""
    from pynq_nbq.kernel import builds

    kind = "svpe"
    defs = builds.defines("kv260", kind)
    switches = [*builds.LUTRAM_MACROS.values(), *builds.URAM_MACROS.values()]
    assert all(defs[m] == 0 for m in builds.LUTRAM_MACROS.values())  # today's choice
    defs.update({m: 1 for m in switches})
    info = csim.get_kernel(kind, defs).info
    assert (info.pm, info.pn) == (defs["NBQ_PM"], defs["NBQ_PN"])
    backend = csim.CsimBackend(kind, defs, max_packet_bytes=4096)
    rng = np.random.default_rng(26)
    for spec, x in gen_vectors.vector_layers(info, rng):
        assert np.array_equal(backend.run_conv(x, spec), conv_layer(x, spec)), spec.name
