"""Integer operations of the datapath, vectorised with numpy (the reference backend).

Feature maps are int16 arrays in NHWC layout (batch, height, width, channels).
Every function here is exact: convolutions use float64 matrix products, which is
allowed only because :class:`ConvSpec` checks at construction that every partial
sum is an integer below 2**53 in magnitude (``datapath.FLOAT64_EXACT``).
See ``docs/datapath.md`` for the definitions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from . import datapath as dp


@dataclass(frozen=True, eq=False)
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
        datapath: a ``datapath.PEKind`` ("svpe"/"vpe" strings are parsed into one);
            n_bits: weight width (1..5 or 16).
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
    datapath: dp.PEKind = dp.PEKind.SVPE
    n_bits: int = 3
    codes: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "datapath", dp.PEKind.parse(self.datapath))
        w = self.weights
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            raise ValueError(f"{self.name}: weights must be (C_out, C_in/g, k, k), got {w.shape}")
        c_out = w.shape[0]
        for arr_name in ("mult", "bias", "shift"):
            if getattr(self, arr_name).shape != (c_out,):
                raise ValueError(f"{self.name}: {arr_name} must have shape ({c_out},)")
        if self.pool not in (0, 2):
            raise ValueError(f"{self.name}: pool must be 0 or 2, got {self.pool}")
        bound = dp.accumulator_bound(self.fan_in, int(np.abs(w).max(initial=0)))
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
        return dp.conv_output_hw(h, w, self.kernel, self.stride, self.padding, self.pool)

    @cached_property
    def fused(self) -> _FusedPlan | None:
        """The float64 fast path, or None when it would not be provably exact."""
        return _FusedPlan.build(self)


@dataclass
class _FusedPlan:
    """Requantisation folded into the matrix product, exact in float64.

    ``v = sum(x * (w * mult))`` is computed by one float64 matrix product; then
    ``y = floor((v + bias + half) * 2**-shift)``, ReLU and saturation.  Every value
    is an integer below 2**53 (checked in :meth:`build` from the layer's actual
    weights and the int16 input range), so each step is exact and the result equals
    :func:`datapath.requantize`.  ``floor((v + c) / 2**s)`` is non-decreasing in
    ``v``, so a fused 2x2 max-pool can run on ``v`` before requantisation (on a
    quarter of the values) with the same result.
    """

    weights: np.ndarray  # (C_out, C_in*k*k) float64, w * mult
    offset: np.ndarray  # (C_out, 1) float64, bias + half
    scale: np.ndarray  # (C_out, 1) float64, 2**-shift

    @staticmethod
    def build(spec: ConvSpec) -> _FusedPlan | None:
        if spec.groups != 1:
            return None
        w = spec.weights.reshape(spec.out_channels, -1)
        wm = w * spec.mult[:, None]  # int64, |w*mult| <= 2**29
        off = spec.bias + dp.half(spec.shift)
        bound = dp.accumulator_bound(spec.fan_in, int(np.abs(wm).max(initial=0)))
        bound += int(np.abs(off).max(initial=0))
        if bound >= dp.FLOAT64_EXACT or np.abs(off).max(initial=0) >= dp.FLOAT64_EXACT:
            return None
        return _FusedPlan(
            wm.astype(np.float64),
            off.astype(np.float64)[:, None],
            np.ldexp(1.0, -spec.shift.astype(np.int64))[:, None],
        )


def im2col(x: np.ndarray, k: int, stride: int, padding: int) -> np.ndarray:
    """Patches of an NHWC map: (N, OH, OW, k, k, C), a strided view where possible."""
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, w, c = x.shape
    oh, ow = dp.conv_output_hw(h, w, k, stride)
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
    oh, ow = dp.conv_output_hw(h, w, k, stride)
    if k == stride:
        v = x[:, : oh * k, : ow * k].reshape(n, oh, k, ow, k, c)
        return v.max(axis=(2, 4))
    return im2col(x, k, stride, 0).max(axis=(3, 4))


def conv_layer(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """A whole conv layer: accumulate, requantise, ReLU, saturate, fused pool. int16 NHWC.

    Uses the fused float64 path (:class:`_FusedPlan`) when it is provably exact,
    else exact int64 requantisation of float64 accumulators.
    """
    plan = spec.fused
    if plan is None:
        acc = conv_accumulate(x, spec)
        y = dp.requantize(acc, spec.mult, spec.bias, spec.shift, spec.relu)
        return maxpool(y) if spec.pool else y
    if x.ndim != 4 or x.shape[3] != spec.in_channels:
        raise ValueError(
            f"{spec.name}: input must be NHWC with {spec.in_channels} channels, got {x.shape}"
        )
    n = x.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, spec.fan_in * x.shape[1] * x.shape[2]))
    if n > chunk:
        return np.concatenate([conv_layer(x[i : i + chunk], spec) for i in range(0, n, chunk)])
    cols, oh, ow = _im2col_channel_major(x, spec.kernel, spec.stride, spec.padding)
    v = _workspace("gemm", (spec.out_channels, n * oh * ow))
    np.matmul(plan.weights, cols, out=v)
    v4 = v.reshape(spec.out_channels, n, oh, ow)
    if spec.pool:
        ph, pw = oh // 2, ow // 2
        rows = np.maximum(v4[:, :, 0 : 2 * ph : 2], v4[:, :, 1 : 2 * ph : 2])
        v4 = np.maximum(rows[..., 0 : 2 * pw : 2], rows[..., 1 : 2 * pw : 2])
    c = spec.out_channels
    v4 += plan.offset.reshape(c, 1, 1, 1)
    v4 *= plan.scale.reshape(c, 1, 1, 1)
    np.floor(v4, out=v4)
    np.clip(v4, 0 if spec.relu else dp.ACT_MIN, dp.ACT_MAX, out=v4)
    return v4.transpose(1, 2, 3, 0).astype(dp.ACT_DTYPE)


#: images per call are split so that the column matrix stays near this many float64
#: values (4 MiB: two engine threads' column matrices stay in a 32 MiB L3 cache;
#: built in main memory it is as slow as the matrix product)
_CHUNK_ELEMENTS = 1 << 19

_WS = threading.local()


def _workspace(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A per-thread float64 scratch array, reused across calls (no page faults)."""
    bufs = _WS.__dict__.setdefault("bufs", {})
    size = int(np.prod(shape))
    buf = bufs.get(name)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=np.float64)
        bufs[name] = buf
    return buf[:size].reshape(shape)


def _im2col_channel_major(
    x: np.ndarray, k: int, stride: int, padding: int
) -> tuple[np.ndarray, int, int]:
    """Columns (C*k*k, N*OH*OW) float64 of an NHWC int16 map, rows in (c, ky, kx) order."""
    n, h, w, c = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    oh, ow = dp.conv_output_hw(h, w, k, stride, padding)
    if k == 1 and stride == 1 and padding == 0:
        cols = _workspace("cols", (c, n * h * w))
        cols.reshape(c, n, h, w)[...] = x.transpose(3, 0, 1, 2)
        return cols, oh, ow
    xp = _workspace("pad", (c, n, hp, wp))
    if padding:
        xp[:, :, :padding] = 0
        xp[:, :, hp - padding :] = 0
        xp[:, :, :, :padding] = 0
        xp[:, :, :, wp - padding :] = 0
    xp[:, :, padding : padding + h, padding : padding + w] = x.transpose(3, 0, 1, 2)
    cols = _workspace("cols", (c * k * k, n * oh * ow))
    sc, sn, sh, sw = xp.strides
    windows = np.lib.stride_tricks.as_strided(
        xp, (c, k, k, n, oh, ow), (sc, sh, sw, sn, sh * stride, sw * stride), writeable=False
    )
    cols.reshape(c, k, k, n, oh, ow)[...] = windows
    return cols, oh, ow


def global_avg_pool(x: np.ndarray, frac_in: int = 0, frac_out: int = 0) -> np.ndarray:
    """Mean over H and W, moved from ``frac_in`` to ``frac_out`` fractional bits, round
    half up: ``floor((2*S*2**a + D) / (2*D))`` with ``S`` the sum, ``D = H*W*2**b``,
    ``a = max(frac_out - frac_in, 0)``, ``b = max(frac_in - frac_out, 0)``.
    NHWC int16 -> (N, C) int16."""
    n, h, w, c = x.shape
    d = frac_out - frac_in
    num = x.astype(np.int64).sum(axis=(1, 2)) << max(d, 0)
    return dp.saturate(dp.div_round_half_up(num, h * w << max(-d, 0)))


def add(inputs: list[tuple[np.ndarray, int]], frac_out: int, relu: bool = False) -> np.ndarray:
    """Residual add of int16 tensors given as (array, frac) pairs, aligned to frac_out."""
    aligned = [dp.align(q, f, frac_out) for q, f in inputs]
    total = aligned[0]
    for a in aligned[1:]:
        total = total + a
    if relu:
        total = np.maximum(total, 0)
    return dp.saturate(total)


def concat(inputs: list[tuple[np.ndarray, int]], frac_out: int) -> np.ndarray:
    """Channel (last-axis) concatenation of (array, frac) pairs, aligned to frac_out."""
    return dp.saturate(np.concatenate([dp.align(q, f, frac_out) for q, f in inputs], axis=-1))
