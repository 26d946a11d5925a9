"""Bundle -> QONNX: the qonnx package's own cleanup, shape inference and executor run
our export, and its logits are the engine's (bit for bit with the ``exact`` form)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qonnx")
onnx = pytest.importorskip("onnx")

from pynq_nbq import datapath as dp  # noqa: E402
from pynq_nbq.bundle import load_bundle  # noqa: E402
from pynq_nbq.engine import Engine  # noqa: E402
from pynq_nbq.interop import peers  # noqa: E402
from pynq_nbq.interop.qonnx_export import QonnxExportError, export_qonnx  # noqa: E402
from pynq_nbq.interop.qonnx_format import METADATA_KEY, QONNX_DOMAIN  # noqa: E402
from pynq_nbq.testing import random_graph_bundle  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "pynq_nbq" / "models"


def _random_pixels(bundle, n: int, seed: int = 0) -> np.ndarray:
    shape = bundle.spec.tensors[bundle.spec.input.tensor].shape
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _run_both(bundle, requant: str, pixels: np.ndarray):
    model = peers.qonnx_prepare(export_qonnx(bundle, requant, batch=len(pixels)))
    ref, real = peers.engine_logits(bundle, pixels)
    return peers.agreement(peers.qonnx_run(model, real), ref, bundle.spec.output_frac)


@pytest.mark.parametrize(
    ("datapath", "bits", "edge"),
    [("svpe", 3, False), ("svpe", 1, False), ("svpe", 5, True), ("vpe", 16, False)],
)
def test_every_op_is_bit_exact_in_qonnx(tmp_path, datapath, bits, edge):
    """conv (strided, grouped, depthwise, fused pool), add, maxpool, concat, gap,
    flatten, linear: the exact form's logits equal the engine's for every image."""
    b = random_graph_bundle(tmp_path / "b", datapath, bits, seed=bits, edge=edge)
    a = _run_both(b, "exact", _random_pixels(b, 16))
    assert a.exact == 1.0 and a.max_lsb == 0.0, a


def test_exact_form_matches_every_intermediate_tensor(tmp_path):
    """Every bundle tensor is a graph tensor of the same name holding the same values."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    b = random_graph_bundle(tmp_path / "b", "svpe", 4, seed=7)
    px = _random_pixels(b, 6, seed=1)
    engine = Engine(b)
    q, real = peers.dequantized_input(engine, px)
    _, env = engine.run(q, keep=True)
    model = ModelWrapper(export_qonnx(b, batch=len(px))).transform(InferShapes())
    ctx = execute_onnx(model, {model.graph.input[0].name: real}, return_full_exec_context=True)
    for name, t in b.spec.tensors.items():
        ours = env[name].transpose(0, 3, 1, 2) if env[name].ndim == 4 else env[name]
        np.testing.assert_array_equal(ctx[name] * 2.0**t.frac, ours, err_msg=name)


def test_fused_form_is_within_one_lsb(tmp_path):
    """float32 requantisation (for hls4ml): the constants are rounded to float32, so a
    logit may land one LSB away; the class almost never changes."""
    b = load_bundle(MODELS / "fmnist-svpe")
    a = _run_both(b, "fused", _random_pixels(b, 8))
    assert a.off_grid == 0.0 and a.max_lsb <= 1.0, a


def test_graph_states_the_datapath(tmp_path):
    """Weights under an integer Quant with the layer's power-of-two scale, activations
    under 16-bit Quants with 2**-f, and the manifest's fields in the metadata."""
    import json

    from qonnx.custom_op.general.quant import max_int

    b = load_bundle(MODELS / "fmnist-svpe")
    m = export_qonnx(b)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    quants = {n.output[0]: n for n in m.graph.node if n.op_type == "Quant"}
    by_name = {n.name: n for n in m.graph.node}
    assert all(n.domain == QONNX_DOMAIN for n in quants.values())
    for layer in b.spec.layers:
        if not layer.weighted:
            continue
        conv = next(n for n in m.graph.node if n.name == layer.name)
        wq = quants[conv.input[1]]
        w, scale, _, bits = (inits[i] for i in wq.input)
        assert scale == 2.0**layer.weight_exp
        ints = w / scale
        assert np.all(ints == dp.decode_svpe(b.layer_arrays(layer)["weights"], 3))
        assert np.abs(ints).max() <= max_int(True, True, int(bits))
        act = by_name[f"{layer.name}.act_quant"]
        assert inits[act.input[1]] == 2.0**-layer.out_frac and inits[act.input[3]] == 16
        assert b"FLOOR" in [a.s for a in act.attribute]
    q_in = quants[b.spec.input.tensor]
    assert inits[q_in.input[1]] == 2.0**-b.spec.input_frac and inits[q_in.input[3]] == 16
    meta = json.loads({p.key: p.value for p in m.metadata_props}[METADATA_KEY])
    assert meta["classes"] == b.classes and meta["input"] == b.manifest["input"]


def test_unknown_form_and_bad_batch_are_refused():
    b = load_bundle(MODELS / "fmnist-vpe")
    with pytest.raises(QonnxExportError, match="requant form"):
        export_qonnx(b, "approximate")
    with pytest.raises(QonnxExportError, match="batch"):
        export_qonnx(b, batch=0)
