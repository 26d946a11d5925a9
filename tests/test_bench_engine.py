"""scripts/bench_engine.py's helpers: the network's work, the int16 peak, the peers."""

import importlib.util
import shutil

import numpy as np
import pytest

from pynq_nbq import api
from scripts import bench_peers
from scripts.bench_engine import macs_per_image


def test_macs_per_image_of_the_embedded_network():
    # 28x28x32x9 + 28x28x32x288 + 14x14x64x288 + 14x14x64x576 + 7x7x128x576 + 7x7x10x128
    assert macs_per_image(api.load_model("fmnist-svpe", "numpy")) == 21_964_544


def _has_avx2() -> bool:
    try:
        return any("avx2" in line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no cc")
@pytest.mark.skipif(not _has_avx2(), reason="the peak microbenchmark needs AVX2 or AVX-512")
def test_int16_peak_builds_and_measures():
    peak = bench_peers.Int16Peak()
    assert peak.instruction in ("vpdpwssd-zmm", "vpmaddwd-zmm", "vpmaddwd-ymm")
    assert peak.measure(1, 0.05) > 1.0  # G MAC/s: any machine with AVX2 does far more


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("torch") is None,
    reason="needs onnxruntime and torch (pip install -e .[bench,train])",
)
def test_peers_compute_the_same_network():
    """ORT fp32 agrees with the exact engine's top-1 on random inputs nearly always, and
    ORT int8 and torch int8 mostly (they quantise activations to 8 bits)."""
    model = api.load_model("fmnist-svpe", "native")
    shape = (1, 28, 28)
    net = bench_peers.float_net(api.MODELS_DIR / "checkpoints" / "fmnist-rg3.npz")
    x = np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)
    ours = model.predict(x).logits_q.argmax(1)
    for name, build, least in [
        ("ort-fp32", lambda: bench_peers.ort_fp32(net, shape, 1), 0.95),
        ("ort-int8", lambda: bench_peers.ort_int8(net, shape, 1, x), 0.8),
        ("torch-int8", lambda: bench_peers.torch_int8(net, shape, 1, x), 0.8),
    ]:
        make, predict = build()
        make(x[:1])()  # the timed callable runs
        assert (predict(x).argmax(1) == ours).mean() >= least, name
