"""Kernel builds sized per board and per the networks a user ships (issue 26).

A build of ``hls/nbq_conv.cpp`` is (PE kind, code width, Pm, Pn, buffer maxima, storage
binding): :class:`pynq_nbq.kernel.builds.KernelBuild`.  This module is the model that
chooses one for a board and a set of networks:

* the buffer maxima (:func:`network_limits`) are the largest engine layer's: MAX_CIN
  its input channels (the host never tiles them), MAX_COUT its output channels, MAX_W
  and MAX_H its input columns and rows (so no layer is tiled), each at least 4 (the
  kernel's ``static_assert``);
* (Pm, Pn) and the storage binding (buffers in UltraRAM, small RAMs in LUTRAM) are
  :func:`.kernel.choose`'s: the most arrays that fit at the pessimistic cost (<= 70 % LUT,
  <= 80 % BRAM18 and URAM, DSP within the part; vpe within the paper's 768 DSPs capped at
  the part's), of the bindings that fit as many the one with the fewest LUTs;
* the svpe build's code width is the narrowest that runs the networks' widest weights.

The networks default to the embedded ones (``pynq_nbq/models/*/manifest.json``).
``pynq_nbq/kernel/builds.py`` holds the committed table of every board's default builds;
``tests/test_perf_sizing.py`` fails when this model would pick another.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

from ..datapath import PEKind
from ..kernel.builds import KernelBuild
from ..kernel.protocol import KernelInfo
from .boards import Board, available_boards, load_board
from .kernel import BUILDS, build_for, build_resources, choose, family_of
from .layers import Layer, layers_from_manifest

#: The smallest MAX_W / MAX_H the kernel accepts (hls/nbq_conv.cpp's static_assert: a
#: pooled 3x3 tile needs 4 columns and rows).
MIN_EXTENT = 4


def engine_layers(layers: list[Layer]) -> list[Layer]:
    """The layers the conv engine runs (3x3 pad 1 / 1x1, stride 1, groups 1), a 2x2
    max-pool that follows one fused into it (:func:`.model.fuse_pools`)."""
    from .model import fuse_pools, placement

    places = [placement(lay, "engine") for lay in layers]
    work, fused = fuse_pools(list(layers), places)
    return [
        lay
        for lay, (where, _r, _k), was in zip(work, places, fused, strict=True)
        if where == "fpga" and not was
    ]


def network_limits(networks: Iterable[list[Layer]]) -> dict[str, int]:
    """Buffer maxima (``max_h``, ``max_w``, ``max_cin``, ``max_cout``) that run every
    engine layer of ``networks`` in one column tile and one output-channel group: the
    largest input rows, columns, input and output channels (rows and columns >= 4).
    ValueError when no network has an engine layer."""
    layers = [lay for net in networks for lay in engine_layers(net)]
    if not layers:
        raise ValueError("no engine layer (3x3 pad 1 / 1x1, stride 1, groups 1) to size for")
    return {
        "max_h": max(MIN_EXTENT, max(lay.in_height for lay in layers)),
        "max_w": max(MIN_EXTENT, max(lay.in_width for lay in layers)),
        "max_cin": max(lay.in_channels for lay in layers),
        "max_cout": max(lay.out_channels for lay in layers),
    }


def network_build_limits(board: Board, layers: list[Layer]) -> dict[str, dict[str, int]] | None:
    """Per build name, the buffer maxima :func:`size_build` gives for one network on
    ``board``; None (``hls/nbq_params.h``'s limits) when the network has no engine layer.
    ValueError when a build fits at no MAX_COUT."""
    try:
        network_limits([layers])
    except ValueError:
        return None
    return {build: size_build(board, build, [layers]).info.limits for build in BUILDS}


def embedded_networks() -> dict[str, tuple[str, int, list[Layer]]]:
    """name -> (PE kind, weight bits, layers) of every embedded bundle
    (``pynq_nbq/models/<name>/manifest.json``, read without its arrays)."""
    folder = resources.files("pynq_nbq").joinpath("models")
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        manifest = entry.joinpath("manifest.json")
        if not manifest.is_file():
            continue
        data = json.loads(manifest.read_text("utf-8"))
        out[entry.name] = (data["datapath"], int(data["weight_bits"]), layers_from_manifest(data))
    return out


def cout_candidates(max_cout: int) -> list[int]:
    """MAX_COUT values to try, largest first: the networks' own, then the powers of two
    below it down to 8 (the host cuts a layer's outputs into groups of MAX_COUT, each
    loading its weights once per batch: a smaller weight buffer for more loads)."""
    out = [max_cout]
    p = 1 << (max_cout - 1).bit_length() - 1 if max_cout > 1 else 1
    while p >= 8:
        if p < max_cout:
            out.append(p)
        p //= 2
    return out


def size_build(board: Board | str, build: str, networks: Iterable[list[Layer]]) -> KernelBuild:
    """The build ``build`` (``vpe``, ``svpe3``, ``svpe5``) sized for ``networks`` on
    ``board``: maxima :func:`network_limits`, MAX_COUT lowered (:func:`cout_candidates`)
    while that lets more arrays fit, (Pm, Pn, URAM, LUTRAM) :func:`.kernel.choose`.  ValueError
    (naming what the smallest build needs) when no MAX_COUT fits."""
    b = load_board(board)
    limits = network_limits(list(networks))
    best, first_error = None, None
    for cout in cout_candidates(limits["max_cout"]):
        lim = {**limits, "max_cout": cout}
        try:
            pm, pn, uram, lutram = choose(build, b, lim)
        except ValueError as exc:
            first_error = first_error or exc
            continue
        if best is None or pm * pn > best[0] * best[1]:
            best = (pm, pn, uram, lutram, lim)
    if best is None:
        raise ValueError(f"{first_error} (MAX_COUT down to {cout} tried)")
    pm, pn, uram, lutram, lim = best
    pe, bits = BUILDS[build]
    return KernelBuild(
        board=b.name,
        info=KernelInfo(PEKind.parse(pe), pm, pn, **lim, weight_bits=bits),
        uram=tuple(sorted(uram)),
        lutram=tuple(sorted(lutram)),
    )


def default_builds(board: Board | str) -> dict[str, KernelBuild]:
    """The board's default vpe, svpe3 and svpe5 builds, sized for every embedded network
    (each build for all of them: a user may run any embedded bundle on either kind's
    sizes); the ``svpe`` entry is the narrowest svpe build that runs the embedded svpe
    bundles."""
    nets = embedded_networks()
    layers = [lay for _pe, _bits, lay in nets.values()]
    out = {build: size_build(board, build, layers) for build in BUILDS}
    widest = max((bits for pe, bits, _ in nets.values() if pe == "svpe"), default=5)
    out["svpe"] = out[build_for("svpe", widest)]
    return out


def default_table() -> dict[str, dict[str, KernelBuild]]:
    """:func:`default_builds` of every shipped board (what ``kernel/builds.py`` commits)."""
    return {name: default_builds(name) for name in available_boards()}


def build_report(kb: KernelBuild) -> dict[str, Any]:
    """A build's modelled resources against its board's totals (for reports)."""
    b = load_board(kb.board)
    res = build_resources(
        kb.build_name,
        kb.info.pm,
        kb.info.pn,
        kb.info.limits,
        frozenset(kb.uram),
        family_of(b),
        frozenset(kb.lutram),
    )
    return {
        "name": kb.name,
        "defines": kb.defines(),
        "lut_pessimistic": res["lut_pessimistic"],
        "lut_pct": 100 * res["lut_pessimistic"] / b.lut,
        "dsp": res["dsp"],
        "dsp_pct": 100 * res["dsp"] / b.dsp,
        "bram18": res["bram18"],
        "bram18_pct": 100 * res["bram18"] / b.bram18,
        "uram": res["uram"],
        "uram_pct": 100 * res["uram"] / b.uram if b.uram else 0.0,
        "family": res["family"],
    }


def table_source(table: dict[str, dict[str, KernelBuild]]) -> str:
    """The Python lines of ``kernel/builds.py``'s TABLE and DEFAULT_SVPE for ``table``."""
    lines = ["TABLE = {"]
    for board, builds in table.items():
        lines.append(f"    {board!r}: {{")
        for name in BUILDS:
            kb = builds[name]
            i = kb.info
            lines.append(
                f"        {name!r}: _b({kb.board!r}, {kb.kind!r}, {i.code_bits}, {i.pm}, "
                f"{i.pn}, {i.max_cin}, {i.max_cout}, {i.max_w}, {i.max_h}, {kb.uram!r}, "
                f"{kb.lutram!r}),"
            )
        lines.append("    },")
    lines.append("}")
    lines.append(
        "DEFAULT_SVPE = {"
        + ", ".join(f"{b!r}: {t['svpe'].build_name!r}" for b, t in table.items())
        + "}"
    )
    return "\n".join(lines)


def table_markdown(table: dict[str, dict[str, KernelBuild]]) -> str:
    """Every board's default builds with their modelled resources, as a Markdown table."""
    rows = [
        "| board | build | (Pm, Pn) | MAX_W x MAX_H, CIN, COUT | URAM bound | LUTRAM bound "
        "| LUT, pessimistic | DSP | BRAM18 | URAM |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for board, builds in table.items():
        for name in BUILDS:
            kb = builds[name]
            i, r = kb.info, build_report(kb)
            mark = " (default svpe)" if builds["svpe"] is kb else ""
            rows.append(
                f"| {board} | {name}{mark} | ({i.pm}, {i.pn}) | {i.max_w} x {i.max_h}, "
                f"{i.max_cin}, {i.max_cout} | {', '.join(kb.uram) or '-'} "
                f"| {', '.join(kb.lutram) or '-'} "
                f"| {r['lut_pessimistic']} ({r['lut_pct']:.0f} %) "
                f"| {r['dsp']} ({r['dsp_pct']:.0f} %) "
                f"| {r['bram18']} ({r['bram18_pct']:.0f} %) | {r['uram']} ({r['uram_pct']:.0f} %) |"
            )
    return "\n".join(rows)


def next_markdown(table: dict[str, dict[str, KernelBuild]]) -> str:
    """Per board, the next doubling of the default vpe and svpe build's Pm or Pn with
    every small RAM in LUTRAM (:data:`.kernel.LUTRAM_SWITCHES`): its pessimistic LUTs,
    DSPs, BRAM18 with nothing in UltraRAM, and the URAM with the weight banks and line
    buffers in UltraRAM (parts that have it) - what holds each default build back."""
    from .constants import PAPER_DSP_BUDGET
    from .kernel import LUTRAM_SWITCHES, URAM_SWITCHES

    every = frozenset(LUTRAM_SWITCHES)
    rows = [
        "| board | build | next (Pm, Pn) | LUT, pessimistic | DSP (of budget) "
        "| BRAM18, nothing in URAM | URAM, weights + lines in URAM |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for board, builds in table.items():
        b = load_board(board)
        fam = family_of(b)
        for kb in (builds["vpe"], builds["svpe"]):
            budget = min(PAPER_DSP_BUDGET, b.dsp) if kb.kind == "vpe" else b.dsp
            for pm, pn in ((2 * kb.info.pm, kb.info.pn), (kb.info.pm, 2 * kb.info.pn)):
                r = build_resources(kb.build_name, pm, pn, kb.info.limits, frozenset(), fam, every)
                ur = build_resources(
                    kb.build_name, pm, pn, kb.info.limits, frozenset(URAM_SWITCHES), fam, every
                )
                uram = f"{ur['uram']} of {b.uram}" if b.uram else "-"
                rows.append(
                    f"| {board} | {kb.build_name} ({kb.info.pm}, {kb.info.pn}) | ({pm}, {pn}) "
                    f"| {100 * r['lut_pessimistic'] / b.lut:.1f} % | {r['dsp']} ({budget}) "
                    f"| {r['bram18']} ({100 * r['bram18'] / b.bram18:.0f} %) | {uram} |"
                )
    return "\n".join(rows)


def perf_markdown(network: str, batch: int) -> str:
    """Per board, the vpe and svpe builds ``nbq perf --network <network> --batch <batch>``
    sizes (:func:`network_build_limits`) and their modelled times and SVPE/VPE."""
    from .kernel import model_kernel
    from .networks import builtin_network

    layers = builtin_network(network)
    rows = [
        "| board | PL clock | vpe build | svpe build | VPE µs | SVPE µs | SVPE/VPE |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for name in available_boards():
        board = load_board(name)
        by_build = network_build_limits(board, layers)
        runs = {}
        for pe, bits in (("vpe", 16), ("svpe", 3)):
            lim = by_build[build_for(pe, bits)] if by_build else None
            runs[pe] = model_kernel(layers, board, pe, bits, limits=lim, batch=batch)
        v, s = runs["vpe"], runs["svpe"]
        desc = {
            pe: f"{r['build']} ({r['resources']['pm']}, {r['resources']['pn']})"
            for pe, r in runs.items()
        }
        rows.append(
            f"| {name} | {board.kernel_clock_mhz:g} MHz | {desc['vpe']} | {desc['svpe']} "
            f"| {v['fpga_time_us']:.2f} | {s['fpga_time_us']:.2f} "
            f"| {v['fpga_time_us'] / s['fpga_time_us']:.2f}x |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Print every board's default builds: a Markdown table, with ``--source`` the lines
    of ``pynq_nbq/kernel/builds.py``'s TABLE (what the model picks today), with
    ``--next`` what the next doubling of each default build needs (:func:`next_markdown`),
    with ``--perf NETWORK [BATCH]`` the modelled SVPE/VPE per board (all modelled)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--perf"] and len(args) in (2, 3):
        print(perf_markdown(args[1], int(args[2]) if len(args) == 3 else 64))
        return 0
    table = default_table()
    if "--next" in args:
        print(next_markdown(table))
    else:
        print(table_source(table) if "--source" in args else table_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
