"""The scheduler: run conv layers on a :class:`~pynq_nbq.kernel.protocol.ConvDevice`.

Compile once, run many (the finn-plus-driver pattern): :class:`CompiledConv`
checks a layer against the kernel and packs its weight and requant packets once,
per output-channel group; tile plans are cached per input shape.  A call then
only packs the feature-map tile, writes registers, moves bytes and places the
result.  :class:`CompiledLayers` keeps one compiled layer per ``ConvSpec`` (the
engine builds each spec once per model), shared by the ``csim`` and ``fpga``
backends.

Order of calls: for each output-channel group, the first call has FLAGS.LOAD
(the weights stay on chip), then every image of the batch and every spatial
tile of it.  Each call's STATUS is checked; anything but 0 raises
:class:`~pynq_nbq.kernel.protocol.KernelError` naming the bits.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from ..ops import ConvSpec
from . import packing
from .checks import conv_weights_for
from .protocol import (
    DEFAULT_MAX_PACKET_BYTES,
    WORD_BYTES,
    ConvDevice,
    Flag,
    KernelError,
    KernelInfo,
    describe_status,
)
from .tiles import LayerPlan, plan_groups, plan_layer


class CompiledConv:
    """One conv layer checked and packed for one kernel (see the module docstring).

    Args:
        spec: the layer (3x3 pad 1 or 1x1 pad 0, stride 1, groups 1).
        info: the kernel's read-only registers.
        max_packet_bytes: largest DMA transfer (the DMA's ``buffer_max_size``).

    Raises ValueError (naming the limit) if the kernel cannot run the layer.
    Attributes: ``loads`` maps each output-channel group ``(co0, co1)`` to its
    ``[weight packet, requant packet]`` bytes.
    """

    def __init__(
        self, spec: ConvSpec, info: KernelInfo, max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES
    ):
        self.spec, self.info, self.max_packet_bytes = spec, info, max_packet_bytes
        w = conv_weights_for(spec, info)
        groups = plan_groups(
            spec.in_channels, spec.out_channels, spec.kernel, info, max_packet_bytes
        )
        self.loads = {
            (co0, co1): [
                packing.pack_weights(w[co0:co1], info.pe, info.pm),
                packing.pack_requant(spec.mult[co0:co1], spec.bias[co0:co1], spec.shift[co0:co1]),
            ]
            for co0, co1 in groups
        }
        base = (Flag.K3 if spec.kernel == 3 else 0) | (Flag.RELU if spec.relu else 0)
        self.base_flags = int(base | (Flag.POOL if spec.pool else 0))
        self._plans: dict[tuple[int, int], LayerPlan] = {}
        self._lock = threading.Lock()

    def plan(self, h: int, w: int) -> LayerPlan:
        """The tile plan for an ``h x w`` input (cached per shape)."""
        key = (h, w)
        plan = self._plans.get(key)
        if plan is None:
            s = self.spec
            plan = plan_layer(
                h,
                w,
                s.in_channels,
                s.out_channels,
                s.kernel,
                s.pool,
                self.info,
                self.max_packet_bytes,
            )
            with self._lock:
                self._plans[key] = plan
        return plan

    def run(self, device: ConvDevice, x: np.ndarray) -> np.ndarray:
        """int16 NHWC in, int16 NHWC out on ``device``: exactly ``ops.conv_layer``."""
        spec = self.spec
        if device.info != self.info:
            raise ValueError(
                f"layer {spec.name!r} was compiled for kernel {self.info}, not {device.info}"
            )
        if x.dtype != np.int16 or x.ndim != 4 or x.shape[3] != spec.in_channels:
            raise ValueError(
                f"layer {spec.name!r}: input must be int16 NHWC with {spec.in_channels} "
                f"channels, got {x.dtype} {x.shape}"
            )
        n, h, wd, _ = x.shape
        plan = self.plan(h, wd)
        out = np.zeros((n, plan.out_h, plan.out_w, spec.out_channels), dtype=np.int16)
        if not plan.tiles or n == 0:
            return out
        step = 2 if spec.pool else 1
        for (co0, co1), load_packets in self.loads.items():
            load = True
            for i in range(n):
                for t in plan.tiles:
                    (r0, r1), (c0, c1) = t.in_rows, t.in_cols
                    fm = packing.pack_activations(x[i, r0:r1, c0:c1, :])
                    oh = (t.conv_rows[1] - t.conv_rows[0]) // step
                    ow = (t.conv_cols[1] - t.conv_cols[0]) // step
                    regs = {
                        "IN_H": r1 - r0,
                        "IN_W": c1 - c0,
                        "C_IN": spec.in_channels,
                        "C_OUT": co1 - co0,
                        "FLAGS": self.base_flags | t.flags | (int(Flag.LOAD) if load else 0),
                    }
                    packets = [*load_packets, fm] if load else [fm]
                    count = oh * ow * (co1 - co0)
                    data, status = device.call(
                        regs, packets, packing.words_for(2 * count) * WORD_BYTES
                    )
                    if status:
                        raise KernelError(
                            f"layer {spec.name!r}: kernel call {regs} failed: "
                            f"STATUS {describe_status(status)}"
                        )
                    y = packing.unpack_activations(data, count).reshape(oh, ow, co1 - co0)
                    out[
                        i, t.out_rows[0] : t.out_rows[1], t.out_cols[0] : t.out_cols[1], co0:co1
                    ] = y
                    load = False
        return out


class CompiledLayers:
    """One :class:`CompiledConv` per ``ConvSpec`` object (held weakly), thread-safe.

    A backend keeps one of these: the first ``run_conv`` of a layer compiles it,
    every later one reuses the packed packets and the cached tile plans.
    """

    def __init__(self, max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES):
        self.max_packet_bytes = max_packet_bytes
        self._compiled: weakref.WeakKeyDictionary[ConvSpec, CompiledConv] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self, spec: ConvSpec, info: KernelInfo) -> CompiledConv:
        """The compiled layer for ``spec`` on the kernel ``info`` (compiled on first use)."""
        with self._lock:
            c = self._compiled.get(spec)
            if c is None or c.info != info:
                c = CompiledConv(spec, info, self.max_packet_bytes)
                self._compiled[spec] = c
            return c


def run_conv(
    device: ConvDevice,
    x: np.ndarray,
    spec: ConvSpec,
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
) -> np.ndarray:
    """Compile ``spec`` for ``device`` and run it once (tests and one-off calls).

    Bit-exact with :func:`pynq_nbq.ops.conv_layer`.  Raises ValueError if the
    kernel cannot take the layer and :class:`KernelError` if a call fails.
    """
    return CompiledConv(spec, device.info, max_packet_bytes).run(device, x)
