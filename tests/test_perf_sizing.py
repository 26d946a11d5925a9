"""Kernel builds sized per board and per network (issue 26): pynq_nbq/perfmodel/sizing.py,
pynq_nbq/kernel/builds.py, and ``nbq perf`` on every shipped board.

The committed table of default builds must be what the model picks today; every board's
default vpe and svpe build must fit (<= 70 % LUT at the pessimistic cost, <= 80 % BRAM18
and URAM, DSP within the part; vpe within the paper's 768 DSPs capped at the part's) and
be the largest that does; the kernel model runs at the board's PL clock with the yosys
costs of the board's family (xc7 for the PYNQ-Z2).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pynq_nbq import cli
from pynq_nbq.kernel import builds
from pynq_nbq.perfmodel import (
    available_boards,
    builtin_network,
    costs,
    kernel,
    load_board,
    sizing,
    storage,
)
from pynq_nbq.perfmodel.constants import PAPER_DSP_BUDGET
from pynq_nbq.perfmodel.layers import layers_from_list

BOARDS = ("zcu102", "zcu104", "kv260", "pynq-z2")


def test_committed_table_is_the_models_choice():
    """kernel/builds.py's TABLE (what the HLS flow and the simulated board take) is what
    the model picks for the embedded networks; regenerate it with
    ``python3 -m pynq_nbq.perfmodel.sizing --source``."""
    assert set(builds.TABLE) == set(available_boards()) >= set(BOARDS)
    model = sizing.default_table()
    for board, table in model.items():
        for name in kernel.BUILDS:
            assert builds.TABLE[board][name] == table[name], (board, name)
        assert builds.DEFAULT_SVPE[board] == table["svpe"].build_name


def _budget(kind: str, board) -> int:
    return min(PAPER_DSP_BUDGET, board.dsp) if kind == "vpe" else board.dsp


@pytest.mark.parametrize("board_name", BOARDS)
@pytest.mark.parametrize("kind", ["vpe", "svpe"])
def test_default_builds_fit_and_are_the_largest_that_do(board_name, kind):
    board = load_board(board_name)
    kb = builds.build(board_name, kind)
    fam = kernel.family_of(board)
    res = kernel.build_resources(
        kb.build_name,
        kb.info.pm,
        kb.info.pn,
        kb.info.limits,
        frozenset(kb.uram),
        fam,
        frozenset(kb.lutram),
    )
    assert res["lut_pessimistic"] <= 0.70 * board.lut
    assert res["bram18"] <= 0.80 * board.bram18
    assert res["uram"] <= 0.80 * board.uram
    assert res["dsp"] <= _budget(kind, board)
    for pm in kernel.PM_CHOICES:
        for pn in kernel.PN_CHOICES:
            if pm * pn <= kb.info.pm * kb.info.pn or pm > kb.info.max_cin or pn > kb.info.max_cout:
                continue
            for uram in kernel.uram_options(board):
                for lut in kernel.lutram_options():  # no small RAM in LUTRAM lets more fit
                    bigger = kernel.build_resources(
                        kb.build_name, pm, pn, kb.info.limits, uram, fam, lut
                    )
                    assert not kernel.fits(bigger, board, _budget(kind, board)), (pm, pn, lut)


def test_maxima_come_from_the_embedded_networks():
    nets = sizing.embedded_networks()
    assert {pe for pe, _bits, _layers in nets.values()} == {"svpe", "vpe"}
    engine = [lay for _pe, _b, layers in nets.values() for lay in sizing.engine_layers(layers)]
    lim = sizing.network_limits([layers for _pe, _b, layers in nets.values()])
    assert lim["max_cin"] == max(lay.in_channels for lay in engine)
    assert lim["max_cout"] == max(lay.out_channels for lay in engine)
    assert lim["max_w"] == max(lay.in_width for lay in engine)
    for board in BOARDS:
        assert builds.build(board, "vpe").info.limits == lim
    # the svpe default is the narrowest build that runs the embedded svpe bundles (3-bit)
    widest = max(bits for pe, bits, _ in nets.values() if pe == "svpe")
    for board in BOARDS:
        assert builds.build(board, "svpe").build_name == kernel.build_for("svpe", widest)
    # a wider network raises the maxima; one without engine layers is refused
    conv = {"name": "c", "kind": "conv", "out_channels": 8, "kernel": 3, "padding": 1}
    wide = layers_from_list([{**conv, "in_channels": 300, "in_height": 3, "in_width": 2}])
    assert sizing.network_limits([wide]) == {"max_h": 4, "max_w": 4, "max_cin": 300, "max_cout": 8}
    with pytest.raises(ValueError, match="no engine layer"):
        sizing.network_limits([builtin_network("alexnet")[:1]])


def test_max_cout_is_lowered_when_that_fits_more_arrays():
    assert sizing.cout_candidates(384) == [384, 256, 128, 64, 32, 16, 8]
    assert sizing.cout_candidates(10) == [10, 8]
    # nbq-cifar's 1024 output channels do not fit a weight buffer on the KV260: the
    # host cuts them into groups of MAX_COUT
    kb = sizing.size_build("kv260", "svpe3", [builtin_network("nbq-cifar")])
    assert kb.info.max_cin == 1024 and kb.info.max_cout < 1024
    with pytest.raises(ValueError, match="no \\(Pm, Pn\\)"):
        kernel.choose("svpe3", load_board("kv260"), {**kb.info.limits, "max_cout": 1024})


def test_uram_is_counted_and_chosen_where_it_helps():
    assert kernel.uram_for(4096, 72) == 1 and kernel.uram_for(4097, 73) == 4
    assert kernel.uram_for(0, 72) == 0
    lim = {"max_h": 13, "max_w": 13, "max_cin": 256, "max_cout": 384}
    plain = kernel.build_resources("svpe3", 16, 4, lim)
    ur = kernel.build_resources("svpe3", 16, 4, lim, frozenset({"weights"}))
    copies, depth, width = kernel.switchable_shapes("svpe3", 16, 4, lim)["weights"]
    assert ur["uram"] == copies * kernel.uram_for(depth, width) > 0
    assert plain["bram18"] - ur["bram18"] == plain["bram18_parts"]["weights"]
    assert "weights" not in ur["bram18_parts"]
    with pytest.raises(ValueError, match="no URAM switch"):
        kernel.buffers_uram("svpe3", 16, 4, lim, frozenset({"hist"}))
    # no UltraRAM on the ZCU102 or the PYNQ-Z2: never bound there
    assert kernel.uram_options(load_board("pynq-z2")) == [frozenset()]
    assert len(kernel.uram_options(load_board("kv260"))) == 4
    # AlexNet's 384-channel weights on the KV260: the svpe build keeps them in UltraRAM
    kb = sizing.size_build("kv260", "svpe3", [builtin_network("alexnet")])
    assert kb.uram == ("weights",)
    assert builds.URAM_MACROS == {k: m for k, (m, _v) in kernel.URAM_SWITCHES.items()}


def test_lutram_is_counted_as_luts_not_block_ram():
    """A small RAM a build binds to LUTRAM (NBQ_LUTRAM_*) leaves the BRAM18 count and
    joins the itemised LUTs at :func:`storage.lutram_lut` of its shape; an unknown name
    is refused; hist and inbuf are MG = ceil(MAX_CIN / Pm) words deep."""
    lim = {"max_h": 28, "max_w": 28, "max_cin": 128, "max_cout": 128}
    every = frozenset(storage.LUTRAM_SWITCHES)
    assert every == {"hist", "inbuf", "prow"}
    assert storage.LUTRAM_SWITCHES == builds.LUTRAM_MACROS
    shapes = storage.storage_shapes(16, 4, lim)
    assert shapes["hist"] == (6, 8, 16 * 16) and shapes["inbuf"] == (1, 8, 9 * 16 * 16)
    plain = kernel.build_resources("vpe", 16, 4, lim)
    for name in every:
        one = kernel.build_resources("vpe", 16, 4, lim, lutram=frozenset({name}))
        copies, depth, width = shapes[name]
        assert name not in one["bram18_parts"] and one["lutram_bound"] == [name]
        assert plain["bram18"] - one["bram18"] == plain["bram18_parts"][name] > 0
        luts = copies * storage.lutram_lut(depth, width)
        assert one["lut_pessimistic"] - plain["lut_pessimistic"] == luts > 0
        assert one["infra_lut_itemised"] - plain["infra_lut_itemised"] == luts
    # the shallow, wide ones: 112 BRAM18 for hist + inbuf at Pm 16 (48 + 64), 2560 LUTs
    assert plain["bram18_parts"]["hist"] + plain["bram18_parts"]["inbuf"] == 112
    both = kernel.build_resources("vpe", 16, 4, lim, lutram=frozenset({"hist", "inbuf"}))
    assert both["lut_pessimistic"] - plain["lut_pessimistic"] == 6 * 171 + 1536
    with pytest.raises(ValueError, match="no LUTRAM switch"):
        kernel.buffers_bram18("vpe", 16, 4, lim, lutram=frozenset({"wbuf"}))
    assert len(kernel.lutram_options()) == 8 and kernel.lutram_options()[0] == frozenset()


def test_lutram_is_chosen_only_where_it_lets_more_fit(monkeypatch):
    """The sizing binds a small RAM to LUTRAM only when that lets more arrays (or a larger
    MAX_COUT) fit; at a tie the binding with the fewest LUTs (block RAM) stays.  On a part
    short of block RAM and without UltraRAM (the KV260 with 160 BRAM18, no URAM) the
    svpe3 build gets more arrays with a small RAM in LUTRAM than without; nbq-cifar's
    512-channel weight buffer fits the ZCU102's svpe5 build only with inbuf in LUTRAM."""
    import dataclasses

    lim = {"max_h": 28, "max_w": 28, "max_cin": 128, "max_cout": 128}
    short = dataclasses.replace(load_board("kv260"), bram18=160, uram=0)
    pm, pn, _uram, lut = kernel.choose("svpe3", short, lim)
    assert lut and lut <= {"hist", "inbuf", "prow"}
    assert kernel.fits(kernel.build_resources("svpe3", pm, pn, lim, lutram=lut), short, None)
    in_bram = kernel.build_resources("svpe3", pm, pn, lim)  # the same build in block RAM
    assert not kernel.fits(in_bram, short, None)
    kb = sizing.size_build("zcu102", "svpe5", [builtin_network("nbq-cifar")])
    assert (kb.info.pm, kb.info.pn, kb.info.max_cout, kb.lutram) == (16, 4, 512, ("inbuf",))
    assert kb.defines()["NBQ_LUTRAM_INBUF"] == 1 and kb.defines()["NBQ_LUTRAM_HIST"] == 0
    # a tie: the block-RAM binding, though LUTRAM would fit as many arrays
    assert kernel.choose("svpe3", load_board("kv260"), lim)[3] == frozenset()
    # without the switches: fewer arrays on the short part, a smaller MAX_COUT on the ZCU102
    monkeypatch.setattr(kernel, "lutram_options", lambda: [frozenset()])
    pm0, pn0, _u, _l = kernel.choose("svpe3", short, lim)
    assert pm0 * pn0 < pm * pn
    old = sizing.size_build("zcu102", "svpe5", [builtin_network("nbq-cifar")])
    assert (old.info.pm, old.info.pn) == (16, 4) and old.info.max_cout < 512 and not old.lutram


def test_defines_and_their_command():
    d = builds.defines("kv260", "svpe")
    kb = builds.build("kv260", "svpe")
    i = kb.info
    assert d["NBQ_PM"] == i.pm and d["NBQ_PN"] == i.pn and d["NBQ_CODE_BITS"] == i.code_bits
    assert d["NBQ_MAX_CIN"] == i.max_cin and d["NBQ_MAX_W"] == i.max_w
    assert {d["NBQ_URAM_LINES"], d["NBQ_URAM_WEIGHTS"]} <= {0, 1}
    for name, macro in builds.LUTRAM_MACROS.items():  # every LUTRAM switch, 0 or 1
        assert d[macro] == int(name in kb.lutram)
    assert "NBQ_CODE_BITS" not in builds.defines("pynq-z2", "vpe")
    assert builds.defines("zcu102", "svpe5")["NBQ_CODE_BITS"] == 5
    with pytest.raises(ValueError, match="known boards"):
        builds.defines("zcu106", "vpe")
    with pytest.raises(ValueError, match="known kinds"):
        builds.defines("kv260", "mac")
    out = subprocess.run(
        [sys.executable, "-m", "pynq_nbq.kernel.builds", "defines", "pynq-z2", "svpe"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [f"{k}={v}" for k, v in builds.defines("pynq-z2", "svpe").items()]


def test_xc7_costs_for_the_zynq_7000_part():
    """The PYNQ-Z2's builds are costed from the `synth_xilinx -family xc7` designs: yosys
    packs the vpe multiply-accumulate into the DSP48E1 there (fewer LUTs than xcup)."""
    z2 = load_board("pynq-z2")
    assert kernel.family_of(z2) == "xc7" and kernel.family_of(load_board("kv260")) == "xcup"
    rep = costs.load_report()["designs"]
    for name in ("vpe_lane_pm8", "svpe_lane_nb3_pm8", "requant"):
        assert rep[f"{name}_xc7"]["family"] == "xc7" and "family" not in rep[name]
        assert rep[f"{name}_xc7"]["params"] == rep[name]["params"]
    assert costs.cells("vpe_lane_pm8", "xc7")["lut"] < costs.cells("vpe_lane_pm8")["lut"]
    assert costs.cells("vpe_lane_pm8", "xc7")["dsp"] == 72
    a = kernel.build_resources("vpe", 4, 4, family="xc7")
    b = kernel.build_resources("vpe", 4, 4, family="xcup")
    assert a["family"] == "xc7" and a["arith_lut"] != b["arith_lut"]
    with pytest.raises(ValueError, match="family"):
        costs.cells("requant", "xc6")


@pytest.mark.parametrize("board_name", BOARDS)
def test_nbq_perf_gives_a_vpe_and_an_svpe_build_on_every_board(board_name, capsys):
    """Issue 26's acceptance command: `nbq perf --network nbq-fmnist --board B --batch 64`
    prints a VPE and an SVPE build that fit and SVPE/VPE (modelled), the ratio of the
    two modelled times; the same in --json.  The kernel runs at the board's PL clock."""
    board = load_board(board_name)
    args = ["perf", "--network", "nbq-fmnist", "--board", board_name, "--batch", "64"]
    assert cli.main([*args, "--json"]) == 0
    k = json.loads(capsys.readouterr().out)["kernel_model"]
    assert "error" not in k, k.get("error")
    assert k["clock_mhz"] == pytest.approx(board.kernel_clock_mhz)
    by_name = {b["build"]: b for b in k["builds"]}
    for name in (k["vpe_build"], k["svpe_build"]):
        b = by_name[name]
        assert b["lut_pessimistic"] <= 0.70 * board.lut and b["bram18"] <= 0.80 * board.bram18
        assert b["uram"] <= 0.80 * board.uram
        assert b["dsp"] <= _budget(b["pe"], board)
    t = k["fpga_time_us"]
    assert t["vpe"] > 0 and t["svpe"] > 0
    assert k["svpe_over_vpe"] == pytest.approx(t["vpe"] / t["svpe"], rel=1e-3)
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"SVPE/VPE on {board_name} (modelled, vpe vs {k['svpe_build']}): " in out
    assert f"{k['svpe_over_vpe']:.2f}x" in out
    assert f"-family {kernel.family_of(board)}" in out


def test_kernel_time_has_the_boards_bandwidth_as_a_floor():
    """The streaming kernel's time per layer is at least its DMA words over the board's PL
    bandwidth (the PYNQ-Z2's 16-bit DDR3: 1.47 GB/s); on a board with a starved port
    every layer is bound by it."""
    import dataclasses

    layers = builtin_network("nbq-fmnist")
    z2 = load_board("pynq-z2")
    kb = builds.build("pynq-z2", "vpe")
    run = kernel.model_kernel(layers, z2, "vpe", 16, limits=kb.info.limits, batch=64)
    assert run["clock_mhz"] == 125 and run["pl_bandwidth_gbps"] == pytest.approx(1.47)
    for row in run["layers"]:
        assert row["time_us"] >= row["ddr_us"] > 0
        assert row["time_us"] >= row["cycles"] / run["clock_mhz"] - 1e-9
        assert (row["bound"] == "ddr") == (row["ddr_us"] > row["cycles"] / run["clock_mhz"])
    slow = dataclasses.replace(z2, pl_bandwidth_override_gbps=0.01)
    starved = kernel.model_kernel(layers, slow, "vpe", 16, limits=kb.info.limits, batch=64)
    assert all(r["bound"] == "ddr" for r in starved["layers"])
    assert starved["fpga_time_us"] > 10 * run["fpga_time_us"]


def test_docs_quote_the_models_tables_as_they_are_today():
    """docs/hls.md "Builds sized per board" quotes `python3 -m pynq_nbq.perfmodel.sizing`
    (every board's defaults) and `... --next` (what the next doubling of each default
    build would need with its small RAMs in LUTRAM) verbatim."""
    from pathlib import Path

    table = sizing.default_table()
    doc = (Path(__file__).resolve().parents[1] / "docs" / "hls.md").read_text("utf-8")
    assert sizing.table_markdown(table) in doc
    nxt = sizing.next_markdown(table)
    assert nxt in doc
    assert len(nxt.splitlines()) == 2 + 4 * len(table)  # two doublings of vpe and svpe
