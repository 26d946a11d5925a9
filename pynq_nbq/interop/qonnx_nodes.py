"""What every part of the QONNX import shares: its error, the activation records, and
reading a node's attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx

from ..errors import NbqError


class QonnxImportError(NbqError):
    """The graph has something the datapath cannot run; names the node and why."""


@dataclass
class Act:
    """A quantised activation: the bundle tensor it is, its format and shape."""

    tensor: str
    frac: int
    shape: tuple[int, ...]  # [C, H, W] or [C]


@dataclass
class Align:
    """A ``Quant`` (with an optional half-LSB ``Add``) that moves ``source`` to ``frac``:
    legal only as an input of an add or concat."""

    source: Act
    frac: int
    exact: bool  # FLOOR after half: the datapath's align; else a rounding note


ACT_ROUNDING_EXACT = ("FLOOR",)
ACT_ROUNDING_TIES = ("ROUND", "HALF_EVEN", "HALF_UP")


def fail(node: onnx.NodeProto | None, why: str) -> QonnxImportError:
    where = f"node {node.name or '(unnamed)'} ({node.op_type})" if node is not None else "graph"
    return QonnxImportError(f"{where}: {why}")


def node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def attr_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def pool_attrs(node: onnx.NodeProto) -> tuple[int, int]:
    """(kernel, stride) of a MaxPool; refuses padding, dilation, ceil mode, 1-D/3-D."""
    a = node_attrs(node)
    k = list(a.get("kernel_shape", []))
    s = list(a.get("strides", [1] * len(k)))
    if len(k) != 2 or k[0] != k[1] or len(s) != 2 or s[0] != s[1]:
        raise fail(node, f"kernel {k} strides {s}: only square 2-D pools with equal strides")
    if any(p != 0 for p in a.get("pads", [])) or attr_str(a.get("auto_pad", "NOTSET")) not in (
        "NOTSET",
        "VALID",
        "",
    ):
        raise fail(node, "padded max-pool (the datapath pools without padding)")
    if a.get("ceil_mode", 0):
        raise fail(node, "ceil_mode=1 (the datapath uses floor mode)")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise fail(node, "dilated max-pool")
    if a.get("storage_order", 0) or len(node.output) > 1:
        raise fail(node, "max-pool indices output / storage order")
    return int(k[0]), int(s[0])
