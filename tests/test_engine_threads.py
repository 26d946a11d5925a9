"""Splitting a batch over engine threads changes nothing but the wall time."""

import threading

import numpy as np
import pytest

from pynq_nbq import api
from pynq_nbq.backends import Capabilities
from pynq_nbq.engine import ARM, CONV_ENGINE, Engine
from pynq_nbq.ops import conv_layer
from pynq_nbq.testing import random_bundle


def _batch(engine: Engine, n: int, seed: int = 0) -> np.ndarray:
    shape = list(engine.parsed.input_shape)
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)
    return engine.quantize_input(3 * x)  # some inputs saturate


@pytest.mark.parametrize("datapath", ["svpe", "vpe"])
@pytest.mark.parametrize("threads,n", [(2, 7), (3, 64), (4, 2), (2, 1)])
def test_sharded_run_is_bit_identical(tmp_path, datapath, threads, n):
    bundle = random_bundle(tmp_path / "b", datapath, 3, seed=5, size=12, width=6)
    one = Engine(bundle, "numpy")
    many = Engine(bundle, "numpy", threads=threads)
    x = _batch(one, n)
    ref = one.run(x)
    got = many.run(x)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    assert set(many.timings) == {CONV_ENGINE, ARM}


def test_embedded_default_sharded_matches_unsplit():
    model = api.load_model(threads=2)
    x = _batch(model.engine, 33, seed=1)
    np.testing.assert_array_equal(model.engine.run(x), api.load_model().engine.run(x))


class _RecordingBackend:
    """A numpy backend that is not thread safe and records the threads it ran on."""

    name = "recording"
    description = "numpy, recording its threads"
    capabilities = Capabilities()  # declares nothing: not thread safe

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def run_conv(self, x, spec):
        self.threads.add(threading.get_ident())
        return conv_layer(x, spec)


def test_backend_without_thread_safety_runs_unsplit(tmp_path):
    bundle = random_bundle(tmp_path / "b", "svpe", 3, seed=2, size=12, width=6)
    backend = _RecordingBackend()
    engine = Engine(bundle, backend, threads=4)
    x = _batch(engine, 8)
    np.testing.assert_array_equal(engine.run(x), Engine(bundle, "numpy").run(x))
    assert backend.threads == {threading.get_ident()}


def test_keep_runs_unsplit_and_returns_every_tensor(tmp_path):
    bundle = random_bundle(tmp_path / "b", "svpe", 3, seed=2, size=12, width=6)
    out, env = Engine(bundle, "numpy", threads=2).run(_batch(Engine(bundle), 4), keep=True)
    assert out.shape[0] == 4 and bundle.manifest["output"] in env and len(env) > 2


def test_bad_thread_count_is_refused(tmp_path):
    bundle = random_bundle(tmp_path / "b", "svpe", 3, seed=2, size=12, width=6)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        Engine(bundle, "numpy", threads=0)
