"""What our QONNX graphs look like: the names and numbers export and import share.

The mapping (``docs/interop.md`` has the table):

* an activation tensor with ``f`` fractional bits is the output of a ``Quant`` node with
  scale ``2**-f``, zero point 0, 16 bits, signed, not narrow;
* a conv/linear layer's integer weights ``w`` (svpe ``+-2**s`` or 0, vpe int16) times
  ``2**e_w`` are ``Quant(w, scale=2**e_w, zero point 0, bits, signed, narrow)`` with
  ``bits`` the signed width of the layer's largest weight (:func:`weight_quant_bits`);
* the requantisation ``(acc*mult + bias + half) >> shift`` is ``Mul``/``Add``/``Mul`` by
  per-channel constants followed by a ``Quant`` with rounding ``FLOOR``: the graph's
  ``floor`` of a value that already holds the ``half`` is the datapath's round half up.
"""

from __future__ import annotations

import math

import numpy as np

from .. import datapath as dp

#: the ``Quant`` node's domain (qonnx registers its custom ops under this name)
QONNX_DOMAIN = "qonnx.custom_op.general"
#: the ONNX default-domain opset our graphs use
OPSET = 13
#: model ``metadata_props`` key holding the bundle's non-graph fields as JSON
METADATA_KEY = "pynq_nbq.manifest"
#: how the activation Quants round (with the half folded in before them)
ACT_ROUNDING = "FLOOR"


def weight_quant_bits(pe: dp.PEKind | str, n_bits: int) -> int:
    """Signed bit width of a layer's integer weights: svpe n -> ``max_shift(n) + 2``
    (2**14 needs 16 bits, narrow), vpe -> 16 (the full int16 range)."""
    if dp.PEKind.parse(pe) is dp.PEKind.VPE:
        return dp.VPE_WEIGHT_BITS
    return dp.max_shift(n_bits) + 2


def quant_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """The integer clip range of a ``Quant`` node (qonnx's ``min_int``/``max_int``)."""
    if signed:
        return -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(narrow)


def po2_exponent(value: float) -> int | None:
    """``e`` with ``value == 2**e`` exactly, or None when ``value`` is not a positive
    power of two."""
    v = float(value)
    if not (v > 0 and math.isfinite(v)):
        return None
    mant, exp = math.frexp(v)
    return exp - 1 if mant == 0.5 else None


def frac_of_scale(scale: np.ndarray) -> int | None:
    """Fractional bits ``f`` of a per-tensor scale ``2**-f``; None if it is not one
    power of two."""
    s = np.asarray(scale, dtype=np.float64).ravel()
    if s.size == 0 or not np.all(s == s[0]):
        return None
    e = po2_exponent(s[0])
    return None if e is None else -e
