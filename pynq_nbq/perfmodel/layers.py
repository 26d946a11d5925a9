"""Layer descriptions for the performance model, from plain lists or bundle manifests.

A layer is a :class:`Layer` (shapes as channels x height x width; vectors are
C x 1 x 1).  Two adapters build them:

* :func:`layers_from_list` - the plain JSON list ``nbq perf --layers`` reads, e.g.
  ``{"name": "conv1", "kind": "conv", "in_channels": 3, "in_height": 32,
  "in_width": 32, "out_channels": 128, "kernel": 3, "stride": 1, "groups": 1}``.
  ``in_*`` may be left out after the first layer: they default to the previous
  layer's output.
* :func:`layers_from_manifest` - a model bundle's typed ``Manifest`` (through
  :func:`layers_from_specs`), or a ``manifest.json`` without its arrays;
* :func:`layers_from_specs` - a loaded bundle's parsed layers (``bundle.spec.layers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..datapath import conv_output_hw, conv_output_size

if TYPE_CHECKING:
    from ..bundle import LayerSpec, Manifest

KINDS = ("conv", "linear", "maxpool", "avgpool", "gap", "add", "concat", "flatten", "relu")
_ALIASES = {
    "pool": "maxpool",
    "max_pool": "maxpool",
    "avg_pool": "avgpool",
    "fc": "linear",
    "dense": "linear",
    "global_avg_pool": "gap",
    "globalavgpool": "gap",
}
_KEYS = {
    "name",
    "kind",
    "op",
    "in_channels",
    "in_height",
    "in_width",
    "out_channels",
    "out_features",
    "out_height",
    "out_width",
    "kernel",
    "stride",
    "padding",
    "groups",
    "pool",
    "n_inputs",
}


@dataclass(frozen=True)
class Layer:
    """One network layer with its input and output shapes.

    For a conv, ``out_height``/``out_width`` are after the fused 2x2 max-pool when
    ``pool`` is set (the engine writes the pooled map); ``conv_height``/``conv_width``
    are the convolution's own output size.
    """

    name: str
    kind: str
    in_channels: int
    in_height: int
    in_width: int
    out_channels: int
    out_height: int
    out_width: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    pool: bool = False
    n_inputs: int = 1

    @property
    def conv_height(self) -> int:
        """Rows the convolution itself produces (before a fused pool)."""
        if self.kind != "conv":
            return self.out_height
        return conv_output_size(self.in_height, self.kernel, self.stride, self.padding)

    @property
    def conv_width(self) -> int:
        """Columns the convolution itself produces (before a fused pool)."""
        if self.kind != "conv":
            return self.out_width
        return conv_output_size(self.in_width, self.kernel, self.stride, self.padding)

    @property
    def in_elems(self) -> int:
        """Input activations (all inputs of an add/concat), count."""
        if self.kind == "concat":
            return self.out_elems
        return self.in_channels * self.in_height * self.in_width * max(1, self.n_inputs)

    @property
    def out_elems(self) -> int:
        """Output activations, count."""
        return self.out_channels * self.out_height * self.out_width

    @property
    def macs(self) -> int:
        """Multiply-accumulates of a conv or linear layer; 0 for the others."""
        if self.kind == "conv":
            per_out = (self.in_channels // self.groups) * self.kernel**2
            return self.conv_height * self.conv_width * self.out_channels * per_out
        if self.kind == "linear":
            return self.in_channels * self.in_height * self.in_width * self.out_channels
        return 0

    @property
    def ops(self) -> int:
        """Operations as the paper counts them (Eq. 40): 2 per MAC; 0 for pool/add/...."""
        return 2 * self.macs

    @property
    def weights(self) -> int:
        """Weights of a conv or linear layer (count)."""
        if self.kind == "conv":
            return self.in_channels // self.groups * self.out_channels * self.kernel**2
        if self.kind == "linear":
            return self.in_channels * self.in_height * self.in_width * self.out_channels
        return 0

    def shape_text(self) -> str:
        """``CxHxW -> CxHxW`` for tables."""
        return (
            f"{self.in_channels}x{self.in_height}x{self.in_width}->"
            f"{self.out_channels}x{self.out_height}x{self.out_width}"
        )


def _where(index: int, name: str | None) -> str:
    return f"layer {index}" + (f" ({name})" if name else "")


def _int(d: dict[str, Any], key: str, where: str, default: int | None = None, low: int = 1) -> int:
    value = d.get(key, default)
    if value is None:
        raise ValueError(f"{where}: missing {key!r}")
    if isinstance(value, (list, tuple)):
        if len(value) == 0 or any(v != value[0] for v in value):
            raise ValueError(f"{where}: {key!r} must be square/equal in both axes, got {value}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {key!r} must be an integer >= {low}, got {value!r}")
    return value


def _kind(d: dict[str, Any], where: str) -> str:
    raw = d.get("kind", d.get("op", "conv"))
    if not isinstance(raw, str):
        raise ValueError(f"{where}: 'kind' must be a string, got {raw!r}")
    kind = _ALIASES.get(raw.strip().lower(), raw.strip().lower())
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {raw!r}; known kinds: {', '.join(KINDS)}")
    return kind


def layer_from_dict(d: dict[str, Any], index: int = 0, prev: Layer | None = None) -> Layer:
    """Build one :class:`Layer`; ``prev`` supplies the input shape when ``in_*`` are absent."""
    if not isinstance(d, dict):
        raise ValueError(f"layer {index}: expected an object, got {type(d).__name__}")
    name = d.get("name")
    where = _where(index, name if isinstance(name, str) else None)
    unknown = sorted(set(d) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    kind = _kind(d, where)
    name = str(name) if name is not None else f"{kind}{index}"
    shape = {}
    for key, prev_value in (
        ("in_channels", prev.out_channels if prev else None),
        ("in_height", prev.out_height if prev else None),
        ("in_width", prev.out_width if prev else None),
    ):
        if key not in d and prev is None:
            raise ValueError(
                f"{where}: missing {key!r} (the first layer must give its input shape)"
            )
        shape[key] = _int(d, key, where, prev_value)
    c, h, w = shape["in_channels"], shape["in_height"], shape["in_width"]
    kernel, stride, padding, groups, n_inputs, pool = 1, 1, 0, 1, 1, False
    if kind == "conv":
        n = _int(d, "out_channels", where)
        kernel = _int(d, "kernel", where)
        stride = _int(d, "stride", where, 1)
        padding = _int(d, "padding", where, (kernel - 1) // 2, low=0)
        groups = _int(d, "groups", where, 1)
        pool = bool(d.get("pool", False))
        if c % groups or n % groups:
            raise ValueError(
                f"{where}: groups={groups} must divide in ({c}) and out ({n}) channels"
            )
        oh, ow = conv_output_hw(h, w, kernel, stride, padding)
        if oh < 1 or ow < 1:
            raise ValueError(f"{where}: kernel {kernel} larger than the padded {h}x{w} input")
        if pool:
            oh, ow = conv_output_hw(oh, ow, 2, 2)
    elif kind == "linear":
        n = _int(d, "out_features", where, d.get("out_channels"))
        oh = ow = 1
    elif kind in ("maxpool", "avgpool"):
        kernel = _int(d, "kernel", where, 2)
        stride = _int(d, "stride", where, kernel)
        padding = _int(d, "padding", where, 0, low=0)
        n = c
        oh, ow = conv_output_hw(h, w, kernel, stride, padding)
        if oh < 1 or ow < 1:
            raise ValueError(f"{where}: pool window {kernel} larger than the {h}x{w} input")
    elif kind == "gap":
        n, oh, ow = c, 1, 1
    elif kind == "flatten":
        n, oh, ow = c * h * w, 1, 1
    elif kind == "concat":
        n_inputs = _int(d, "n_inputs", where, 2)
        n, oh, ow = _int(d, "out_channels", where), h, w
    elif kind == "add":
        n_inputs = _int(d, "n_inputs", where, 2)
        n, oh, ow = c, h, w
    else:  # relu
        n, oh, ow = c, h, w
    for key, value in (("out_height", oh), ("out_width", ow)):
        if key in d and _int(d, key, where) != value:
            raise ValueError(f"{where}: {key}={d[key]} disagrees with the computed {value}")
    return Layer(name, kind, c, h, w, n, oh, ow, kernel, stride, padding, groups, pool, n_inputs)


def layers_from_list(items: list[dict[str, Any]]) -> list[Layer]:
    """Layers from a plain list of dicts (see the module docstring); errors name the layer."""
    if not isinstance(items, list) or not items:
        raise ValueError("layers: expected a non-empty list of layer objects")
    out: list[Layer] = []
    for i, d in enumerate(items):
        out.append(layer_from_dict(d, i, out[-1] if out else None))
    return out


def _chw(shape: Any, where: str, key: str) -> tuple[int, int, int]:
    if not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3):
        raise ValueError(f"{where}: {key!r} must be [C, H, W] or [C], got {shape!r}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise ValueError(f"{where}: {key!r} must hold positive integers, got {shape!r}")
    return (shape[0], 1, 1) if len(shape) == 1 else (shape[0], shape[1], shape[2])


def layers_from_manifest(manifest: Manifest | dict[str, Any]) -> list[Layer]:
    """Layers from a bundle manifest (``docs/datapath.md`` section 4).

    A typed :class:`~pynq_nbq.bundle.Manifest` (``load_bundle(path).spec``, validated
    with its arrays) is read through :func:`layers_from_specs` - the same parsed layers
    the engine runs.  A plain ``manifest.json`` dict (a manifest without its arrays,
    which the bundle validator cannot check) is read field by field: each entry of
    ``manifest["layers"]``: ``name``, ``op``, ``in_shape``, ``out_shape`` and, for conv,
    ``kernel``, ``stride``, ``padding``, ``groups``, ``pool`` (a fused 2x2 max-pool); for
    maxpool ``kernel``/``stride``; ``inputs`` for add/concat; the rest is ignored.
    """
    from ..bundle import Manifest

    if isinstance(manifest, Manifest):
        return layers_from_specs(manifest.layers)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise ValueError("manifest: 'layers' must be a list")
    layers: list[Layer] = []
    for i, ml in enumerate(manifest["layers"]):
        if not isinstance(ml, dict):
            raise ValueError(f"manifest layer {i}: expected an object")
        name = ml.get("name", f"layer{i}")
        where = f"manifest layer {i} ({name})"
        if "op" not in ml:
            raise ValueError(f"{where}: missing 'op'")
        c, h, w = _chw(ml.get("in_shape"), where, "in_shape")
        oc, oh, ow = _chw(ml.get("out_shape"), where, "out_shape")
        d: dict[str, Any] = {
            "name": name,
            "kind": ml["op"],
            "in_channels": c,
            "in_height": h,
            "in_width": w,
        }
        kind = _kind(d, where)
        if kind == "conv":
            d.update(out_channels=oc, pool=bool(ml.get("pool")))
            for key in ("kernel", "stride", "padding", "groups"):
                if ml.get(key) is not None:
                    d[key] = ml[key]
        elif kind == "linear":
            d["out_features"] = oc
        elif kind in ("maxpool", "avgpool"):
            for key in ("kernel", "stride", "padding"):
                if ml.get(key) is not None:
                    d[key] = ml[key]
        elif kind in ("add", "concat"):
            inputs = ml.get("inputs")
            d["n_inputs"] = len(inputs) if isinstance(inputs, list) and inputs else 2
            if kind == "concat":
                d["out_channels"] = oc
        layer = layer_from_dict(d, i)
        if (layer.out_channels, layer.out_height, layer.out_width) != (oc, oh, ow):
            raise ValueError(
                f"{where}: out_shape {[oc, oh, ow]} disagrees with the shape computed "
                f"from in_shape and the layer's attributes "
                f"{[layer.out_channels, layer.out_height, layer.out_width]}"
            )
        layers.append(layer)
    return layers


def layers_from_specs(specs: Sequence[LayerSpec]) -> list[Layer]:
    """Layers of a loaded, validated bundle (``load_bundle(path).spec.layers``): the same
    names, shapes and attributes the engine runs, no re-parsing."""
    out = []
    for ls in specs:
        c, h, w = (*ls.in_shape, 1, 1)[:3]
        oc, oh, ow = (*ls.out_shape, 1, 1)[:3]
        n_inputs = len(ls.inputs)
        out.append(
            Layer(
                ls.name,
                ls.op,
                c,
                h,
                w,
                oc,
                oh,
                ow,
                ls.kernel,
                ls.stride,
                ls.padding,
                ls.groups,
                bool(ls.pool),
                n_inputs,
            )  # fmt: skip
        )
    return out
