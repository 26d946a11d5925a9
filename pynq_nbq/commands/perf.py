"""``nbq perf``: modelled performance, resources and energy of a network, VPE beside SVPE.

Every figure it prints comes from the analytic model in :mod:`pynq_nbq.perfmodel`
(the paper's Eq. 35-44 plus documented extensions), never from a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from pynq_nbq import datapath as dp
from pynq_nbq.cli import CommandError
from pynq_nbq.perfmodel import (
    MODEL_NOTE,
    NETWORKS,
    available_boards,
    builtin_network,
    layers_from_list,
    layers_from_manifest,
    load_board,
    model_network,
)
from pynq_nbq.perfmodel.constants import PAPER_DSP_BUDGET
from pynq_nbq.perfmodel.equations import M_FORMS
from pynq_nbq.perfmodel.kernel import build_for, builds_table, model_kernel
from pynq_nbq.perfmodel.model import BANDWIDTH_MODES, KERNEL_MODES
from pynq_nbq.perfmodel.resources import SPLITS
from pynq_nbq.perfmodel.sizing import network_build_limits

from .perf_format import PES
from .perf_format import num as _num
from .perf_format import ratio as _ratio
from .perf_kernel import kernel_markdown, kernel_report, kernel_text


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``perf`` subcommand."""
    p = subparsers.add_parser(
        "perf",
        help="modelled speed, resources and energy per image on a Zynq board (VPE vs SVPE)",
        description=(
            "Model a network on a Zynq UltraScale+ board with the paper's analytic model "
            "(Eq. 35-44) and this project's extensions; prints VPE and SVPE side by side. "
            "All figures are modelled, not measured (docs/perfmodel.md)."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--network", metavar="NAME", help=f"built-in network: {', '.join(NETWORKS)}")
    src.add_argument("--layers", metavar="FILE.json", help="a JSON list of layer objects")
    src.add_argument("--bundle", metavar="DIR", help="a model bundle (reads DIR/manifest.json)")
    p.add_argument(
        "--board",
        default="zcu102",
        help=f"board name ({', '.join(available_boards())}) or a board JSON file",
    )
    p.add_argument("--n-bits", type=int, help="SVPE weight bits, 1..5 (default 3, or the bundle's)")
    p.add_argument(
        "--m-form", choices=M_FORMS, help="Eq. 36 as ceil(M/Pm) (default) or literal M/Pm"
    )
    p.add_argument("--dsp-budget", type=int, help="DSPs the arrays may use (default: whole device)")
    p.add_argument(
        "--kernels",
        choices=KERNEL_MODES,
        help="engine: the project's 3x3/1x1 engine, other convs on the ARM (default); "
        "universal: the paper's array sized to each layer's kernel",
    )
    p.add_argument(
        "--bandwidth",
        choices=BANDWIDTH_MODES,
        help="board: the board's DDR bandwidth (default); eq38: exactly Eq. 38's minimum",
    )
    p.add_argument(
        "--fabric-limits",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also limit parallelism by LUTs, FFs and BRAM (default on)",
    )
    p.add_argument("--split", choices=SPLITS, default="paper", help="how to split Pm x Pn")
    p.add_argument(
        "--fuse-pools",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold 2x2 max-pools after engine convs into the conv (default on)",
    )
    p.add_argument("--clock-mhz", type=float, help="array clock (default: the board's)")
    p.add_argument("--arm-gops", type=float, help="ARM conv/linear throughput in GOP/s")
    p.add_argument("--call-overhead-us", type=float, default=0.0, help="per engine call, us")
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="images per weight load in this kernel's model (default 1: every image loads)",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="the paper's model as published: literal Eq. 36, Eq. 38 bandwidth, universal "
        f"kernels, DSP limits only, {PAPER_DSP_BUDGET} DSPs (explicit options still win)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON (units in the keys)")
    out.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(func=run)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CommandError(f"{what} {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise CommandError(f"{what} {path} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"cannot read {what} {path}: {exc}") from exc


def load_source(args: argparse.Namespace) -> tuple[str, list, int | None]:
    """(name, layers, weight bits the source implies) from --network/--layers/--bundle."""
    if args.network:
        return args.network, builtin_network(args.network), None
    if args.layers:
        path = Path(args.layers)
        return path.name, layers_from_list(_read_json(path, "layers file")), None
    path = Path(args.bundle)
    if path.is_dir() and (path / "arrays.npz").exists():  # a whole bundle: its parsed layers
        from ..bundle import load_bundle

        spec = load_bundle(path).view  # validated by load_bundle
        bits = spec.weight_bits if spec.pe is dp.PEKind.SVPE else None
        return spec.name or path.name, layers_from_manifest(spec), bits  # the typed Manifest
    manifest_path = path if path.suffix == ".json" else path / "manifest.json"
    manifest = _read_json(manifest_path, "bundle manifest")
    if not isinstance(manifest, dict):
        raise CommandError(f"bundle manifest {manifest_path} must be a JSON object")
    bits = manifest.get("weight_bits") if manifest.get("datapath") == dp.PEKind.SVPE else None
    name = str(manifest.get("name", path.name))
    return name, layers_from_manifest(manifest), bits if isinstance(bits, int) else None


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options for :func:`model_network`; ``--paper`` fills what is not given."""
    paper = args.paper
    fabric = args.fabric_limits if args.fabric_limits is not None else not paper
    return {
        "m_form": args.m_form or ("literal" if paper else "ceil"),
        "kernels": args.kernels or ("universal" if paper else "engine"),
        "bandwidth": args.bandwidth or ("eq38" if paper else "board"),
        "fabric_limits": fabric,
        "dsp_budget": args.dsp_budget or (PAPER_DSP_BUDGET if paper else None),
        "split": args.split,
        "fuse_pools": args.fuse_pools,
        "clock_mhz": args.clock_mhz,
        "arm_gops": args.arm_gops,
        "call_overhead_us": args.call_overhead_us,
    }


def run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise CommandError(f"--batch must be >= 1, got {args.batch}")
    try:
        name, layers, bundle_bits = load_source(args)
        board = load_board(args.board)
        n_bits = args.n_bits if args.n_bits is not None else (bundle_bits or 3)
        opts = model_options(args)
        results = {pe: model_network(layers, board, pe, n_bits, **opts) for pe in PES}
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    report = build_report(name, results)
    try:  # the builds are sized for this network's engine layers (issue 26); they may not fit
        by_build = network_build_limits(board, layers)
        kernel = {
            pe: model_kernel(
                layers,
                board,
                pe,
                n_bits,
                args.clock_mhz,
                args.call_overhead_us or 0.0,
                limits=by_build[build_for(pe, n_bits)] if by_build else None,
                batch=args.batch,
            )
            for pe in PES
        }
        builds = builds_table(board, by_build=by_build)
        report["kernel_model"] = kernel_report(results, kernel, builds, board)
    except ValueError as exc:
        report["kernel_model"] = {"modelled": True, "error": str(exc)}
    if args.json:
        print(json.dumps(_rounded(report), indent=2))
    elif args.markdown:
        print(markdown_table(report))
        print()
        print(kernel_markdown(report["kernel_model"]))
    else:
        print(text_report(report))
        print()
        print(kernel_text(report["kernel_model"]))
    return 0


def build_report(name: str, results: dict[str, dict]) -> dict[str, Any]:
    """The JSON document: both runs plus SVPE-over-VPE ratios, all modelled."""
    vpe, svpe = results["vpe"]["total"], results["svpe"]["total"]
    return {
        "modelled": True,
        "note": MODEL_NOTE,
        "network": name,
        "vpe": results["vpe"],
        "svpe": results["svpe"],
        "svpe_over_vpe": {
            "speedup": _ratio(vpe["latency_ms"], svpe["latency_ms"]),
            "gops_ratio": _ratio(svpe["gops"], vpe["gops"]),
            "fpga_gops_ratio": _ratio(svpe["fpga_gops"], vpe["fpga_gops"]),
            "energy_ratio": _ratio(svpe["energy_mj"], vpe["energy_mj"]),
        },
    }


def _rounded(value: Any, digits: int = 6) -> Any:
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return value
        return round(value, max(0, digits - 1 - int(math.floor(math.log10(abs(value))))))
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def _kind_label(row: dict[str, Any]) -> str:
    if row["kind"] != "conv":
        return row["kind"]
    label = f"conv{row['kernel']}x{row['kernel']}"
    if row["stride"] != 1:
        label += f"/s{row['stride']}"
    if row["groups"] != 1:
        label += f"/g{row['groups']}"
    return label


def _engine_line(pe: str, result: dict[str, Any]) -> list[str]:
    if not result["engines"]:
        return [f"  {pe.upper():4s}: no layer runs on the FPGA"]
    lines = []
    for e in result["engines"]:
        lines.append(
            f"  {pe.upper():4s}: {e['k']}x{e['k']} arrays (Pm, Pn) = ({e['pm']}, {e['pn']}) = "
            f"{e['arrays']} arrays, {e['dsp']} DSP, {e['lut']} LUT, {e['ff']} FF, "
            f"{_num(e['bram18'], 'd')} BRAM18; limited by {e['limited_by']}; "
            f"peak {e['peak_gops']:.1f} GOP/s; {e['power_w']:.1f} W while running"
        )
    return lines


def text_report(report: dict[str, Any]) -> str:
    """The human-readable table: one row per layer, VPE and SVPE side by side."""
    vpe, svpe = report["vpe"], report["svpe"]
    board, o = svpe["board"], svpe["options"]
    budget = o["dsp_budget"] or board["dsp"]
    lines = [
        f"nbq perf: {report['network']} on {board['name']} ({board['part']}), arrays at "
        f"{svpe['clock_mhz']:g} MHz, {svpe['bandwidth_gbps']:.1f} GB/s DDR to the PL, "
        f"ARM {svpe['arm_gops']:.1f} GOP/s",
        "ALL FIGURES MODELLED, NOT MEASURED (analytic model after Chen et al. 2021, "
        "Eq. 35-44, + docs/perfmodel.md)",
        f"options: Eq. 36 {o['m_form']}, kernels {o['kernels']}, bandwidth {o['bandwidth']}, "
        f"fabric limits {'on' if o['fabric_limits'] else 'off'}, DSP budget {budget}, "
        f"SVPE weights {svpe['weight_bits']}-bit, VPE {vpe['weight_bits']}-bit",
        "engines (modelled):",
        *_engine_line("vpe", vpe),
        *_engine_line("svpe", svpe),
    ]
    notes = list(dict.fromkeys(f"VPE: {w}" for w in vpe["warnings"]))
    notes += list(dict.fromkeys(f"SVPE: {w}" for w in svpe["warnings"]))
    if notes:
        lines += ["warnings:", *(f"  {w}" for w in notes)]
    lines.append("")
    nw = max([10] + [len(r["name"]) for r in svpe["layers"]])  # full names, as `nbq info`
    head = (
        f"{'layer':{nw}s} {'kind':12s} {'where':5s} {'MOP':>9s} | "
        f"{'VPE us':>9s} {'GOP/s':>7s} {'DSP':>5s} {'bound':9s} | "
        f"{'SVPE us':>9s} {'GOP/s':>7s} {'DSP':>5s} {'bound':9s} | {'SVPE/VPE':>8s}"
    )
    lines += [head, "-" * len(head)]
    for rv, rs in zip(vpe["layers"], svpe["layers"], strict=True):
        speed = _ratio(rv["time_us"], rs["time_us"])
        lines.append(
            f"{rs['name']:{nw}s} {_kind_label(rs)[:12]:12s} {rs['where']:5s} "
            f"{rs['ops'] / 1e6:9.2f} | "
            f"{rv['time_us']:9.2f} {_num(rv['gops'], '7.1f')} {_num(rv['dsp'], '5d')} "
            f"{rv['bound']:9s} | "
            f"{rs['time_us']:9.2f} {_num(rs['gops'], '7.1f')} {_num(rs['dsp'], '5d')} "
            f"{rs['bound']:9s} | {_num(speed, '7.2f')}{'x' if speed else ' '}"
        )
    tv, ts = vpe["total"], svpe["total"]
    lines += ["-" * len(head)]
    lines.append(
        f"{'total':{nw}s} {'':12s} {'':5s} {ts['ops'] / 1e6:9.2f} | "
        f"{tv['latency_ms'] * 1e3:9.2f} {_num(tv['gops'], '7.1f')} {'':5s} {'':9s} | "
        f"{ts['latency_ms'] * 1e3:9.2f} {_num(ts['gops'], '7.1f')} {'':5s} {'':9s} | "
        f"{_num(_ratio(tv['latency_ms'], ts['latency_ms']), '7.2f')}x"
    )
    lines.append("")
    for pe, t in (("VPE", tv), ("SVPE", ts)):
        lines.append(
            f"{pe:4s} per image (modelled): latency {t['latency_ms']:.4f} ms "
            f"(FPGA {t['fpga_time_ms']:.4f}, ARM {t['arm_time_ms']:.4f}), "
            f"{_num(t['images_per_s'], '.1f')} images/s, {_num(t['gops'], '.1f')} GOP/s "
            f"({_num(t['fpga_gops'], '.1f')} on the FPGA layers), "
            f"{_num(t['power_w'], '.2f')} W, {t['energy_mj']:.4f} mJ"
        )
    return "\n".join(lines)


def markdown_table(report: dict[str, Any]) -> str:
    """The per-layer table as Markdown (for docs/results.md); figures are modelled."""
    vpe, svpe = report["vpe"], report["svpe"]
    lines = [
        "| layer | kind | where | MOP | VPE µs | VPE GOP/s | VPE DSP | VPE bound "
        "| SVPE µs | SVPE GOP/s | SVPE DSP | SVPE bound | SVPE/VPE |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for rv, rs in zip(vpe["layers"], svpe["layers"], strict=True):
        lines.append(
            f"| {rs['name']} | {_kind_label(rs)} | {rs['where']} | {rs['ops'] / 1e6:.2f} "
            f"| {rv['time_us']:.2f} | {_num(rv['gops'], '.1f')} | {_num(rv['dsp'], 'd')} "
            f"| {rv['bound']} | {rs['time_us']:.2f} | {_num(rs['gops'], '.1f')} "
            f"| {_num(rs['dsp'], 'd')} | {rs['bound']} "
            f"| {_num(_ratio(rv['time_us'], rs['time_us']), '.2f')} |"
        )
    tv, ts = vpe["total"], svpe["total"]
    lines.append(
        f"| **total** | | | {ts['ops'] / 1e6:.2f} | {tv['latency_ms'] * 1e3:.2f} "
        f"| {_num(tv['gops'], '.1f')} | | | {ts['latency_ms'] * 1e3:.2f} "
        f"| {_num(ts['gops'], '.1f')} | | "
        f"| {_num(_ratio(tv['latency_ms'], ts['latency_ms']), '.2f')} |"
    )
    return "\n".join(lines)


# --- this kernel (hls/nbq_conv.cpp) beside the paper's model ---------------------------------
