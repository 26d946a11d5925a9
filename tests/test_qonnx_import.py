"""QONNX -> bundle: what the datapath cannot run is refused, naming the node and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

from pynq_nbq.bundle import load_bundle  # noqa: E402
from pynq_nbq.errors import NbqError  # noqa: E402
from pynq_nbq.interop.qonnx_export import export_qonnx  # noqa: E402
from pynq_nbq.interop.qonnx_import import QonnxImportError, import_qonnx  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "pynq_nbq" / "models"


@pytest.fixture
def model() -> onnx.ModelProto:
    return export_qonnx(load_bundle(MODELS / "fmnist-svpe"))


def _node(m, name):
    return next(n for n in m.graph.node if n.name == name)


def _set_attr(node, **kw):
    keep = [a for a in node.attribute if a.name not in kw]
    del node.attribute[:]
    node.attribute.extend(keep + [helper.make_attribute(k, v) for k, v in kw.items()])


def _init(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def _replace_init(m, name, value):
    t = _init(m, name)
    t.CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=numpy_helper.to_array(t).dtype),
                                       name))  # fmt: skip


def test_error_is_a_package_error():
    assert issubclass(QonnxImportError, NbqError)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: _set_attr(_node(m, "features.3"), pads=[1, 0, 1, 0]),
         r"features\.3 \(Conv\).*same padding on all four sides"),
        (lambda m: _set_attr(_node(m, "features.3"), dilations=[2, 2]),
         r"features\.3 \(Conv\).*dilations"),
        (lambda m: _set_attr(_node(m, "features.3"), strides=[1, 2]),
         r"features\.3 \(Conv\).*equal strides"),
        (lambda m: _set_attr(_node(m, "features.3.pool"), ceil_mode=1),
         r"features\.3\.pool \(MaxPool\).*ceil_mode"),
        (lambda m: _set_attr(_node(m, "features.3.pool"), pads=[0, 0, 1, 1]),
         r"features\.3\.pool \(MaxPool\).*padded"),
        (lambda m: _set_attr(_node(m, "features.7.act_quant"), rounding_mode="CEIL"),
         r"features\.7\.act_quant \(Quant\).*rounding mode CEIL"),
        (lambda m: _replace_init(m, "features.7.act_quant.bitwidth", 8.0),
         r"features\.7\.act_quant \(Quant\).*clip range \[-128, 127\]"),
        (lambda m: _replace_init(m, "features.7.act_quant.scale", 0.3),
         r"features\.7\.act_quant \(Quant\).*not one power of two"),
        (lambda m: _replace_init(m, "features.7.act_quant.zeropt", 1.0),
         r"features\.7\.act_quant \(Quant\).*zero point"),
        (lambda m: setattr(_node(m, "features.7.relu"), "op_type", "Sigmoid"),
         r"features\.7\.relu \(Sigmoid\).*between features\.7 \(Conv\) and its output"),
        (lambda m: setattr(_node(m, "pool"), "op_type", "GlobalMaxPool"),
         r"pool \(GlobalMaxPool\): op GlobalMaxPool has no datapath form"),
    ],
)  # fmt: skip
def test_refusals_name_the_node_and_why(model, edit, match):
    edit(model)
    with pytest.raises(QonnxImportError, match=match):
        import_qonnx(model)


def test_weights_that_are_not_powers_of_two_are_refused_for_svpe(model):
    name = "features.0.weight_real"
    w = numpy_helper.to_array(_init(model, name)).copy()
    w.flat[0] = 3 * 2.0**-4  # an integer, but not a power of two
    _replace_init(model, name, w)
    with pytest.raises(QonnxImportError, match=r"features\.0: weight 3 .*not a power of two"):
        import_qonnx(model, datapath="svpe")
    # ... while the multiply datapath takes them (16-bit integers)
    result = import_qonnx(model, datapath="vpe")
    assert result.manifest["datapath"] == "vpe"
    assert result.arrays["features.0.weights"].flat[0] == 3


def test_a_conv_output_without_a_quant_is_refused(model):
    q = _node(model, "features.17.act_quant")
    q.op_type, q.domain = "Identity", ""
    del q.input[1:]
    del q.attribute[:]
    with pytest.raises(
        QonnxImportError,
        match=r"pool \(GlobalAveragePool\).*between features\.17 \(Conv\) and its output Quant",
    ):
        import_qonnx(model)


def test_a_constant_node_without_its_input_is_refused_by_name(model):
    """A Cast with an empty input name in the weights' constant chain: named, not a crash."""
    q = _node(model, "features.0.weight_quant")
    q.input[0] = "features.0.weight_cast"
    model.graph.node.insert(0, helper.make_node("Cast", [""], [q.input[0]],
                                                 "features.0.cast", to=1))  # fmt: skip
    with pytest.raises(QonnxImportError, match=r"features\.0\.cast \(Cast\): input 0 is missing"):
        import_qonnx(model)


def test_input_without_a_quant_is_refused(model):
    first = _node(model, "input.quant")
    first.op_type, first.domain = "Identity", ""
    del first.input[1:]
    del first.attribute[:]
    with pytest.raises(QonnxImportError, match=r"input .* must go into one Quant"):
        import_qonnx(model)


def _foreign_graph(rng) -> onnx.ModelProto:
    """A hand-written QONNX graph as another tool might write it: plain power-of-two
    float weights, a BatchNormalization, Sub/Div by constants, ROUND Quants, MatMul."""
    from pynq_nbq.interop.qonnx_format import QONNX_DOMAIN

    inits = []

    def c(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def q(x, out, frac, signed=1, bits=16):
        return helper.make_node(
            "Quant",
            [x, c(f"{out}.s", 2.0**-frac), c(f"{out}.z", 0.0), c(f"{out}.b", bits)],
            [out],
            name=out,
            domain=QONNX_DOMAIN,
            signed=signed,
            narrow=0,
            rounding_mode="ROUND",
        )

    w1 = rng.choice([0.0, 0.25, -0.25, 0.5, -0.5, 0.125], (4, 1, 3, 3))
    w2 = rng.choice([0.0, 1.0, -1.0, 0.5, -2.0], (4 * 4 * 4, 3))  # MatMul: (in, out)
    nodes = [
        q("x", "xq", 12),
        helper.make_node(
            "Conv",
            ["xq", c("w1", w1), c("b1", rng.normal(0, 0.1, 4))],
            ["c1"],
            name="conv1",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node(
            "BatchNormalization",
            [
                "c1",
                c("g", rng.uniform(0.5, 2, 4)),
                c("be", rng.normal(0, 0.2, 4)),
                c("mu", rng.normal(0, 0.1, 4)),
                c("var", rng.uniform(0.5, 2, 4)),
            ],
            ["bn"],
            name="bn1",
        ),
        helper.make_node("Relu", ["bn"], ["r1"], name="relu1"),
        q("r1", "a1", 10, signed=0, bits=15),
        helper.make_node(
            "MaxPool", ["a1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Flatten", ["p1"], ["f1"], name="flat", axis=1),
        helper.make_node("MatMul", ["f1", c("w2", w2)], ["m"], name="fc"),
        helper.make_node("Sub", ["m", c("off", [0.5, -0.25, 0.0])], ["s"], name="fc.sub"),
        helper.make_node("Div", ["s", c("div", 2.0)], ["d"], name="fc.div"),
        q("d", "logits", 9),
    ]
    graph = helper.make_graph(
        nodes,
        "foreign",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3])],
        inits,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)]
    )


def test_a_foreign_graph_is_folded_and_runs_like_the_qonnx_executor(tmp_path):
    """BatchNormalization, conv bias, Sub and Div fold into the integer requantisation
    (datapath.fold_requant); MatMul becomes a linear layer; the engine then agrees with
    qonnx's executor on the graph itself within an LSB."""
    pytest.importorskip("qonnx")
    from pynq_nbq.bundle import save_bundle
    from pynq_nbq.engine import Engine
    from pynq_nbq.interop import peers

    model = _foreign_graph(np.random.default_rng(5))
    result = import_qonnx(model, classes=["a", "b", "c"])
    b = save_bundle(result.manifest, result.arrays, tmp_path / "b")
    assert [(s.op, s.pool, s.relu) for s in b.spec.layers] == [
        ("conv", 2, True),
        ("flatten", 0, False),
        ("linear", 0, False),
    ]
    assert b.datapath == "svpe" and len(result.notes) == 2  # two ROUND activation Quants
    engine = Engine(b)
    for seed in range(8):  # batch 1 graph: one image at a time
        x = np.random.default_rng(seed).normal(0, 1, (1, 1, 8, 8))
        xq = engine.quantize_input(x)
        ours = engine.run(xq)
        real = (xq * 2.0**-engine.input_frac).astype(np.float32)
        theirs = peers.qonnx_run(peers.qonnx_prepare(model), real)
        a = peers.agreement(theirs, ours, engine.output_frac)
        assert a.max_lsb <= 1.0, (seed, a)


@pytest.mark.parametrize(
    ("init", "value", "match"),
    [
        ("div", [2.0, 0.0, 1.0], r"fc\.div \(Div\): divides by a constant that is 0"),
        ("off", [0.5, np.inf, 0.0], r"fc\.sub \(Sub\): its constant holds inf or NaN"),
        ("var", [1.0, -2.0, 1.0, 1.0], r"bn1 \(BatchNormalization\): variance \+ epsilon"),
    ],
)
def test_scale_and_shift_constants_that_cannot_fold_are_refused_by_name(init, value, match):
    """A per-channel Div by 0, a non-finite constant or a negative BN variance would fold
    into inf/NaN requantisation: refused, naming the node (not numpy warnings)."""
    model = _foreign_graph(np.random.default_rng(5))
    _replace_init(model, init, value)
    with pytest.raises(QonnxImportError, match=match):
        import_qonnx(model, classes=["a", "b", "c"])
