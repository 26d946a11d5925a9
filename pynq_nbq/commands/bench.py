"""``nbq bench``: VPE vs SVPE vs CPU only on a backend, beside the performance model.

    nbq bench --backend numpy --quick --out bench-out
    nbq bench --backend csim --images 200 --out bench-csim
    nbq bench --backend fpga --overlay sim --quick       # the simulated ZCU102
    nbq bench --backend fpga --overlay DIR --out bench-zcu102   # on the board

Writes ``bench.json`` (keys carry units), ``bench.md`` and ``bench.png`` into
``--out``.  Off the board every timing is labelled "emulated (backend X on host Y),
not hardware".  See docs/bench.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pynq_nbq.blas import limit_blas_threads
from pynq_nbq.cli import CommandError, add_backend_option

#: (batch sizes, single-image runs, images per batch size, labelled images) of --quick
QUICK: tuple[tuple[int, ...], int, int, int] = ((1, 8), 16, 16, 32)
FULL: tuple[tuple[int, ...], int, int, int] = ((1, 8, 64), 200, 256, 1000)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark VPE vs SVPE vs CPU-only: latency, throughput, accuracy, power",
        description=(
            "Run the same labelled images through an svpe and a vpe bundle on a backend, "
            "and the svpe bundle on the numpy engine alone; report latency (mean/p50/p99), "
            "throughput per batch size, the split preprocessing / conv engine / ARM / "
            "driver, per-layer GOP/s, accuracy and agreement, power where rails can be "
            "read, and the performance model's prediction beside every figure. "
            "Off the board all timings are emulated and labelled so (docs/bench.md)."
        ),
    )
    add_backend_option(
        p,
        "numpy",
        "conv-engine backend of the vpe/svpe columns (numpy, the reference engine; unlike "
        "classify, info and serve, not auto: the figures must not depend on a compiler "
        "being present); ",
    )
    p.add_argument("--svpe", metavar="BUNDLE", help="svpe bundle (default: fmnist-svpe)")
    p.add_argument("--vpe", metavar="BUNDLE", help="vpe bundle (default: fmnist-vpe)")
    p.add_argument(
        "--images", type=int, help=f"labelled images (default {FULL[3]}, --quick {QUICK[3]})"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="Fashion-MNIST idx files (default /usr/share/datasets/fashion-mnist)",
    )
    p.add_argument(
        "--folder",
        type=Path,
        help="labelled images instead: one sub-folder per class, or files <index>-*.png",
    )
    p.add_argument(
        "--batch-sizes",
        metavar="B,B,...",
        help=f"throughput batch sizes (default {','.join(map(str, FULL[0]))})",
    )
    p.add_argument("--latency-images", type=int, help="single-image runs for the percentiles")
    p.add_argument("--throughput-images", type=int, help="images per batch size (at least)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches (default 1)")
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="engine threads of the CPU-only column (default: cores, at most 4)",
    )
    p.add_argument(
        "--cpu-backend",
        default="numpy",
        choices=("numpy", "native", "auto"),
        help="the CPU-only column: numpy (the reference engine, default), native (the C kernel) "
        "or auto",
    )
    p.add_argument("--board", default="zcu102", help="board the performance model predicts")
    p.add_argument(
        "--power",
        default="auto",
        choices=("auto", "pynq", "hwmon", "off"),
        help="rail source for power (default auto: pynq on a ZCU102, else hwmon)",
    )
    p.add_argument("--power-idle-s", type=float, default=2.0, help="idle window (s)")
    p.add_argument("--power-active-s", type=float, default=3.0, help="active window (s)")
    p.add_argument(
        "--overlay",
        metavar="DIR|sim",
        help="fpga: folder of nbq_<kind>.bit/.hwh (and the build's nbq_<kind>_report.json), "
        "or 'sim' for the simulated ZCU102 (default: $NBQ_OVERLAY, else the package's)",
    )
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    p.add_argument("--quick", action="store_true", help="a smoke run: few images, two batches")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _positive(value: int, what: str) -> int:
    if value < 1:
        raise CommandError(f"{what} must be >= 1, got {value}")
    return value


def config_from_args(args: argparse.Namespace):
    """A :class:`pynq_nbq.bench.run.BenchConfig` from the parsed arguments."""
    from pynq_nbq.bench.data import FASHION_DIR
    from pynq_nbq.bench.measure import Plan
    from pynq_nbq.bench.run import BenchConfig
    from pynq_nbq.rails import MIN_ENERGY_WINDOW_S

    batches, lat, tput, n = QUICK if args.quick else FULL
    if args.batch_sizes:
        try:
            batches = tuple(int(b) for b in args.batch_sizes.split(","))
        except ValueError as exc:
            raise CommandError(f"--batch-sizes: expected B,B,... integers: {exc}") from exc
    try:
        plan = Plan(
            batches,
            lat if args.latency_images is None else args.latency_images,
            tput if args.throughput_images is None else args.throughput_images,
            args.warmup,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if min(args.power_idle_s, args.power_active_s) < MIN_ENERGY_WINDOW_S:
        raise CommandError(
            f"--power-idle-s and --power-active-s must be >= {MIN_ENERGY_WINDOW_S} s "
            "(the INA226 rails average over ~35 ms; shorter windows give no energy)"
        )
    return BenchConfig(
        backend=args.backend,
        svpe=args.svpe,
        vpe=args.vpe,
        images=_positive(n if args.images is None else args.images, "--images"),
        data_dir=args.data_dir or FASHION_DIR,
        folder=args.folder,
        plan=plan,
        board=args.board,
        cpu_threads=_positive(args.cpu_threads, "--cpu-threads"),
        cpu_backend=args.cpu_backend,
        power=args.power,
        power_idle_s=args.power_idle_s,
        power_active_s=args.power_active_s,
        overlay=args.overlay,
        quick=args.quick,
    )


def run(args: argparse.Namespace) -> int:
    from pynq_nbq.bench.report import write_outputs
    from pynq_nbq.bench.run import run_bench

    cfg = config_from_args(args)
    limit_blas_threads(1)  # single-image latency: see pynq_nbq.blas

    def progress(total: int):
        try:
            from tqdm import tqdm
        except ImportError:  # the bar is a nicety: run without it
            return None
        return tqdm(total=total, unit="img", desc="nbq bench", disable=None)

    try:
        report = run_bench(cfg, progress=None if args.no_progress else progress)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    paths = write_outputs(report, args.out)
    cols = report["columns"]
    print(f"nbq bench: {report['timing_label']}")
    for key in ("vpe", "svpe", "cpu"):
        c = cols[key]
        print(
            f"  {c['title']:16s} latency mean {c['latency']['latency_ms_mean']:.3f} ms "
            f"(model {c['vs_model']['end_to_end_latency_ms_mean']['predicted_ms']:.4g} ms), "
            f"accuracy {c['accuracy_top1_fraction']:.4f}"
        )
    agree = report["accuracy"]["svpe_vpe_top1_agreement_fraction"]
    print(f"  top-1 agreement SVPE vs VPE: {agree:.4f}")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return 0
