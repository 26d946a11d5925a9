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
class _Act:
    """A quantised activation: the bundle tensor it is, its format and shape."""

    tensor: str
    frac: int
    shape: tuple[int, ...]  # [C, H, W] or [C]


@dataclass
class _Align:
    """A ``Quant`` (with an optional half-LSB ``Add``) that moves ``source`` to ``frac``:
    legal only as an input of an add or concat."""

    source: _Act
    frac: int
    exact: bool  # FLOOR after half: the datapath's align; else a rounding note


_ACT_ROUNDING_EXACT = ("FLOOR",)
_ACT_ROUNDING_TIES = ("ROUND", "HALF_EVEN", "HALF_UP")


def _fail(node: onnx.NodeProto | None, why: str) -> QonnxImportError:
    where = f"node {node.name or '(unnamed)'} ({node.op_type})" if node is not None else "graph"
    return QonnxImportError(f"{where}: {why}")


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
