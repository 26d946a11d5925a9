"""Fuse a traced torch model into datapath layers: one graph handler per pattern.

:func:`fuse_graph` walks a ``torch.fx`` graph (power-of-two layers are leaves) and hands
each node to the first handler that takes it: the registered ops' own export hooks
(``pynq_nbq.opset.OpSpec.export``), then :data:`HANDLERS` (conv/linear + batch norm
(+ ReLU) (+ 2x2 max-pool), add (+ ReLU), concat, maxpool, global average pool, flatten,
dropout/identity).  A node no handler takes is refused, naming it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from pynq_nbq import opset
from pynq_nbq.errors import NbqError

from . import layers as L


class ExportError(NbqError):
    """The model cannot be expressed in the datapath; the message says why."""


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, L.PowerOfTwoMixin):
            return True
        return super().is_leaf_module(m, qualname)


@dataclass
class _Layer:
    """A datapath layer under construction."""

    name: str
    op: str
    inputs: list[str]
    output: str  # fx node name of the tensor the layer produces
    attrs: dict
    module: nn.Module | None = None
    bn: nn.Module | None = None


def _users(node: torch.fx.Node) -> list[torch.fx.Node]:
    return list(node.users)


def _single_user(node, pred) -> torch.fx.Node | None:
    us = _users(node)
    return us[0] if len(us) == 1 and pred(us[0]) else None


def _first(v):
    """A PyTorch size argument's first element (an int or a tuple)."""
    return v if isinstance(v, int) else v[0]


class _FuseContext:
    """The state of :func:`fuse_graph`: the traced modules, the layers built so far, the
    nodes already folded into a layer, and fx names that alias another tensor.

    A graph handler (``handler(ctx, node) -> bool``; the built-in ones below, or an op's
    ``opset.OpSpec.export`` hook) appends to ``layers``, marks folded nodes ``consumed``
    and returns True when it took the node."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.mods = dict(gm.named_modules())
        self.alias: dict[str, str] = {}
        self.consumed: set[str] = set()
        self.layers: list[_Layer] = []

    def is_mod(self, n: torch.fx.Node, cls) -> bool:
        return n.op == "call_module" and isinstance(self.mods[n.target], cls)

    def is_relu(self, n: torch.fx.Node) -> bool:
        return self.is_mod(n, nn.ReLU) or (
            n.op == "call_function" and n.target in (torch.relu, torch.nn.functional.relu)
        )

    def is_pool2(self, n: torch.fx.Node) -> bool:
        """A 2x2, stride 2, unpadded floor-mode max-pool (the conv's fused pool)."""
        if not self.is_mod(n, nn.MaxPool2d):
            return False
        p = self.mods[n.target]
        return (_first(p.kernel_size), _first(p.stride), _first(p.padding)) == (2, 2, 0) and (
            not p.ceil_mode
        )

    def is_flatten(self, n: torch.fx.Node) -> bool:
        return self.is_mod(n, nn.Flatten) or (n.op == "call_function" and n.target is torch.flatten)

    def src(self, n: torch.fx.Node) -> str:
        """The tensor that holds node ``n``'s value."""
        return self.alias.get(n.name, n.name)

    def fold_relu(self, node: torch.fx.Node) -> torch.fx.Node | None:
        """The ReLU that is ``node``'s only user (marked consumed), or None."""
        relu = _single_user(node, self.is_relu)
        if relu is not None:
            self.consumed.add(relu.name)
        return relu


def _power_of_two_layer(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    """conv/linear + its batch norm (+ ReLU) (+ a fused 2x2/2 max-pool)."""
    if node.op != "call_module" or not isinstance(ctx.mods[node.target], L.PowerOfTwoMixin):
        return False
    m = ctx.mods[node.target]
    is_conv = isinstance(m, nn.Conv2d)
    bn_cls = nn.BatchNorm2d if is_conv else nn.BatchNorm1d
    bn = _single_user(node, lambda u: ctx.is_mod(u, bn_cls))
    if bn is None:
        raise ExportError(
            f"{node.target}: a batch norm must follow every "
            "power-of-two layer (and be its only user)"
        )
    ctx.consumed.add(bn.name)
    relu = ctx.fold_relu(bn)
    last = relu or bn
    attrs: dict = {"relu": relu is not None}
    if is_conv:
        pool = _single_user(last, ctx.is_pool2)
        if pool is not None:
            ctx.consumed.add(pool.name)
            last = pool
        attrs.update(
            kernel=m.kernel_size[0],
            stride=m.stride[0],
            padding=m.padding[0],
            groups=m.groups,
            pool=2 if pool is not None else 0,
        )
    op = "conv" if is_conv else "linear"
    src = [ctx.src(node.args[0])]
    ctx.layers.append(_Layer(node.target, op, src, last.name, attrs, m, ctx.mods[bn.target]))
    return True


def _add(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target not in (operator.add, torch.add):
        return False
    args = [a for a in node.args if isinstance(a, torch.fx.Node)]
    if len(args) != 2 or len(node.args) != 2:
        raise ExportError(f"{node.name}: only tensor + tensor additions are supported")
    relu = ctx.fold_relu(node)
    out = (relu or node).name
    ins = [ctx.src(a) for a in args]
    ctx.layers.append(_Layer(node.name, "add", ins, out, {"relu": relu is not None}))
    return True


def _concat(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target is not torch.cat:
        return False
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if dim != 1:
        raise ExportError(f"{node.name}: only channel concatenation (dim=1) is supported")
    ins = [ctx.src(a) for a in node.args[0]]
    ctx.layers.append(_Layer(node.name, "concat", ins, node.name, {}))
    return True


def _maxpool(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    if not ctx.is_mod(node, nn.MaxPool2d):
        return False
    p = ctx.mods[node.target]
    if _first(p.padding) or p.ceil_mode or p.dilation not in (1, (1, 1)):
        raise ExportError(f"{node.target}: max-pool padding/ceil/dilation unsupported")
    attrs = {"kernel": _first(p.kernel_size), "stride": _first(p.stride)}
    ctx.layers.append(_Layer(node.target, "maxpool", [ctx.src(node.args[0])], node.name, attrs))
    return True


def _gap(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    """Global average pooling; a flatten right after it is an alias (gap yields [C])."""
    if not ctx.is_mod(node, nn.AdaptiveAvgPool2d):
        return False
    if ctx.mods[node.target].output_size not in (1, (1, 1)):
        raise ExportError(f"{node.target}: only global average pooling is supported")
    ctx.layers.append(_Layer(node.target, "gap", [ctx.src(node.args[0])], node.name, {}))
    flat = _single_user(node, ctx.is_flatten)
    if flat is not None:
        ctx.consumed.add(flat.name)
        ctx.alias[flat.name] = node.name
    return True


def _flatten(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    if not ctx.is_flatten(node):
        return False
    ctx.layers.append(_Layer(node.name, "flatten", [ctx.src(node.args[0])], node.name, {}))
    return True


def _identity(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    """Dropout and Identity vanish: their output aliases their input."""
    if not (ctx.is_mod(node, nn.Dropout) or ctx.is_mod(node, nn.Identity)):
        return False
    ctx.alias[node.name] = ctx.src(node.args[0])
    return True


#: the built-in graph handlers, tried in order after the ops' own ``export`` hooks
HANDLERS = (_power_of_two_layer, _add, _concat, _maxpool, _gap, _flatten, _identity)


def _handlers() -> list:
    """The registered ops' export hooks (``opset.OpSpec.export``), then :data:`HANDLERS`."""
    hooks = [opset.get(name).export for name in opset.names()]
    return [h for h in hooks if h is not None] + list(HANDLERS)


def _no_handler(ctx: _FuseContext, node: torch.fx.Node) -> ExportError:
    if ctx.is_relu(node):
        return ExportError(f"{node.name}: a ReLU must directly follow a batch norm or an add")
    if node.op == "call_module":
        kind = type(ctx.mods[node.target]).__name__
        return ExportError(f"{node.name}: module {node.target!r} ({kind}) has no datapath form")
    what = getattr(node.target, "__name__", node.target)
    return ExportError(f"{node.name}: operation {what!r} ({node.op}) has no datapath form")


def fuse_graph(gm: torch.fx.GraphModule) -> tuple[list[_Layer], str, str]:
    """Datapath layers of a traced model: (layers, input node name, output node name).

    Each node goes to the first graph handler that takes it (:func:`_handlers`); a node
    no handler takes is refused, naming it."""
    ctx = _FuseContext(gm)
    handlers = _handlers()
    inp = out = None
    for node in gm.graph.nodes:
        if node.name in ctx.consumed:
            continue
        if node.op == "placeholder":
            if inp is not None:
                raise ExportError("the model must take exactly one input")
            inp = node.name
        elif node.op == "output":
            out = ctx.src(node.args[0])
        elif not any(handler(ctx, node) for handler in handlers):
            raise _no_handler(ctx, node)
    if inp is None or out is None:
        raise ExportError("the traced model has no input or output")
    unknown = sorted({lay.op for lay in ctx.layers} - set(opset.names()))
    if unknown:
        raise ExportError(f"graph handlers produced ops the datapath has not registered: {unknown}")
    return ctx.layers, inp, out
