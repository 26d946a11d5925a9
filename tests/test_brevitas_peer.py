"""A peer trains, we deploy: Brevitas (power-of-two minifloat weights) -> QONNX -> our
bundle -> our engine agrees with Brevitas's own fake-quant inference."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("brevitas")
pytest.importorskip("onnxoptimizer")
torch = pytest.importorskip("torch")

from pynq_nbq.bundle import save_bundle  # noqa: E402
from pynq_nbq.engine import Engine  # noqa: E402
from pynq_nbq.interop.qonnx_import import import_qonnx  # noqa: E402

TEST_IMAGES = 500


@pytest.fixture(scope="module")
def fashion():
    from host_train.data import DatasetMissing, load_fashion_mnist

    try:
        return load_fashion_mnist()
    except DatasetMissing:
        pytest.skip("Fashion-MNIST not installed")


def test_brevitas_trained_model_runs_on_our_engine(tmp_path, fashion):
    from host_train import brevitas_peer as bp

    mean, std = fashion.mean[0], fashion.std[0]
    net = bp.make_net(c1=4, c2=8, seed=0)
    bp.train_steps(net, fashion.train_x, fashion.train_y, mean, std, steps=15, batch=64)
    path = bp.export(net, tmp_path / "peer.onnx")
    result = import_qonnx(path, mean=[mean], std=[std], classes=fashion.classes)
    bundle = save_bundle(result.manifest, result.arrays, tmp_path / "bundle")
    # every weighted layer came in as power-of-two (svpe) codes
    assert bundle.datapath == "svpe"
    assert [layer.op for layer in bundle.spec.layers] == ["conv", "conv", "flatten", "linear"]
    assert all(layer.pool == 2 for layer in bundle.spec.layers[:2])
    # the only approximations named: ROUND (half to even) read as round half up
    assert result.notes and all("ROUND" in n for n in result.notes)

    px = fashion.test_x[:TEST_IMAGES]
    theirs = bp.fake_quant_logits(net, px, mean, std)
    engine = Engine(bundle)
    ours = engine.run(engine.quantize_input(px)).astype(np.float64) * 2.0**-engine.output_frac
    agree = np.mean(theirs.argmax(1) == ours.argmax(1))
    assert agree >= 0.99, agree
    # the logits themselves: within a few LSBs (float32 fake-quant vs exact integers)
    assert np.abs(theirs - ours).max() * 2.0**engine.output_frac < 64
