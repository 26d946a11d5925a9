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
import re
from dataclasses import dataclass
from pathlib import Path

from .. import datapath as dp

#: PE kinds a bitstream is built for, in build order (``datapath.PEKind``, str enums)
PE_KINDS = tuple(dp.PEKind)

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

# --- the feature-map path: one width for the stream, the DMA and the HP port -----------
#: AXI-Stream TDATA width of the kernel's ports, the AXI DMA's stream and memory-map
#: widths and the S_AXI_HP0_FPD port width (bits).  128 bits carry 8 int16 activations
#: a cycle: enough for the svpe3 (32, 8) build to be compute-bound on every layer of the
#: shipped networks in the kernel's cycle model (at 64 bits the reader or the packer
#: bounded every svpe3 layer: docs/hls.md "Stream width").  128 is the widest an HP port
#: of the Zynq UltraScale+ PS takes, so a wider path would need a second port and DMA.
#: ``hls/nbq_params.h`` (NBQ_WORD_BITS) and ``kernel/protocol.py`` (WORD_BITS) follow
#: this value (tests/test_streams.py checks the header).
STREAM_BITS = 128
#: The HP port's width: the same as the stream (no width converter in the interconnect).
HP_PORT_BITS = STREAM_BITS
#: AXI DMA burst length in beats (PG021 allows 2..256): 256 beats of 16 bytes = 4 KiB,
#: one AXI4 burst per 4 KiB page.  The kernel's input FIFO depths derive from it
#: (``hls/nbq_params.h`` NBQ_DMA_BURST_BEATS; docs/hls.md "FIFO depths").
DMA_BURST_BEATS = 256
#: The one PL clock, made by the PS from its IOPLL: 1500 MHz / 8 = 187.5 MHz.  200 MHz
#: (the paper's clock) cannot be divided exactly from the 1500 MHz IOPLL (1500/7 is
#: 214.3 MHz, past what the model's timing allows for), so every figure of this kernel
#: is at 187.5 MHz: 6.25 % slower than at 200 MHz, for both PE kinds alike.
PL_IOPLL_MHZ = 1500.0
PL_CLOCK_DIVISOR = 8
PL_CLOCK_MHZ = PL_IOPLL_MHZ / PL_CLOCK_DIVISOR

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
    "c_m_axi_mm2s_data_width": STREAM_BITS,
    "c_m_axis_mm2s_tdata_width": STREAM_BITS,
    "c_m_axi_s2mm_data_width": STREAM_BITS,
    "c_s_axis_s2mm_tdata_width": STREAM_BITS,
    "c_addr_width": 64,
    "c_mm2s_burst_size": DMA_BURST_BEATS,
    "c_s2mm_burst_size": DMA_BURST_BEATS,
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

#: Vivado release the overlay build is written for: the one PYNQ 3.0.x images are built
#: with.  The Xilinx VLNVs below are that release's; the build stops, naming the VLNV,
#: if the running Vivado lacks one.
VIVADO_VERSION = "2022.1"

#: Xilinx IP of the block design (besides :data:`DMA_VLNV`), as in Vivado 2022.1.
PS_VLNV = "xilinx.com:ip:zynq_ultra_ps_e:3.4"
RESET_VLNV = "xilinx.com:ip:proc_sys_reset:5.0"
INTERCONNECT_VLNV = "xilinx.com:ip:axi_interconnect:2.1"

#: PS settings applied after the board preset: HPM0_FPD (AXI-Lite, 32 bit) on, HPM1_FPD
#: and HPM0_LPD off, S_AXI_HP0_FPD (Vivado's S_AXI_GP2, :data:`HP_PORT_BITS` bit, the DMA data) on,
#: one fabric clock pl_clk0 at :data:`PL_CLOCK_MHZ` (IOPLL / :data:`PL_CLOCK_DIVISOR`).
PS_PARAMETERS = {
    "PSU__USE__M_AXI_GP0": 1,
    "PSU__MAXIGP0__DATA_WIDTH": 32,
    "PSU__USE__M_AXI_GP1": 0,
    "PSU__USE__M_AXI_GP2": 0,
    "PSU__USE__S_AXI_GP2": 1,
    "PSU__SAXIGP2__DATA_WIDTH": HP_PORT_BITS,
    "PSU__FPGA_PL0_ENABLE": 1,
    "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": PL_CLOCK_MHZ,
}


def pl_period_ns() -> float:
    """The PL clock's period in ns (what Vitis HLS's ``create_clock -period`` takes)."""
    return round(1000.0 / PL_CLOCK_MHZ, 6)


def kernel_ipname(kind: str) -> str:
    """The HLS IP name of the kernel built for PE kind ``kind`` (``svpe`` or ``vpe``)."""
    return f"nbq_conv_{dp.PEKind.parse(kind)}"


def kernel_vlnv(kind: str) -> str:
    """``vendor:library:name:version`` of the kernel IP for ``kind``."""
    return f"{HLS_VENDOR}:{HLS_LIBRARY}:{kernel_ipname(kind)}:{HLS_VERSION}"


def bitstream_name(kind: str) -> str:
    """Base name of the overlay files: ``<name>.bit`` and ``<name>.hwh``."""
    kernel_ipname(kind)  # validates
    return f"nbq_{kind}"


@dataclass(frozen=True)
class BoardTarget:
    """What Vivado needs to know about a board.

    ``board_part`` is the board part without its file version
    (``vendor:board:part0``): the overlay build picks the latest version the running
    Vivado carries (``get_board_parts -latest_file_version``) and stops, naming it, if
    there is none.  ``board_part_version`` is the version Vivado :data:`VIVADO_VERSION`
    ships, written into the simulated board's ``.hwh`` only.
    """

    name: str
    part: str
    board_part: str
    board_part_version: str

    @property
    def board_part_full(self) -> str:
        """``board_part:version`` as in a .hwh of a build with Vivado VIVADO_VERSION."""
        return f"{self.board_part}:{self.board_part_version}"


#: Boards the overlay build knows (parts as in ``pynq_nbq/boards/*.json``).
BOARD_TARGETS = {
    "zcu102": BoardTarget("zcu102", "xczu9eg-ffvb1156-2-e", "xilinx.com:zcu102:part0", "3.4"),
    "zcu104": BoardTarget("zcu104", "xczu7ev-ffvc1156-2-e", "xilinx.com:zcu104:part0", "1.1"),
    "kv260": BoardTarget("kv260", "xck26-sfvc784-2LV-c", "xilinx.com:kv260_som:part0", "1.3"),
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
        "pl_period_ns": pl_period_ns(),
        "stream_bits": STREAM_BITS,
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
        "vivado_version": VIVADO_VERSION,
        "ps": {"vlnv": PS_VLNV, "parameters": dict(PS_PARAMETERS)},
        "reset": {"vlnv": RESET_VLNV},
        "interconnect": {"vlnv": INTERCONNECT_VLNV},
    }


def write_json(path: str | Path, kind: str, board: str = "zcu102") -> None:
    """Write :func:`describe` as JSON (for tools that do not run Python)."""
    Path(path).write_text(json.dumps(describe(kind, board), indent=2) + "\n")


# --- the overlay build's input --------------------------------------------------------
#: Characters a value may hold to be written into Tcl unquoted (no spaces, braces, $, [).
_TCL_WORD = re.compile(r"^[A-Za-z0-9_.:/+-]+$")


def _tcl_word(value: object) -> str:
    text = str(value)
    if not _TCL_WORD.match(text):
        raise ValueError(f"design value {text!r} cannot be written into Tcl as a plain word")
    return text


def _tcl_lines(prefix: list[str], value: object) -> list[str]:
    """``dict set nbq_design k1 k2 ... value`` lines for a nested mapping."""
    if isinstance(value, dict):
        lines = []
        for key, sub in value.items():
            lines += _tcl_lines([*prefix, _tcl_word(key)], sub)
        return lines
    if isinstance(value, (list, tuple)):  # address spans: {base range} in hex
        words = [f"0x{v:X}" if isinstance(v, int) else _tcl_word(v) for v in value]
        text = "{" + " ".join(words) + "}"
    else:
        text = _tcl_word(value)
    return [f"dict set nbq_design {' '.join(prefix)} {text}"]


def tcl_text(kind: str, board: str = "zcu102") -> str:
    """The Tcl the overlay build sources: :func:`describe` as the dict ``nbq_design``.

    Every key of :func:`describe` becomes a path of dict keys, e.g.
    ``dict get $nbq_design dma parameters c_sg_length_width`` is ``26``; address spans
    are ``{base range}`` in hex.  Raises ValueError for a value that is not a plain
    Tcl word (so nothing can be injected into the build).
    """
    head = [
        "# Generated by pynq_nbq.kernel.design.write_tcl - do not edit; change design.py.",
        f"# PE kind {kind}, board {board}.",
        "set nbq_design [dict create]",
    ]
    return "\n".join(head + _tcl_lines([], describe(kind, board))) + "\n"


def write_tcl(path: str | Path, kind: str, board: str = "zcu102") -> None:
    """Write :func:`tcl_text` to ``path`` (``overlay/Makefile`` does this per build)."""
    Path(path).write_text(tcl_text(kind, board))


def main(argv: list[str] | None = None) -> int:
    """``python3 -m pynq_nbq.kernel.design {tcl,json} KIND BOARD OUT``, ``part BOARD``
    or ``period`` (the PL clock period in ns, for hls/run_hls.tcl)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python3 -m pynq_nbq.kernel.design",
        description="Write the block-design description of one overlay build, or print a "
        "board's FPGA part (what overlay/Makefile asks).",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    for fmt in ("tcl", "json"):
        p = sub.add_parser(fmt, help=f"write the description as {fmt}")
        p.add_argument("kind", choices=PE_KINDS)
        p.add_argument("board", choices=sorted(BOARD_TARGETS))
        p.add_argument("out", type=Path)
    sub.add_parser("part", help="print the board's part").add_argument(
        "board", choices=sorted(BOARD_TARGETS)
    )
    sub.add_parser("period", help="print the PL clock period in ns")
    args = parser.parse_args(argv)
    if args.what == "part":
        print(BOARD_TARGETS[args.board].part)
    elif args.what == "period":
        print(pl_period_ns())
    elif args.what == "tcl":
        write_tcl(args.out, args.kind, args.board)
    else:
        write_json(args.out, args.kind, args.board)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
