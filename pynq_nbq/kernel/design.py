"""The block design of every board, described once.

Three consumers read this module and nothing else for these facts:

* the ``fpga`` driver binds its classes to :data:`kernel_vlnv` and looks the IP up
  by :data:`KERNEL_CELL` / :data:`DMA_CELL`;
* the simulated board generates its ``.hwh`` from :func:`describe` (so
  ``pynq.Overlay(..., download=False)`` sees the same names and addresses as on a
  board);
* ``overlay/`` builds the Vivado block design from the Tcl file that
  :func:`write_tcl` writes (a test checks the Tcl against this module).

Two processing-system families (:data:`FAMILIES`), one description:

* **PS8**, Zynq UltraScale+ (``zynq_ultra_ps_e``; ZCU102, ZCU104, KV260): control
  from ``M_AXI_HPM0_FPD`` (window at 0xA000_0000), data to ``S_AXI_HP0_FPD`` at 128
  bits, fabric clock ``pl_clk0``, 64-bit DMA addresses;
* **PS7**, Zynq-7000 (``processing_system7``; PYNQ-Z2): control from ``M_AXI_GP0``
  (window at 0x4000_0000), data to ``S_AXI_HP0`` at 64 bits (the widest a PS7 HP port
  takes), fabric clock ``FCLK_CLK0``, 32-bit DMA addresses.

The kernel, its streams and the DMA are :data:`STREAM_BITS` (128) bits wide on every
board: one kernel protocol.  Per board (:func:`target`), the part, the PS family and
the fabric clock (PS PLL / integer divisor) come from the board file
``pynq_nbq/boards/<board>.json``, the file the performance model reads; this module
keeps only what the board file does not hold: the Vivado board part and its version.
Names follow Vivado's defaults for the cells they describe.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .. import datapath as dp

#: PE kinds a bitstream is built for, in build order (``datapath.PEKind``, str enums)
PE_KINDS = tuple(dp.PEKind)

#: What ``hls/run_hls.tcl``'s ``export_design`` writes: vendor, library, version.
HLS_VENDOR = "pynq-nbq.org"
HLS_LIBRARY = "hls"
HLS_VERSION = "1.0"

#: Cell names common to both PS families (and so in the ``.hwh`` and ``overlay.ip_dict``);
#: the PS cell and the control interconnect are named per family (:class:`PsFamily`).
KERNEL_CELL = "nbq_conv_0"
DMA_CELL = "axi_dma_0"
RESET_CELL = "proc_sys_reset_0"
DATA_INTERCONNECT_CELL = "axi_mem_intercon"

# --- the feature-map path: one width for the stream, the kernel and the DMA --------------
#: AXI-Stream TDATA width of the kernel's ports and the AXI DMA's stream and memory-map
#: widths (bits), on every board.  128 bits carry 8 int16 activations a cycle: enough for
#: the svpe3 (32, 8) build to be compute-bound on every layer of the shipped networks in
#: the kernel's cycle model (at 64 bits the reader or the packer bounded every svpe3
#: layer: docs/hls.md "Stream width").  128 is the widest an HP port of the Zynq
#: UltraScale+ PS takes; a Zynq-7000 HP port takes 64 (:attr:`PsFamily.hp_port_bits`).
#: ``hls/nbq_params.h`` (NBQ_WORD_BITS) and ``kernel/protocol.py`` (WORD_BITS) follow
#: this value (tests/test_streams.py checks the header).
STREAM_BITS = 128
#: AXI DMA burst length in beats (PG021 allows 2..256): 256 beats of 16 bytes = 4 KiB,
#: one AXI4 burst per 4 KiB page.  The kernel's input FIFO depths derive from it
#: (``hls/nbq_params.h`` NBQ_DMA_BURST_BEATS; docs/hls.md "FIFO depths").
DMA_BURST_BEATS = 256

#: AXI DMA (PG021) in simple mode: the parameters common to every board (the address
#: width is the PS family's, :func:`dma_parameters`).  PG021 (and the DataMover inside
#: it, PG022) takes a stream width up to, not above, the memory-map width, so the DMA's
#: memory map stays 128 bits with the stream; on a PS7 board the data interconnect
#: (``axi_interconnect``) converts 128 -> 64 bits (and AXI4 -> the HP port's AXI3
#: bursts) on the way to ``S_AXI_HP0``.
DMA_VLNV = "xilinx.com:ip:axi_dma:7.1"
_DMA_COMMON = {
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
    "c_mm2s_burst_size": DMA_BURST_BEATS,
    "c_s2mm_burst_size": DMA_BURST_BEATS,
}
#: Bytes of each AXI-Lite register window (DMA, kernel) in the PS's control window.
REGISTER_WINDOW = 0x1_0000

#: Kernel ports (the HLS interface names) and how they are wired.
KERNEL_CTRL_PORT = "s_axi_ctrl"
KERNEL_IN_PORT = "s_in"
KERNEL_OUT_PORT = "s_out"

#: Vivado release the overlay build is written for: the one PYNQ 3.0.x images are built
#: with.  The Xilinx VLNVs below are that release's; the build stops, naming the VLNV,
#: if the running Vivado lacks one.
VIVADO_VERSION = "2022.1"

#: Xilinx IP of the block design (besides :data:`DMA_VLNV` and the PS), as in Vivado 2022.1.
RESET_VLNV = "xilinx.com:ip:proc_sys_reset:5.0"
INTERCONNECT_VLNV = "xilinx.com:ip:axi_interconnect:2.1"


@dataclass(frozen=True)
class PsFamily:
    """One processing-system family: its IP, ports, pins and PS parameters.

    ``parameters`` are applied after the board preset: the control master on (32-bit
    AXI-Lite), the data slave on at ``hp_port_bits``, one fabric clock, requested in
    MHz through ``clock_param``; Vivado's PS configuration reports the clock it makes
    in ``actual_clock_param`` (the overlay build reads it back).
    """

    name: str  #: "ps8" (Zynq UltraScale+) or "ps7" (Zynq-7000): the board file's ps.family
    vlnv: str
    cell: str
    ctrl_interconnect_cell: str
    ctrl_master: str  #: the PS's AXI master the register windows hang from
    data_slave: str  #: the PS's AXI slave (HP port) the DMA reaches DDR through
    ctrl_clock_pin: str  #: clock pin of ``ctrl_master``
    data_clock_pin: str  #: clock pin of ``data_slave``
    clock_pin: str  #: the fabric clock output
    reset_pin: str  #: the fabric reset output (active low)
    ctrl_base: int  #: first address of the control window (bytes)
    hp_port_bits: int  #: data width of ``data_slave`` (bits), set through ``hp_width_param``
    hp_width_param: str
    addr_bits: int  #: the DMA's address width (PG021 c_addr_width)
    fixed_parameters: tuple[tuple[str, int], ...]
    clock_param: str
    actual_clock_param: str

    def parameters(self, clock_mhz: float) -> dict[str, int | float]:
        """The PS cell's CONFIG values for a fabric clock of ``clock_mhz`` MHz."""
        return {
            **dict(self.fixed_parameters),
            self.hp_width_param: self.hp_port_bits,
            self.clock_param: _number(clock_mhz),
        }


#: The PS families, by the board file's ``ps.family``.
FAMILIES = {
    "ps8": PsFamily(
        name="ps8",
        vlnv="xilinx.com:ip:zynq_ultra_ps_e:3.4",
        cell="zynq_ultra_ps_e_0",
        ctrl_interconnect_cell="ps8_0_axi_periph",
        ctrl_master="M_AXI_HPM0_FPD",
        data_slave="S_AXI_HP0_FPD",
        ctrl_clock_pin="maxihpm0_fpd_aclk",
        data_clock_pin="saxihp0_fpd_aclk",
        clock_pin="pl_clk0",
        reset_pin="pl_resetn0",
        ctrl_base=0xA000_0000,
        hp_port_bits=128,
        hp_width_param="PSU__SAXIGP2__DATA_WIDTH",
        addr_bits=64,
        # HPM0_FPD on (32-bit AXI-Lite), HPM1_FPD and HPM0_LPD off, S_AXI_HP0_FPD (Vivado's
        # S_AXI_GP2) on at 128 bits, fabric clock 0 on
        fixed_parameters=(
            ("PSU__USE__M_AXI_GP0", 1),
            ("PSU__MAXIGP0__DATA_WIDTH", 32),
            ("PSU__USE__M_AXI_GP1", 0),
            ("PSU__USE__M_AXI_GP2", 0),
            ("PSU__USE__S_AXI_GP2", 1),
            ("PSU__FPGA_PL0_ENABLE", 1),
        ),
        clock_param="PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ",
        actual_clock_param="PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ",
    ),
    "ps7": PsFamily(
        name="ps7",
        vlnv="xilinx.com:ip:processing_system7:5.5",
        cell="processing_system7_0",
        ctrl_interconnect_cell="ps7_0_axi_periph",
        ctrl_master="M_AXI_GP0",
        data_slave="S_AXI_HP0",
        ctrl_clock_pin="M_AXI_GP0_ACLK",
        data_clock_pin="S_AXI_HP0_ACLK",
        clock_pin="FCLK_CLK0",
        reset_pin="FCLK_RESET0_N",
        ctrl_base=0x4000_0000,
        hp_port_bits=64,
        hp_width_param="PCW_S_AXI_HP0_DATA_WIDTH",
        addr_bits=32,
        # M_AXI_GP0 on (32-bit, fixed), S_AXI_HP0 on at 64 bits (its widest), FCLK_CLK0
        # and FCLK_RESET0_N brought out
        fixed_parameters=(
            ("PCW_USE_M_AXI_GP0", 1),
            ("PCW_USE_S_AXI_HP0", 1),
            ("PCW_EN_CLK0_PORT", 1),
            ("PCW_EN_RST0_PORT", 1),
            ("PCW_FPGA_FCLK0_ENABLE", 1),
        ),
        clock_param="PCW_FPGA0_PERIPHERAL_FREQMHZ",
        actual_clock_param="PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ",
    ),
}


def _number(value: float) -> int | float:
    """``125.0`` -> ``125`` (Vivado's spelling of a whole MHz), ``187.5`` unchanged."""
    return int(value) if float(value).is_integer() else float(value)


def fabric_clock_mhz(pll_mhz: float, divisor: int) -> float:
    """The PS's fabric clock: its PLL over an integer divisor (MHz)."""
    if divisor < 1 or int(divisor) != divisor:
        raise ValueError(f"fabric clock divisor must be a positive integer, got {divisor!r}")
    return pll_mhz / divisor


@dataclass(frozen=True)
class BoardTarget:
    """What Vivado needs to know about a board.

    ``part``, ``family`` and the fabric clock's PLL and divisor are the board file's
    (``pynq_nbq/boards/<name>.json``: ``part``, ``ps.family``, ``ps.pl_pll_mhz``,
    ``ps.pl_clock_divisor``).  ``board_part`` is the board part without its file
    version (``vendor:board:part0``): the overlay build picks the latest version the
    running Vivado carries (``get_board_parts -latest_file_version``) and stops, naming
    it, if there is none.  ``board_part_version`` is the version Vivado
    :data:`VIVADO_VERSION` ships, written into the simulated board's ``.hwh`` only.
    """

    name: str
    part: str
    board_part: str
    board_part_version: str
    family: str
    pl_pll_mhz: float
    pl_clock_divisor: int

    @property
    def board_part_full(self) -> str:
        """``board_part:version`` as in a .hwh of a build with Vivado VIVADO_VERSION."""
        return f"{self.board_part}:{self.board_part_version}"

    @property
    def ps(self) -> PsFamily:
        """The board's processing-system family."""
        return FAMILIES[self.family]

    @property
    def pl_clock_mhz(self) -> float:
        """The overlay's one fabric clock on this board (MHz)."""
        return fabric_clock_mhz(self.pl_pll_mhz, self.pl_clock_divisor)

    @property
    def pl_period_ns(self) -> float:
        """The fabric clock's period in ns (what Vitis HLS's ``create_clock -period`` takes)."""
        return round(1000.0 / self.pl_clock_mhz, 6)


#: What the board files do not hold: the Vivado board part and the version Vivado 2022.1
#: ships (``tul.com.tw``: TUL's board files for the PYNQ-Z2, from Xilinx's board store).
_BOARD_PARTS = {
    "zcu102": ("xilinx.com:zcu102:part0", "3.4"),
    "zcu104": ("xilinx.com:zcu104:part0", "1.1"),
    "kv260": ("xilinx.com:kv260_som:part0", "1.3"),
    "pynq-z2": ("tul.com.tw:pynq-z2:part0", "1.0"),
}


def _board_file(name: str) -> dict[str, Any]:
    """The fields of ``pynq_nbq/boards/<name>.json`` the block design needs."""
    origin = f"pynq_nbq/boards/{name}.json"
    try:
        path = resources.files("pynq_nbq").joinpath(f"boards/{name}.json")
        data = json.loads(path.read_text("utf-8"))
        ps = data["ps"]
        fields = {
            "part": str(data["part"]),
            "family": str(ps["family"]),
            "pl_pll_mhz": float(ps["pl_pll_mhz"]),
            "pl_clock_divisor": int(ps["pl_clock_divisor"]),
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{origin}: cannot read the part and 'ps' section ({exc!r})") from exc
    if fields["family"] not in FAMILIES:
        raise ValueError(
            f"{origin}: ps.family {fields['family']!r} is not one of {sorted(FAMILIES)}"
        )
    return fields


def _target(name: str) -> BoardTarget:
    board_part, version = _BOARD_PARTS[name]
    return BoardTarget(name, board_part=board_part, board_part_version=version, **_board_file(name))


#: Boards the overlay build knows, with their part and PS from the board files.
BOARD_TARGETS = {name: _target(name) for name in _BOARD_PARTS}
#: The board a description is for when none is named (the paper's board).
DEFAULT_BOARD = "zcu102"


def target(board: str) -> BoardTarget:
    """The :class:`BoardTarget` of ``board``; ValueError naming the known boards."""
    if board not in BOARD_TARGETS:
        raise ValueError(f"unknown board {board!r}; expected one of {sorted(BOARD_TARGETS)}")
    return BOARD_TARGETS[board]


def address_map(board: str = DEFAULT_BOARD) -> dict[str, tuple[int, int]]:
    """AXI-Lite windows {cell: (base, range)} in bytes, in the PS's control window."""
    base = target(board).ps.ctrl_base
    return {
        DMA_CELL: (base, REGISTER_WINDOW),
        KERNEL_CELL: (base + REGISTER_WINDOW, REGISTER_WINDOW),
    }


def dma_parameters(board: str = DEFAULT_BOARD) -> dict[str, int]:
    """The AXI DMA's parameters on ``board``: :data:`_DMA_COMMON` and the PS's address width."""
    return {**_DMA_COMMON, "c_addr_width": target(board).ps.addr_bits}


def pl_period_ns(board: str = DEFAULT_BOARD) -> float:
    """The fabric clock's period on ``board`` in ns (for Vitis HLS ``create_clock``)."""
    return target(board).pl_period_ns


# --- the default board's values, for code written before the per-board description -------
#: The PS8 (ZCU102) names and values; per board use :func:`target` / :func:`describe`.
PS_CELL = FAMILIES["ps8"].cell
PS_VLNV = FAMILIES["ps8"].vlnv
CTRL_INTERCONNECT_CELL = FAMILIES["ps8"].ctrl_interconnect_cell
HP_PORT_BITS = FAMILIES["ps8"].hp_port_bits
#: The default board's fabric clock: ZCU102 IOPLL 1500 MHz / 8 = 187.5 MHz.  200 MHz (the
#: paper's clock) cannot be divided exactly from the 1500 MHz IOPLL (1500/7 is 214.3 MHz,
#: past what the model's timing allows for), so every ZCU102 figure of this kernel is at
#: 187.5 MHz: 6.25 % slower than at 200 MHz, for both PE kinds alike.
PL_CLOCK_MHZ = BOARD_TARGETS[DEFAULT_BOARD].pl_clock_mhz
PS_PARAMETERS = FAMILIES["ps8"].parameters(PL_CLOCK_MHZ)
ADDRESS_MAP = address_map(DEFAULT_BOARD)
DMA_PARAMETERS = dma_parameters(DEFAULT_BOARD)


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


#: The :class:`PsFamily` fields the overlay build's Tcl reads (ports, pins, clock names).
_PS_WIRING = (
    *("ctrl_master", "data_slave", "ctrl_clock_pin", "data_clock_pin", "clock_pin"),
    *("reset_pin", "hp_port_bits", "clock_param", "actual_clock_param"),
)


def describe(kind: str, board: str = DEFAULT_BOARD) -> dict:
    """The whole description for one build, as plain data (JSON-serialisable)."""
    t = target(board)
    ps = t.ps
    return {
        "board": t.name,
        "part": t.part,
        "board_part": t.board_part,
        "pe_kind": kind,
        "bitstream": bitstream_name(kind),
        "pl_clock_mhz": _number(t.pl_clock_mhz),
        "pl_period_ns": t.pl_period_ns,
        "stream_bits": STREAM_BITS,
        "cells": {
            "ps": ps.cell,
            "kernel": KERNEL_CELL,
            "dma": DMA_CELL,
            "reset": RESET_CELL,
            "ctrl_interconnect": ps.ctrl_interconnect_cell,
            "data_interconnect": DATA_INTERCONNECT_CELL,
        },
        "kernel": {
            "vlnv": kernel_vlnv(kind),
            "ctrl_port": KERNEL_CTRL_PORT,
            "in_port": KERNEL_IN_PORT,
            "out_port": KERNEL_OUT_PORT,
        },
        "dma": {"vlnv": DMA_VLNV, "parameters": dma_parameters(board)},
        "address_map": {cell: list(span) for cell, span in address_map(board).items()},
        "vivado_version": VIVADO_VERSION,
        "ps": {
            "family": ps.name,
            "vlnv": ps.vlnv,
            **{key: getattr(ps, key) for key in _PS_WIRING},
            "parameters": ps.parameters(t.pl_clock_mhz),
        },
        "reset": {"vlnv": RESET_VLNV},
        "interconnect": {"vlnv": INTERCONNECT_VLNV},
    }


def write_json(path: str | Path, kind: str, board: str = DEFAULT_BOARD) -> None:
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


def tcl_text(kind: str, board: str = DEFAULT_BOARD) -> str:
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


def write_tcl(path: str | Path, kind: str, board: str = DEFAULT_BOARD) -> None:
    """Write :func:`tcl_text` to ``path`` (``overlay/Makefile`` does this per build)."""
    Path(path).write_text(tcl_text(kind, board))


def main(argv: list[str] | None = None) -> int:
    """``python3 -m pynq_nbq.kernel.design {tcl,json} KIND BOARD OUT``, ``part BOARD``
    or ``period [BOARD]`` (the fabric clock's period in ns, for hls/run_hls.tcl; default
    board zcu102)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python3 -m pynq_nbq.kernel.design",
        description="Write the block-design description of one overlay build, or print a "
        "board's FPGA part or fabric clock period (what overlay/Makefile asks).",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    boards = sorted(BOARD_TARGETS)
    for fmt in ("tcl", "json"):
        p = sub.add_parser(fmt, help=f"write the description as {fmt}")
        p.add_argument("kind", choices=PE_KINDS)
        p.add_argument("board", choices=boards)
        p.add_argument("out", type=Path)
    sub.add_parser("part", help="print the board's part").add_argument("board", choices=boards)
    sub.add_parser("period", help="print the board's fabric clock period in ns").add_argument(
        "board", nargs="?", default=DEFAULT_BOARD, choices=boards
    )
    args = parser.parse_args(argv)
    if args.what == "part":
        print(target(args.board).part)
    elif args.what == "period":
        print(pl_period_ns(args.board))
    elif args.what == "tcl":
        write_tcl(args.out, args.kind, args.board)
    else:
        write_json(args.out, args.kind, args.board)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
