"""Names of the kernel's and the AXI DMA's registers by address offset, for the
simulated board's transaction record (``SimBoard.record``)."""

from __future__ import annotations

from ..kernel import axi_dma as A
from ..kernel.protocol import REGISTERS

#: kernel register name by its offset in the kernel's AXI-Lite window
KERNEL_NAMES = {off: name for name, off in REGISTERS.items()}
#: DMA register name (MM2S_/S2MM_ + PG021's name) by offset in the DMA's window
DMA_NAMES = {
    base + off: f"{prefix}_{reg}"
    for base, prefix in ((A.MM2S, "MM2S"), (A.S2MM, "S2MM"))
    for off, reg in (
        (A.DMACR, "DMACR"),
        (A.DMASR, "DMASR"),
        (A.ADDR, "SA" if base == A.MM2S else "DA"),
        (A.ADDR_MSB, "SA_MSB" if base == A.MM2S else "DA_MSB"),
        (A.LENGTH, "LENGTH"),
    )
}
