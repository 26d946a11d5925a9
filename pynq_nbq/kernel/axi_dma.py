"""The AXI DMA's registers in simple mode (Xilinx PG021), written once.

The ``fpga`` driver polls these registers with its own deadline (pynq's
``DMA.wait()`` has none) and resets the DMA after a fault; the simulated board
(:mod:`pynq_nbq.sim.dma_model`) models them.  Offsets are from the DMA's AXI-Lite base
(``design.address_map(board)[design.DMA_CELL]``).
"""

from __future__ import annotations

from enum import IntFlag

#: Channel base offsets: MM2S (memory to stream, the send channel) and S2MM (receive).
MM2S = 0x00
S2MM = 0x30

#: Register offsets within a channel.
DMACR = 0x00  #: control
DMASR = 0x04  #: status
ADDR = 0x18  #: source (MM2S_SA) / destination (S2MM_DA) address, low 32 bits
#: the high 32 bits: only on a DMA with c_addr_width > 32 (PS8 boards); PG021 has no
#: register here on a 32-bit DMA (PS7 boards)
ADDR_MSB = 0x1C
LENGTH = 0x28  #: bytes to transfer; writing it starts the transfer; S2MM: bytes received


class Control(IntFlag):
    """DMACR bits."""

    RUN = 1 << 0  #: run/stop
    RESET = 1 << 2  #: soft reset of the whole DMA (both channels); reads 1 until done
    IOC_IRQ_EN = 1 << 12
    ERR_IRQ_EN = 1 << 14


class Status(IntFlag):
    """DMASR bits."""

    HALTED = 1 << 0
    IDLE = 1 << 1  #: simple mode: the programmed transfer completed
    INTERNAL_ERROR = 1 << 4  #: DMAIntErr: e.g. S2MM length exhausted before TLAST
    SLAVE_ERROR = 1 << 5  #: DMASlvErr: the memory answered SLVERR
    DECODE_ERROR = 1 << 6  #: DMADecErr: no slave at the address
    IOC_IRQ = 1 << 12
    ERR_IRQ = 1 << 14


ERRORS = Status.INTERNAL_ERROR | Status.SLAVE_ERROR | Status.DECODE_ERROR

ERROR_TEXT = {
    Status.INTERNAL_ERROR: "DMA internal error (S2MM: the packet is longer than the "
    "receive buffer, or TLAST never came; or a zero length)",
    Status.SLAVE_ERROR: "DMA slave error (the memory refused the access)",
    Status.DECODE_ERROR: "DMA decode error (no memory at the buffer's address)",
}


def channel_name(base: int) -> str:
    """``"MM2S (send)"`` or ``"S2MM (receive)"``."""
    return "MM2S (send)" if base == MM2S else "S2MM (receive)"


def describe(status: int) -> str:
    """The error bits of a DMASR value, in words (``"no error"`` when none)."""
    parts = [text for bit, text in ERROR_TEXT.items() if status & bit]
    return "; ".join(parts) if parts else "no error"
