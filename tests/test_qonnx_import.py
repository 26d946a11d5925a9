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


def test_input_without_a_quant_is_refused(model):
    first = _node(model, "input.quant")
    first.op_type, first.domain = "Identity", ""
    del first.input[1:]
    del first.attribute[:]
    with pytest.raises(QonnxImportError, match=r"input .* must go into one Quant"):
        import_qonnx(model)
