"""The ZCU102 performance and resource model (pynq_nbq.perfmodel) and ``nbq perf``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from importlib import resources

import pytest

from pynq_nbq import cli
from pynq_nbq.perfmodel import (
    Layer,
    array_cost,
    available_boards,
    board_from_dict,
    builtin_network,
    choose_parallelism,
    engine_takes,
    estimate_energy_per_image,
    fabric_reserve,
    layers_from_list,
    layers_from_manifest,
    load_board,
    model_network,
)
from pynq_nbq.perfmodel import equations as eq
from pynq_nbq.perfmodel.constants import PAPER_STATIC_W, TABLE8_POWER_W

F = 200e6
#: The paper's model as published: literal Eq. 36, Eq. 38 bandwidth, DSP limits only.
PAPER = {"m_form": "literal", "bandwidth": "eq38", "fabric_limits": False, "dsp_budget": 768}


@pytest.fixture(scope="module")
def zcu102():
    return load_board("zcu102")


def _example(pe: str, m_form: str, **kw) -> dict:
    opts = {**PAPER, "m_form": m_form, **kw}
    return model_network(builtin_network("paper-example"), "zcu102", pe, 3, **opts)


# --- acceptance: the paper's stated inputs ---------------------------------------------


def test_parallelism_at_768_dsps_is_32x8_vs_16x4(zcu102):
    svpe = choose_parallelism(zcu102, "svpe", 3, 3, dsp_budget=768, fabric_limits=False)
    vpe = choose_parallelism(zcu102, "vpe", 3, 3, dsp_budget=768, fabric_limits=False)
    assert (svpe.pm, svpe.pn, svpe.dsp) == (32, 8, 768)
    assert (vpe.pm, vpe.pn, vpe.dsp) == (16, 4, 768)
    # The LUT/FF/BRAM limits do not change the paper's choice at 768 DSPs.
    layers = builtin_network("paper-example")
    limited = choose_parallelism(zcu102, "svpe", 3, 3, 768, fabric_limits=True, layers=layers)
    assert (limited.pm, limited.pn, limited.limited_by) == (32, 8, "dsp")


def test_dsp_equations_35_and_44():
    assert eq.dsp_vpe(3, 16, 4) == 12 * 64 == 768
    assert eq.dsp_svpe(3, 32, 8) == 3 * 256 == 768
    assert array_cost("vpe", 11).dsp == 132 and array_cost("svpe", 11).dsp == 11


def test_4_1x_prediction_under_the_literal_eq36():
    """32x32x3 input, k = 3, N = 128, (32, 8) SVPE vs (16, 4) VPE, Eq. 38 bandwidth."""
    closed = eq.perf_eff_n(32, 8, 32, 32, 3, 128, 3, 3, F) / eq.perf_eff_n(
        16, 4, 32, 32, 3, 128, 3, 16, F
    )
    assert round(closed, 1) == 4.1
    svpe, vpe = _example("svpe", "literal"), _example("vpe", "literal")
    ratio = svpe["layers"][0]["gops"] / vpe["layers"][0]["gops"]
    assert ratio == pytest.approx(closed, rel=1e-9)
    assert round(ratio, 1) == 4.1


def test_ceil_eq36_gives_about_2x():
    svpe, vpe = _example("svpe", "ceil"), _example("vpe", "ceil")
    ratio = svpe["layers"][0]["gops"] / vpe["layers"][0]["gops"]
    assert 1.95 < ratio < 2.1  # 2.04: only Pn (8 vs 4) helps when M = 3 < Pm
    # ceil(3/32) = ceil(3/16) = 1 pass: compute time is H W N / Pn cycles.
    assert svpe["layers"][0]["t_compute_us"] == pytest.approx(32 * 32 * 128 / 8 / F * 1e6)


def test_general_model_reduces_to_eq43(zcu102):
    """Literal Eq. 36 + Eq. 38 bandwidth: model_network == Eq. 43 whenever M <= N."""
    for m, n, hw in ((3, 128, 32), (64, 64, 16), (128, 256, 8)):
        layers = [
            {"in_channels": m, "in_height": hw, "in_width": hw, "out_channels": n, "kernel": 3}
        ]
        for pe, (pm, pn), bits in (("svpe", (32, 8), 3), ("vpe", (16, 4), 16)):
            row = model_network(layers, zcu102, pe, 3, **PAPER)["layers"][0]
            expect = eq.perf_eff_n(pm, pn, hw, hw, m, n, 3, bits, F) / 1e9
            assert row["gops"] == pytest.approx(expect, rel=1e-9)


def test_alexnet_conv_operations_about_1_33_gop():
    layers = builtin_network("alexnet")
    total = sum(lay.ops for lay in layers)
    assert total / 1e9 == pytest.approx(1.33, abs=0.005)
    assert [lay.out_height for lay in layers] == [55, 27, 13, 13, 13]
    assert layers[0].ops == eq.ops(55, 55, 3, 96, 11)  # Eq. 40 on conv1's output map


# --- equations and units ---------------------------------------------------------------


def test_eq38_and_eq39_units():
    # Pm Pn / min(M, N) words per cycle x 16 bits x 200 MHz
    assert eq.bw_min(32, 8, 3, 128, 16, F) == pytest.approx(256 / 3 * 16 * F)
    # Eq. 37 is Eq. 39 with every word 16 bits, in words per second
    words = 1e9
    assert eq.t_transfer(3, 128, 3, 32, words) == pytest.approx(
        eq.t_init(3, 128, 3, 32, 16, 16, words * 16)
    )
    with pytest.raises(ValueError, match="m_form"):
        eq.tiles(3, 32, "round")


def test_row_units_are_consistent(zcu102):
    result = model_network(builtin_network("nbq-cifar"), zcu102, "svpe", 3)
    assert result["modelled"] is True
    for row in result["layers"]:
        if row["where"] == "fpga" and row["bound"] != "fused":
            # GOP/s = ops / time; time >= compute; utilisation in (0, 1]
            assert row["gops"] == pytest.approx(row["ops"] / (row["time_us"] * 1e3))
            assert row["time_us"] >= row["t_compute_us"] - 1e-9
            assert 0 < row["utilisation"] <= 1 + 1e-9
            assert row["energy_uj"] == pytest.approx(row["power_w"] * row["time_us"])
    total = result["total"]
    assert total["latency_ms"] == pytest.approx(sum(r["time_us"] for r in result["layers"]) / 1e3)
    assert total["power_w"] == pytest.approx(total["energy_mj"] / total["latency_ms"])
    assert total["fpga_time_ms"] + total["arm_time_ms"] == pytest.approx(total["latency_ms"])
    assert total["gop"] == pytest.approx(total["ops"] / 1e9)
    for key in ("latency_ms", "energy_mj", "power_w", "gops", "images_per_s"):
        assert key in total


def test_peak_never_exceeded_and_literal_never_slower(zcu102):
    layers = builtin_network("nbq-cifar")
    for pe in ("vpe", "svpe"):
        ceil = model_network(layers, zcu102, pe, 3, m_form="ceil")
        literal = model_network(layers, zcu102, pe, 3, m_form="literal")
        peak = ceil["engines"][0]["peak_gops"]
        for rc, rl in zip(ceil["layers"], literal["layers"], strict=True):
            if rc["gops"] is not None and rc["where"] == "fpga":
                assert rc["gops"] <= peak * (1 + 1e-9)
                assert rl["t_compute_us"] <= rc["t_compute_us"] + 1e-12


# --- monotonicity ---------------------------------------------------------------------


def test_more_dsps_never_slower(zcu102):
    layers = builtin_network("nbq-cifar")
    for pe in ("vpe", "svpe"):
        times = [
            model_network(layers, zcu102, pe, 3, dsp_budget=b)["total"]["latency_ms"]
            for b in (96, 192, 384, 768, 1536, 2520)
        ]
        assert all(a >= b - 1e-12 for a, b in zip(times, times[1:], strict=False))
        arrays = [
            choose_parallelism(zcu102, pe, 3, 3, b, layers=layers).arrays for b in (96, 768, 2520)
        ]
        assert arrays == sorted(arrays)


def test_faster_clock_more_bandwidth_fewer_bits_never_slower(zcu102):
    layers = builtin_network("nbq-fmnist")
    lat = [
        model_network(layers, zcu102, "svpe", 3, clock_mhz=c)["total"]["latency_ms"]
        for c in (100, 200, 300)
    ]
    assert lat[0] > lat[1] > lat[2]
    bits = [model_network(layers, zcu102, "svpe", n)["total"]["latency_ms"] for n in (1, 3, 5)]
    assert bits[0] <= bits[1] <= bits[2]
    wide = {**json.loads(resources.files("pynq_nbq").joinpath("boards", "zcu102.json").read_text())}
    wide["memory"] = {**wide["memory"], "pl_bandwidth_gbps": 100.0}
    narrow = {**wide, "memory": {**wide["memory"], "pl_bandwidth_gbps": 1.0}}
    t_wide, t_narrow = (
        model_network(layers, board_from_dict(b), "svpe", 3)["total"]["latency_ms"]
        for b in (wide, narrow)
    )
    assert t_wide < t_narrow


def test_svpe_uses_fewer_dsps_per_array_but_more_luts():
    for k in (1, 3, 5, 11):
        assert array_cost("svpe", k).dsp < array_cost("vpe", k).dsp
        assert array_cost("svpe", k).lut > array_cost("vpe", k).lut


# --- resources beyond the paper -------------------------------------------------------


def test_fabric_reserve_from_table8():
    reserve = fabric_reserve()
    assert 0.4 < reserve.lut < 0.5 and 0.4 < reserve.ff < 0.55


def test_full_zcu102_svpe_is_lut_limited(zcu102):
    layers = builtin_network("nbq-cifar")
    svpe = choose_parallelism(zcu102, "svpe", 3, 3, layers=layers)
    vpe = choose_parallelism(zcu102, "vpe", 3, 3, layers=layers)
    assert svpe.limited_by == "lut" and svpe.arrays == 256
    assert vpe.limited_by == "dsp" and vpe.arrays == 128
    assert svpe.lut <= zcu102.lut * (1 - fabric_reserve().lut)
    assert svpe.bram18 is not None and svpe.bram18 <= zcu102.bram18


def test_small_board_gets_fewer_arrays():
    kv = load_board("kv260")
    big = choose_parallelism(load_board("zcu102"), "svpe", 3, 3)
    small = choose_parallelism(kv, "svpe", 3, 3)
    assert small.arrays < big.arrays
    with pytest.raises(ValueError, match="exceeds"):
        choose_parallelism(kv, "vpe", 3, 3, dsp_budget=2520)
    with pytest.raises(ValueError, match="no 3x3 VPE array fits"):
        choose_parallelism(kv, "vpe", 3, 3, dsp_budget=6)


def test_boards_as_data():
    assert set(available_boards()) >= {"zcu102", "zcu104", "kv260"}
    z = load_board("ZCU102")
    assert (z.dsp, z.lut, z.ff, z.bram18, z.pl_clock_mhz) == (2520, 274080, 548160, 1824, 200)
    z7 = load_board("zcu104")
    assert (z7.dsp, z7.lut, z7.ff, z7.bram18, z7.uram) == (1728, 230400, 460800, 624, 96)
    k26 = load_board("kv260")
    assert (k26.dsp, k26.lut, k26.ff, k26.bram18, k26.uram) == (1248, 117120, 234240, 288, 64)
    for b in (z, z7, k26):
        assert 5 < b.pl_bandwidth_gbps() <= b.ddr_peak_gbps
        assert b.arm.gops < b.arm.peak_gops
        assert all(b.sources.values())
    with pytest.raises(ValueError, match="unknown board 'zcu999'"):
        load_board("zcu999")


def test_board_from_file(tmp_path):
    raw = json.loads(resources.files("pynq_nbq").joinpath("boards", "zcu102.json").read_text())
    raw["name"], raw["pl_clock_mhz"] = "mine", 100
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(raw))
    assert load_board(str(path)).pl_clock_mhz == 100
    del raw["resources"]["dsp"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="missing field 'dsp'"):
        load_board(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_board(tmp_path / "none.json")


# --- placement: engine vs universal vs ARM --------------------------------------------


def test_engine_cannot_take_alexnet_11x11_and_5x5():
    layers = builtin_network("alexnet")
    taken = [engine_takes(lay)[0] for lay in layers]
    assert taken == [False, False, True, False, False]  # grouped convs also go to the ARM
    assert "11x11" in engine_takes(layers[0])[1]
    engine = model_network(layers, "zcu102", "svpe", 3)
    assert [r["where"] for r in engine["layers"]] == ["arm", "arm", "fpga", "arm", "arm"]
    universal = model_network(layers, "zcu102", "svpe", 3, kernels="universal")
    assert all(r["where"] == "fpga" for r in universal["layers"])
    assert sorted(e["k"] for e in universal["engines"]) == [3, 5, 11]
    assert universal["total"]["latency_ms"] < engine["total"]["latency_ms"]
    paper = model_network(layers, "zcu102", "svpe", 3, kernels="universal", **PAPER)
    assert any("credits idle lanes" in w for w in paper["warnings"])
    full = model_network(layers, "zcu102", "svpe", 3, kernels="universal", fabric_limits=False)
    assert any("more than the zcu102's 274080" in w for w in full["warnings"])


def test_arm_layers_and_fused_pools():
    layers = builtin_network("nbq-fmnist")
    result = model_network(layers, "zcu102", "svpe", 3)
    by_name = {r["name"]: r for r in result["layers"]}
    assert by_name["pool1"]["bound"] == "fused" and by_name["pool1"]["time_us"] == 0
    assert by_name["gap"]["where"] == "arm" and by_name["gap"]["bound"] == "arm"
    unfused = model_network(layers, "zcu102", "svpe", 3, fuse_pools=False)
    assert {r["name"]: r for r in unfused["layers"]}["pool1"]["where"] == "arm"
    assert unfused["total"]["latency_ms"] > result["total"]["latency_ms"]
    # An ARM conv runs at the assumed ARM throughput.
    arm = model_network(builtin_network("alexnet"), "zcu102", "vpe", 3, arm_gops=5.0)
    assert arm["layers"][0]["gops"] == pytest.approx(5.0)


def test_power_calibration_reproduces_table8(zcu102):
    layers = builtin_network("paper-example")
    for pe in ("vpe", "svpe"):
        r = model_network(layers, zcu102, pe, 3, dsp_budget=768)
        assert zcu102.static_w == pytest.approx(PAPER_STATIC_W)
        assert r["engines"][0]["power_w"] == pytest.approx(TABLE8_POWER_W[pe])


def test_estimate_energy_per_image_keys_and_units():
    out = estimate_energy_per_image(builtin_network("nbq-fmnist"), "zcu102", "svpe", 3)
    assert out["modelled"] is True
    for key in ("latency_ms", "power_w", "energy_mj", "images_per_s", "gops"):
        assert isinstance(out[key], float) and out[key] > 0
    assert out["energy_mj"] == pytest.approx(out["power_w"] * out["latency_ms"])
    assert out["images_per_s"] == pytest.approx(1e3 / out["latency_ms"])
    vpe = estimate_energy_per_image(builtin_network("nbq-fmnist"), "zcu102", "vpe")
    assert vpe["weight_bits"] == 16 and vpe["energy_mj"] > out["energy_mj"]


def test_perfmodel_does_not_import_torch():
    code = "import sys, pynq_nbq.perfmodel, pynq_nbq.commands.perf; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


# --- layer input ----------------------------------------------------------------------


def test_layers_from_list_defaults_and_errors():
    layers = layers_from_list(
        [
            {
                "name": "c1",
                "in_channels": 3,
                "in_height": 32,
                "in_width": 32,
                "out_channels": 8,
                "kernel": 3,
            },
            {"name": "p", "kind": "pool"},
            {"name": "fc", "kind": "fc", "out_features": 10},
        ]
    )
    assert isinstance(layers[0], Layer) and layers[0].padding == 1
    assert (layers[1].out_height, layers[2].in_channels) == (16, 8)
    assert layers[2].ops == 2 * 8 * 16 * 16 * 10
    with pytest.raises(ValueError, match=r"layer 0 \(c1\): missing 'in_channels'"):
        layers_from_list([{"name": "c1", "out_channels": 8, "kernel": 3}])
    with pytest.raises(ValueError, match="unknown kind 'softmax'"):
        layers_from_list([{"kind": "softmax", "in_channels": 1, "in_height": 1, "in_width": 1}])
    with pytest.raises(ValueError, match="unknown keys"):
        layers_from_list([{"kernal": 3, "in_channels": 1, "in_height": 4, "in_width": 4}])
    with pytest.raises(ValueError, match="groups=3"):
        layers_from_list(
            [
                {
                    "in_channels": 4,
                    "in_height": 4,
                    "in_width": 4,
                    "out_channels": 4,
                    "kernel": 3,
                    "groups": 3,
                }
            ]
        )
    with pytest.raises(ValueError, match="non-empty list"):
        layers_from_list([])


def _manifest() -> dict:
    return {
        "name": "tiny",
        "datapath": "svpe",
        "weight_bits": 2,
        "layers": [
            {
                "name": "c1",
                "op": "conv",
                "in_shape": [1, 28, 28],
                "out_shape": [8, 14, 14],
                "kernel": 3,
                "stride": 1,
                "padding": 1,
                "groups": 1,
                "pool": True,
            },
            {
                "name": "c2",
                "op": "conv",
                "in_shape": [8, 14, 14],
                "out_shape": [10, 14, 14],
                "kernel": [1, 1],
                "stride": 1,
                "padding": 0,
            },
            {"name": "g", "op": "gap", "in_shape": [10, 14, 14], "out_shape": [10]},
            {"name": "f", "op": "flatten", "in_shape": [10], "out_shape": [10]},
            {"name": "fc", "op": "linear", "in_shape": [10], "out_shape": [4]},
        ],
    }


def test_layers_from_manifest():
    layers = layers_from_manifest(_manifest())
    assert [lay.kind for lay in layers] == ["conv", "conv", "gap", "flatten", "linear"]
    assert layers[0].pool and (layers[0].conv_height, layers[0].out_height) == (28, 14)
    bad = _manifest()
    bad["layers"][1]["out_shape"] = [10, 7, 7]
    with pytest.raises(ValueError, match=r"manifest layer 1 \(c2\): out_shape"):
        layers_from_manifest(bad)
    with pytest.raises(ValueError, match="'layers' must be a list"):
        layers_from_manifest({})


def test_layers_from_a_typed_manifest_are_the_engines_layers():
    """A loaded bundle's typed Manifest goes through layers_from_specs: the same layers
    the engine runs, and the same as its manifest.json read field by field."""
    from pynq_nbq.api import model_path
    from pynq_nbq.bundle import load_bundle
    from pynq_nbq.perfmodel import layers_from_specs

    bundle = load_bundle(model_path("fmnist-svpe"))
    typed = layers_from_manifest(bundle.spec)
    assert typed == layers_from_specs(bundle.spec.layers)
    assert [(lay.name, lay.kind, lay.out_channels) for lay in typed] == [
        (lay.name, lay.kind, lay.out_channels) for lay in layers_from_manifest(bundle.manifest)
    ]


def test_bad_options_name_the_cause():
    layers = builtin_network("paper-example")
    with pytest.raises(ValueError, match="m_form"):
        model_network(layers, "zcu102", "svpe", 3, m_form="floor")
    with pytest.raises(ValueError, match="n_bits"):
        model_network(layers, "zcu102", "svpe", 7)
    with pytest.raises(ValueError, match="pe must be"):
        model_network(layers, "zcu102", "tpu", 3)
    with pytest.raises(ValueError, match="unknown network"):
        builtin_network("resnet")


# --- CLI ------------------------------------------------------------------------------


def test_cli_table(capsys):
    assert cli.main(["perf", "--network", "nbq-fmnist"]) == 0
    out = capsys.readouterr().out
    assert "MODELLED" in out and "VPE" in out and "SVPE" in out
    assert "conv1" in out and "total" in out and "mJ" in out


def test_cli_json_has_units_and_paper_mode(capsys):
    assert cli.main(["perf", "--network", "paper-example", "--paper", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["modelled"] is True and doc["vpe"]["modelled"] is True
    assert doc["svpe_over_vpe"]["speedup"] == pytest.approx(4.085, abs=1e-3)
    row = doc["svpe"]["layers"][0]
    for key in ("time_us", "gops", "t_compute_us", "bw_eq38_gbps", "power_w", "energy_uj"):
        assert key in row
    assert doc["svpe"]["options"]["m_form"] == "literal"
    assert "latency_ms" in doc["svpe"]["total"]


def test_cli_layers_file_and_bundle(tmp_path, capsys):
    path = tmp_path / "net.json"
    path.write_text(
        json.dumps(
            [
                {
                    "name": "c",
                    "in_channels": 3,
                    "in_height": 32,
                    "in_width": 32,
                    "out_channels": 16,
                    "kernel": 3,
                }
            ]
        )
    )
    assert cli.main(["perf", "--layers", str(path), "--board", "kv260", "--markdown"]) == 0
    assert "| c | conv3x3 | fpga |" in capsys.readouterr().out
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps(_manifest()))
    assert cli.main(["perf", "--bundle", str(bundle), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["network"] == "tiny" and doc["svpe"]["weight_bits"] == 2


def test_cli_errors_exit_2(tmp_path, capsys):
    assert cli.main(["perf", "--network", "nope"]) == 2
    assert "unknown network" in capsys.readouterr().err
    assert cli.main(["perf", "--layers", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["perf", "--bundle", str(tmp_path)]) == 2
    assert "manifest" in capsys.readouterr().err
    assert cli.main(["perf", "--network", "alexnet", "--board", "zcu999"]) == 2
    assert "unknown board" in capsys.readouterr().err
    assert cli.main(["perf", "--network", "alexnet", "--n-bits", "9"]) == 2
    assert "n_bits" in capsys.readouterr().err


def test_alexnet_modelled_ratio_is_finite_and_ordered():
    layers = builtin_network("alexnet")
    opts = {"kernels": "universal", "dsp_budget": 768}
    vpe = model_network(layers, "zcu102", "vpe", 3, **opts)["total"]
    svpe = model_network(layers, "zcu102", "svpe", 3, **opts)["total"]
    ratio = svpe["gops"] / vpe["gops"]
    assert math.isfinite(ratio) and 2 < ratio < 6


def test_cli_reads_a_real_bundle(tmp_path, capsys):
    testing = pytest.importorskip("pynq_nbq.testing")
    testing.random_bundle(tmp_path / "b", datapath="svpe", n_bits=2)
    assert cli.main(["perf", "--bundle", str(tmp_path / "b"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["svpe"]["weight_bits"] == 2
    assert [r["where"] for r in doc["svpe"]["layers"]] == ["fpga", "fpga", "fpga", "arm"]
