"""Integer operations of the datapath, vectorised with numpy (the reference backend).

Feature maps are int16 arrays in NHWC layout (batch, height, width, channels).
Every function here is exact: convolutions use float64 matrix products, which is
allowed only because :class:`ConvSpec` checks at construction that every partial
sum is an integer below 2**53 in magnitude (``datapath.FLOAT64_EXACT``).
See ``docs/datapath.md`` for the definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import datapath as dp


@dataclass(frozen=True)
class ConvSpec:
    """One conv (or linear, as a 1x1 conv on a 1x1 map) layer of the datapath.

    Attributes:
        name: layer name (for messages).
        weights: integer weights, int64, shape (C_out, C_in/groups, k, k) - already
            decoded from svpe codes (``datapath.decode_svpe``) or vpe int16.
        mult, bias, shift: int64 (C_out,) requantisation (``datapath.requantize``).
        stride, padding, groups: as in PyTorch's Conv2d (square kernels only).
        relu: apply ReLU after requantisation.
        pool: 0 (none) or 2 (fused 2x2 max-pool, stride 2).
        datapath: "svpe" or "vpe"; n_bits: weight width (1..5 or 16).
        codes: the svpe int8 codes (None for vpe), for backends that ship codes.
    """

    name: str
    weights: np.ndarray
    mult: np.ndarray
    bias: np.ndarray
    shift: np.ndarray
    stride: int = 1
    padding: int = 0
    groups: int = 1
    relu: bool = True
    pool: int = 0
    datapath: str = "svpe"
    n_bits: int = 3
    codes: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        w = self.weights
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            raise ValueError(f"{self.name}: weights must be (C_out, C_in/g, k, k), got {w.shape}")
        c_out = w.shape[0]
        for arr_name in ("mult", "bias", "shift"):
            if getattr(self, arr_name).shape != (c_out,):
                raise ValueError(f"{self.name}: {arr_name} must have shape ({c_out},)")
        if self.pool not in (0, 2):
            raise ValueError(f"{self.name}: pool must be 0 or 2, got {self.pool}")
        bound = self.fan_in * (1 << (dp.ACT_BITS - 1)) * int(np.abs(w).max(initial=0))
        if bound >= dp.FLOAT64_EXACT:
            raise ValueError(f"{self.name}: worst-case partial sum {bound} is not exact in float64")

    @property
    def kernel(self) -> int:
        return int(self.weights.shape[2])

    @property
    def in_channels(self) -> int:
        return int(self.weights.shape[1] * self.groups)

    @property
    def out_channels(self) -> int:
        return int(self.weights.shape[0])

    @property
    def fan_in(self) -> int:
        return int(self.weights.shape[1] * self.kernel * self.kernel)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """Output height and width for an h x w input (after the fused pool)."""
        k, s, p = self.kernel, self.stride, self.padding
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if self.pool:
            oh, ow = oh // 2, ow // 2
        return oh, ow


def im2col(x: np.ndarray, k: int, stride: int, padding: int) -> np.ndarray:
    """Patches of an NHWC map: (N, OH, OW, k, k, C), a strided view where possible."""
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, w, c = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    sn, sh, sw, sc = x.strides
    return np.lib.stride_tricks.as_strided(
        x,
        shape=(n, oh, ow, k, k, c),
        strides=(sn, sh * stride, sw * stride, sh, sw, sc),
        writeable=False,
    )


def conv_accumulate(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Exact accumulators of a conv: int64 (N, OH, OW, C_out), before requantisation."""
    if x.ndim != 4 or x.shape[3] != spec.in_channels:
        raise ValueError(
            f"{spec.name}: input must be NHWC with {spec.in_channels} channels, got {x.shape}"
        )
    k, g = spec.kernel, spec.groups
    xf = x.astype(np.float64)
    cols = im2col(xf, k, spec.stride, spec.padding)  # N,OH,OW,k,k,C
    n, oh, ow = cols.shape[:3]
    cin_g, cout_g = spec.weights.shape[1], spec.out_channels // g
    outs = []
    for gi in range(g):
        c = cols[..., gi * cin_g : (gi + 1) * cin_g].reshape(n * oh * ow, k * k * cin_g)
        w = spec.weights[gi * cout_g : (gi + 1) * cout_g]  # (cout_g, cin_g, k, k)
        wm = w.transpose(2, 3, 1, 0).reshape(k * k * cin_g, cout_g).astype(np.float64)
        outs.append(c @ wm)
    acc = outs[0] if g == 1 else np.concatenate(outs, axis=1)
    return acc.reshape(n, oh, ow, spec.out_channels).astype(np.int64)


def maxpool(x: np.ndarray, k: int = 2, stride: int = 2) -> np.ndarray:
    """k x k max-pool with the given stride on NHWC (floor mode)."""
    n, h, w, c = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    if k == stride:
        v = x[:, : oh * k, : ow * k].reshape(n, oh, k, ow, k, c)
        return v.max(axis=(2, 4))
    return im2col(x, k, stride, 0).max(axis=(3, 4))


def conv_layer(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """A whole conv layer: accumulate, requantise, ReLU, saturate, fused pool. int16 NHWC."""
    acc = conv_accumulate(x, spec)
    y = dp.requantize(acc, spec.mult, spec.bias, spec.shift, spec.relu)
    return maxpool(y) if spec.pool else y


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """Mean over H and W with round half up: NHWC int16 -> (N, C) int16."""
    n, h, w, c = x.shape
    hw = h * w
    s = x.astype(np.int64).sum(axis=(1, 2))
    return dp.saturate(np.floor_divide(2 * s + hw, 2 * hw))


def add(inputs: list[tuple[np.ndarray, int]], frac_out: int, relu: bool = False) -> np.ndarray:
    """Residual add of int16 tensors given as (array, frac) pairs, aligned to frac_out."""
    total = sum(dp.align(q, f, frac_out) for q, f in inputs)
    if relu:
        total = np.maximum(total, 0)
    return dp.saturate(total)


def concat(inputs: list[tuple[np.ndarray, int]], frac_out: int) -> np.ndarray:
    """Channel (last-axis) concatenation of (array, frac) pairs, aligned to frac_out."""
    return dp.saturate(np.concatenate([dp.align(q, f, frac_out) for q, f in inputs], axis=-1))
