"""A numpy model of one kernel call, and a call recorder (test code, never runtime).

:class:`ReferenceDevice` is a :class:`pynq_nbq.kernel.protocol.ConvDevice` whose
calls decode the packets and run :func:`pynq_nbq.ops.conv_layer` on the tile: the
expected output of the HLS kernel for the same call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .. import datapath as dp
from ..kernel.packing import (
    pack_activations,
    unpack_activations,
    unpack_requant,
    unpack_weights,
    words_for,
)
from ..kernel.protocol import (
    FLAG_ALL,
    REQUANT_BYTES,
    WORD_BYTES,
    ConvDevice,
    Flag,
    KernelError,
    KernelInfo,
    Status,
)
from ..ops import ConvSpec, conv_layer


class ReferenceDevice:
    """The kernel's behaviour per call, in numpy: a :class:`ConvDevice` for tests.

    Decodes the packets, runs :func:`pynq_nbq.ops.conv_layer` on the (padded) tile
    and packs the result - the expected output of the HLS kernel for the same
    call.  It mirrors the kernel's STATUS codes for bad configurations and raises
    :class:`KernelError` for packets of the wrong size.
    """

    def __init__(self, info: KernelInfo):
        self.info = info
        self._held: tuple | None = None  # (c_in, c_out, k3, weights, mult, bias, shift)

    def call(
        self, regs: Mapping[str, int], packets: Sequence[np.ndarray], out_nbytes: int
    ) -> tuple[np.ndarray, int]:
        info, f = self.info, int(regs["FLAGS"])
        if f & Flag.PROBE:
            return np.zeros(0, np.uint8), 0
        in_h, in_w, c_in, c_out = (int(regs[r]) for r in ("IN_H", "IN_W", "C_IN", "C_OUT"))
        k3, pool = bool(f & Flag.K3), bool(f & Flag.POOL)
        pt, pb, pl, pr = (
            bool(f & b) for b in (Flag.PAD_TOP, Flag.PAD_BOTTOM, Flag.PAD_LEFT, Flag.PAD_RIGHT)
        )
        k = 3 if k3 else 1
        vh, vw = in_h + pt + pb, in_w + pl + pr
        ok = (
            1 <= in_h <= info.max_h
            and 1 <= in_w <= info.max_w
            and 1 <= c_in <= info.max_cin
            and 1 <= c_out <= info.max_cout
            and vh >= k + pool
            and vw >= k + pool
            and not f & ~FLAG_ALL
            and (k3 or not (pt or pb or pl or pr))
        )
        if not ok:
            return np.zeros(0, np.uint8), int(Status.BAD_CONFIG)
        packets = list(packets)
        if f & Flag.LOAD:
            if len(packets) != 3:
                raise KernelError(f"LOAD call needs 3 packets, got {len(packets)}")
            self._expect(packets[0], c_out * info.weight_bytes_per_cout(c_in, k), "weight")
            self._expect(packets[1], words_for(c_out * REQUANT_BYTES) * WORD_BYTES, "requant")
            wts = unpack_weights(packets[0], (c_out, c_in, k, k), info.pe, info.pm)
            self._held = (c_in, c_out, k3, wts, *unpack_requant(packets[1], c_out))
            packets = packets[2:]
        elif self._held is None or self._held[:3] != (c_in, c_out, k3):
            return np.zeros(0, np.uint8), int(Status.NO_WEIGHTS)
        if len(packets) != 1:
            raise KernelError(f"expected 1 feature-map packet, got {len(packets)}")
        self._expect(packets[0], in_h * in_w * c_in * 2, "feature-map")
        x = unpack_activations(packets[0], in_h * in_w * c_in).reshape(1, in_h, in_w, c_in)
        x = np.pad(x, ((0, 0), (int(pt), int(pb)), (int(pl), int(pr)), (0, 0)))
        _, _, _, wts, mult, bias, shift = self._held
        spec = ConvSpec(
            "tile",
            wts,
            mult,
            bias,
            shift,
            padding=0,
            relu=bool(f & Flag.RELU),
            pool=2 if pool else 0,
            datapath=info.pe,
            n_bits=dp.SVPE_MAX_BITS if info.pe is dp.PEKind.SVPE else dp.VPE_WEIGHT_BITS,
        )
        y = pack_activations(conv_layer(x, spec)[0])
        if len(y) != out_nbytes:
            raise KernelError(f"output packet is {len(y)} bytes, the host expects {out_nbytes}")
        return y, 0

    @staticmethod
    def _expect(packet: np.ndarray, nbytes: int, what: str) -> None:
        if len(packet) != words_for(nbytes) * WORD_BYTES:
            raise KernelError(
                f"{what} packet is {len(packet)} bytes, the kernel reads "
                f"{words_for(nbytes) * WORD_BYTES}"
            )


class RecordingDevice:
    """Wraps a device and records every call (for test-vector files)."""

    def __init__(self, inner: ConvDevice):
        self.inner = inner
        self.info = inner.info
        self.calls: list[tuple[dict[str, int], list[np.ndarray], int, np.ndarray]] = []

    def call(self, regs, packets, out_nbytes):
        data, status = self.inner.call(regs, packets, out_nbytes)
        self.calls.append((dict(regs), [np.asarray(p) for p in packets], status, data))
        return data, status
