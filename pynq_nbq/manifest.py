"""The typed view of a bundle's manifest: frozen descriptions, built once by validation.

:func:`pynq_nbq.bundle.validate` parses ``manifest.json`` into a :class:`Manifest`
(``bundle.spec``); everything downstream (engine, backends, bench, API, perf model)
reads this view, never the raw dict.  The schema is ``docs/datapath.md`` section 4.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import datapath as dp
from . import opset
from .errors import NbqError

SCHEMA = "pynq-nbq-bundle"
#: 2: acc_bits holds +V as well as -V (one bit more when V is a power of two), and the
#: input is quantised from 8-bit pixels exactly (datapath.pixel_table)
SCHEMA_VERSION = 2
#: the input block's ``resize`` values (``preprocess.preprocess`` implements them)
RESIZE_MODES = ("stretch", "center-crop")
#: the array roles of a conv/linear layer
ROLES = ("weights", "mult", "bias", "shift")


class BundleError(NbqError):
    """A bundle failed validation; the message names the file and field."""


@dataclass(frozen=True)
class TensorSpec:
    """One activation tensor: ``shape`` [C, H, W] or [C], ``frac`` fractional bits."""

    name: str
    shape: tuple[int, ...]
    frac: int


@dataclass(frozen=True)
class InputSpec:
    """The bundle's ``input`` block: how an image becomes the input tensor.

    ``mean``/``std`` per channel on 0..1 pixels; ``resize`` "stretch" or
    "center-crop"; ``invert`` flips 8-bit pixels (p -> 255 - p)."""

    tensor: str
    channels: int
    height: int
    width: int
    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "stretch"
    invert: bool = False


@dataclass(frozen=True)
class LayerSpec:
    """One validated layer of a bundle, parsed once (``docs/datapath.md`` section 4).

    Shapes are [C, H, W] or [C] tuples; ``in_fracs``/``out_frac`` the tensors'
    formats.  Conv/linear layers also carry ``weight_bits``, ``weight_exp``,
    ``fan_in`` (inputs per output), ``acc_bound`` (largest |accumulator|, V) and
    ``acc_bits`` (its signed width), and ``arrays`` (role -> array name, as pairs).
    A linear layer has kernel 1, stride 1, padding 0, groups 1; ``pool`` is 0 or 2
    (a fused 2x2/2 max-pool).  ``kernel``/``stride`` of a maxpool are its window.
    ``params`` holds the attributes of ops outside the fields above (a registered op's
    own attributes, ``opset``), as (name, value) pairs; read them with :meth:`param`.
    """

    index: int
    name: str
    op: str
    inputs: tuple[str, ...]
    output: str
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    in_fracs: tuple[int, ...]
    out_frac: int
    relu: bool = False
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    pool: int = 0
    weight_bits: int | None = None
    weight_exp: int | None = None
    fan_in: int | None = None
    acc_bound: int | None = None
    acc_bits: int | None = None
    arrays: tuple[tuple[str, str], ...] = ()
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def weighted(self) -> bool:
        """True for ops with weights and requantisation (conv, linear)."""
        return opset.get(self.op).weighted

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of the first (for most ops the only) input."""
        return self.in_shapes[0]

    @property
    def on_conv_engine(self) -> bool:
        """True for a conv the hardware conv engine runs (``datapath.conv_engine_takes``)."""
        return self.op == "conv" and dp.conv_engine_takes(
            self.kernel, self.stride, self.padding, self.groups
        )

    def array_name(self, role: str) -> str:
        """The array name of ``role`` (weights, mult, bias, shift)."""
        return dict(self.arrays)[role]

    def param(self, name: str) -> Any:
        """The value of a registered op's own attribute ``name`` (KeyError if absent)."""
        return dict(self.params)[name]


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest, validated and parsed into frozen descriptions.

    ``weight_bits`` is the bundle's: the widest of its layers' (``docs/datapath.md``
    section 4); each weighted layer's own width is its ``LayerSpec.weight_bits``."""

    name: str
    pe: dp.PEKind
    weight_bits: int
    classes: tuple[str, ...]
    input: InputSpec
    tensors: dict[str, TensorSpec]
    layers: tuple[LayerSpec, ...]
    output: str
    #: where the bundle came from (checkpoint, training arguments, tool); free-form
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_frac(self) -> int:
        """Fractional bits of the input tensor."""
        return self.tensors[self.input.tensor].frac

    @property
    def output_frac(self) -> int:
        """Fractional bits of the logits."""
        return self.tensors[self.output].frac

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input tensor's shape [C, H, W]."""
        return self.tensors[self.input.tensor].shape

    @property
    def weighted_layers(self) -> tuple[LayerSpec, ...]:
        """The conv and linear layers, in order."""
        return tuple(layer for layer in self.layers if layer.weighted)


def weighted_fields(
    pe: dp.PEKind | str, weight_bits: int, weight_shape: tuple[int, ...]
) -> dict[str, int]:
    """``fan_in``, ``acc_bound`` and ``acc_bits`` of a conv (C_out, C_in/g, k, k) or linear
    (C_out, C_in) weight array: what the manifest's ``acc_bits`` must say.

    The bound uses the largest weight magnitude the layer's *width* allows
    (``datapath.max_abs_weight``), not the largest weight the layer happens to hold:
    ``acc_bits`` is a property of the layer's format (``docs/datapath.md`` section 2)."""
    fan_in = int(np.prod(weight_shape[1:]))
    max_w = dp.max_abs_weight(pe, weight_bits)
    return {
        "fan_in": fan_in,
        "acc_bound": dp.accumulator_bound(fan_in, max_w),
        "acc_bits": dp.accumulator_bits(fan_in, max_w),
    }
