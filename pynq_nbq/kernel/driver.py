"""The board driver: the conv kernel and its AXI DMA through the ``pynq`` library.

This module imports ``pynq`` and is imported only by the ``fpga`` backend, lazily
(``import pynq_nbq`` works on hosts without pynq).  PYNQ-style pieces:

* :class:`NbqConvIP` - a ``pynq.DefaultIP`` bound to the kernel's VLNVs
  (``design.kernel_vlnv``), so ``pynq.Overlay`` hands it out for the kernel cell;
* :func:`load_overlay` - loads ``nbq_<kind>.bit``/``.hwh`` and finds the kernel and
  its DMA by the cell names of :mod:`pynq_nbq.kernel.design`;
* :class:`FpgaConvDevice` - a :class:`~pynq_nbq.kernel.protocol.ConvDevice`: one call
  done right (below), checked at load (ID, version, PE kind, limits).

One call (docs/datapath.md section 5, protocol 2.x): write the five call
registers; arm the receive for (feature-map words + 1) words; ``ap_start``; send
each packet from a pooled ``pynq.allocate`` buffer, waiting for the previous send
with a deadline (and stopping early if the kernel already wrote its status word);
poll S2MM status and ``ap_idle`` against the call's deadline (pynq's
``DMA.wait()`` has no timeout); invalidate the receive buffer and read the bytes
received from S2MM LENGTH; split them into the feature map and the status word.

Transfers are programmed here, not with pynq's ``channel.transfer``: the DMA's
address width is the ``.hwh``'s ``c_addr_width`` (64 bits on Zynq UltraScale+
boards, 32 on Zynq-7000 ones).  A 64-bit DMA gets both halves of the address
(ADDR, then ADDR_MSB); a 32-bit DMA has no MSB registers (PG021), so none are
written, and a buffer above 4 GiB is refused with an error naming the width.

On a timeout or a DMA error bit the DMA is reset and a
:class:`~pynq_nbq.kernel.protocol.DeviceError` names the cause; the next call
works.  After a refused call (BAD_CONFIG / NO_WEIGHTS) the DMA is reset too, so
packets the kernel did not read are dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pynq

from . import axi_dma as dma_regs
from . import design
from .protocol import (
    READ_REGISTERS,
    REGISTERS,
    STATUS_WORDS,
    WORD_BYTES,
    WRITE_REGISTERS,
    ApCtrl,
    DeviceError,
    DeviceTimeout,
    Flag,
    KernelError,
    KernelInfo,
    Status,
    split_output,
)

#: Seconds one call may take before the driver gives up (plus :data:`SECONDS_PER_BYTE`).
DEFAULT_TIMEOUT_S = 2.0
#: Extra deadline per byte moved: 1 s per 50 MB, far below what the DMA sustains.
SECONDS_PER_BYTE = 1 / 50e6


class NbqConvIP(pynq.DefaultIP):
    """The nbq_conv kernel's AXI-Lite registers (``REGISTERS``), bound by VLNV."""

    bindto = [design.kernel_vlnv(kind) for kind in design.PE_KINDS]

    def __init__(self, description: dict):
        super().__init__(description=description)
        self.kind = description["type"].split(":")[2].removeprefix("nbq_conv_")

    def write_call_registers(self, regs: Mapping[str, int]) -> None:
        """IN_H, IN_W, C_IN, C_OUT, FLAGS, in offset order."""
        for name in WRITE_REGISTERS:
            self.write(REGISTERS[name], int(regs[name]))

    def start(self) -> None:
        """ap_start."""
        self.write(REGISTERS["AP_CTRL"], int(ApCtrl.START))

    @property
    def ap_ctrl(self) -> int:
        return self.read(REGISTERS["AP_CTRL"])

    def read_register(self, name: str) -> int:
        return self.read(REGISTERS[name])


@dataclass
class Overlay:
    """A loaded nbq overlay: the pynq overlay, its kernel driver and its DMA."""

    overlay: pynq.Overlay
    kernel: NbqConvIP
    dma: pynq.lib.dma.DMA
    kind: str


def bitstream_path(kind: str, directory: str | Path) -> Path:
    """``<directory>/nbq_<kind>.bit`` (the ``.hwh`` sits next to it)."""
    return Path(directory) / f"{design.bitstream_name(kind)}.bit"


def load_overlay(
    kind: str, bitfile: str | Path, download: bool = True, device: pynq.Device | None = None
) -> Overlay:
    """Load the ``kind`` overlay from ``bitfile`` and find its kernel and DMA.

    Raises ValueError naming what is missing (the files, a cell, a driver binding).
    """
    bitfile = Path(bitfile)
    hwh = bitfile.with_suffix(".hwh")
    missing = [str(p) for p in (bitfile, hwh) if not p.is_file()]
    if missing:
        raise ValueError(
            f"fpga backend: overlay files not found: {', '.join(missing)} (build them with "
            "the overlay flow, or set NBQ_OVERLAY to their directory, or NBQ_OVERLAY=sim "
            "(sim:<board>) for a simulated board)"
        )
    ol = pynq.Overlay(str(bitfile), download=download, device=device)
    for cell in (design.KERNEL_CELL, design.DMA_CELL):
        if cell not in ol.ip_dict:
            raise ValueError(f"{bitfile}: no {cell!r} cell in the block design")
    kernel = getattr(ol, design.KERNEL_CELL)
    dma = getattr(ol, design.DMA_CELL)
    if not isinstance(kernel, NbqConvIP):
        raise ValueError(
            f"{bitfile}: cell {design.KERNEL_CELL!r} is {ol.ip_dict[design.KERNEL_CELL]['type']}, "
            f"not one of {NbqConvIP.bindto}"
        )
    if not isinstance(dma, pynq.lib.dma.DMA):
        raise ValueError(f"{bitfile}: cell {design.DMA_CELL!r} is not an AXI DMA")
    if kernel.kind != kind:
        raise ValueError(f"{bitfile}: the kernel IP is {kernel.kind}, expected {kind}")
    return Overlay(ol, kernel, dma, kind)


class BufferPool:
    """``pynq.allocate`` buffers kept per (slot, size) and reused; freed by :meth:`close`.

    Tiles of a layer repeat the same packet sizes, so after the first image a call
    allocates nothing.
    """

    def __init__(self, target=None):
        self.target = target
        self._buffers: dict[tuple[str, int], pynq.buffer.PynqBuffer] = {}
        self.allocations = 0  #: buffers allocated so far (tests check reuse)

    def get(self, slot: str, nbytes: int):
        key = (slot, int(nbytes))
        buf = self._buffers.get(key)
        if buf is None:
            buf = pynq.allocate((int(nbytes),), dtype=np.uint8, target=self.target)
            self._buffers[key] = buf
            self.allocations += 1
        return buf

    def close(self) -> None:
        for buf in self._buffers.values():
            free = getattr(buf, "freebuffer", None)
            if free is not None:
                free()
        self._buffers.clear()


class FpgaConvDevice:
    """The conv kernel behind its DMA: a ``ConvDevice`` for the scheduler.

    Args:
        ol: the loaded overlay (:func:`load_overlay`).
        timeout_s: base deadline of one call, seconds (plus :data:`SECONDS_PER_BYTE`).

    At construction a PROBE call reads the kernel's registers; a foreign IP, another
    protocol major version or a PE kind other than the bitstream's is refused with a
    ValueError naming both sides.  ``max_packet_bytes`` is the DMA's own
    ``buffer_max_size`` (whole words).  Calls are serialised by a lock.
    """

    def __init__(self, ol: Overlay, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.ol, self.ip, self.dma = ol, ol.kernel, ol.dma
        self.timeout_s = timeout_s
        self._mmio = self.dma.mmio
        self._lock = threading.Lock()
        target = getattr(ol.overlay, "device", None)
        self.pool = BufferPool(target)
        self.max_packet_bytes = int(self.dma.buffer_max_size) // WORD_BYTES * WORD_BYTES
        #: the DMA's address width in bits (the .hwh's c_addr_width; PG021's default 32)
        self.addr_bits = int(self.dma.description["parameters"].get("c_addr_width", 32))
        #: seconds spent per phase of all calls: checking the DMA and kernel are ready,
        #: copying packets into DMA buffers, register writes + sends, waiting
        self.timings = {"ready": 0.0, "copy": 0.0, "registers": 0.0, "wait": 0.0, "calls": 0}
        regs = self.read_registers()
        try:
            self.info = KernelInfo.from_registers(regs)
        except ValueError as exc:
            raise ValueError(f"overlay {ol.kind}: {exc}") from None
        if self.info.pe != ol.kind:
            raise ValueError(
                f"the {design.bitstream_name(ol.kind)} bitstream's kernel reports PE_KIND "
                f"'{self.info.pe}', but the bitstream is the '{ol.kind}' build: rebuild it"
            )

    # --- registers -----------------------------------------------------------------------
    def _dmasr(self, channel: int) -> int:
        return self._mmio.read(channel + dma_regs.DMASR)

    def _dmacr(self, channel: int) -> int:
        return self._mmio.read(channel + dma_regs.DMACR)

    def read_registers(self) -> dict[str, int]:
        """A PROBE call (the status word alone comes back), then every read-only register."""
        regs = dict.fromkeys(WRITE_REGISTERS, 0)
        regs["FLAGS"] = int(Flag.PROBE)
        with self._lock:
            self._call(regs, [], 0)
            return {name: self.ip.read_register(name) for name in READ_REGISTERS}

    # --- recovery -------------------------------------------------------------------------
    def reset_dma(self, deadline: float | None = None) -> None:
        """Soft-reset the DMA (both channels), wait for it, restart both channels.

        Packets queued in the DMA are dropped.  Raises DeviceTimeout if the reset does
        not finish by ``deadline`` (default: ``timeout_s`` from now).
        """
        deadline = deadline or time.monotonic() + self.timeout_s
        self._mmio.write(dma_regs.MM2S + dma_regs.DMACR, int(dma_regs.Control.RESET))
        self._wait_reset_done(deadline)
        self._start_channels()

    def _wait_reset_done(self, deadline: float) -> None:
        while any(
            self._dmacr(ch) & dma_regs.Control.RESET for ch in (dma_regs.MM2S, dma_regs.S2MM)
        ):
            if time.monotonic() > deadline:
                raise DeviceTimeout(
                    "the AXI DMA stayed in reset past the deadline (DMACR reset bit still "
                    "set): the fabric may be unclocked or held in reset; reload the overlay"
                )

    def _start_channels(self) -> None:
        # pynq's start() spins until DMASR.halted clears; safe once the reset is done
        self.dma.sendchannel.start()
        self.dma.recvchannel.start()

    def _make_ready(self, deadline: float) -> None:
        """Before a call: wait out a reset in progress, recover halted or failed channels,
        wait for the kernel to be idle."""
        self._wait_reset_done(deadline)
        bad = any(
            self._dmasr(ch) & (dma_regs.Status.HALTED | dma_regs.ERRORS)
            for ch in (dma_regs.MM2S, dma_regs.S2MM)
        )
        if bad:
            self.reset_dma(deadline)
        while not self.ip.ap_ctrl & ApCtrl.IDLE:
            if time.monotonic() > deadline:
                raise DeviceTimeout(
                    "the nbq_conv kernel is still busy from an earlier call (ap_idle low) "
                    "past the deadline; reload the overlay to reset the fabric"
                )

    # --- one call -------------------------------------------------------------------------
    def call(
        self, regs: Mapping[str, int], packets: Sequence[np.ndarray], out_nbytes: int
    ) -> tuple[np.ndarray, int]:
        """One tile: see :class:`pynq_nbq.kernel.protocol.ConvDevice`."""
        with self._lock:
            return self._call(regs, packets, out_nbytes)

    def _call(self, regs, packets, out_nbytes):
        t0 = time.perf_counter()
        moved = out_nbytes + sum(len(p) for p in packets)
        deadline = time.monotonic() + self.timeout_s + moved * SECONDS_PER_BYTE
        self._make_ready(deadline)
        ta = time.perf_counter()
        recv_nbytes = out_nbytes + STATUS_WORDS * WORD_BYTES
        out = self.pool.get("out", recv_nbytes)
        bufs = []
        for i, p in enumerate(packets):
            buf = self.pool.get(f"in{i}", len(p))
            buf[:] = p
            bufs.append(buf)
        t1 = time.perf_counter()
        self.ip.write_call_registers(regs)
        self._transfer(dma_regs.S2MM, out, recv_nbytes)  # armed before ap_start
        self.ip.start()
        try:
            early = False
            for i, buf in enumerate(bufs):
                if i and self._wait_send(deadline):
                    early = True  # the kernel already ended the call: send no more
                    break
                self._transfer(dma_regs.MM2S, buf, len(buf))
            t2 = time.perf_counter()
            self._wait_receive(deadline)
            out.invalidate()  # the DMA wrote DDR: drop the CPU's cached view
            transferred = self._mmio.read(dma_regs.S2MM + dma_regs.LENGTH)
            while not self.ip.ap_ctrl & (ApCtrl.DONE | ApCtrl.IDLE):
                if time.monotonic() > deadline:
                    raise DeviceTimeout(
                        "the kernel wrote its status word but never finished (ap_done)"
                    )
            status_reg = self.ip.read_register("STATUS")
            if transferred > recv_nbytes or transferred % WORD_BYTES:
                raise DeviceError(
                    f"the DMA reports {transferred} bytes received into a {recv_nbytes}-byte buffer"
                )
            try:
                data, status = split_output(out[:transferred], out_nbytes, status_reg)
            except KernelError as exc:  # the board sent something else than protocol 2.x
                raise DeviceError(f"{exc}; the DMA was reset") from None
            if early or status & (Status.BAD_CONFIG | Status.NO_WEIGHTS):
                self.reset_dma(deadline)  # drop packets the kernel did not read
        except Exception:
            self._recover()  # reset the DMA so that the next call starts clean
            raise
        t3 = time.perf_counter()
        self.timings["ready"] += ta - t0
        self.timings["copy"] += t1 - ta
        self.timings["registers"] += t2 - t1
        self.timings["wait"] += t3 - t2
        self.timings["calls"] += 1
        return np.array(data, dtype=np.uint8, copy=True), status

    def _transfer(self, channel: int, buf, nbytes: int) -> None:
        """Program one simple-mode transfer of ``nbytes`` from/to ``buf`` on ``channel``
        (MM2S: flush the buffer first).  The address goes out in as many halves as the
        DMA has address registers (:attr:`addr_bits`)."""
        if channel == dma_regs.MM2S:
            buf.flush()  # the CPU wrote the packet: DDR must hold it before the DMA reads
        addr = int(buf.physical_address)
        if addr >> self.addr_bits:
            raise DeviceError(
                f"buffer at 0x{addr:x} is beyond the reach of the {self.addr_bits}-bit AXI "
                "DMA (c_addr_width): allocate DMA buffers in the low 4 GiB"
            )
        self._mmio.write(channel + dma_regs.ADDR, addr & 0xFFFF_FFFF)
        if self.addr_bits > 32:
            self._mmio.write(channel + dma_regs.ADDR_MSB, addr >> 32)
        self._mmio.write(channel + dma_regs.LENGTH, int(nbytes))

    def _recover(self) -> None:
        try:
            self.reset_dma(time.monotonic() + self.timeout_s)
        except DeviceError:
            pass  # the next call's _make_ready tries again and reports it

    def _check_errors(self, channel: int, status: int) -> None:
        if status & dma_regs.ERRORS:
            raise DeviceError(
                f"{dma_regs.channel_name(channel)} channel: {dma_regs.describe(status)} "
                f"(DMASR 0x{status:08x}); the DMA was reset"
            )

    def _wait_send(self, deadline: float) -> bool:
        """Wait for the previous send; True if the receive completed first (call ended)."""
        while True:
            sr = self._dmasr(dma_regs.MM2S)
            self._check_errors(dma_regs.MM2S, sr)
            if sr & dma_regs.Status.IDLE:
                return False
            rr = self._dmasr(dma_regs.S2MM)
            self._check_errors(dma_regs.S2MM, rr)
            if rr & dma_regs.Status.IDLE:
                return True
            if time.monotonic() > deadline:
                raise DeviceTimeout(
                    "the kernel did not take a packet before the deadline (MM2S not idle); "
                    "the DMA was reset"
                )

    def _wait_receive(self, deadline: float) -> None:
        while True:
            rr = self._dmasr(dma_regs.S2MM)
            self._check_errors(dma_regs.S2MM, rr)
            if rr & dma_regs.Status.IDLE:
                return
            self._check_errors(dma_regs.MM2S, self._dmasr(dma_regs.MM2S))
            if time.monotonic() > deadline:
                raise DeviceTimeout(
                    "no TLAST-terminated packet came back before the deadline (S2MM not "
                    f"idle, kernel AP_CTRL 0x{self.ip.ap_ctrl:x}); the DMA was reset"
                )

    def close(self) -> None:
        """Free the pooled buffers."""
        self.pool.close()
