"""Bundle -> QONNX -> bundle: the same arrays (bit for bit) and the same manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from pynq_nbq.bundle import load_bundle, save_bundle  # noqa: E402
from pynq_nbq.engine import Engine  # noqa: E402
from pynq_nbq.interop.qonnx_export import export_qonnx  # noqa: E402
from pynq_nbq.interop.qonnx_import import import_qonnx  # noqa: E402
from pynq_nbq.testing import random_graph_bundle  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "pynq_nbq" / "models"


def _round_trip(bundle, tmp_path: Path, requant: str = "exact"):
    path = tmp_path / "model.onnx"
    onnx.save(export_qonnx(bundle, requant), str(path))
    result = import_qonnx(onnx.load(str(path)))
    return save_bundle(result.manifest, result.arrays, tmp_path / "back"), result


def _assert_same(a, b) -> None:
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        assert a.arrays[name].dtype == b.arrays[name].dtype, name
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)
    assert a.manifest == b.manifest  # every field, checksums included


@pytest.mark.parametrize("model", ["fmnist-svpe", "fmnist-vpe"])
def test_shipped_models_round_trip_exactly(tmp_path, model):
    original = load_bundle(MODELS / model)
    back, result = _round_trip(original, tmp_path)
    _assert_same(original, load_bundle(back.path))
    assert result.notes == []


@pytest.mark.parametrize(
    ("datapath", "bits", "edge"),
    [("svpe", 1, False), ("svpe", 2, True), ("svpe", 3, False), ("svpe", 5, True),
     ("vpe", 16, False), ("vpe", 16, True)],
)  # fmt: skip
def test_every_op_round_trips_exactly(tmp_path, datapath, bits, edge):
    """Strided, grouped and depthwise conv, fused and standalone pools, add, concat of
    maps and vectors, gap, flatten, linear; random (non-canonical) requant numbers."""
    original = random_graph_bundle(tmp_path / "b", datapath, bits, seed=11 * bits, edge=edge)
    back, _ = _round_trip(original, tmp_path)
    _assert_same(original, back)


def test_without_metadata_the_numbers_still_round_trip(tmp_path):
    """A graph stripped of our metadata: the importer infers n per layer (the smallest
    that holds the weights), so widths may shrink; the logits stay identical."""
    original = random_graph_bundle(tmp_path / "b", "svpe", 4, seed=3)
    model = export_qonnx(original)
    del model.metadata_props[:]
    result = import_qonnx(model, classes=original.classes)
    back = save_bundle(result.manifest, result.arrays, tmp_path / "back")
    x = np.random.default_rng(0).integers(-3000, 3000, (5, 3, 8, 7)).astype(np.int16)
    np.testing.assert_array_equal(Engine(original).run(x), Engine(back).run(x))
    for a, b in zip(original.spec.layers, back.spec.layers):
        assert (a.name, a.op, a.inputs, a.output, a.weight_exp) == (
            b.name, b.op, b.inputs, b.output, b.weight_exp)  # fmt: skip


def test_fused_form_imports_to_the_same_logits_almost(tmp_path):
    """The float32 form loses bias bits; fold_requant rebuilds the requantisation, and
    the result agrees with the original within an LSB on real images."""
    from pynq_nbq.bench.data import FASHION_DIR, fashion_idx

    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed")
    original = load_bundle(MODELS / "fmnist-svpe")
    back, _ = _round_trip(original, tmp_path, "fused")
    px = fashion_idx(FASHION_DIR, "t10k-images-idx3-ubyte")[:64, None]
    a = Engine(original).run(Engine(original).quantize_input(px))
    b = Engine(back).run(Engine(back).quantize_input(px))
    assert np.abs(a.astype(int) - b).max() <= 1
    assert (a.argmax(1) == b.argmax(1)).all()
