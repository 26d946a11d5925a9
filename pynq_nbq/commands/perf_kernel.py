"""``nbq perf``'s section on this repository's streaming kernel: its builds, resources
(nominal and pessimistic) and per-layer cycles beside the paper's model, as a dict, text
and Markdown.  Every figure is modelled (or open-synthesis estimated), never measured."""

from __future__ import annotations

from typing import Any

from pynq_nbq.perfmodel.costs import COST_NOTE
from pynq_nbq.perfmodel.kernel import LUT_FRACTION

from .perf_format import PES
from .perf_format import num as _num
from .perf_format import ratio as _ratio


def kernel_report(
    results: dict[str, dict], kernel: dict[str, dict], builds: list[dict], board: Any
) -> dict[str, Any]:
    """The streaming kernel's model beside the paper's, per engine layer and in total."""
    rows = []
    for rv, rs in zip(kernel["vpe"]["layers"], kernel["svpe"]["layers"], strict=True):
        paper = {
            pe: next(r for r in results[pe]["layers"] if r["name"] == rv["name"]) for pe in PES
        }
        rows.append(
            {
                "name": rv["name"],
                "paper_vpe_us": paper["vpe"]["time_us"],
                "paper_svpe_us": paper["svpe"]["time_us"],
                "vpe": rv,
                "svpe": rs,
                "svpe_over_vpe": _ratio(rv["time_us"], rs["time_us"]),
            }
        )
    return {
        "modelled": True,
        "note": (
            "model of hls/nbq_conv.cpp's loop structure (DATAFLOW stages, cycles per stage, "
            "weight loads, the host's tile plan), checked by a FIFO-level dataflow "
            "simulation of the same stages (sim/model); "
            f"resources: {COST_NOTE} for the PE arrays and requantisers, "
            "assumed figures for the rest; unverified without Vitis and a board"
        ),
        "device": {
            "board": board.name,
            "part": board.part,
            "ps_family": board.ps_family,
            "lut": board.lut,
            "ff": board.ff,
            "dsp": board.dsp,
            "bram18": board.bram18,
            "uram": board.uram,
        },
        "limits": kernel["svpe"]["limits"],
        "lut_fraction": LUT_FRACTION,
        "batch": kernel["svpe"]["batch"],
        "clock_mhz": kernel["svpe"]["clock_mhz"],
        "builds": builds,
        "vpe_build": kernel["vpe"]["build"],
        "svpe_build": kernel["svpe"]["build"],
        "layers": rows,
        "fpga_time_us": {pe: kernel[pe]["fpga_time_us"] for pe in PES},
        "eq36_time_us": {pe: kernel[pe]["eq36_time_us"] for pe in PES},
        # the two modelled totals' ratio (None when no layer runs on the kernel)
        "svpe_over_vpe": _ratio(kernel["vpe"]["fpga_time_us"], kernel["svpe"]["fpga_time_us"]),
    }


def _build_lines(k: dict[str, Any]) -> list[str]:
    dev = k["device"]
    lines = [
        f"{'build':6s} {'(Pm, Pn)':>9s} {'LUT':>8s} {'%':>5s} {'pessim.':>8s} {'%':>5s} "
        f"{'FF':>8s} {'%':>5s} "
        f"{'DSP':>5s} {'%':>5s} {'BRAM18':>6s} {'%':>5s} {'URAM':>5s} {'%':>5s}  "
        f"(of {dev['part']}: {dev['lut']} LUT, {dev['ff']} FF, {dev['dsp']} DSP, "
        f"{dev['bram18']} BRAM18, {dev['uram']} URAM)"
    ]
    for b in k["builds"]:
        f = b["of_device"]
        lines.append(
            f"{b['build']:6s} {'(' + str(b['pm']) + ', ' + str(b['pn']) + ')':>9s} "
            f"{b['lut']:8d} {100 * f['lut']:5.1f} {b['lut_pessimistic']:8d} "
            f"{100 * f['lut_pessimistic']:5.1f} {b['ff']:8d} {100 * f['ff']:5.1f} "
            f"{b['dsp']:5d} {100 * f['dsp']:5.1f} {b['bram18']:6d} {100 * f['bram18']:5.1f} "
            f"{b['uram']:5d} {100 * f['uram']:5.1f}"
            + f"  {_limits(b['limits'])}"
            + (f"; URAM: {', '.join(b['uram_bound'])}" if b["uram_bound"] else "")
            + (f"; LUTRAM: {', '.join(b['lutram_bound'])}" if b["lutram_bound"] else "")
        )
    return lines


def _limits(lim: dict[str, int]) -> str:
    """``MAX_W 28, MAX_H 28, MAX_CIN 128, MAX_COUT 128``."""
    return ", ".join(f"{k.upper()} {lim[k]}" for k in ("max_w", "max_h", "max_cin", "max_cout"))


def _sim(row: dict[str, Any]) -> str:
    """The dataflow simulation's cycles over the model's, e.g. ``1.02``."""
    ratio = row.get("sim_over_model")
    return "-" if ratio is None else f"{ratio:.2f}"


def kernel_text(k: dict[str, Any]) -> str:
    """The kernel section of the text report."""
    if "error" in k:
        return f"THIS KERNEL (hls/nbq_conv.cpp): {k['error']}"
    lines = [
        "THIS KERNEL (hls/nbq_conv.cpp, streaming) - MODELLED: " + k["note"],
        f"builds at their default (Pm, Pn): the most arrays within {k['lut_fraction']:.0%} "
        "of the LUTs at the pessimistic cost, 80 % of the BRAM18 / URAM (vpe also within "
        f"the paper's 768 DSPs); costs: yosys -family {k['builds'][0]['family']}; buffers "
        "sized for this network (MAX_COUT lowered where that fits more arrays)",
        *(f"  {ln}" for ln in _build_lines(k)),
        *(
            f"  {b['build']}: {100 * b['of_device']['lut_pessimistic']:.1f} % of the LUTs at "
            f"the pessimistic cost (larger twin x{b['twin_factor']:g}, itemised "
            f"infrastructure {b['infra_lut_itemised']} LUT): over {k['lut_fraction']:.0%}"
            for b in k["builds"]
            if b["of_device"]["lut_pessimistic"] > k["lut_fraction"]
        ),
        "",
    ]
    if not k["layers"]:
        return "\n".join(
            [*lines, "no layer runs on this kernel (3x3 pad 1 / 1x1, stride 1, groups 1)"]
        )
    vb, sb = k["vpe_build"], k["svpe_build"]
    head = (
        f"{'layer':10s} | {'paper VPE':>9s} {'Eq36 ' + vb:>11s} {'kernel':>9s} {'bound':8s} "
        f"{'sim':>5s} | {'paper SVPE':>10s} {'Eq36 ' + sb:>11s} {'kernel':>9s} {'bound':8s} "
        f"{'sim':>5s} | {'SVPE/VPE':>8s}"
    )
    lines += [
        "per engine layer, us per image (paper = the paper's model above; Eq36 = Eq. 36 at "
        "the build's (Pm, Pn); kernel = this kernel's cycle model at the overlay's "
        f"{k['clock_mhz']:g} MHz PL clock, weights loaded once per {k['batch']} image(s); "
        "sim = the dataflow simulation's cycles over the model's):",
        head,
        "-" * len(head),
    ]
    for r in k["layers"]:
        v, s = r["vpe"], r["svpe"]
        lines.append(
            f"{r['name'][:10]:10s} | {r['paper_vpe_us']:9.2f} {v['eq36_us']:11.2f} "
            f"{v['time_us']:9.2f} {v['bound']:8s} {_sim(v):>5s} | {r['paper_svpe_us']:10.2f} "
            f"{s['eq36_us']:11.2f} {s['time_us']:9.2f} {s['bound']:8s} {_sim(s):>5s} | "
            f"{_num(r['svpe_over_vpe'], '7.2f')}x"
        )
    fv, fs = k["fpga_time_us"]["vpe"], k["fpga_time_us"]["svpe"]
    ev, es = k["eq36_time_us"]["vpe"], k["eq36_time_us"]["svpe"]
    lines += [
        "-" * len(head),
        f"{'total':10s} | {'':9s} {ev:11.2f} {fv:9.2f} {'':8s} {'':5s} | {'':10s} {es:11.2f} "
        f"{fs:9.2f} {'':8s} {'':5s} | {_num(_ratio(fv, fs), '7.2f')}x",
        f"SVPE/VPE on {k['device']['board']} (modelled, {vb} vs {sb}): "
        f"{_num(k['svpe_over_vpe'], '.2f')}x",
    ]
    return "\n".join(lines)


def kernel_markdown(k: dict[str, Any]) -> str:
    """The kernel section as Markdown tables (for docs/results.md); all modelled."""
    if "error" in k:
        return f"This kernel (hls/nbq_conv.cpp): {k['error']}"
    dev = k["device"]
    lines = [
        f"| build | (Pm, Pn) | LUT (of {dev['lut']}) | LUT, pessimistic | FF "
        f"| DSP (of {dev['dsp']}) | BRAM18 (of {dev['bram18']}) | URAM (of {dev['uram']}) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in k["builds"]:
        f = b["of_device"]
        lines.append(
            f"| {b['build']} | ({b['pm']}, {b['pn']}) | {b['lut']} ({100 * f['lut']:.1f} %) "
            f"| {b['lut_pessimistic']} ({100 * f['lut_pessimistic']:.1f} %) | {b['ff']} "
            f"| {b['dsp']} ({100 * f['dsp']:.1f} %) "
            f"| {b['bram18']} ({100 * f['bram18']:.1f} %) | {b['uram']} |"
        )
    vb, sb = k["vpe_build"], k["svpe_build"]
    lines += [
        "",
        f"| layer | paper VPE µs | Eq. 36 {vb} µs | kernel {vb} µs | bound | sim/model "
        f"| paper SVPE µs | Eq. 36 {sb} µs | kernel {sb} µs | bound | sim/model | SVPE/VPE |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in k["layers"]:
        v, s = r["vpe"], r["svpe"]
        lines.append(
            f"| {r['name']} | {r['paper_vpe_us']:.2f} | {v['eq36_us']:.2f} | {v['time_us']:.2f} "
            f"| {v['bound']} | {_sim(v)} | {r['paper_svpe_us']:.2f} | {s['eq36_us']:.2f} "
            f"| {s['time_us']:.2f} | {s['bound']} | {_sim(s)} | {_num(r['svpe_over_vpe'], '.2f')} |"
        )
    return "\n".join(lines)
