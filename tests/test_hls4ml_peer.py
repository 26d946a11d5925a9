"""A peer runs our model: hls4ml converts our (fused) QONNX export, compiles its C++
emulation with g++ and predicts; with the precisions the graph implies its logits are
the engine's on the fused form's numbers, bit for bit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("hls4ml")
pytest.importorskip("qonnx")
if shutil.which("g++") is None:
    pytest.skip("hls4ml's emulation needs g++", allow_module_level=True)

from pynq_nbq.interop import peers  # noqa: E402
from pynq_nbq.testing import random_bundle  # noqa: E402

IMAGES = 16


@pytest.mark.parametrize("datapath", ["svpe", "vpe"])
def test_hls4ml_predicts_our_model(tmp_path, datapath):
    """A small random bundle (conv3x3 + pool, two conv1x1, global average pool; the
    full fmnist figure is scripts/interop_agreement.py) on random pixels."""
    bundle = random_bundle(tmp_path / "b", datapath, 4, seed=2, size=12, width=6)
    px = np.random.default_rng(0).integers(0, 256, (IMAGES, 1, 12, 12), dtype=np.uint8)
    ref, real = peers.engine_logits(bundle, px)
    fused_ref, _ = peers.engine_logits(peers.fused_bundle(bundle), px)
    hm = peers.hls4ml_model(bundle, tmp_path / "prj", io_type="io_stream")
    out = np.asarray(hm.predict(np.ascontiguousarray(real))).reshape(IMAGES, -1)
    exact = peers.agreement(out, fused_ref, bundle.spec.output_frac)
    assert exact.exact == 1.0 and exact.max_lsb == 0.0, exact
    vs_engine = peers.agreement(out, ref, bundle.spec.output_frac)
    assert vs_engine.max_lsb <= 1.0, vs_engine


def test_exact_fixed_types():
    assert peers.exact_fixed(np.array([0.0])) == (2, 1)
    assert peers.exact_fixed(np.array([1.0])) == (2, 2)  # 1 needs a sign bit and one more
    assert peers.exact_fixed(np.array([0.75, -3.0])) == (5, 3)  # -3 .. 0.75 in steps of 1/4
    w, i = peers.exact_fixed(np.array([2.0**-30 * 12345, 1000.0]))
    assert i == 11 and w - i == 30
