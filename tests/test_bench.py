"""``nbq bench``: outputs, schema, units in keys, labels, accuracy/agreement against an
independent computation, the power path with a fake rail source, resources reports.

Runs are CI-sized (8 images, two batch sizes).  No test asserts a speed.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pynq_nbq import api
from pynq_nbq.backends import get_backend
from pynq_nbq.bench import context
from pynq_nbq.bench.data import fashion_mnist, image_folder
from pynq_nbq.bench.measure import Plan, latency_stats_ms
from pynq_nbq.bench.power import measure_power
from pynq_nbq.bench.report import chart_values, markdown_resources, write_outputs
from pynq_nbq.bench.run import COLUMNS, BenchConfig, run_bench
from pynq_nbq.cli import main
from pynq_nbq.preprocess import preprocess

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
N_IMAGES = 8
SMALL = [
    "--images",
    str(N_IMAGES),
    "--batch-sizes",
    "1,4",
    "--latency-images",
    "3",
    "--throughput-images",
    "4",
    "--cpu-threads",
    "1",
    "--no-progress",
]

#: a numeric leaf's key must end with one of these (or be listed in UNITLESS)
UNIT_SUFFIXES = (
    "_ms",
    "_s",
    "_w",
    "_mj_per_image",
    "_per_s",
    "_ratio",
    "_fraction",
    "_count",
    "_images",
    "_bits",
    "_mhz",
    "_ns",
)
UNITLESS = {"schema_version"}


STATISTICS = ("_mean", "_p50", "_p99", "_min", "_max")


def has_unit(key: str) -> bool:
    """``latency_ms_p50``, ``power_w``, ``batch_sizes_images``: a unit, then maybe a
    statistic."""
    for stat in STATISTICS:
        if key.endswith(stat):
            key = key[: -len(stat)]
    return key in UNITLESS or key.endswith(UNIT_SUFFIXES)


def numeric_keys_without_units(node, path="", key=""):
    """Paths of numeric values (or lists of numbers) whose key carries no unit."""
    bad = []
    if isinstance(node, dict):
        for k, v in node.items():
            bad += numeric_keys_without_units(v, f"{path}/{k}", k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            bad += numeric_keys_without_units(v, f"{path}[{i}]", key)
    elif isinstance(node, (int, float)) and not isinstance(node, bool) and not has_unit(key):
        bad.append(path)
    return bad


def independent_answers(model_name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 classes and labels of the first n test images, read without the bench code."""

    def idx(name: str) -> np.ndarray:
        raw = gzip.open(FASHION / name).read()
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)

    images = idx("t10k-images-idx3-ubyte.gz")[:n]
    labels = idx("t10k-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    model = api.load_model(model_name)
    batch = np.stack([preprocess(Image.fromarray(im, "L"), model.input_spec) for im in images])
    return model.predict(batch).indices, labels


def check_outputs(out: Path, backend: str) -> dict:
    """The three files exist, the JSON follows the schema, every timing is labelled."""
    report = json.loads((out / "bench.json").read_text())
    md = (out / "bench.md").read_text()
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["schema"] == "pynq-nbq/bench" and report["schema_version"] == 1
    assert report["emulated"] is True
    label = f"emulated (backend {backend} on host "
    assert report["timing_label"].startswith(label)
    assert report["timing_label"].endswith("), not hardware")
    assert report["timing_labels"]["cpu"].startswith("emulated (backend numpy on host ")
    assert numeric_keys_without_units(report) == []
    for key in COLUMNS:
        col = report["columns"][key]
        assert col["timing_label"].endswith("not hardware")
        lat = col["latency"]
        assert lat["samples_count"] == 3
        assert lat["latency_ms_min"] <= lat["latency_ms_p50"] <= lat["latency_ms_p99"]
        assert lat["latency_ms_p99"] <= lat["latency_ms_max"]
        assert [r["batch_images"] for r in col["throughput"]] == [1, 4]
        for row in col["throughput"]:
            assert row["images_count"] % row["batch_images"] == 0
            assert row["throughput_images_per_s"] == pytest.approx(
                row["images_count"] / row["elapsed_s"]
            )
        for name, v in col["vs_model"].items():
            unit = next(k[len("measured_") :] for k in v if k.startswith("measured_"))
            m, p = v[f"measured_{unit}"], v[f"predicted_{unit}"]
            if m is not None and p:
                assert v["measured_over_predicted_ratio"] == pytest.approx(m / p), name
        assert col["labelled_pass"]["images_count"] == N_IMAGES
    for key in ("vpe", "svpe"):
        layers = report["columns"][key]["layers"]
        engine = [r for r in layers if r["placement"] == "conv-engine"]
        assert engine and all(r["gop_per_s"] > 0 and r["predicted_gop_per_s"] for r in engine)
        for r in engine:
            assert r["gop_per_s"] == pytest.approx(r["ops_count"] / (r["time_ms"] * 1e6))
        # the streaming kernel's cycle model beside the paper's, layer by layer and in total
        kernel = report["columns"][key]["vs_model"]["conv_engine_ms_kernel_model"]
        assert kernel["predicted_ms"] == pytest.approx(
            sum(r["kernel_model_time_ms"] for r in engine)
        )
        est = report["resources"][key]["kernel_model_estimate"]
        assert est["modelled"] is True and est["lut_count"] > 0 and "yosys" in est["source"]
    # every timing section of the Markdown carries the label; predictions are beside
    assert md.count(report["timing_label"]) >= 6
    for section in ("## Summary", "## Split", "## Throughput", "## Per layer"):
        for line in md.splitlines():
            if line.startswith(section):
                assert report["timing_label"] in line
    assert "(model " in md
    return report


def check_accuracy(report: dict) -> None:
    """Accuracy and agreement equal an independent computation."""
    svpe_idx, labels = independent_answers("fmnist-svpe", N_IMAGES)
    vpe_idx, _ = independent_answers("fmnist-vpe", N_IMAGES)
    acc = report["accuracy"]
    assert acc["images_count"] == N_IMAGES
    assert acc["svpe_accuracy_top1_fraction"] == np.mean(svpe_idx == labels)
    assert acc["vpe_accuracy_top1_fraction"] == np.mean(vpe_idx == labels)
    assert acc["cpu_accuracy_top1_fraction"] == np.mean(svpe_idx == labels)
    assert acc["svpe_vpe_top1_agreement_fraction"] == np.mean(svpe_idx == vpe_idx)
    assert acc["cpu_logits_equal_svpe"] is True


@needs_fashion
def test_bench_numpy_outputs_schema_labels_accuracy(tmp_path, capsys):
    out = tmp_path / "numpy"
    assert main(["bench", "--backend", "numpy", "--power", "off", "--out", str(out), *SMALL]) == 0
    report = check_outputs(out, "numpy")
    check_accuracy(report)
    split = report["columns"]["svpe"]["split_per_image"]
    assert split["device_ms"] is None and split["driver_overhead_ms"] is None  # no device
    for key in COLUMNS:
        p = report["power"][key]
        assert p == {**p, "available": False, "reason": "power sampling switched off (--power off)"}
    for key in ("vpe", "svpe"):
        est = report["power"][key]["modelled_estimate"]
        assert est["modelled"] is True and est["power_w"] > 0
        assert est["energy_mj_per_image"] > 0
        assert report["resources"][key]["available"] is False
        assert report["resources"][key]["modelled_estimate"]["modelled"] is True
    assert "emulated (backend numpy" in capsys.readouterr().out


@needs_fashion
def test_bench_csim_splits_device_and_driver(tmp_path):
    pytest.importorskip("hls4ml")
    out = tmp_path / "csim"
    assert main(["bench", "--backend", "csim", "--power", "off", "--out", str(out), *SMALL]) == 0
    report = check_outputs(out, "csim")
    check_accuracy(report)
    for key in ("vpe", "svpe"):
        split = report["columns"][key]["split_per_image"]
        assert split["device_calls_count"] >= 1
        assert 0 < split["device_ms"] <= split["conv_engine_ms"]
        assert split["driver_overhead_ms"] == pytest.approx(
            split["conv_engine_ms"] - split["device_ms"]
        )


def simulated_board_usable() -> str:
    """'' if the simulated ZCU102 can run here, else why not."""
    try:
        importlib.import_module("pynq_nbq.sim.board")  # imports pynq
    except ModuleNotFoundError as exc:
        return f"the simulated board cannot be imported ({exc})"
    if importlib.util.find_spec("hls4ml") is None:
        return "the simulated board's csim kernel needs the hls4ml wheel's ap_int headers"
    return ""


@needs_fashion
def test_bench_fpga_on_the_simulated_board(tmp_path):
    why = simulated_board_usable()
    if why:
        pytest.skip(why)
    out = tmp_path / "fpga"
    args = ["bench", "--backend", "fpga", "--overlay", "sim", "--power", "off", "--out", str(out)]
    assert main([*args, *SMALL]) == 0
    report = check_outputs(out, "fpga on the simulated board")
    check_accuracy(report)
    env = report["environment"]["backends"]["svpe"]
    assert env["simulated_board"] is True and env["hardware"] is False
    assert report["resources"]["svpe"]["available"] is False
    for key in ("vpe", "svpe"):
        split = report["columns"][key]["split_per_image"]
        assert 0 < split["device_ms"] <= split["conv_engine_ms"]
        parts = split["device_split_ms"]  # the driver's own timers, inside its calls
        assert set(parts) == {"ready_ms", "copy_ms", "registers_ms", "wait_ms"}
        assert 0 < sum(parts.values()) <= split["device_ms"]


def test_bench_fpga_without_overlay_files_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NBQ_OVERLAY", str(tmp_path))  # an empty folder: no bitstreams
    code = main(["bench", "--backend", "fpga", "--quick", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nbq bench: error:" in err and "fpga" in err
    assert "pynq" in err or "overlay files not found" in err


class FakeRails:
    """A rail source: 5 W idle, 8 W once ``busy`` is set (PL rail 3 -> 6 W, PS 2 W)."""

    description = "fake rails"

    def __init__(self) -> None:
        self.busy = threading.Event()
        self.reads = 0

    def read_w(self) -> dict[str, float]:
        self.reads += 1
        return {"VCCINT": 6.0 if self.busy.is_set() else 3.0, "VCCPSINTFP": 2.0}


def test_power_idle_and_active_energy_from_fake_rails():
    rails = FakeRails()

    def workload() -> int:
        rails.busy.set()
        time.sleep(0.01)
        return 3

    got = measure_power(rails, workload, idle_s=1.0, active_s=1.0, interval_s=0.02)
    assert got["available"] is True and got["source"] == "fake rails"
    assert got["idle_power_w"] == pytest.approx(5.0)
    assert got["active_power_w"] == pytest.approx(8.0)
    assert got["dynamic_power_w"] == pytest.approx(3.0)
    assert got["idle_window_s"] >= 1.0 and got["active_window_s"] >= 1.0
    assert got["images_count"] > 0 and got["images_count"] % 3 == 0
    per_image_s = got["active_window_s"] / got["images_count"]
    assert got["energy_mj_per_image"] == pytest.approx(8.0 * per_image_s * 1e3)
    assert got["dynamic_energy_mj_per_image"] == pytest.approx(3.0 * per_image_s * 1e3)
    assert got["samples_count"] >= 4 and rails.reads >= got["samples_count"]


def test_power_windows_must_be_long_enough():
    with pytest.raises(ValueError, match="power windows"):
        measure_power(FakeRails(), lambda: 1, idle_s=0.1, active_s=1.0)


@needs_fashion
def test_run_bench_power_available_and_unavailable(tmp_path, monkeypatch):
    plan = Plan((2,), 1, 2, 0)
    cfg = BenchConfig(images=2, plan=plan, cpu_threads=1, power_idle_s=1.0, power_active_s=1.0)
    rails = FakeRails()
    rails.busy.set()  # a constant 8 W: this test checks the wiring, the one above the sums
    bars = []

    class Bar:
        def __init__(self, total: int) -> None:
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, n: int) -> None:
            self.n += n

        def close(self) -> None:
            self.closed = True

    report = run_bench(cfg, power_source=(rails, rails.description), progress=Bar)
    assert len(bars) == 1 and bars[0].closed
    assert bars[0].n == bars[0].total == 3 * plan.steps(2)  # the bar ends at 100 %
    for key in COLUMNS:
        p = report["power"][key]
        assert p["available"] is True
        assert p["idle_power_w"] == pytest.approx(8.0)
        assert p["active_power_w"] == pytest.approx(8.0)
        per_image_s = p["active_window_s"] / p["images_count"]
        assert p["energy_mj_per_image"] == pytest.approx(8.0 * per_image_s * 1e3)
        assert p["vs_model"]["power_w"]["measured_w"] == p["active_power_w"]
    assert report["power"]["svpe"]["vs_model"]["power_w"]["predicted_w"] > 0
    measured, predicted = chart_values(report, "svpe", "energy_mj_per_image")
    assert measured == report["power"]["svpe"]["energy_mj_per_image"] and predicted > 0
    paths = write_outputs(report, tmp_path)
    assert Path(paths["chart"]).read_bytes()[:4] == b"\x89PNG"
    assert "active 8 W (model " in Path(paths["markdown"]).read_text()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a board without matplotlib
    paths = write_outputs(report, tmp_path / "no-mpl")
    assert paths["chart"].startswith("not written:") and "pynq-nbq[bench]" in paths["chart"]
    assert Path(paths["json"]).is_file() and Path(paths["markdown"]).is_file()
    assert numeric_keys_without_units(report) == []

    report = run_bench(cfg, power_source=(None, "no rails on this host"))
    for key in COLUMNS:
        assert report["power"][key]["available"] is False
        assert report["power"][key]["reason"] == "no rails on this host"
    assert report["power"]["svpe"]["modelled_estimate"]["modelled"] is True
    assert "modelled_estimate" not in report["power"]["cpu"]


def test_resources_from_overlay_report(tmp_path):
    model = {"engines": [{"dsp": 768, "lut": 100, "ff": 50, "bram18": 8}]}
    got = context.resources("svpe", None, model)
    assert got["available"] is False and "no --overlay" in got["reason"]
    assert got["modelled_estimate"]["dsp_count"] == 768
    assert got["modelled_estimate"]["modelled"] is True
    got = context.resources("svpe", "sim", model)
    assert got["available"] is False and "simulated board" in got["reason"]
    got = context.resources("svpe", tmp_path, model)
    assert got["available"] is False and "nbq_svpe_report.json" in got["reason"]
    # the report overlay/build_overlay.tcl writes (same layout as tests/test_overlay_tcl.py)
    report = {
        "name": "nbq_svpe",
        "board": "zcu102",
        "part": "xczu9eg-ffvb1156-2-e",
        "pl_clock_mhz": 200,
        "timing_ns": {"wns": 0.1, "tns": 0, "whs": 0.02, "ths": 0},
        "utilization": {
            "CLB LUTs": {"used": 12345, "available": 274080},
            "CLB Registers": {"used": 23456, "available": 548160},
            "Block RAM Tile": {"used": 42.5, "available": 912},
            "DSPs": {"used": 7, "available": 2520},
        },
    }
    (tmp_path / "nbq_svpe_report.json").write_text(json.dumps(report))
    got = context.resources("svpe", tmp_path, model)
    assert got["available"] is True and got["part"] == "xczu9eg-ffvb1156-2-e"
    assert (got["lut_count"], got["ff_count"], got["bram18_count"], got["dsp_count"]) == (
        12345,
        23456,
        85,
        7,
    )
    assert got["bram18_available_count"] == 1824 and got["uram_count"] is None
    assert got["wns_ns"] == 0.1 and got["pl_clock_mhz"] == 200
    assert numeric_keys_without_units(got) == []
    fake = {"resources": {"svpe": got, "vpe": context.resources("vpe", tmp_path, model)}}
    lines = markdown_resources(fake)
    assert "LUT 12345 of 274080" in lines[0] + lines[1] and "BRAM18 85 of 1824" in "".join(lines)
    (tmp_path / "nbq_vpe_report.json").write_text(json.dumps({"utilization": {"DSPs": 3}}))
    with pytest.raises(ValueError, match="'DSPs' is not used/available"):
        context.resources("vpe", tmp_path, model)


def test_labels():
    class Board:
        name = "fpga"

    class Simulated:
        name = "fpga"
        simulated = True

    assert context.timing_label(Board()) == "measured on hardware (backend fpga)"
    sim = context.timing_label(Simulated(), host="h")
    assert sim == "emulated (backend fpga on the simulated board on host h), not hardware"
    numpy_backend = get_backend("numpy")
    assert context.timing_label(numpy_backend, host="h", compatible=[]) == (
        "emulated (backend numpy on host h), not hardware"
    )
    on_board = ["xlnx,zynqmp-zcu102-rev1.0", "xlnx,zynqmp"]
    assert context.timing_label(numpy_backend, host="h", compatible=on_board) == (
        "measured on hardware (numpy on the board's ARM cores, h)"
    )
    assert context.timing_label(Simulated(), host="h", compatible=on_board).startswith("emulated")
    z2 = ["tul,pynq-z2", "xlnx,zynq-7000"]  # the PYNQ-Z2's device tree
    assert context.timing_label(numpy_backend, host="h", compatible=z2).startswith("measured")
    assert not context.on_zynq_board(["raspberrypi,4-model-b", "brcm,bcm2711"])


def test_latency_stats():
    got = latency_stats_ms([0.001, 0.002, 0.003, 0.004])
    assert got["latency_ms_mean"] == pytest.approx(2.5)
    assert got["latency_ms_p50"] == pytest.approx(2.5)
    assert got["latency_ms_min"] == pytest.approx(1.0)
    assert got["latency_ms_max"] == pytest.approx(4.0)
    assert got["samples_count"] == 4
    with pytest.raises(ValueError):
        latency_stats_ms([])


def test_image_folder_layouts(tmp_path):
    classes = api.load_model().classes
    samples = image_folder(api.SAMPLES_DIR, classes)
    assert list(samples.labels) == list(range(10))  # files named <index>-<name>.png
    for i, name in ((3, "dress"), (7, "sneaker")):
        d = tmp_path / "by-class" / name
        d.mkdir(parents=True)
        Image.new("L", (28, 28), i * 20).save(d / "a.png")
    got = image_folder(tmp_path / "by-class", classes)
    assert list(got.labels) == [3, 7]
    (tmp_path / "flat").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "flat" / "nolabel.png")
    with pytest.raises(ValueError, match="cannot tell its label"):
        image_folder(tmp_path / "flat", classes)


@needs_fashion
def test_fashion_mnist_reader():
    data = fashion_mnist(5)
    assert len(data) == 5 and data.labels.dtype == np.int64
    assert data.images[0].size == (28, 28)


def test_engine_layer_hook_sees_every_layer_and_changes_nothing():
    model = api.load_model()
    x = np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype(np.float32)
    want = model.predict(x).logits_q
    seen = []
    model.engine.on_layer = lambda name, where, s: seen.append((name, where, s))
    got = model.predict(x).logits_q
    model.engine.on_layer = None
    np.testing.assert_array_equal(got, want)
    assert [(n, w) for n, w, _ in seen] == [(n, p) for n, _, p in model.engine.placements]
    assert all(s >= 0 for _, _, s in seen)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch-sizes", "1,x"], "--batch-sizes"),
        (["--batch-sizes", "0"], "batch sizes must be >= 1"),
        (["--images", "0"], "--images must be >= 1"),
        (["--folder", "/nonexistent/images"], "does not exist"),
        (["--svpe", "fmnist-vpe"], "datapath is 'vpe', not 'svpe'"),
        (["--power-idle-s", "0.2"], "--power-active-s must be >= 1.0 s"),
    ],
)
def test_bench_bad_input_is_one_line_error(tmp_path, capsys, extra, message):
    assert main(["bench", "--quick", "--no-progress", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nbq bench: error:") and message in err
    assert not (tmp_path / "bench.json").exists()


def test_fpga_details_on_a_board_record_bitstreams(tmp_path):
    (tmp_path / "nbq_svpe.bit").write_bytes(b"bits")

    class Board:
        name = "fpga"
        source = str(tmp_path)
        sim = False

    got = context.fpga_details(Board())
    assert got["simulated_board"] is False
    assert got["bitstreams"]["svpe"]["sha256"] == hashlib.sha256(b"bits").hexdigest()
    assert got["bitstreams"]["vpe"]["sha256"] is None  # not built
    assert got["pl_clock_mhz"] is None or got["pl_clock_mhz"] > 0  # read from the PS, or not
    assert got["pl_clock_source"]
    env = context.environment({"svpe": Board()})
    assert env["backends"]["svpe"]["hardware"] is True
    assert env["software"]["pynq_nbq"] and env["software"]["numpy"]


@needs_fashion
def test_cpu_column_on_the_native_kernel():
    try:
        get_backend("native")
    except ValueError as exc:  # NativeError: no compiler here
        pytest.skip(f"native kernel unavailable: {exc}")
    cfg = BenchConfig(images=4, plan=Plan((2,), 1, 2, 0), cpu_threads=1, cpu_backend="native")
    report = run_bench(cfg, power_source=(None, "off"))
    cpu = report["columns"]["cpu"]
    assert cpu["title"] == "CPU only (native)" and cpu["backend"] == "native"
    assert report["accuracy"]["cpu_logits_equal_svpe"] is True  # bit-exact with numpy's svpe
    assert report["environment"]["backends"]["cpu"]["description"].startswith("native C kernel")
    with pytest.raises(ValueError, match="CPU-only backend"):
        run_bench(BenchConfig(images=4, plan=Plan((2,), 1, 2, 0), cpu_backend="csim"))
