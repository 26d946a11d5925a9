"""Render a bench report (the dict from :func:`pynq_nbq.bench.run.run_bench`).

* :func:`markdown` - the human report: every timing table carries the run's label
  ("emulated (backend X on host Y), not hardware" off the board), every measured
  figure sits beside the model's prediction and the ratio measured / predicted;
* :func:`write_chart` - a PNG (matplotlib, Agg) of VPE vs SVPE vs CPU-only;
* :func:`write_outputs` - all three files (``bench.json``, ``bench.md``, ``bench.png``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .run import COLUMNS, TITLES


def _f(value: Any, fmt: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return format(value, fmt)
    return str(value)


def _vs(entry: dict[str, Any], unit: str, fmt: str = ".3g", show: str = "") -> str:
    """ "measured (model P, ×R)" for one ``compare`` entry; ``show``: a unit to print."""
    m, p = entry[f"measured_{unit}"], entry[f"predicted_{unit}"]
    r = entry["measured_over_predicted_ratio"]
    if p is None:
        return f"{_f(m, fmt)}{show} (model -)"
    return f"{_f(m, fmt)}{show} (model {_f(p, fmt)}{show}, ×{_f(r, '.3g')})"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _md_header(report: dict[str, Any]) -> list[str]:
    """Title, timing label, labelled set, backend, host, model, plan."""
    cols = report["columns"]
    label = report["timing_label"]
    env = report["environment"]
    cfg = report["config"]
    acc = report["accuracy"]
    lines: list[str] = [
        "# nbq bench: VPE vs SVPE vs CPU only",
        "",
        f"**Timings: {label}.**"
        + (
            ""
            if not report["emulated"]
            else " Speeds below are "
            "this host's, not a board's; the model's ZCU102 figures sit beside them."
        ),
        "",
        f"- Labelled set: {acc['source']} ({acc['images_count']} images)",
        f"- Backend: `{cfg['backend']}`; CPU-only column: {cols['cpu']['backend']} engine, "
        f"{cols['cpu']['engine_threads_count']} thread(s)",
        f"- Host: {env['host']} ({env['cpu']}, {env['cpu_cores_count']} cores, "
        f"{env['machine']}); Python {env['software']['python']}, numpy "
        f"{env['software']['numpy']}, pynq {env['software']['pynq'] or 'not installed'}, "
        f"pynq-nbq {env['software']['pynq_nbq']}",
        f"- Model: {report['model']['note']}; board `{report['model']['board']}`",
        f"- Plan: batch sizes {cfg['plan']['batch_sizes_images']}, "
        f"{cfg['plan']['latency_images_count']} single-image runs, "
        f"≥{cfg['plan']['throughput_images_count']} images per batch size, "
        f"{cfg['plan']['warmup_batches_count']} warm-up batch(es); run took "
        f"{report['elapsed_s']:.1f} s",
    ]
    for key, b in env["backends"].items():
        extra = {k: v for k, v in b.items() if k not in ("name", "hardware")}
        if extra:
            lines.append(f"- {cols[key]['title']} backend: {json.dumps(extra)}")
    return lines


def _md_summary(report: dict[str, Any]) -> list[str]:
    """The summary table: each figure measured beside the model."""
    cols = report["columns"]
    label = report["timing_label"]
    lines: list[str] = []
    lines += ["", f"## Summary ({label})", ""]
    lines.append(
        "Each cell: measured (model's prediction, ×measured/predicted). The model is "
        "engine-only per image on the board (no preprocessing, no call overhead)."
    )
    lines.append("")
    rows = []
    spec = [
        ("latency per image, mean (ms)", "end_to_end_latency_ms_mean", "ms"),
        ("engine time per image (ms)", "engine_latency_ms", "ms"),
        ("conv-engine layers (ms)", "conv_engine_ms", "ms"),
        (
            "conv-engine layers vs the kernel's cycle model (ms)",
            "conv_engine_ms_kernel_model",
            "ms",
        ),
        ("ARM-side layers (ms)", "arm_ms", "ms"),
        ("conv engine GOP/s", "conv_engine_gop_per_s", "gop_per_s"),
        ("throughput, largest batch (images/s)", "throughput_images_per_s", "images_per_s"),
    ]
    for title, key, unit in spec:
        rows.append([title] + [_vs(cols[c]["vs_model"][key], unit) for c in COLUMNS])
    rows.append(["latency p50 (ms)"] + [_f(cols[c]["latency"]["latency_ms_p50"]) for c in COLUMNS])
    rows.append(["latency p99 (ms)"] + [_f(cols[c]["latency"]["latency_ms_p99"]) for c in COLUMNS])
    rows.append(
        ["top-1 accuracy"] + [_f(cols[c]["accuracy_top1_fraction"], ".4f") for c in COLUMNS]
    )
    lines += _table(["figure", *(cols[c]["title"] for c in COLUMNS)], rows)
    return lines


def _md_accuracy_and_split(report: dict[str, Any]) -> list[str]:
    """SVPE over VPE, accuracy and agreement, the split per image."""
    cols = report["columns"]
    label = report["timing_label"]
    acc = report["accuracy"]
    lines: list[str] = []
    cmp_ = report["svpe_over_vpe"]
    lines += [
        "",
        f"SVPE over VPE ({label}): latency speedup "
        f"{_vs(cmp_['latency_speedup_ratio'], 'ratio')}, conv-engine speedup "
        f"{_vs(cmp_['conv_engine_speedup_ratio'], 'ratio')}, throughput ratio "
        f"{_vs(cmp_['throughput_ratio'], 'ratio')}.",
        "",
        "## Accuracy and agreement",
        "",
        f"- Top-1 accuracy: VPE {acc['vpe_accuracy_top1_fraction']:.4f}, SVPE "
        f"{acc['svpe_accuracy_top1_fraction']:.4f}, CPU only "
        f"{acc['cpu_accuracy_top1_fraction']:.4f} on {acc['images_count']} images",
        f"- Top-1 agreement SVPE vs VPE: {acc['svpe_vpe_top1_agreement_fraction']:.4f}",
        f"- CPU-only logits equal to the SVPE column's (bit-exact): "
        f"{_f(acc['cpu_logits_equal_svpe'])}",
        "",
        f"## Split per image, batch 1 ({label})",
        "",
        "Driver overhead = conv-engine layer time minus time inside the device calls "
        "(packing, tiling, checks); '-' where the backend has no device (numpy, native). "
        "In the CPU-only column the conv-engine layers ran on the CPU too.",
        "",
    ]
    split_keys = [
        ("decode (images arrive decoded)", "decode_ms"),
        ("preprocessing", "preprocess_ms"),
        ("quantize input", "quantize_ms"),
        ("conv engine (incl. driver)", "conv_engine_ms"),
        ("  of which device", "device_ms"),
        ("  of which driver overhead", "driver_overhead_ms"),
        ("ARM-side layers", "arm_ms"),
        ("engine bookkeeping", "engine_bookkeeping_ms"),
        ("softmax/argmax", "postprocess_ms"),
        ("total", "total_ms"),
        ("device calls per image", "device_calls_count"),
    ]
    lines += _table(
        ["ms per image", *(cols[c]["title"] for c in COLUMNS)],
        [[t] + [_f(cols[c]["split_per_image"][k]) for c in COLUMNS] for t, k in split_keys],
    )
    for c in COLUMNS:
        parts = cols[c]["split_per_image"].get("device_split_ms")
        if parts:
            lines.append(
                f"\n{cols[c]['title']}: the driver's own timers inside its device calls, "
                "ms per image: " + ", ".join(f"{k[:-3]} {_f(v)}" for k, v in parts.items())
            )
    return lines


def _md_throughput(report: dict[str, Any]) -> list[str]:
    """Throughput by batch size."""
    cols = report["columns"]
    label = report["timing_label"]
    lines: list[str] = []
    lines += ["", f"## Throughput by batch size ({label})", ""]
    trows = []
    for i, row in enumerate(cols["svpe"]["throughput"]):
        trows.append(
            [str(row["batch_images"])]
            + [
                f"{_f(cols[c]['throughput'][i]['throughput_images_per_s'])} "
                f"(p50 {_f(cols[c]['throughput'][i]['batch_latency_ms_p50'])} ms, "
                f"p99 {_f(cols[c]['throughput'][i]['batch_latency_ms_p99'])} ms)"
                for c in COLUMNS
            ]
        )
    lines += _table(["batch", *(f"{cols[c]['title']} images/s" for c in COLUMNS)], trows)
    return lines


def _md_layers(report: dict[str, Any]) -> list[str]:
    """Per layer, VPE and SVPE columns."""
    cols = report["columns"]
    label = report["timing_label"]
    lines: list[str] = []
    for c in ("vpe", "svpe"):
        lines += ["", f"## Per layer, {cols[c]['title']} ({label})", ""]
        lrows = [
            [
                r["name"],
                r["op"],
                r["placement"],
                _f(r["ops_count"] and r["ops_count"] / 1e6),
                _f(r["time_ms"]),
                _f(r["predicted_time_ms"]),
                _f(r["time_measured_over_predicted_ratio"]),
                _f(r["gop_per_s"]),
                _f(r["predicted_gop_per_s"]),
                _f(r["kernel_model_time_ms"]),
            ]
            for r in cols[c]["layers"]
        ]
        lines += _table(
            [
                "layer",
                "op",
                "ran on",
                "MOP",
                "ms",
                "model ms",
                "×",
                "GOP/s",
                "model GOP/s",
                "kernel model ms",
            ],
            lrows,
        )
    return lines


def _md_power(report: dict[str, Any]) -> list[str]:
    """Power per column, measured or why not (with the model's estimate)."""
    cols = report["columns"]
    lines: list[str] = []
    lines += ["", "## Power", ""]
    for c in COLUMNS:
        p = report["power"][c]
        if p["available"]:
            v = p["vs_model"]
            lines.append(
                f"- {cols[c]['title']}: idle {p['idle_power_w']:.3f} W, active "
                f"{_vs(v['power_w'], 'w', show=' W')}, dynamic {p['dynamic_power_w']:.3f} W, "
                f"{_vs(v['energy_mj_per_image'], 'mj_per_image', show=' mJ')} per image "
                f"({p['dynamic_energy_mj_per_image']:.4g} mJ above idle) over "
                f"{p['active_window_s']:.2f} s and {p['images_count']} images ({p['source']})"
            )
        else:
            est = p.get("modelled_estimate")
            model_txt = ""
            if est and est.get("available"):
                model_txt = (
                    f"; MODELLED estimate (not a measurement): {est['power_w']:.3g} W, "
                    f"{est['energy_mj_per_image']:.3g} mJ per image on {est['board']}"
                )
            lines.append(f"- {cols[c]['title']}: unavailable ({p['reason']}){model_txt}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report."""
    lines: list[str] = []
    for section in (
        _md_header,
        _md_summary,
        _md_accuracy_and_split,
        _md_throughput,
        _md_layers,
        _md_power,
    ):
        lines += section(report)
    lines += ["", "## Resources", "", *markdown_resources(report)]
    return "\n".join(lines) + "\n"


def markdown_resources(report: dict[str, Any]) -> list[str]:
    """One line per bitstream: the overlay build's counts (of the part's) and slack, or
    why not; always the model's estimate, labelled."""
    lines = []
    for c in ("vpe", "svpe"):
        r = report["resources"][c]
        est = r["modelled_estimate"]
        est_txt = ", ".join(f"{k.upper()} {_f(est[f'{k}_count'], '.6g')}" for k in _RES)
        if r["available"]:
            got = ", ".join(
                f"{k.upper()} {_f(r[k + '_count'], '.6g')} of "
                f"{_f(r[k + '_available_count'], '.6g')}"
                for k in _RES
            )
            lines.append(
                f"- {TITLES[c]}: {got}; WNS {_f(r['wns_ns'])} ns at "
                f"{_f(r['pl_clock_mhz'])} MHz "
                f"({r['source']}); MODELLED {est_txt}"
            )
        else:
            lines.append(f"- {TITLES[c]}: unavailable ({r['reason']}); MODELLED {est_txt}")
        k = r.get("kernel_model_estimate")
        if k:
            k_txt = ", ".join(f"{x.upper()} {_f(k[f'{x}_count'], '.6g')}" for x in _RES)
            lines.append(
                f"  - the streaming kernel's {k['build']} build ({k['parallelism']}), MODELLED: "
                f"{k_txt} ({k['source']})"
            )
    return lines


_RES = ("dsp", "lut", "ff", "bram18")


def write_chart(report: dict[str, Any], path: Path) -> None:
    """A PNG: latency, throughput and conv-engine GOP/s for the three columns, measured
    bars with the model's prediction as markers (log scale); the title carries the label.

    Raises ImportError naming the extra when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"the chart needs matplotlib ({exc}); pip install 'pynq-nbq[bench]'"
        ) from exc
    cols = report["columns"]
    panels = [
        ("latency per image, mean (ms)", "end_to_end_latency_ms_mean"),
        ("throughput, largest batch (images/s)", "throughput_images_per_s"),
        ("conv engine (GOP/s)", "conv_engine_gop_per_s"),
        ("board energy per image (mJ)", "energy_mj_per_image"),
    ]
    colours = {"vpe": "#d62728", "svpe": "#1f77b4", "cpu": "#7f7f7f"}
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 4.6))
    for ax, (title, key) in zip(axes, panels, strict=True):
        measured_any = False
        for i, c in enumerate(COLUMNS):
            m, p = chart_values(report, c, key)
            if m:
                measured_any = True
                ax.bar(i, m, color=colours[c])
                ax.annotate(f"{m:.3g}", (i, m), ha="center", va="bottom", fontsize=8)
            if p:
                ax.plot(i, p, "k_", markersize=28, mew=2)
        if not measured_any:
            ax.text(0.5, 0.5, "not measured here", transform=ax.transAxes, ha="center")
        ax.set_xlim(-0.6, len(COLUMNS) - 0.4)
        ax.set_xticks(range(len(COLUMNS)), [cols[c]["title"] for c in COLUMNS], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color="#999999"), plt.Line2D([], [], color="k", lw=2)]
    measured = "measured (emulated on this host)" if report["emulated"] else "measured"
    fig.legend(handles, [measured, "model's prediction (ZCU102)"], loc="lower center", ncol=2)
    fig.suptitle(f"nbq bench - {report['timing_label']}", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.94))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_values(report: dict[str, Any], column: str, key: str) -> tuple[Any, Any]:
    """(measured, predicted) of one chart figure; energy comes from the power block
    (measured when rails were read, else only the model's estimate)."""
    if key == "energy_mj_per_image":
        power = report["power"][column]
        if power["available"]:
            v = power["vs_model"]["energy_mj_per_image"]
            return v["measured_mj_per_image"], v["predicted_mj_per_image"]
        est = power.get("modelled_estimate") or {}
        return None, est.get("energy_mj_per_image")
    entry = report["columns"][column]["vs_model"][key]
    unit = next(k[len("measured_") :] for k in entry if k.startswith("measured_"))
    return entry[f"measured_{unit}"], entry[f"predicted_{unit}"]


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path | str]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out_dir``; returns
    the paths (the chart's entry is the reason in words if it could not be drawn)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, chart_path = (out_dir / f"bench.{e}" for e in ("json", "md", "png"))
    paths: dict[str, Path | str] = {"json": json_path, "markdown": md_path, "chart": chart_path}
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown(report), encoding="utf-8")
    try:
        write_chart(report, chart_path)
    except ImportError as exc:
        paths["chart"] = f"not written: {exc}"
    return paths
