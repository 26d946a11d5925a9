"""The table of ops: one :class:`OpSpec` per op of the datapath, in one registry.

Everything that differs between ops lives in the op's entry: its attributes (names,
types, defaults, the values allowed), how many inputs it takes, its output-shape rule,
its weight-array shape (conv and linear), whether it keeps its input's fixed-point
format, its engine step, and two hooks for the tools around the engine (the torch
exporter's graph handler and an ARM-side operation count for a performance model).
:func:`pynq_nbq.bundle.validate`, :class:`pynq_nbq.engine.Engine`,
``host_train.export.fuse_graph`` and :mod:`pynq_nbq.testing` read this table, so a
new op is one :func:`register` call plus its tests (``docs/architecture.md``).

The integer definitions of the built-in ops are ``docs/datapath.md`` sections 2-3;
their numpy implementations are :mod:`pynq_nbq.ops`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import datapath as dp
from . import ops

if TYPE_CHECKING:
    from .bundle import LayerSpec

#: fields every layer has, whatever its op (``docs/datapath.md`` section 4)
COMMON_FIELDS = ("name", "op", "inputs", "output", "in_shape", "out_shape")
#: the fields of a weighted (conv/linear) layer besides its attributes, checked by
#: ``bundle._validate_weighted``
WEIGHT_FIELDS = ("weight_bits", "weight_exp", "acc_bits", "arrays")

Shape = tuple[int, ...]
#: an expected output shape; None in a position means "checked elsewhere" (a conv's
#: channel count comes from its weights)
ShapeRule = Callable[[dict[str, Any], Sequence[Shape]], tuple[int | None, ...]]
#: the engine's call for a weighted layer: int16 NHWC (N, H, W, C_in) -> (N, OH, OW, C_out),
#: bound by the engine to the layer's ``ops.ConvSpec`` and the backend of its placement
ConvCall = Callable[[np.ndarray], np.ndarray]
#: an engine step: (the layer, its int16 inputs (NHWC maps or (N, C) vectors), the
#: bound conv call of a weighted layer or None) -> the int16 output
EngineStep = Callable[["LayerSpec", list[np.ndarray], "ConvCall | None"], np.ndarray]


class OpError(ValueError):
    """A layer's attributes or input shapes do not fit its op (the message says how)."""


@dataclass(frozen=True)
class Attr:
    """One attribute of an op.

    ``kind`` is ``int`` or ``bool`` (JSON booleans are never taken as integers);
    ``default`` None means the field is required in the manifest; ``allowed`` the
    values the engine implements (None: any) and ``minimum`` the smallest integer."""

    name: str
    kind: type
    default: Any = None
    minimum: int | None = None
    allowed: tuple[Any, ...] | None = None

    def parse(self, layer: dict[str, Any]) -> Any:
        """The attribute's value in ``layer`` (a manifest dict); OpError if bad or missing."""
        if self.name not in layer:
            if self.default is None:
                raise OpError(f"missing field {self.name!r}")
            return self.default
        v = layer[self.name]
        if self.kind is bool and not isinstance(v, bool):
            raise OpError(f"{self.name} must be true or false")
        if self.kind is int and (not isinstance(v, int) or isinstance(v, bool)):
            raise OpError(f"{self.name} must be an integer")
        if self.minimum is not None and v < self.minimum:
            raise OpError(f"{self.name} must be >= {self.minimum}, got {v}")
        if self.allowed is not None and v not in self.allowed:
            raise OpError(f"{self.name} must be one of {list(self.allowed)}, got {v}")
        return v


@dataclass(frozen=True)
class OpSpec:
    """Everything the package knows about one op.

    Attributes:
        name: the manifest's ``op`` string.
        attrs: the op's attributes; any other key in a layer (beyond
            :data:`COMMON_FIELDS`, and :data:`WEIGHT_FIELDS` when ``weighted``) is refused.
        shape: the output-shape rule (raises :class:`OpError` naming the problem).
        step: the engine step (numpy, on the ARM cores unless the engine hands a
            conv to the backend).
        inputs: the exact number of inputs, or None for "two or more".
        weighted: has weights and requantisation (``weight_shape`` then gives the
            weight array's shape from the attributes, the input shape and C_out).
        keeps_format: the output's ``frac`` must equal the input's (the op cannot
            rescale: maxpool, flatten).
        export: None, or a ``torch.fx`` graph handler ``(ctx, node) -> bool`` that
            ``host_train.export.fuse_graph`` tries before its built-in handlers
            (``ctx`` is its ``_FuseContext``; True when it consumed the node).
        arm_ops: None, or the operations one image costs on the ARM cores for a
            performance model (``LayerSpec -> int``).  The built-in ops leave it None
            (``pynq_nbq.perfmodel`` counts them itself).
    """

    name: str
    attrs: tuple[Attr, ...]
    shape: ShapeRule
    step: EngineStep
    inputs: int | None = 1
    weighted: bool = False
    weight_shape: Callable[[dict[str, Any], Shape, int], list[int]] | None = None
    keeps_format: bool = False
    export: Callable[[Any, Any], bool] | None = None
    arm_ops: Callable[[LayerSpec], int] | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        """Every key a layer of this op may have."""
        extra = WEIGHT_FIELDS if self.weighted else ()
        return COMMON_FIELDS + tuple(a.name for a in self.attrs) + extra

    def parse_attrs(self, layer: dict[str, Any]) -> dict[str, Any]:
        """The typed attributes of a manifest layer; OpError on an unknown key or a bad value."""
        unknown = sorted(set(layer) - set(self.fields))
        if unknown:
            raise OpError(
                f"op {self.name!r} does not implement {unknown} (its fields: {sorted(self.fields)})"
            )
        return {a.name: a.parse(layer) for a in self.attrs}


_REGISTRY: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    """Add ``spec`` to the table; ValueError if an op of that name is there already."""
    if spec.name in _REGISTRY:
        raise ValueError(f"op {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove an op (tests that register a toy op remove it again)."""
    _REGISTRY.pop(name, None)


@contextmanager
def registered(spec: OpSpec) -> Iterator[OpSpec]:
    """``with registered(spec):`` - the op is in the table inside the block only."""
    register(spec)
    try:
        yield spec
    finally:
        unregister(spec.name)


def get(name: str) -> OpSpec:
    """The entry of op ``name``; OpError naming the known ops when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OpError(f"unknown op {name!r} (known: {sorted(_REGISTRY)})") from None


def names() -> tuple[str, ...]:
    """The registered ops, in registration order."""
    return tuple(_REGISTRY)


# --- shape rules ------------------------------------------------------------------------
def _map_input(in_shapes: Sequence[Shape], op: str) -> Shape:
    s = in_shapes[0]
    if len(s) != 3:
        raise OpError(f"{op} input must be [C,H,W], got {list(s)}")
    return s


def _conv_shape(a: dict[str, Any], in_shapes: Sequence[Shape]) -> tuple[int | None, ...]:
    s = _map_input(in_shapes, "conv")
    oh, ow = dp.conv_output_hw(s[1], s[2], a["kernel"], a["stride"], a["padding"], a["pool"])
    if oh < 1 or ow < 1:
        raise OpError(f"the kernel does not fit the {s[1]}x{s[2]} input (output {oh}x{ow})")
    return (None, oh, ow)  # channels: from the weights


def _linear_shape(a: dict[str, Any], in_shapes: Sequence[Shape]) -> tuple[int | None, ...]:
    if len(in_shapes[0]) != 1:
        raise OpError(f"linear input must be [C], got {list(in_shapes[0])}")
    return (None,)


def _maxpool_shape(a: dict[str, Any], in_shapes: Sequence[Shape]) -> tuple[int | None, ...]:
    s = _map_input(in_shapes, "maxpool")
    oh, ow = dp.conv_output_hw(s[1], s[2], a["kernel"], a["stride"])
    if oh < 1 or ow < 1:
        raise OpError(f"the window does not fit the {s[1]}x{s[2]} input")
    return (s[0], oh, ow)


def _gap_shape(a: dict[str, Any], in_shapes: Sequence[Shape]) -> tuple[int | None, ...]:
    return (_map_input(in_shapes, "gap")[0],)


def _flatten_shape(a: dict[str, Any], in_shapes: Sequence[Shape]) -> tuple[int | None, ...]:
    return (int(np.prod(in_shapes[0])),)


def _add_shape(a: dict[str, Any], in_shapes: Sequence[Shape]) -> tuple[int | None, ...]:
    if any(tuple(x) != tuple(in_shapes[0]) for x in in_shapes):
        raise OpError(f"add inputs differ in shape: {[list(x) for x in in_shapes]}")
    return tuple(in_shapes[0])


def _concat_shape(a: dict[str, Any], in_shapes: Sequence[Shape]) -> tuple[int | None, ...]:
    s = in_shapes[0]
    if any(len(x) != len(s) or tuple(x[1:]) != tuple(s[1:]) for x in in_shapes):
        raise OpError(f"concat inputs differ in H, W: {[list(x) for x in in_shapes]}")
    return (sum(x[0] for x in in_shapes), *s[1:])


def _conv_weight_shape(a: dict[str, Any], in_shape: Shape, c_out: int) -> list[int]:
    g = a["groups"]
    if in_shape[0] % g or c_out % g:
        raise OpError(f"groups {g} does not divide the channels ({in_shape[0]} -> {c_out})")
    return [c_out, in_shape[0] // g, a["kernel"], a["kernel"]]


def _linear_weight_shape(a: dict[str, Any], in_shape: Shape, c_out: int) -> list[int]:
    return [c_out, in_shape[0]]


# --- engine steps -----------------------------------------------------------------------
def _need(conv: ConvCall | None, layer: LayerSpec) -> ConvCall:
    if conv is None:
        raise ValueError(f"{layer.name}: a weighted layer needs its compiled conv call")
    return conv


def _conv_step(layer: LayerSpec, ins: list[np.ndarray], conv: ConvCall | None) -> np.ndarray:
    return _need(conv, layer)(ins[0])


def _linear_step(layer: LayerSpec, ins: list[np.ndarray], conv: ConvCall | None) -> np.ndarray:
    n = ins[0].shape[0]
    return _need(conv, layer)(ins[0].reshape(n, 1, 1, -1)).reshape(n, -1)


def _maxpool_step(layer: LayerSpec, ins: list[np.ndarray], conv: ConvCall | None) -> np.ndarray:
    return ops.maxpool(ins[0], layer.kernel, layer.stride)


def _gap_step(layer: LayerSpec, ins: list[np.ndarray], conv: ConvCall | None) -> np.ndarray:
    return ops.global_avg_pool(ins[0], layer.in_fracs[0], layer.out_frac)


def _flatten_step(layer: LayerSpec, ins: list[np.ndarray], conv: ConvCall | None) -> np.ndarray:
    x = ins[0]
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1) if x.ndim == 4 else x


def _add_step(layer: LayerSpec, ins: list[np.ndarray], conv: ConvCall | None) -> np.ndarray:
    return ops.add(list(zip(ins, layer.in_fracs)), layer.out_frac, layer.relu)


def _concat_step(layer: LayerSpec, ins: list[np.ndarray], conv: ConvCall | None) -> np.ndarray:
    return ops.concat(list(zip(ins, layer.in_fracs)), layer.out_frac)


# --- the built-in ops (docs/datapath.md sections 2-3) -----------------------------------
RELU = Attr("relu", bool)
_CONV_ATTRS = (
    Attr("kernel", int, minimum=1),
    Attr("stride", int, minimum=1),
    Attr("padding", int, minimum=0),
    Attr("groups", int, minimum=1),
    RELU,
    Attr("pool", int, allowed=dp.POOL_CHOICES),
)

register(
    OpSpec(
        "conv",
        _CONV_ATTRS,
        _conv_shape,
        _conv_step,
        weighted=True,
        weight_shape=_conv_weight_shape,
    )
)
register(
    OpSpec(
        "linear",
        (RELU,),
        _linear_shape,
        _linear_step,
        weighted=True,
        weight_shape=_linear_weight_shape,
    )
)
register(
    OpSpec(
        "maxpool",
        (Attr("kernel", int, minimum=1), Attr("stride", int, minimum=1)),
        _maxpool_shape,
        _maxpool_step,
        keeps_format=True,
    )
)
register(OpSpec("gap", (), _gap_shape, _gap_step))
register(OpSpec("add", (RELU,), _add_shape, _add_step, inputs=None))
register(OpSpec("concat", (), _concat_shape, _concat_step, inputs=None))
register(OpSpec("flatten", (), _flatten_shape, _flatten_step, keeps_format=True))
