"""The block design, described once.

Three consumers read this module and nothing else for these facts:

* the ``fpga`` driver binds its classes to :data:`kernel_vlnv` and looks the IP up
  by :data:`KERNEL_CELL` / :data:`DMA_CELL`;
* the simulated board generates its ``.hwh`` from :func:`describe` (so
  ``pynq.Overlay(..., download=False)`` sees the same names and addresses as on a
  board);
* ``overlay/`` builds the Vivado block design from the Tcl file that
  :func:`write_tcl` writes (a test checks the Tcl against this module).

Names follow Vivado's defaults for the cells they describe. Addresses are in the
``M_AXI_HPM0_FPD`` window of the Zynq UltraScale+ PS (0xA000_0000, 256 MiB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: PE kinds a bitstream is built for, in build order.
PE_KINDS = ("svpe", "vpe")

#: What ``hls/run_hls.tcl``'s ``export_design`` writes: vendor, library, version.
HLS_VENDOR = "pynq-nbq.org"
HLS_LIBRARY = "hls"
HLS_VERSION = "1.0"

#: Cell names in the block design (and so in the ``.hwh`` and ``overlay.ip_dict``).
PS_CELL = "zynq_ultra_ps_e_0"
KERNEL_CELL = "nbq_conv_0"
DMA_CELL = "axi_dma_0"
RESET_CELL = "proc_sys_reset_0"
CTRL_INTERCONNECT_CELL = "ps8_0_axi_periph"
DATA_INTERCONNECT_CELL = "axi_mem_intercon"

#: AXI DMA (PG021) in simple mode, the parameters the driver relies on.
DMA_VLNV = "xilinx.com:ip:axi_dma:7.1"
DMA_PARAMETERS = {
    "c_include_sg": 0,
    "c_include_mm2s": 1,
    "c_include_s2mm": 1,
    "c_include_mm2s_dre": 0,
    "c_include_s2mm_dre": 0,
    "c_micro_dma": 0,
    "c_sg_length_width": 26,  # largest transfer 2^26 - 1 bytes
    "c_m_axi_mm2s_data_width": 64,
    "c_m_axis_mm2s_tdata_width": 64,
    "c_m_axi_s2mm_data_width": 64,
    "c_s_axis_s2mm_tdata_width": 64,
    "c_addr_width": 64,
    "c_mm2s_burst_size": 16,
    "c_s2mm_burst_size": 16,
}

#: AXI-Lite address map (base, range in bytes), from M_AXI_HPM0_FPD.
ADDRESS_MAP = {
    DMA_CELL: (0xA000_0000, 0x1_0000),
    KERNEL_CELL: (0xA001_0000, 0x1_0000),
}

#: Kernel ports (the HLS interface names) and how they are wired.
KERNEL_CTRL_PORT = "s_axi_ctrl"
KERNEL_IN_PORT = "s_in"
KERNEL_OUT_PORT = "s_out"

#: One fabric clock for everything (the paper's 200 MHz).
PL_CLOCK_MHZ = 200


def kernel_ipname(kind: str) -> str:
    """The HLS IP name of the kernel built for PE kind ``kind`` (``svpe`` or ``vpe``)."""
    if kind not in PE_KINDS:
        raise ValueError(f"unknown PE kind {kind!r}; expected one of {PE_KINDS}")
    return f"nbq_conv_{kind}"


def kernel_vlnv(kind: str) -> str:
    """``vendor:library:name:version`` of the kernel IP for ``kind``."""
    return f"{HLS_VENDOR}:{HLS_LIBRARY}:{kernel_ipname(kind)}:{HLS_VERSION}"


def bitstream_name(kind: str) -> str:
    """Base name of the overlay files: ``<name>.bit`` and ``<name>.hwh``."""
    kernel_ipname(kind)  # validates
    return f"nbq_{kind}"


@dataclass(frozen=True)
class BoardTarget:
    """What Vivado needs to know about a board."""

    name: str
    part: str
    board_part: str


#: Boards the overlay build knows (parts as in ``pynq_nbq/boards/*.json``).
BOARD_TARGETS = {
    "zcu102": BoardTarget("zcu102", "xczu9eg-ffvb1156-2-e", "xilinx.com:zcu102:part0:3.3"),
    "zcu104": BoardTarget("zcu104", "xczu7ev-ffvc1156-2-e", "xilinx.com:zcu104:part0:1.1"),
    "kv260": BoardTarget("kv260", "xck26-sfvc784-2LV-c", "xilinx.com:kv260_som:part0:1.3"),
}


def describe(kind: str, board: str = "zcu102") -> dict:
    """The whole description for one build, as plain data (JSON-serialisable)."""
    if board not in BOARD_TARGETS:
        raise ValueError(f"unknown board {board!r}; expected one of {sorted(BOARD_TARGETS)}")
    target = BOARD_TARGETS[board]
    return {
        "board": target.name,
        "part": target.part,
        "board_part": target.board_part,
        "pe_kind": kind,
        "bitstream": bitstream_name(kind),
        "pl_clock_mhz": PL_CLOCK_MHZ,
        "cells": {
            "ps": PS_CELL,
            "kernel": KERNEL_CELL,
            "dma": DMA_CELL,
            "reset": RESET_CELL,
            "ctrl_interconnect": CTRL_INTERCONNECT_CELL,
            "data_interconnect": DATA_INTERCONNECT_CELL,
        },
        "kernel": {
            "vlnv": kernel_vlnv(kind),
            "ctrl_port": KERNEL_CTRL_PORT,
            "in_port": KERNEL_IN_PORT,
            "out_port": KERNEL_OUT_PORT,
        },
        "dma": {"vlnv": DMA_VLNV, "parameters": dict(DMA_PARAMETERS)},
        "address_map": {cell: list(span) for cell, span in ADDRESS_MAP.items()},
    }


def write_json(path: str | Path, kind: str, board: str = "zcu102") -> None:
    """Write :func:`describe` as JSON (for tools that do not run Python)."""
    Path(path).write_text(json.dumps(describe(kind, board), indent=2) + "\n")
