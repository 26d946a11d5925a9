"""The generated ``.hwh`` of every board's block design, read by pynq 3.0.1's own parser.

A Zynq UltraScale+ board's pynq parses with ``_HWHUltrascale`` (PS cell
``zynq_ultra_ps_e``, PSU__ clock parameters), a Zynq-7000 board's with ``_HWHZynq``
(``processing_system7``, PCW_ parameters).  Checked per board: the PS is found (a full
design, not a partial one), the register windows, the DMA's parameters (its address
width the PS family's), the fabric clock pynq would program (PLL / divisors), and that
``pynq.Overlay(download=False)`` on the simulated board binds the nbq drivers.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pynq") is None, reason="needs the pynq library (pynq==3.0.1)"
)

from pynq_nbq.kernel import design  # noqa: E402

#: per board: pynq's parser, the PS's VLNV, the control window, the DMA address width,
#: the PS PLL (MHz) the fabric clock is divided from - written out, not read from design.py
EXPECTED = {
    "zcu102": ("_HWHUltrascale", "xilinx.com:ip:zynq_ultra_ps_e:3.4", 0xA000_0000, 64, 1500),
    "zcu104": ("_HWHUltrascale", "xilinx.com:ip:zynq_ultra_ps_e:3.4", 0xA000_0000, 64, 1500),
    "kv260": ("_HWHUltrascale", "xilinx.com:ip:zynq_ultra_ps_e:3.4", 0xA000_0000, 64, 1500),
    "pynq-z2": ("_HWHZynq", "xilinx.com:ip:processing_system7:5.5", 0x4000_0000, 32, 1000),
}


def _parse(board: str, parser: str, kind: str = "svpe"):
    from pynq.pl_server import hwh_parser

    from pynq_nbq.sim.hwh import hwh_xml

    return getattr(hwh_parser, parser)(hwh_data=hwh_xml(kind, board))


@pytest.mark.parametrize("board", sorted(EXPECTED))
@pytest.mark.parametrize("kind", design.PE_KINDS)
def test_pynq_reads_each_boards_hwh(board, kind):
    parser, ps_vlnv, ctrl_base, addr_bits, pll = EXPECTED[board]
    hwh = _parse(board, parser, kind)
    t = design.target(board)
    assert not hwh.partial and hwh.ps_name == t.ps.cell  # the PS cell was recognised
    ip = hwh.ip_dict
    assert ip[t.ps.cell]["type"] == ps_vlnv
    assert (ip[design.DMA_CELL]["phys_addr"], ip[design.DMA_CELL]["addr_range"]) == (
        ctrl_base,
        0x1_0000,
    )
    kernel = ip[design.KERNEL_CELL]
    assert (kernel["phys_addr"], kernel["type"]) == (ctrl_base + 0x1_0000, design.kernel_vlnv(kind))
    params = ip[design.DMA_CELL]["parameters"]
    assert int(params["c_addr_width"]) == addr_bits
    assert int(params["c_m_axis_mm2s_tdata_width"]) == int(params["c_m_axi_mm2s_data_width"]) == 128
    clock = hwh.clock_dict[0]
    assert clock["enable"] == 1 and all(hwh.clock_dict[i]["enable"] == 0 for i in (1, 2, 3))
    made = pll / (clock["divisor0"] * clock["divisor1"])  # what pynq's Clocks would set
    assert made == pytest.approx(t.pl_clock_mhz)
    assert float(ip[t.ps.cell]["parameters"][t.ps.clock_param]) == pytest.approx(made)


def test_the_other_familys_parser_finds_no_ps():
    """The family matters: a PS7 .hwh read as a ZU+ one (or the reverse) has no PS."""
    assert _parse("pynq-z2", "_HWHUltrascale").ps_name == ""
    assert _parse("zcu102", "_HWHZynq").ps_name == ""


@pytest.mark.parametrize("board", sorted(EXPECTED))
def test_simulated_board_loads_its_design_through_pynq(board):
    """``pynq.Overlay(download=False)`` on the simulated board: the nbq kernel driver and
    pynq's DMA driver bound to the cells, at the board's addresses (no kernel is run)."""
    import pynq

    from pynq_nbq.kernel.driver import NbqConvIP
    from pynq_nbq.sim.board import SimBoard

    sim = SimBoard(board)
    for kind in design.PE_KINDS:
        ol = sim.load(kind)
        assert isinstance(ol.kernel, NbqConvIP) and ol.kernel.kind == kind
        assert isinstance(ol.dma, pynq.lib.dma.DMA)
        assert ol.dma.buffer_max_size == (1 << 26) - 1
        assert ol.kernel.mmio.base_addr == EXPECTED[board][2] + 0x1_0000
    with pytest.raises(ValueError, match="unknown board 'zcu106'"):
        SimBoard("zcu106")
