"""A ``.hwh`` (Vivado hardware handoff) for one nbq build on one board, from
:mod:`pynq_nbq.kernel.design`.

Only what ``pynq``'s HWH parser reads: the PS cell (``zynq_ultra_ps_e`` on PS8 boards,
``processing_system7`` on PS7 boards: the MODTYPE pynq's ``_HWHUltrascale`` and
``_HWHZynq`` look for) with its fabric clock parameters and its memory map (one
MEMRANGE per AXI-Lite slave), the DMA cell with its parameters, the kernel cell with
its VLNV and register map.  ``pynq.Overlay(..., download=False)`` on this file binds
the same drivers to the same cell names and addresses as the Vivado-written file of
the real overlay.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from ..kernel import design
from ..kernel.protocol import PORT_NAMES, READ_REGISTERS, REGISTERS, WRITE_REGISTERS

#: Per PS family: the SYSTEMINFO ARCH Vivado writes and the names of the PS cell's clock
#: parameters pynq's parser reads (``{i}``: fabric clock 0..3, ``{j}``: divisor 0..1).
HWH_PS = {
    "ps8": ("zynquplus", "PSU__FPGA_PL{i}_ENABLE", "PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR{j}"),
    "ps7": ("zynq", "PCW_FPGA_FCLK{i}_ENABLE", "PCW_FCLK{i}_PERIPHERAL_DIVISOR{j}"),
}


def _params(parent: ET.Element, values: dict) -> None:
    ps = ET.SubElement(parent, "PARAMETERS")
    for name, value in values.items():
        ET.SubElement(ps, "PARAMETER", NAME=name, VALUE=str(value))


def _module(modules: ET.Element, cell: str, modtype: str, vlnv: str) -> ET.Element:
    return ET.SubElement(
        modules, "MODULE", FULLNAME="/" + cell, INSTANCE=cell, MODTYPE=modtype, VLNV=vlnv
    )


def _register(regs: ET.Element, name: str, offset: int, access: str, text: str) -> None:
    r = ET.SubElement(regs, "REGISTER", NAME=name)
    props = {"DESCRIPTION": text, "ADDRESS_OFFSET": str(offset), "SIZE": "32", "ACCESS": access}
    for k, v in props.items():
        ET.SubElement(r, "PROPERTY", NAME=k, VALUE=v)
    f = ET.SubElement(ET.SubElement(r, "FIELDS"), "FIELD", NAME=name)
    for k, v in {
        "DESCRIPTION": text,
        "ACCESS": access,
        "BIT_OFFSET": "0",
        "BIT_WIDTH": "32",
    }.items():
        ET.SubElement(f, "PROPERTY", NAME=k, VALUE=v)


def hwh_xml(kind: str, board: str = design.DEFAULT_BOARD) -> str:
    """The ``.hwh`` text of the ``kind`` build for ``board`` (a ``design.BOARD_TARGETS`` name)."""
    d = design.describe(kind, board)
    t = design.target(board)
    arch, enable, divisor = HWH_PS[t.family]
    root = ET.Element("EDKSYSTEM", EDWVERSION="1.2", VIVADOVERSION="sim")
    ET.SubElement(
        root,
        "SYSTEMINFO",
        ARCH=arch,
        BOARD=t.board_part_full,
        DEVICE=d["part"],
        NAME=d["bitstream"],
    )
    ET.SubElement(root, "EXTERNALPORTS")
    modules = ET.SubElement(root, "MODULES")

    ps = _module(modules, t.ps.cell, t.ps.vlnv.split(":")[2], t.ps.vlnv)
    clocks: dict[str, int] = {}  # clock 0 = PLL / DIVISOR0 / DIVISOR1 = t.pl_clock_mhz
    for i in range(4):
        clocks[enable.format(i=i)] = 1 if i == 0 else 0
        clocks[divisor.format(i=i, j=0)] = t.pl_clock_divisor
        clocks[divisor.format(i=i, j=1)] = 1
    _params(ps, {**clocks, t.ps.clock_param: d["pl_clock_mhz"]})
    memmap = ET.SubElement(ps, "MEMORYMAP")
    slaves = {design.DMA_CELL: "S_AXI_LITE", design.KERNEL_CELL: design.KERNEL_CTRL_PORT}
    for cell, (base, size) in design.address_map(board).items():
        ET.SubElement(
            memmap,
            "MEMRANGE",
            ADDRESSBLOCK="Reg",
            BASENAME="C_BASEADDR",
            BASEVALUE=f"0x{base:08X}",
            HIGHNAME="C_HIGHADDR",
            HIGHVALUE=f"0x{base + size - 1:08X}",
            INSTANCE=cell,
            IS_DATA="TRUE",
            IS_INSTRUCTION="TRUE",
            MASTERBUSINTERFACE=t.ps.ctrl_master,
            MEMTYPE="REGISTER",
            SLAVEBUSINTERFACE=slaves[cell],
        )

    dma = _module(modules, design.DMA_CELL, "axi_dma", design.DMA_VLNV)
    _params(dma, design.dma_parameters(board))

    kernel = _module(
        modules, design.KERNEL_CELL, design.kernel_ipname(kind), design.kernel_vlnv(kind)
    )
    _params(kernel, {"C_S_AXI_CTRL_DATA_WIDTH": 32})
    regs = ET.SubElement(ET.SubElement(kernel, "MEMORYMAP"), "REGISTERS")
    _register(regs, "CTRL", REGISTERS["AP_CTRL"], "read-write", "ap_ctrl_hs")
    for name in WRITE_REGISTERS:
        _register(regs, PORT_NAMES[name], REGISTERS[name], "write-only", name)
    for name in READ_REGISTERS:
        _register(regs, PORT_NAMES[name], REGISTERS[name], "read-only", name)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n' + ET.tostring(
        root, encoding="unicode"
    )


def write_overlay_files(
    directory: str | Path, kind: str, board: str = design.DEFAULT_BOARD
) -> Path:
    """Write ``nbq_<kind>.hwh`` and a placeholder ``nbq_<kind>.bit``; returns the ``.bit``.

    The ``.bit`` holds no bitstream: the simulated board never downloads one.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bit = directory / f"{design.bitstream_name(kind)}.bit"
    bit.write_bytes(b"simulated nbq overlay: no bitstream\n")
    bit.with_suffix(".hwh").write_text(hwh_xml(kind, board))
    return bit
