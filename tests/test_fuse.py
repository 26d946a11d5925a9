"""host_train.fuse: an op's export hook (``OpSpec.export``) is consulted by fuse_graph, so
a new op that models produce is one registry entry too."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from host_train.fuse import ExportError, _Layer, _Tracer, fuse_graph  # noqa: E402
from pynq_nbq import opset  # noqa: E402


def _hardtanh_as_clamp(ctx, node) -> bool:
    """The toy op's export hook: an nn.Hardtanh becomes a clamp layer."""
    if not ctx.is_mod(node, nn.Hardtanh):
        return False
    m = ctx.mods[node.target]
    attrs = {"lo": int(m.min_val), "hi": int(m.max_val)}
    ctx.layers.append(_Layer(node.target, "clamp", [ctx.src(node.args[0])], node.name, attrs))
    return True


CLAMP = opset.OpSpec(
    "clamp",
    (opset.Attr("lo", int), opset.Attr("hi", int)),
    lambda attrs, in_shapes: tuple(in_shapes[0]),
    lambda layer, ins, conv: ins[0],
    export=_hardtanh_as_clamp,
)


def _traced():
    model = nn.Sequential(nn.Flatten(), nn.Hardtanh(-2, 3))
    return torch.fx.GraphModule(model, _Tracer().trace(model))


def test_fuse_graph_uses_a_registered_ops_export_hook():
    with pytest.raises(ExportError, match="Hardtanh.* has no datapath form"):
        fuse_graph(_traced())
    with opset.registered(CLAMP):
        layers, inp, out = fuse_graph(_traced())
    assert [(ly.op, ly.attrs) for ly in layers] == [("flatten", {}), ("clamp", {"lo": -2, "hi": 3})]
    assert layers[1].inputs == [layers[0].output] and out == layers[1].output
