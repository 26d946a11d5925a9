"""The simulated board's AXI DMA (Xilinx PG021, simple mode): its register file.

A mixin of :class:`pynq_nbq.sim.board.SimBoard`, which supplies the DDR
(``_ddr_span``), the kernel's input stream (``_feed``, ``_pending``, ``_fifo``) and
fault injection (``faults``, ``_take``).  Per channel: DMACR (run/stop, reset),
DMASR (halted, idle, internal/slave/decode error), the address register and LENGTH.
The address width is the DMA's ``c_addr_width`` (the board's PS family,
``design.dma_parameters``): at 64 bits the MSB address registers (0x1C, 0x4C) hold
the high half; at 32 bits there are none (PG021), so a write there is not a register
write: it is ignored, and counted in ``reserved_writes`` for tests to see.
"""

from __future__ import annotations

from ..kernel import axi_dma as A
from ..kernel import design

#: What a LENGTH register keeps: its low c_sg_length_width bits (PG021).
LENGTH_MASK = (1 << design.DMA_PARAMETERS["c_sg_length_width"]) - 1
RESET_READS = 3  #: DMACR reads a DMA reset takes


class DmaModel:
    """PG021 simple-mode registers of one AXI DMA (see the module docstring)."""

    faults: dict[str, int]
    _pending: list[bytes]
    _fifo: list[bytes]

    def _dma_setup(self, addr_bits: int) -> None:
        """Set the DMA's address width (32 or 64 bits) and power it on."""
        if addr_bits not in (32, 64):
            raise ValueError(f"simulated AXI DMA: c_addr_width {addr_bits} is not 32 or 64")
        self.dma_addr_bits = addr_bits
        self.reserved_writes = 0  #: writes to offsets that are no register of this DMA
        self._dma_power_on()

    def _dma_power_on(self) -> None:
        self._cr = {A.MM2S: 0, A.S2MM: 0}
        self._sr = {A.MM2S: int(A.Status.HALTED), A.S2MM: int(A.Status.HALTED)}
        self._addr = {A.MM2S: 0, A.S2MM: 0}
        self._length = {A.MM2S: 0, A.S2MM: 0}
        self._reset_left = 0
        self._armed = False  # an S2MM transfer is programmed and not complete
        self._stalled = False

    # supplied by the board
    def _take(self, fault: str) -> bool:
        raise NotImplementedError

    def _feed(self) -> None:
        raise NotImplementedError

    def _ddr_span(self, addr: int, nbytes: int) -> tuple[bytearray, int] | None:
        raise NotImplementedError

    def _begin_reset(self) -> None:
        self._reset_left = RESET_READS
        for ch in (A.MM2S, A.S2MM):
            self._cr[ch] = int(A.Control.RESET)
            self._sr[ch] = int(A.Status.HALTED)
        self._pending.clear()
        self._fifo.clear()
        self._armed = self._stalled = False

    def _has_msb(self) -> bool:
        return self.dma_addr_bits > 32

    def _dma_read(self, off: int) -> int:
        ch = A.S2MM if off >= A.S2MM else A.MM2S
        reg = off - ch
        if reg == A.DMACR:
            if self._reset_left:
                if not self.faults.get("stuck_reset"):
                    self._reset_left -= 1
                if self._reset_left == 0:
                    self._cr = {A.MM2S: 0, A.S2MM: 0}
                    self.faults.pop("reset_in_progress", None)
            return self._cr[ch]
        if reg == A.DMASR:
            if ch == A.S2MM:
                self._advance()
            return self._sr[ch]
        if reg == A.ADDR:
            return self._addr[ch] & 0xFFFF_FFFF
        if reg == A.ADDR_MSB and self._has_msb():
            return self._addr[ch] >> 32
        if reg == A.LENGTH:
            return self._length[ch]
        return 0

    def _advance(self) -> None:
        raise NotImplementedError

    def _dma_write(self, off: int, value: int) -> None:
        ch = A.S2MM if off >= A.S2MM else A.MM2S
        reg = off - ch
        if reg == A.DMACR:
            if value & A.Control.RESET:
                self._begin_reset()
            elif self._reset_left:
                return  # ignored while the reset runs
            elif value & A.Control.RUN:
                self._cr[ch] = value
                self._sr[ch] &= ~int(A.Status.HALTED)
            else:
                self._cr[ch] = value
                self._sr[ch] |= int(A.Status.HALTED)
        elif reg == A.DMASR:
            self._sr[ch] &= ~(value & int(A.Status.IOC_IRQ | A.Status.ERR_IRQ))  # W1C
        elif reg == A.ADDR:
            self._addr[ch] = (self._addr[ch] & ~0xFFFF_FFFF) | value
        elif reg == A.ADDR_MSB and self._has_msb():
            self._addr[ch] = (self._addr[ch] & 0xFFFF_FFFF) | (value << 32)
        elif reg == A.LENGTH:
            self._start_transfer(ch, value & LENGTH_MASK)
        else:
            self.reserved_writes += 1

    def _fail(self, ch: int, bit: A.Status) -> None:
        self._sr[ch] |= int(bit | A.Status.HALTED)
        self._sr[ch] &= ~int(A.Status.IDLE)

    def _start_transfer(self, ch: int, nbytes: int) -> None:
        if self._sr[ch] & A.Status.HALTED or self._reset_left:
            return  # a halted channel ignores LENGTH
        self._length[ch] = nbytes
        self._sr[ch] &= ~int(A.Status.IDLE)
        if nbytes == 0:
            self._fail(ch, A.Status.INTERNAL_ERROR)
            return
        if ch == A.S2MM:
            self._armed = True
            self._stalled = self._take("stall")
            self._feed()  # the output can drain now: a held send may complete
            return
        span = self._ddr_span(self._addr[ch], nbytes)
        if span is None:
            self._fail(ch, A.Status.DECODE_ERROR)
            return
        mem, at = span
        self._pending.append(bytes(mem[at : at + nbytes]))
        self._feed()
