"""The overlay build scripts, run under tclsh with stub Vivado / Vitis HLS commands.

No Vivado here: ``tests/vivado_stub.tcl`` records every call ``overlay/build_overlay.tcl``
makes, and these tests check the recorded block design against
``pynq_nbq/kernel/design.py`` (the description the fpga driver binds to and the simulated
board's ``.hwh`` comes from), so the Tcl cannot drift from the driver.  ``hls/run_hls.tcl``
is checked the same way for the part, clock and the exported IP's VLNV.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pynq_nbq.kernel import design

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "tests" / "vivado_stub.tcl"
UTIL_RPT = ROOT / "tests" / "fixtures" / "utilization_2022.rpt"
TCLSH = shutil.which("tclsh")

pytestmark = pytest.mark.skipif(TCLSH is None, reason="tclsh not installed (Debian: tcl)")

# Sources the stub, runs SCRIPT with ARGS as if Vivado did, writes the call log, exits 1 on
# a Tcl error.  `exit` is caught so run_hls.tcl's final `exit` does not skip the log.
RUNNER = """
set script [lindex $argv 0]
set argv [lrange $argv 1 end]
set argc [llength $argv]
source {stub}
rename exit stub_real_exit
proc exit {{args}} {{}}
set code [catch {{source $script}} err]
stub_write_log [expr {{$code ? $err : ""}}]
stub_real_exit $code
"""


def run_tcl(tmp_path: Path, script: Path, args: list[str], env: dict | None = None) -> dict:
    """Run ``script`` under tclsh with the stubs; returns {"rc", "error", "calls"}."""
    runner = tmp_path / "runner.tcl"
    runner.write_text(RUNNER.format(stub=STUB))
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.json"
    full_env = {
        **os.environ,
        "STUB_DIR": str(stub_dir),
        "STUB_LOG": str(log),
        "STUB_UTIL_RPT": str(UTIL_RPT),
        **(env or {}),
    }
    proc = subprocess.run(
        [TCLSH, str(runner), str(script), *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert log.is_file(), f"no call log; tclsh said: {proc.stdout}{proc.stderr}"
    result = json.loads(log.read_text())
    result["rc"] = proc.returncode
    return result


def fake_ip_repo(path: Path, vlnv: str) -> Path:
    """A directory with the component.xml an HLS export of ``vlnv`` would hold."""
    path.mkdir(parents=True)
    vendor, library, name, version = vlnv.split(":")
    (path / "component.xml").write_text(
        f"<spirit:component><spirit:vendor>{vendor}</spirit:vendor>"
        f"<spirit:library>{library}</spirit:library><spirit:name>{name}</spirit:name>"
        f"<spirit:version>{version}</spirit:version></spirit:component>\n"
    )
    return path


def build_overlay(tmp_path: Path, kind: str, board: str, env: dict | None = None, repo=None):
    design_tcl = tmp_path / "design.tcl"
    design.write_tcl(design_tcl, kind, board)
    if repo is None:
        repo = fake_ip_repo(tmp_path / "ip", design.kernel_vlnv(kind))
    out = tmp_path / "out"
    script = ROOT / "overlay" / "build_overlay.tcl"
    result = run_tcl(tmp_path, script, [str(design_tcl), str(repo), str(out), "2"], env)
    return result, out


def calls_of(result: dict, name: str) -> list[list[str]]:
    return [c[1:] for c in result["calls"] if c[0] == name]


def config_of(result: dict, cell: str) -> dict[str, str]:
    """CONFIG.* properties set on ``cell``, prefix stripped."""
    return {
        k.removeprefix("CONFIG."): v
        for k, v, obj in calls_of(result, "set_property")
        if k.startswith("CONFIG.") and obj == f"/{cell}"
    }


#: What each PS family's block design must ask Vivado for, written out here (not read
#: from design.py) so that a change of the description has to change the test too.
EXPECTED_PS = {
    "ps8": {
        "vlnv": "xilinx.com:ip:zynq_ultra_ps_e:3.4",
        "cell": "zynq_ultra_ps_e_0",
        "ctrl_interconnect": "ps8_0_axi_periph",
        "rule": "xilinx.com:bd_rule:zynq_ultra_ps_e",
        "ctrl": "M_AXI_HPM0_FPD",
        "data": "S_AXI_HP0_FPD",
        "clock": "pl_clk0",
        "reset": "pl_resetn0",
        "port_clocks": {"maxihpm0_fpd_aclk", "saxihp0_fpd_aclk"},
        "hp_width": ("PSU__SAXIGP2__DATA_WIDTH", "128"),
        "clock_param": "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ",
        "actual": "PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ",
        "ctrl_base": 0xA000_0000,
        "addr_width": "64",
    },
    "ps7": {
        "vlnv": "xilinx.com:ip:processing_system7:5.5",
        "cell": "processing_system7_0",
        "ctrl_interconnect": "ps7_0_axi_periph",
        "rule": "xilinx.com:bd_rule:processing_system7",
        "ctrl": "M_AXI_GP0",
        "data": "S_AXI_HP0",
        "clock": "FCLK_CLK0",
        "reset": "FCLK_RESET0_N",
        "port_clocks": {"M_AXI_GP0_ACLK", "S_AXI_HP0_ACLK"},
        "hp_width": ("PCW_S_AXI_HP0_DATA_WIDTH", "64"),
        "clock_param": "PCW_FPGA0_PERIPHERAL_FREQMHZ",
        "actual": "PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ",
        "ctrl_base": 0x4000_0000,
        "addr_width": "32",
    },
}
#: The boards' families and fabric clocks (MHz), as the board files give them.
EXPECTED_BOARDS = {
    "zcu102": ("ps8", "187.5"),
    "zcu104": ("ps8", "187.5"),
    "kv260": ("ps8", "187.5"),
    "pynq-z2": ("ps7", "125"),
}


def test_every_board_has_a_design_and_the_board_files_agree():
    from pynq_nbq.perfmodel.boards import available_boards, load_board

    assert sorted(design.BOARD_TARGETS) == sorted(EXPECTED_BOARDS) == available_boards()
    for name, t in design.BOARD_TARGETS.items():
        b = load_board(name)  # the performance model's reading of the same file
        assert (t.part, t.family) == (b.part, b.ps_family)
        assert t.pl_clock_mhz == pytest.approx(b.kernel_clock_mhz)
        assert (t.family, str(design.describe("svpe", name)["pl_clock_mhz"])) == (
            EXPECTED_BOARDS[name]
        )
    assert design.PL_CLOCK_MHZ == 187.5  # the default board's: 1500 MHz IOPLL / 8
    with pytest.raises(ValueError, match="unknown board 'zcu106'"):
        design.describe("svpe", "zcu106")


@pytest.mark.parametrize("board", sorted(design.BOARD_TARGETS))
@pytest.mark.parametrize("kind", design.PE_KINDS)
def test_block_design_matches_design_py(tmp_path, kind, board):
    result, out = build_overlay(tmp_path, kind, board)
    assert result["rc"] == 0 and result["error"] == "", result["error"]
    d = design.describe(kind, board)
    t = design.target(board)
    family, clock = EXPECTED_BOARDS[board]
    want = EXPECTED_PS[family]
    cells = d["cells"]
    assert (cells["ps"], cells["ctrl_interconnect"]) == (want["cell"], want["ctrl_interconnect"])

    # project: the board's part and board part, the HLS export as IP repository
    (project,) = calls_of(result, "create_project")
    assert project[project.index("-part") + 1] == t.part
    props = {(k, obj): v for k, v, obj in calls_of(result, "set_property")}
    # the latest version of the board part the installation carries (the stub has two
    # zcu102 versions, 3.3 and 3.4: 3.4 is taken)
    assert props[("board_part", "project")] == t.board_part_full
    assert calls_of(result, "get_board_parts") == [
        ["-quiet", "-latest_file_version", t.board_part + ":*"]
    ]
    assert props[("ip_repo_paths", "project")] == str(tmp_path / "ip")

    # cells and their IP
    created = dict((name, vlnv) for vlnv, name in calls_of(result, "create_bd_cell"))
    assert created == {
        want["cell"]: want["vlnv"],
        cells["kernel"]: design.kernel_vlnv(kind),
        cells["dma"]: design.DMA_VLNV,
        cells["reset"]: design.RESET_VLNV,
        cells["ctrl_interconnect"]: design.INTERCONNECT_VLNV,
        cells["data_interconnect"]: design.INTERCONNECT_VLNV,
    }

    # the PS: its family's board preset first, then our ports, the HP port's width and the
    # fabric clock, then the clock it makes read back
    (automation,) = calls_of(result, "apply_bd_automation")
    assert automation[:2] == ["-rule", want["rule"]] and automation[-1] == f"/{want['cell']}"
    assert "apply_board_preset" in " ".join(automation)
    assert ("FIXED_IO, DDR" in " ".join(automation)) == (family == "ps7")
    ps_config = config_of(result, want["cell"])
    assert ps_config == {k: str(v) for k, v in d["ps"]["parameters"].items()}
    assert ps_config[want["clock_param"]] == clock
    assert ps_config[want["hp_width"][0]] == want["hp_width"][1]
    assert calls_of(result, "get_property") == [[f"CONFIG.{want['actual']}", f"/{want['cell']}"]]

    # the DMA: simple mode, 26-bit length register, 128-bit streams and memory map on
    # every board, 256-beat bursts, the PS's address width
    dma_config = config_of(result, cells["dma"])
    assert dma_config == {k: str(v) for k, v in design.dma_parameters(board).items()}
    assert dma_config["c_include_sg"] == "0" and dma_config["c_sg_length_width"] == "26"
    assert dma_config["c_m_axis_mm2s_tdata_width"] == "128"
    assert dma_config["c_m_axi_mm2s_data_width"] == dma_config["c_m_axi_s2mm_data_width"] == "128"
    assert dma_config["c_mm2s_burst_size"] == dma_config["c_s2mm_burst_size"] == "256"
    assert dma_config["c_addr_width"] == want["addr_width"]
    assert config_of(result, cells["ctrl_interconnect"]) == {"NUM_SI": "1", "NUM_MI": "2"}
    assert config_of(result, cells["data_interconnect"]) == {"NUM_SI": "2", "NUM_MI": "1"}

    # interfaces: AXI-Lite from the control master, the stream loop, DMA data to the HP port
    ps, k, dma = want["cell"], cells["kernel"], cells["dma"]
    ctrl, data = cells["ctrl_interconnect"], cells["data_interconnect"]
    kp = d["kernel"]
    assert {tuple(c) for c in calls_of(result, "connect_bd_intf_net")} == {
        (f"/{ps}/{want['ctrl']}", f"/{ctrl}/S00_AXI"),
        (f"/{ctrl}/M00_AXI", f"/{dma}/S_AXI_LITE"),
        (f"/{ctrl}/M01_AXI", f"/{k}/{kp['ctrl_port']}"),
        (f"/{dma}/M_AXIS_MM2S", f"/{k}/{kp['in_port']}"),
        (f"/{k}/{kp['out_port']}", f"/{dma}/S_AXIS_S2MM"),
        (f"/{dma}/M_AXI_MM2S", f"/{data}/S00_AXI"),
        (f"/{dma}/M_AXI_S2MM", f"/{data}/S01_AXI"),
        (f"/{data}/M00_AXI", f"/{ps}/{want['data']}"),
    }

    # one clock: the fabric clock drives every cell and both PS ports; the reset block
    # drives every reset
    nets = {c[0]: c[1:] for c in calls_of(result, "connect_bd_net")}
    assert set(nets) == {
        f"/{ps}/{want['clock']}",
        f"/{ps}/{want['reset']}",
        f"/{cells['reset']}/interconnect_aresetn",
        f"/{cells['reset']}/peripheral_aresetn",
    }
    clocked = nets[f"/{ps}/{want['clock']}"]
    assert {p.split("/")[1] for p in clocked} == set(cells.values())
    assert {p.split("/")[2] for p in clocked if p.startswith(f"/{ps}/")} == want["port_clocks"]
    assert f"/{k}/ap_clk" in clocked
    assert nets[f"/{ps}/{want['reset']}"] == [f"/{cells['reset']}/ext_reset_in"]
    reset_sinks = nets[f"/{cells['reset']}/peripheral_aresetn"]
    assert f"/{k}/ap_rst_n" in reset_sinks and f"/{dma}/axi_resetn" in reset_sinks

    # address map: the register windows in the PS's control window, then the rest
    addresses = calls_of(result, "assign_bd_address")
    explicit = {
        seg.split("/")[1]: (space, int(off, 16), int(rng, 16))
        for space, seg, off, rng in (a for a in addresses if a)
    }
    base = want["ctrl_base"]
    assert explicit == {
        cells["dma"]: (f"/{ps}/Data", base, 0x1_0000),
        cells["kernel"]: (f"/{ps}/Data", base + 0x1_0000, 0x1_0000),
    }
    assert explicit == {c: (f"/{ps}/Data", *span) for c, span in design.address_map(board).items()}
    assert [] in addresses

    # order: validate, save, then runs through write_bitstream
    names = [c[0] for c in result["calls"]]
    assert names.index("validate_bd_design") < names.index("save_bd_design")
    assert names.index("save_bd_design") < names.index("launch_runs")
    runs = calls_of(result, "launch_runs")
    assert runs[0][0] == "synth_1" and runs[1][:3] == ["impl_1", "-to_step", "write_bitstream"]

    # outputs: <name>.bit and .hwh with the same base name, the JSON report
    name = design.bitstream_name(kind)
    assert (out / f"{name}.bit").is_file() and (out / f"{name}.hwh").is_file()
    report = json.loads((out / f"{name}_report.json").read_text())
    assert report["part"] == t.part and report["board"] == board
    assert report["pl_clock_mhz"] == pytest.approx(t.pl_clock_mhz)
    assert report["timing_ns"]["wns"] == pytest.approx(0.1)
    assert report["utilization"]["CLB LUTs"] == {"used": 12345, "available": 274080}
    assert report["utilization"]["DSPs"] == {"used": 7, "available": 2520}
    assert report["utilization"]["Block RAM Tile"] == {"used": 100, "available": 912}


@pytest.mark.parametrize("board", ["zcu102", "pynq-z2"])
def test_a_clock_the_ps_cannot_make_stops_the_build(tmp_path, board):
    """Vivado reports the clock the PS makes (PLL / integer divisors); one that is not the
    design's stops the build before synthesis, naming both."""
    result, out = build_overlay(tmp_path, "svpe", board, env={"STUB_ACT_MHZ": "200.000000"})
    assert result["rc"] == 1
    clock = design.describe("svpe", board)["pl_clock_mhz"]
    assert "fabric clock of 200.000000 MHz" in result["error"]
    assert f"not the {clock} MHz" in result["error"]
    assert not calls_of(result, "launch_runs")


@pytest.mark.parametrize("slack", [{"STUB_WNS": "-0.052"}, {"STUB_WHS": "-0.003"}])
def test_negative_slack_fails_the_build(tmp_path, slack):
    result, out = build_overlay(tmp_path, "svpe", "zcu102", env=slack)
    assert result["rc"] == 1
    assert "timing not met at 187.5 MHz" in result["error"]
    assert not (out / "nbq_svpe.bit").exists() and not (out / "nbq_svpe.hwh").exists()
    assert (out / "nbq_svpe_report.json").is_file()  # the reports are there to read


def test_missing_kernel_ip_names_the_vlnv(tmp_path):
    wrong = fake_ip_repo(tmp_path / "ip", design.kernel_vlnv("vpe"))  # svpe build, vpe IP
    result, _ = build_overlay(tmp_path, "svpe", "zcu102", repo=wrong)
    assert result["rc"] == 1
    assert design.kernel_vlnv("svpe") in result["error"] and "IP_REPO" in result["error"]
    assert not calls_of(result, "create_bd_cell")


def test_design_tcl_refuses_unsafe_words():
    with pytest.raises(ValueError, match="plain word"):
        design._tcl_word("a b; exec rm")


@pytest.mark.parametrize("board", sorted(design.BOARD_TARGETS))
@pytest.mark.parametrize("kind", design.PE_KINDS)
def test_hls_export_matches_design_py(tmp_path, kind, board):
    """hls/run_hls.tcl exports the VLNV the block design instantiates, for the board's part
    and fabric clock (as overlay/Makefile passes them)."""
    t = design.target(board)
    env = {"NBQ_PART": t.part, "NBQ_PERIOD_NS": str(design.pl_period_ns(board))}
    result = run_tcl(tmp_path, ROOT / "hls" / "run_hls.tcl", [kind, "csynth export"], env)
    assert result["rc"] == 0 and result["error"] == "", result["error"]
    assert calls_of(result, "set_part") == [[t.part]]
    (clock,) = calls_of(result, "create_clock")
    assert float(clock[clock.index("-period") + 1]) == pytest.approx(1000 / t.pl_clock_mhz)
    (export,) = calls_of(result, "export_design")
    opt = {export[i]: export[i + 1] for i in range(len(export) - 1) if export[i].startswith("-")}
    vlnv = ":".join((opt["-vendor"], opt["-library"], opt["-ipname"], opt["-version"]))
    assert vlnv == design.kernel_vlnv(kind)
    assert calls_of(result, "csynth_design") == [[]] and not calls_of(result, "csim_design")


@pytest.mark.parametrize("board", ["zcu104", "pynq-z2"])
def test_makefile_runs_hls_then_vivado_for_the_board(tmp_path, board):
    """The board's part and fabric clock period reach the HLS step, its design the Vivado
    step (187.5 MHz -> 5.333333 ns on the ZU+ boards, 125 MHz -> 8.0 ns on the PYNQ-Z2)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    proc = subprocess.run(
        [make, "-n", "-C", str(ROOT / "overlay"), f"BOARD={board}", "KINDS=vpe"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = proc.stdout
    hls_at, vivado_at = text.index("vitis_hls"), text.index("vivado -mode batch")
    assert hls_at < vivado_at
    assert f"NBQ_PART={design.target(board).part}" in text
    period = {"zcu104": "5.333333", "pynq-z2": "8.0"}[board]
    assert f"NBQ_PERIOD_NS={period} " in text
    assert "-tclargs vpe" in text and f"design tcl vpe {board}" in text
    assert "build_overlay.tcl" in text


def test_board_part_missing_from_the_installation_stops_the_build(tmp_path):
    """A Vivado without the board's files: the build stops naming the board part."""
    result, _ = build_overlay(tmp_path, "svpe", "zcu102", {"STUB_BOARD_PARTS": ""})
    assert result["rc"] != 0
    assert "board part xilinx.com:zcu102:part0 is not installed" in result["error"]
    (tmp_path / "old").mkdir()
    older, _ = build_overlay(
        tmp_path / "old", "svpe", "zcu102", {"STUB_BOARD_PARTS": "xilinx.com:zcu102:part0:3.3"}
    )
    assert older["rc"] == 0, older["error"]
    props = {(k, obj): v for k, v, obj in calls_of(older, "set_property")}
    assert props[("board_part", "project")] == "xilinx.com:zcu102:part0:3.3"


def test_hls_clock_comes_from_design_py_without_the_makefile(tmp_path):
    """run_hls.tcl run alone asks design.py for the period (no NBQ_PERIOD_NS)."""
    env = {k: v for k, v in os.environ.items() if k != "NBQ_PERIOD_NS"}
    result = run_tcl(tmp_path, ROOT / "hls" / "run_hls.tcl", ["svpe", "csynth"], env)
    assert result["rc"] == 0, result["error"]
    (clock,) = calls_of(result, "create_clock")
    assert float(clock[clock.index("-period") + 1]) == pytest.approx(1000 / 187.5)
    assert design.pl_period_ns() == pytest.approx(1000 / design.PL_CLOCK_MHZ)


@pytest.mark.parametrize("bits", ["3", "5"])
def test_svpe_code_width_reaches_the_hls_build(tmp_path, bits):
    """NBQ_CODE_BITS (overlay/Makefile's CODE_BITS) selects the svpe build's code width:
    it reaches the svpe kernel's and testbench's cflags; the vpe kernel has no such width."""
    env = {**os.environ, "NBQ_CODE_BITS": bits}
    for kind in design.PE_KINDS:
        (tmp_path / kind).mkdir()
        result = run_tcl(tmp_path / kind, ROOT / "hls" / "run_hls.tcl", [kind, "csynth"], env)
        assert result["rc"] == 0, result["error"]
        flags = [" ".join(c) for c in calls_of(result, "add_files")]
        assert len(flags) == 2
        has = [f"-DNBQ_CODE_BITS={bits}" in f for f in flags]
        assert has == ([True, True] if kind == "svpe" else [False, False]), flags


def test_makefile_builds_the_3_bit_svpe_kernel_by_default():
    """The embedded model is 3-bit: `make` builds the (32, 8) 3-bit svpe kernel unless told
    CODE_BITS=5 (n <= 5 models)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    for extra, bits in (([], "3"), (["CODE_BITS=5"], "5")):
        text = subprocess.run(
            [make, "-n", "-C", str(ROOT / "overlay"), "BOARD=zcu102", "KINDS=svpe", *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert f"NBQ_CODE_BITS={bits}" in text


# --- the board's kernel build (issue 26: pynq_nbq/kernel/builds.py) -----------------------------
def _make_n(*args: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    return subprocess.run(
        [make, "-n", "-C", str(ROOT / "overlay"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def _words(defines: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in defines.items())


def test_makefile_passes_each_boards_build_defines_to_the_hls_flow():
    """`make -n -C overlay BOARD=<b>` hands run_hls.tcl the board's build of each kind
    (Pm, Pn, buffer maxima, URAM switches, svpe code width) from kernel/builds.py; with
    CODE_BITS=5 the svpe build is the 5-bit one."""
    from pynq_nbq.kernel import builds

    for board in builds.TABLE:
        text = _make_n(f"BOARD={board}")
        for kind in ("svpe", "vpe"):
            want = _words(builds.defines(board, "svpe3" if kind == "svpe" else kind))
            assert f'NBQ_BUILD_DEFINES_{kind.upper()}="{want}"' in text, (board, kind)
    text = _make_n("BOARD=kv260", "KINDS=svpe", "CODE_BITS=5")
    assert f'NBQ_BUILD_DEFINES_SVPE="{_words(builds.defines("kv260", "svpe5"))}"' in text


def test_run_hls_passes_the_build_defines_to_kernel_testbench_and_vectors(tmp_path):
    """run_hls.tcl turns NBQ_BUILD_DEFINES_<KIND> into -D flags of the kernel and the
    testbench and into gen_vectors.py's --pm/--pn/--max-*/--code-bits (a stand-in python3
    records them); a malformed word stops the script naming it."""
    from pynq_nbq.kernel import builds

    bindir = tmp_path / "bin"
    bindir.mkdir()
    argv_log = tmp_path / "python_argv.txt"
    fake = bindir / "python3"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {argv_log}\n')
    fake.chmod(0o755)
    defs = builds.defines("kv260", "svpe")
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "NBQ_PERIOD_NS": "5.333333",
        "NBQ_CODE_BITS": "5",  # the build's own width wins
        "NBQ_BUILD_DEFINES_SVPE": _words(defs),
    }
    (tmp_path / "run").mkdir()
    result = run_tcl(tmp_path / "run", ROOT / "hls" / "run_hls.tcl", ["svpe", "csim csynth"], env)
    assert result["rc"] == 0, result["error"]
    flags = [" ".join(c) for c in calls_of(result, "add_files")]
    assert len(flags) == 2
    for f in flags:
        for k, v in defs.items():
            assert f" -D{k}={v}" in f, (k, f)
        assert "-DNBQ_CODE_BITS=5" not in f
    args = argv_log.read_text().split()
    want = {
        "--pm": defs["NBQ_PM"],
        "--pn": defs["NBQ_PN"],
        "--max-w": defs["NBQ_MAX_W"],
        "--max-h": defs["NBQ_MAX_H"],
        "--max-cin": defs["NBQ_MAX_CIN"],
        "--max-cout": defs["NBQ_MAX_COUT"],
        "--code-bits": defs["NBQ_CODE_BITS"],
    }
    for opt, value in want.items():
        assert args[args.index(opt) + 1] == str(value), opt
    bad = {**env, "NBQ_BUILD_DEFINES_SVPE": "NBQ_PM=8 -O3"}
    (tmp_path / "bad").mkdir()
    result = run_tcl(tmp_path / "bad", ROOT / "hls" / "run_hls.tcl", ["svpe", "csynth"], bad)
    assert result["rc"] != 0 and "'-O3' is not NBQ_NAME=integer" in result["error"]
