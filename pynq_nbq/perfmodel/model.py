"""Per-layer and per-network performance, power and energy: everything here is modelled.

A conv layer the engine takes runs on Pm x Pn arrays (:mod:`.resources`) for

    T_compute = groups * Ho * Wo * tiles(M/g, Pm) * tiles(N/g, Pn) / Freq   (Eq. 36)

then streams its input and output maps through DDR and loads its weights and
first k lines once (Eq. 39).  ``bandwidth="eq38"`` gives the engine exactly
Eq. 38's minimum bandwidth (the paper's Eq. 43 setting: never bandwidth-bound);
``bandwidth="board"`` gives it the board's DDR bandwidth, shared by reads and
writes, and the layer is bandwidth-bound when streaming its maps takes longer
than computing.  Every other layer runs on the ARM cores at an assumed
throughput.  ``docs/perfmodel.md`` states each assumption.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..datapath import conv_engine_takes
from .boards import Board, load_board
from .constants import ACT_BITS, PAPER_ARRAYS, VPE_WEIGHT_BITS
from .equations import M_FORMS, tiles
from .layers import Layer, layers_from_list, layers_from_manifest
from .power import engine_dynamic_w
from .resources import SPLITS, Parallelism, check_pe, choose_parallelism, weight_bram18

KERNEL_MODES = ("engine", "universal")
BANDWIDTH_MODES = ("board", "eq38")

MODEL_NOTE = (
    "modelled: analytic model after Chen et al. 2021 (Eq. 35-44) with this project's "
    "extensions (docs/perfmodel.md); not a measurement"
)


@dataclass(frozen=True)
class ModelOptions:
    """How to model: PE kind, weight bits, Eq. 36 form, kernel support, bandwidth, limits."""

    pe: str = "svpe"
    n_bits: int = 3
    m_form: str = "ceil"
    kernels: str = "engine"
    bandwidth: str = "board"
    dsp_budget: int | None = None
    fabric_limits: bool = True
    split: str = "paper"
    fuse_pools: bool = True
    clock_mhz: float | None = None
    arm_gops: float | None = None
    call_overhead_us: float = 0.0

    def __post_init__(self) -> None:
        check_pe(self.pe, self.n_bits)
        for name, value, allowed in (
            ("m_form", self.m_form, M_FORMS),
            ("kernels", self.kernels, KERNEL_MODES),
            ("bandwidth", self.bandwidth, BANDWIDTH_MODES),
            ("split", self.split, SPLITS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        for name in ("dsp_budget", "clock_mhz", "arm_gops"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.call_overhead_us < 0:
            raise ValueError(f"call_overhead_us must be >= 0, got {self.call_overhead_us!r}")

    @property
    def weight_bits(self) -> int:
        """b_weight of Eq. 39: n for the SVPE, 16 for the VPE."""
        return VPE_WEIGHT_BITS if self.pe == "vpe" else self.n_bits


def engine_takes(layer: Layer) -> tuple[bool, str]:
    """Whether the project's conv engine runs ``layer`` (docs/datapath.md section 3), and why not.

    It takes 3x3 convs with pad 1, stride 1 and 1x1 convs with pad 0, stride 1, groups 1.
    """
    if layer.kind != "conv":
        return False, f"{layer.kind} runs on the ARM cores"
    k, s, p, g = layer.kernel, layer.stride, layer.padding, layer.groups
    if conv_engine_takes(k, s, p, g):
        return True, ""
    return False, (
        f"{k}x{k} conv, stride {s}, pad {p}, groups {g}: the engine takes only 3x3 pad 1 "
        "and 1x1 pad 0, stride 1, groups 1"
    )


def placement(layer: Layer, kernels: str) -> tuple[str, str, int | None]:
    """(``"fpga"`` or ``"arm"``, reason when ARM, k of the array that runs it)."""
    if layer.kind != "conv":
        return "arm", f"{layer.kind} runs on the ARM cores", None
    if kernels == "universal":
        return "fpga", "", layer.kernel
    ok, reason = engine_takes(layer)
    return ("fpga", "", 3) if ok else ("arm", reason, None)


def fuse_pools(layers: list[Layer], places: list[tuple]) -> tuple[list[Layer], list[bool]]:
    """Fold each 2x2/2 max-pool that directly follows an engine conv into that conv.

    The engine pools in its output stage (docs/datapath.md), so the pool costs no
    time and the conv writes the pooled map.  Returns the new layers and which
    layers were folded away.
    """
    out = list(layers)
    fused = [False] * len(layers)
    for i in range(1, len(layers)):
        lay, prev = layers[i], out[i - 1]
        is_2x2 = lay.kind == "maxpool" and lay.kernel == 2 and lay.stride == 2
        if is_2x2 and lay.padding == 0 and places[i - 1][0] == "fpga" and not prev.pool:
            if prev.kind == "conv" and not fused[i - 1]:
                out[i - 1] = dataclasses.replace(
                    prev, pool=True, out_height=prev.out_height // 2, out_width=prev.out_width // 2
                )
                fused[i] = True
    return out, fused


def fpga_layer_times(
    layer: Layer,
    pm: int,
    pn: int,
    opts: ModelOptions,
    clock_mhz: float,
    board_bandwidth_gbps: float,
) -> dict[str, Any]:
    """Times (s) and bandwidths (bit/s) of one conv layer on Pm x Pn arrays.

    Reduces to Eq. 36/38/39/41 for an unpadded-shape, stride-1, ungrouped layer.
    """
    freq = clock_mhz * 1e6
    g = layer.groups
    hw = layer.conv_height * layer.conv_width
    mg, ng = layer.in_channels // g, layer.out_channels // g
    t_compute = g * hw * tiles(mg, pm, opts.m_form) * tiles(ng, pn, opts.m_form) / freq
    in_bits = layer.in_channels * layer.in_height * layer.in_width * ACT_BITS
    out_bits = layer.out_elems * ACT_BITS
    weight_bits = layer.weights * opts.weight_bits
    line_bits = layer.kernel * layer.in_width * layer.in_channels * ACT_BITS
    bw_eq38 = max(in_bits, out_bits) / t_compute
    if opts.bandwidth == "eq38":
        bw = bw_eq38
        t_stream = t_compute
    else:
        bw = board_bandwidth_gbps * 8e9
        t_stream = (in_bits + out_bits) / bw
    t_init = (weight_bits + line_bits) / bw
    if t_init > max(t_compute, t_stream):
        bound = "weights"  # loading weights and first lines over DDR takes longest
    elif t_stream > t_compute * (1 + 1e-9):
        bound = "bandwidth"  # streaming the maps takes longer than computing
    else:
        bound = "compute"
    time = max(t_compute, t_stream) + t_init + opts.call_overhead_us * 1e-6
    return {
        "t_compute_s": t_compute,
        "t_stream_s": t_stream,
        "t_init_s": t_init,
        "time_s": time,
        "bound": bound,
        "bw_needed_bps": (in_bits + out_bits) / t_compute,
        "bw_eq38_bps": bw_eq38,
        "bw_used_bps": bw,
    }


def arm_layer_time(layer: Layer, board: Board, arm_gops: float) -> float:
    """Seconds on the ARM cores: the larger of compute at ``arm_gops`` and memory traffic.

    Conv/linear count their MAC operations; pools count a compare per window tap,
    gap/add/relu one op per input; traffic is input + output at 16 bits over the
    cores' streaming bandwidth.  A flatten is free (a reshape).
    """
    if layer.kind == "flatten":
        return 0.0
    if layer.kind in ("maxpool", "avgpool"):
        n_ops = layer.out_elems * layer.kernel**2
    elif layer.kind in ("gap", "add", "relu"):
        n_ops = layer.in_elems
    else:
        n_ops = layer.ops
    traffic_bytes = (layer.in_elems + layer.out_elems) * ACT_BITS / 8
    return max(n_ops / (arm_gops * 1e9), traffic_bytes / (board.arm.memory_bandwidth_gbps * 1e9))


def _as_layers(layers: Any) -> list[Layer]:
    from ..manifest import Manifest

    if isinstance(layers, (dict, Manifest)):
        return layers_from_manifest(layers)
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError("layers: expected a non-empty list of Layer objects or dicts")
    if all(isinstance(lay, Layer) for lay in layers):
        return list(layers)
    return layers_from_list(list(layers))


def _arm_row(layer: Layer, reason: str, seconds: float, board: Board) -> dict[str, Any]:
    power = board.static_w + board.arm.active_power_w
    return {
        "where": "arm",
        "reason": reason,
        "bound": "arm",
        "time_us": seconds * 1e6,
        "power_w": power,
        "energy_uj": power * seconds * 1e6,
    }


def model_network(
    layers: Any,
    board: str | Path | Board = "zcu102",
    pe: str = "svpe",
    n_bits: int = 3,
    m_form: str = "ceil",
    **options: Any,
) -> dict[str, Any]:
    """Model one image through ``layers`` on ``board``: per-layer and total, all modelled.

    ``layers``: :class:`Layer` objects, plain dicts (:func:`layers_from_list`) or a
    bundle manifest.  Further keyword options are the fields of
    :class:`ModelOptions` (``kernels``, ``bandwidth``, ``dsp_budget``,
    ``fabric_limits``, ``split``, ``fuse_pools``, ``clock_mhz``, ``arm_gops``,
    ``call_overhead_us``).  Returns a JSON-ready dict whose keys carry units.
    """
    opts = ModelOptions(pe=pe, n_bits=n_bits, m_form=m_form, **options)
    brd = load_board(board)
    original = _as_layers(layers)
    clock = opts.clock_mhz or brd.pl_clock_mhz
    bandwidth = brd.pl_bandwidth_gbps(clock)
    arm_gops = opts.arm_gops or brd.arm.gops
    places = [placement(lay, opts.kernels) for lay in original]
    work, fused = (
        fuse_pools(original, places) if opts.fuse_pools else (original, [False] * len(original))
    )

    engines = _choose_engines(work, places, brd, opts, clock, bandwidth)

    rows: list[dict[str, Any]] = []
    for lay, orig, (where, reason, k), was_fused in zip(work, original, places, fused, strict=True):
        row = _row_skeleton(lay, orig)
        if was_fused:
            row.update(where="fpga", reason=f"fused into {rows[-1]['name']}", bound="fused")
            row.update(time_us=0.0, power_w=0.0, energy_uj=0.0)
        elif where == "arm":
            row.update(_arm_row(lay, reason, arm_layer_time(lay, brd, arm_gops), brd))
        else:
            assert k is not None, f"{lay.name}: an FPGA layer without an array size"
            row.update(_fpga_row(lay, engines[k], k, opts, clock, bandwidth, brd))
        row["gops"] = lay.ops / (row["time_us"] * 1e3) if row["time_us"] > 0 and lay.ops else None
        rows.append(row)
    return {
        "modelled": True,
        "note": MODEL_NOTE,
        "warnings": _warnings(work, places, engines, opts, brd),
        "board": brd.describe(),
        "pe": opts.pe,
        "weight_bits": opts.weight_bits,
        "options": dataclasses.asdict(opts),
        "clock_mhz": clock,
        "bandwidth_gbps": bandwidth,
        "arm_gops": arm_gops,
        "engines": [_engine_dict(par, opts, clock, brd) for par in engines.values()],
        "layers": rows,
        "total": _totals(rows),
    }


def _choose_engines(
    work: list[Layer], places: list, brd: Board, opts: ModelOptions, clock: float, bandwidth: float
) -> dict[int, Parallelism]:
    """One engine per array kernel size k that the FPGA layers use: its (Pm, Pn), chosen
    to minimise those layers' modelled time within the board's resources."""
    engines: dict[int, Parallelism] = {}
    for k in sorted({p[2] for p in places if p[0] == "fpga"}):
        members = [lay for lay, p in zip(work, places, strict=True) if p[0] == "fpga" and p[2] == k]

        def score(pm: int, pn: int, members: list[Layer] = members) -> float:
            return sum(
                fpga_layer_times(m, pm, pn, opts, clock, bandwidth)["time_s"] for m in members
            )

        engines[k] = choose_parallelism(
            brd,
            opts.pe,
            k,
            opts.n_bits,
            opts.dsp_budget,
            opts.fabric_limits,
            members,
            opts.split,
            score,
        )
    return engines


def _row_skeleton(lay: Layer, orig: Layer) -> dict[str, Any]:
    """A layer's row with every FPGA-only field None (``orig``: the layer as given,
    ``lay``: as modelled, a max-pool fused into it)."""
    return {
        "name": orig.name,
        "kind": orig.kind,
        "shape": orig.shape_text(),
        "kernel": orig.kernel if orig.kind in ("conv", "maxpool", "avgpool") else None,
        "stride": orig.stride if orig.kind in ("conv", "maxpool", "avgpool") else None,
        "groups": orig.groups if orig.kind == "conv" else None,
        "ops": lay.ops,
        "gop": lay.ops / 1e9,
        "array_k": None,
        "pm": None,
        "pn": None,
        "arrays": None,
        "dsp": None,
        "t_compute_us": None,
        "t_stream_us": None,
        "t_init_us": None,
        "bw_needed_gbps": None,
        "bw_eq38_gbps": None,
        "utilisation": None,
        "weights_bram18": None,
    }


def _fpga_row(
    lay: Layer,
    par: Parallelism,
    k: int,
    opts: ModelOptions,
    clock: float,
    bandwidth: float,
    brd: Board,
) -> dict[str, Any]:
    """The modelled fields of a layer on engine ``par`` (array kernel ``k``)."""
    t = fpga_layer_times(lay, par.pm, par.pn, opts, clock, bandwidth)
    power = brd.static_w + engine_dynamic_w(opts.pe, opts.n_bits, k, par.arrays, clock)
    peak_ops = par.peak_gops(clock) * 1e9
    return dict(
        where="fpga",
        reason="",
        bound=t["bound"],
        array_k=k,
        pm=par.pm,
        pn=par.pn,
        arrays=par.arrays,
        dsp=par.dsp,
        time_us=t["time_s"] * 1e6,
        t_compute_us=t["t_compute_s"] * 1e6,
        t_stream_us=t["t_stream_s"] * 1e6,
        t_init_us=t["t_init_s"] * 1e6,
        bw_needed_gbps=t["bw_needed_bps"] / 8e9,
        bw_eq38_gbps=t["bw_eq38_bps"] / 8e9,
        utilisation=lay.ops / (peak_ops * t["time_s"]),
        weights_bram18=weight_bram18(lay, opts.weight_bits),
        power_w=power,
        energy_uj=power * t["time_s"] * 1e6,
    )


def _warnings(
    layers: list[Layer],
    places: list[tuple],
    engines: dict[int, Parallelism],
    opts: ModelOptions,
    board: Board,
) -> list[str]:
    """Where the model leaves the ground its sources cover."""
    out = []
    for par in engines.values():
        equiv = par.arrays * par.k * par.k / 9
        if equiv > PAPER_ARRAYS[opts.pe] * 1.01:
            out.append(
                f"power of the {par.k}x{par.k} {opts.pe.upper()} engine is extrapolated: "
                f"{equiv:.0f} 3x3-equivalent arrays against the {PAPER_ARRAYS[opts.pe]} of the "
                "paper's design it is calibrated on (Table VIII)"
            )
        for res in ("lut", "ff"):
            if getattr(par, res) > getattr(board, res):
                out.append(
                    f"the {par.k}x{par.k} {opts.pe.upper()} engine needs {getattr(par, res)} "
                    f"{res.upper()}s, more than the {board.name}'s {getattr(board, res)} "
                    "(fabric limits are off)"
                )
    for lay, (where, _, k) in zip(layers, places, strict=True):
        if where != "fpga":
            continue
        par = engines[k]
        free = board.bram18_capacity - (par.bram18 or 0)
        need = weight_bram18(lay, opts.weight_bits)
        if need > free:
            out.append(
                f"{lay.name}: its weights need {need} BRAM18 but only {free} are left beside "
                "the buffers; Eq. 39 loads them once, so a real engine would re-stream them"
            )
        if opts.m_form == "literal" and lay.in_channels // lay.groups < par.pm:
            out.append(
                f"{lay.name}: literal Eq. 36 credits idle lanes (M = "
                f"{lay.in_channels // lay.groups} < Pm = {par.pm})"
            )
    return out


def _engine_dict(par: Parallelism, opts: ModelOptions, clock: float, board: Board) -> dict:
    out = par.to_dict(clock)
    dynamic = engine_dynamic_w(opts.pe, opts.n_bits, par.k, par.arrays, clock)
    out["dynamic_power_w"] = dynamic
    out["power_w"] = board.static_w + dynamic
    return out


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    time_us = sum(r["time_us"] for r in rows)
    fpga = [r for r in rows if r["where"] == "fpga"]
    fpga_us = sum(r["time_us"] for r in fpga)
    n_ops = sum(r["ops"] for r in rows)
    fpga_ops = sum(r["ops"] for r in fpga)
    energy_uj = sum(r["energy_uj"] for r in rows)
    return {
        "ops": n_ops,
        "gop": n_ops / 1e9,
        "latency_ms": time_us / 1e3,
        "images_per_s": 1e6 / time_us if time_us > 0 else None,
        "gops": n_ops / (time_us * 1e3) if time_us > 0 else None,
        "fpga_time_ms": fpga_us / 1e3,
        "arm_time_ms": (time_us - fpga_us) / 1e3,
        "fpga_gop": fpga_ops / 1e9,
        "fpga_gops": fpga_ops / (fpga_us * 1e3) if fpga_us > 0 else None,
        "energy_mj": energy_uj / 1e3,
        "power_w": energy_uj / time_us if time_us > 0 else None,
        "fpga_layers": len([r for r in fpga if r["bound"] != "fused"]),
        "arm_layers": len(rows) - len(fpga),
    }


def estimate_energy_per_image(
    layers: Any,
    board: str | Path | Board = "zcu102",
    pe: str = "svpe",
    n_bits: int = 3,
    **options: Any,
) -> dict[str, Any]:
    """Modelled latency, power and energy of one image (for the HTTP service).

    Same inputs as :func:`model_network` (layers may be a bundle manifest).
    Returns ``latency_ms``, ``images_per_s``, ``power_w`` (average over the image),
    ``energy_mj``, ``gops``, ``fpga_time_ms``, ``arm_time_ms``, ``board``, ``pe``,
    ``weight_bits``, ``note`` and ``"modelled": True``.
    """
    result = model_network(layers, board, pe, n_bits, **options)
    total = result["total"]
    return {
        "modelled": True,
        "note": MODEL_NOTE,
        "board": result["board"]["name"],
        "pe": result["pe"],
        "weight_bits": result["weight_bits"],
        "latency_ms": total["latency_ms"],
        "images_per_s": total["images_per_s"],
        "power_w": total["power_w"],
        "energy_mj": total["energy_mj"],
        "gops": total["gops"],
        "fpga_time_ms": total["fpga_time_ms"],
        "arm_time_ms": total["arm_time_ms"],
    }
