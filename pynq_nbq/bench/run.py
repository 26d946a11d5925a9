"""The benchmark itself: three columns (VPE, SVPE, CPU-only), measured and modelled.

    report = run_bench(BenchConfig(backend="csim", images=200))

* ``vpe`` / ``svpe`` - the two bundles on the chosen backend (numpy, csim, fpga);
* ``cpu`` - the svpe bundle on the numpy engine alone (every layer on the CPU,
  ``cpu_threads`` threads): what the board does without its FPGA.

Each column gets the timings of :func:`pynq_nbq.bench.measure.measure_column`,
accuracy on the labelled set, power (:mod:`pynq_nbq.bench.power`) or why not, and
the performance model's prediction for the same network on ``board`` beside every
measured figure, with the ratio measured / predicted.  The report is a JSON-ready
dict whose keys carry units; :mod:`pynq_nbq.bench.report` renders it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .. import api
from ..backends import backend_names, get_backend
from ..engine import CONV_ENGINE
from ..manifest import Manifest
from ..perfmodel import layers_from_specs, load_board, model_network
from ..perfmodel.kernel import model_kernel
from ..perfmodel.model import MODEL_NOTE, arm_layer_time
from ..rails import RailSource, modelled_energy, open_power_source
from . import context
from .data import FASHION_DIR, LabelledSet, fashion_mnist, image_folder
from .measure import Plan, accuracy, agreement, measure_column
from .power import measure_power, unavailable

SCHEMA = "pynq-nbq/bench"
SCHEMA_VERSION = 1
COLUMNS = ("vpe", "svpe", "cpu")
TITLES = {"vpe": "VPE", "svpe": "SVPE", "cpu": "CPU only"}
DEFAULT_BUNDLES = {"svpe": "fmnist-svpe", "vpe": "fmnist-vpe"}


@dataclass
class BenchConfig:
    """Everything ``nbq bench`` can be told (see ``nbq bench --help``)."""

    backend: str = "numpy"
    svpe: str | None = None  #: bundle dir or embedded name (default fmnist-svpe)
    vpe: str | None = None  #: bundle dir or embedded name (default fmnist-vpe)
    images: int = 1000  #: labelled images (Fashion-MNIST test set, or the folder's first)
    data_dir: Path = FASHION_DIR
    folder: Path | None = None
    plan: Plan = field(default_factory=Plan)
    board: str = "zcu102"  #: board the performance model predicts for
    cpu_threads: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    cpu_backend: str = "numpy"  #: the CPU-only column: numpy (the reference), native or auto
    power: str = "auto"  #: auto, pynq, hwmon or off
    power_idle_s: float = 2.0
    power_active_s: float = 3.0
    overlay: str | None = None  #: fpga: bitstream directory or "sim" (default $NBQ_OVERLAY)
    quick: bool = False

    def backend_options(self) -> dict[str, Any]:
        """Options of ``backends.get_backend`` for ``backend`` (fpga: the overlay)."""
        return {"overlay": self.overlay} if self.backend == "fpga" and self.overlay else {}


def _ratio(measured: float | None, predicted: float | None) -> float | None:
    return measured / predicted if measured is not None and predicted else None


def compare(measured: float | None, predicted: float | None, unit: str) -> dict[str, Any]:
    """One figure next to the model: ``measured_<unit>``, ``predicted_<unit>``, ratio."""
    return {
        f"measured_{unit}": measured,
        f"predicted_{unit}": predicted,
        "measured_over_predicted_ratio": _ratio(measured, predicted),
    }


def _load(cfg: BenchConfig, kind: str, backend: str | Any, threads: int = 1) -> api.Model:
    name = getattr(cfg, kind) or DEFAULT_BUNDLES[kind]
    model = api.load_model(name, backend, threads)
    if model.spec.pe.value != kind:
        raise ValueError(
            f"--{kind} {name}: bundle datapath is {model.spec.pe.value!r}, not {kind!r}"
        )
    return model


def load_data(cfg: BenchConfig, classes: list[str]) -> LabelledSet:
    """The labelled set the config names."""
    if cfg.folder is not None:
        return image_folder(cfg.folder, classes, cfg.images)
    return fashion_mnist(cfg.images, cfg.data_dir)


def predictions(spec: Manifest, board: str) -> dict[str, Any]:
    """The performance model for a bundle (its typed manifest) on ``board`` (a
    ``model_network`` result); weight width: the bundle's (``Manifest.weight_bits``)."""
    return model_network(layers_from_specs(spec.layers), board, spec.pe.value, spec.weight_bits)


def kernel_prediction(spec: Manifest, board: str) -> dict[str, Any]:
    """The cycle model of this project's streaming kernel (:mod:`pynq_nbq.perfmodel.kernel`)
    for a bundle on ``board``: per engine layer ``time_us``, ``fpga_time_us``, the build's
    resources (an open-synthesis estimate), all modelled."""
    layers = layers_from_specs(spec.layers)
    return model_kernel(layers, load_board(board), spec.pe.value, spec.weight_bits)


def cpu_prediction(spec: Manifest, board: str) -> dict[str, Any]:
    """The model's ARM time for every layer of a bundle (the CPU-only column)."""
    brd = load_board(board)
    rows: list[dict[str, Any]] = []
    times_us: list[float] = []
    for lay in layers_from_specs(spec.layers):
        times_us.append(arm_layer_time(lay, brd, brd.arm.gops) * 1e6)
        rows.append({"name": lay.name, "ops": lay.ops, "where": "arm", "time_us": times_us[-1]})
    total_ms = sum(times_us) / 1e3
    return {
        "modelled": True,
        "note": MODEL_NOTE + " (all layers on the ARM cores)",
        "layers": rows,
        "total": {
            "latency_ms": total_ms,
            "images_per_s": 1e3 / total_ms if total_ms else None,
            "fpga_time_ms": 0.0,
            "arm_time_ms": total_ms,
            "fpga_gops": None,
            "power_w": None,
            "energy_mj": None,
        },
    }


def engine_summary(engine: dict[str, Any]) -> dict[str, Any]:
    """A performance-model engine (``model_network(...)["engines"]``) with unit keys."""
    return {
        "arrays": f"{engine['k']}x{engine['k']} arrays (Pm, Pn) = ({engine['pm']}, "
        f"{engine['pn']}) = {engine['arrays']}, limited by {engine['limited_by']}",
        "dsp_count": engine["dsp"],
        "lut_count": engine["lut"],
        "peak_gop_per_s": engine["peak_gops"],
        "power_w": engine["power_w"],
    }


def _layers_vs_model(
    rows: list[dict], model: dict[str, Any], kernel: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    by_name = {r["name"]: r for r in model["layers"]}
    by_kernel = {r["name"]: r for r in (kernel or {}).get("layers", [])}
    out = []
    for row in rows:
        m = by_name.get(row["name"], {})
        k = by_kernel.get(row["name"])
        ops = m.get("ops")
        t = row["time_ms"]
        gops = ops / (t * 1e6) if ops and t > 0 and row["placement"] == CONV_ENGINE else None
        pred_ms = m["time_us"] / 1e3 if m.get("time_us") is not None else None
        out.append(
            {
                **row,
                "ops_count": ops,
                "gop_per_s": gops,
                "predicted_where": m.get("where"),
                "predicted_time_ms": pred_ms,
                "predicted_gop_per_s": m.get("gops"),
                "time_measured_over_predicted_ratio": _ratio(t, pred_ms),
                "kernel_model_time_ms": k["time_us"] / 1e3 if k else None,
                "kernel_model_bound": k["bound"] if k else None,
            }
        )
    return out


def _column(
    key: str,
    model: api.Model,
    data: LabelledSet,
    plan: Plan,
    prediction: dict[str, Any],
    label: str,
    tick: Callable[[int], None],
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    res = measure_column(model, data, plan, tick)
    t = res.timings
    kernel = prediction.get("kernel_model")
    layers = _layers_vs_model(t["layers"], prediction, kernel)
    split = t["split_per_image"]
    engine_ops = sum(r["ops_count"] or 0 for r in layers if r["placement"] == CONV_ENGINE)
    conv_ms = split["conv_engine_ms"]
    conv_gops = engine_ops / (conv_ms * 1e6) if engine_ops and conv_ms > 0 else None
    best = max(t["throughput"], key=lambda r: r["batch_images"])
    total = prediction["total"]
    engine_ms = split["conv_engine_ms"] + split["arm_ms"] + split["engine_bookkeeping_ms"]
    arm_ms = split["arm_ms"]
    if key == "cpu":  # every layer ran on the CPU: all of it is "ARM-side" time
        conv_ms, arm_ms = None, split["conv_engine_ms"] + split["arm_ms"]
    col = {
        "title": f"{TITLES[key]} ({model.backend_name})" if key == "cpu" else TITLES[key],
        "bundle": str(model.bundle.path) if model.bundle.path else None,
        "bundle_name": model.spec.name,
        "datapath": model.spec.pe.value,
        "backend": model.backend_name,
        "engine_threads_count": model.engine.threads,
        "timing_label": label,
        "latency": t["latency"],
        "split_per_image": split,
        "conv_engine_gop_per_s": conv_gops,
        "layers": layers,
        "throughput": t["throughput"],
        "labelled_pass": t["labelled_pass"],
        "accuracy_top1_fraction": accuracy(res.indices, data.labels),
        "vs_model": {
            "end_to_end_latency_ms_mean": compare(
                t["latency"]["latency_ms_mean"], total["latency_ms"], "ms"
            ),
            "engine_latency_ms": compare(engine_ms, total["latency_ms"], "ms"),
            "conv_engine_ms": compare(conv_ms, total["fpga_time_ms"] or None, "ms"),
            "conv_engine_ms_kernel_model": compare(
                conv_ms, kernel["fpga_time_us"] / 1e3 if kernel else None, "ms"
            ),
            "arm_ms": compare(arm_ms, total["arm_time_ms"] or None, "ms"),
            "conv_engine_gop_per_s": compare(conv_gops, total.get("fpga_gops"), "gop_per_s"),
            "throughput_images_per_s": compare(
                best["throughput_images_per_s"], total["images_per_s"], "images_per_s"
            ),
        },
        "model_note": prediction.get("note", MODEL_NOTE),
    }
    return col, res.indices, res.logits_q


def _classified(model: api.Model, batch: list) -> int:
    """Classify ``batch``; the number of answers (the power measurement's workload)."""
    return len(model.classify(batch).indices)


def _power(
    models: dict[str, api.Model],
    data: LabelledSet,
    cfg: BenchConfig,
    source: RailSource | None,
    reason: str,
    predictions_by_col: dict[str, dict],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    batch = data.images[: max(cfg.plan.batch_sizes)]
    for key, model in models.items():
        pred = predictions_by_col[key]["total"]
        # the model's estimate where nothing is measured (it has no CPU-only power figure)
        est = None if key == "cpu" else modelled_energy(model.spec, cfg.board)
        if source is None:
            out[key] = unavailable(reason, est)
            continue
        try:
            got = measure_power(
                source,
                partial(_classified, model, batch),
                cfg.power_idle_s,
                cfg.power_active_s,
            )
        except (RuntimeError, ValueError) as exc:
            out[key] = unavailable(f"power measurement failed: {exc}", est)
            continue
        got["vs_model"] = {
            "power_w": compare(got["active_power_w"], pred.get("power_w"), "w"),
            "energy_mj_per_image": compare(
                got["energy_mj_per_image"], pred.get("energy_mj"), "mj_per_image"
            ),
        }
        out[key] = got
    return out


def _svpe_over_vpe(columns: dict[str, Any], preds: dict[str, Any]) -> dict[str, Any]:
    """SVPE over VPE: latency and conv-engine speedups, throughput ratio, each measured
    beside the model's."""
    v, s = columns["vpe"], columns["svpe"]
    pv, ps = preds["vpe"]["total"], preds["svpe"]["total"]

    def best_tput(col: dict) -> float:
        return max(col["throughput"], key=lambda r: r["batch_images"])["throughput_images_per_s"]

    return {
        "latency_speedup_ratio": compare(
            v["latency"]["latency_ms_mean"] / s["latency"]["latency_ms_mean"],
            _ratio(pv["latency_ms"], ps["latency_ms"]),
            "ratio",
        ),
        "conv_engine_speedup_ratio": compare(
            _ratio(v["split_per_image"]["conv_engine_ms"], s["split_per_image"]["conv_engine_ms"]),
            _ratio(pv["fpga_time_ms"], ps["fpga_time_ms"]),
            "ratio",
        ),
        "throughput_ratio": compare(
            best_tput(s) / best_tput(v), _ratio(ps["images_per_s"], pv["images_per_s"]), "ratio"
        ),
    }


def run_bench(
    cfg: BenchConfig,
    power_source: tuple[RailSource | None, str] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns the report (JSON-ready; keys carry units).

    ``power_source``: (source, reason) to use instead of opening the board's rails
    (tests pass a fake); ``progress``: called with the total number of steps, returns
    an object with ``update(n)`` (e.g. a tqdm bar), or None for no progress.
    """
    started = time.time()
    engine_backend = get_backend(cfg.backend, **cfg.backend_options())
    # one backend object for both bundles: a board has one fabric, and the fpga backend
    # swaps overlays when the other kind is asked for
    if cfg.cpu_backend not in backend_names("cpu"):
        raise ValueError(
            f"CPU-only backend must be one of {backend_names('cpu')}, got {cfg.cpu_backend!r}"
        )
    cpu_backend = get_backend(cfg.cpu_backend)
    backends = {"vpe": engine_backend, "svpe": engine_backend, "cpu": cpu_backend}
    models = {
        "vpe": _load(cfg, "vpe", backends["vpe"]),
        "svpe": _load(cfg, "svpe", backends["svpe"]),
    }
    models["cpu"] = _load(cfg, "svpe", backends["cpu"], cfg.cpu_threads)
    if models["vpe"].classes != models["svpe"].classes:
        raise ValueError(
            "the svpe and vpe bundles have different classes: "
            f"{models['svpe'].classes} vs {models['vpe'].classes}"
        )
    data = load_data(cfg, models["svpe"].classes)
    labels = {k: context.timing_label(b) for k, b in backends.items()}
    preds = {k: predictions(models[k].spec, cfg.board) for k in ("vpe", "svpe")}
    for k in ("vpe", "svpe"):  # the streaming kernel's own cycle model, beside the paper's
        preds[k]["kernel_model"] = kernel_prediction(models[k].spec, cfg.board)
    preds["cpu"] = cpu_prediction(models["svpe"].spec, cfg.board)

    bar = progress(len(COLUMNS) * cfg.plan.steps(len(data))) if progress else None
    tick = bar.update if bar is not None else (lambda n: None)
    columns, answers = {}, {}
    try:
        for key in COLUMNS:
            columns[key], idx, logits = _column(
                key, models[key], data, cfg.plan, preds[key], labels[key], tick
            )
            answers[key] = (idx, logits)
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()

    source, reason = power_source if power_source is not None else open_power_source(cfg.power)
    power = _power(models, data, cfg, source, reason, preds)
    accuracy_block = {
        "images_count": len(data),
        "source": data.source,
        **{f"{k}_accuracy_top1_fraction": columns[k]["accuracy_top1_fraction"] for k in COLUMNS},
        "svpe_vpe_top1_agreement_fraction": agreement(answers["svpe"][0], answers["vpe"][0]),
        "cpu_logits_equal_svpe": bool(np.array_equal(answers["cpu"][1], answers["svpe"][1])),
    }
    comparison = _svpe_over_vpe(columns, preds)
    overlay = cfg.overlay or getattr(engine_backend, "source", None)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "emulated": any(label.startswith("emulated") for label in labels.values()),
        "timing_label": labels["svpe"],
        "timing_labels": labels,
        "started_unix_s": started,
        "elapsed_s": time.time() - started,
        "config": _config_dict(cfg),
        "environment": context.environment(backends),
        "model": {
            "board": cfg.board,
            "note": MODEL_NOTE,
            "modelled": True,
            "vpe_engines": [engine_summary(e) for e in preds["vpe"].get("engines", [])],
            "svpe_engines": [engine_summary(e) for e in preds["svpe"].get("engines", [])],
        },
        "columns": columns,
        "accuracy": accuracy_block,
        "svpe_over_vpe": comparison,
        "power": power,
        "resources": {k: context.resources(k, overlay, preds[k]) for k in ("vpe", "svpe")},
    }


def _config_dict(cfg: BenchConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["plan"] = {
        "batch_sizes_images": list(cfg.plan.batch_sizes),
        "latency_images_count": cfg.plan.latency_images,
        "throughput_images_count": cfg.plan.throughput_images,
        "warmup_batches_count": cfg.plan.warmup_batches,
    }
    d["images_count"] = d.pop("images")
    d["cpu_threads_count"] = d.pop("cpu_threads")
    for k in ("data_dir", "folder", "overlay"):
        d[k] = None if d[k] is None else str(d[k])
    return d
