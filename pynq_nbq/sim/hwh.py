"""A ``.hwh`` (Vivado hardware handoff) for one nbq build, from :mod:`pynq_nbq.kernel.design`.

Only what ``pynq``'s HWH parser reads: the PS cell with its PL clock parameters and
its memory map (one MEMRANGE per AXI-Lite slave), the DMA cell with its
parameters, the kernel cell with its VLNV and register map.  ``pynq.Overlay(...,
download=False)`` on this file binds the same drivers to the same cell names and
addresses as the Vivado-written file of the real overlay.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from ..kernel import design
from ..kernel.protocol import PORT_NAMES, READ_REGISTERS, REGISTERS, WRITE_REGISTERS

PS_VLNV = "xilinx.com:ip:zynq_ultra_ps_e:3.4"


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


def hwh_xml(kind: str, board: str = "zcu102") -> str:
    """The ``.hwh`` text of the ``kind`` build for ``board``."""
    d = design.describe(kind, board)
    root = ET.Element("EDKSYSTEM", EDWVERSION="1.2", VIVADOVERSION="sim")
    ET.SubElement(
        root,
        "SYSTEMINFO",
        ARCH="zynquplus",
        BOARD=design.BOARD_TARGETS[d["board"]].board_part_full,
        DEVICE=d["part"],
        NAME=d["bitstream"],
    )
    ET.SubElement(root, "EXTERNALPORTS")
    modules = ET.SubElement(root, "MODULES")

    ps = _module(modules, design.PS_CELL, "zynq_ultra_ps_e", PS_VLNV)
    clocks = {}  # PL0 = IOPLL / DIVISOR0 / DIVISOR1 = design.PL_CLOCK_MHZ
    for i in range(4):
        clocks[f"PSU__FPGA_PL{i}_ENABLE"] = 1 if i == 0 else 0
        clocks[f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR0"] = design.PL_CLOCK_DIVISOR
        clocks[f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR1"] = 1
    _params(ps, clocks)
    memmap = ET.SubElement(ps, "MEMORYMAP")
    slaves = {design.DMA_CELL: "S_AXI_LITE", design.KERNEL_CELL: design.KERNEL_CTRL_PORT}
    for cell, (base, size) in design.ADDRESS_MAP.items():
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
            MASTERBUSINTERFACE="M_AXI_HPM0_FPD",
            MEMTYPE="REGISTER",
            SLAVEBUSINTERFACE=slaves[cell],
        )

    dma = _module(modules, design.DMA_CELL, "axi_dma", design.DMA_VLNV)
    _params(dma, design.DMA_PARAMETERS)

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


def write_overlay_files(directory: str | Path, kind: str, board: str = "zcu102") -> Path:
    """Write ``nbq_<kind>.hwh`` and a placeholder ``nbq_<kind>.bit``; returns the ``.bit``.

    The ``.bit`` holds no bitstream: the simulated board never downloads one.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bit = directory / f"{design.bitstream_name(kind)}.bit"
    bit.write_bytes(b"simulated nbq overlay: no bitstream\n")
    bit.with_suffix(".hwh").write_text(hwh_xml(kind, board))
    return bit
