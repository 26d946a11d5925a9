#!/usr/bin/env python3
"""Load-test ``nbq serve``: the server (waitress, one process) is spawned on 127.0.0.1,
this process is the client.  Prints p50/p99 latency, server overhead (total - engine)
and memory growth as Markdown, and the full result as JSON.

    python -m scripts.bench_server                      # embedded default, 2,000 x 8
    python -m scripts.bench_server --model DIR --requests 500 --json out.json
    python -m scripts.bench_server --memory             # RSS: 16 + 6 x 36 Mpx PNG
    python -m scripts.bench_server --overload           # goodput at concurrency 8 and 64
    python -m scripts.bench_server --attacks            # issue 22: peak RSS per attack class

--server-root DIR runs the server from another checkout (a before/after comparison).

Without the embedded default model it benchmarks a random bundle (and says so).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pynq_nbq import api  # noqa: E402
from pynq_nbq.testing import random_bundle  # noqa: E402
from scripts.server_load import (  # noqa: E402
    bench,
    bundle_attack_bench,
    image_attack_bench,
    memory_bench,
    overload_bench,
    slow_reader_bench,
)

ROWS = [
    ("client latency", "client_latency"),
    ("server total", "server_total"),
    ("engine", "engine"),
    ("overhead = total - engine", "overhead"),
    ("overhead excl. queue wait", "overhead_excl_queue"),
]


def table(result: dict) -> str:
    """The headline numbers as a Markdown table (ms)."""
    cols = [("load", f"c={result['concurrency']}")]
    if result.get("sequential"):
        cols.append(("sequential", "c=1"))
    head = "| ms | " + " | ".join(f"{lab} p50 | {lab} p99" for _, lab in cols) + " |"
    sep = "|---|" + "---:|" * (2 * len(cols))
    lines = [head, sep]
    for label, key in ROWS:
        cells = []
        for part, _ in cols:
            r = result[part]
            cells += [f"{r[key + '_p50_ms']:.3f}", f"{r[key + '_p99_ms']:.3f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="bundle name or path (default: embedded)")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sequential", type=int, default=300, help="extra requests at c=1")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--json", dest="json_out", default=None, help="also write the result here")
    ap.add_argument("--memory", action="store_true", help="the RSS benchmark instead")
    ap.add_argument("--big-sequential", type=int, default=16, help="--memory: one at a time")
    ap.add_argument("--big-concurrent", type=int, default=6, help="--memory: all at once")
    ap.add_argument("--overload", action="store_true", help="goodput at --concurrencies")
    ap.add_argument("--concurrencies", default="8,64", help="--overload: comma list")
    ap.add_argument("--photos", action="store_true", help="--overload: 1024x768 JPEGs")
    ap.add_argument("--server-root", default=None, help="checkout the server runs from")
    ap.add_argument("--attacks", action="store_true", help="peak RSS per attack class (#22)")
    ap.add_argument("--scale", type=float, default=1.0, help="--attacks: size of the images")
    ap.add_argument("--classes", default=None, help="--attacks: comma list of image classes")
    ap.add_argument("--bomb-mb", type=int, default=1500, help="--attacks: zip bomb size")
    ap.add_argument(
        "--deadline-s", type=float, default=None, help="--attacks: the server's --deadline-s"
    )
    args = ap.parse_args(argv)
    print(f"command: {' '.join(['python', 'scripts/bench_server.py', *sys.argv[1:]])}")
    if args.attacks:
        res = attacks(args)
        _write(args.json_out, res)
        return 0 if res["worst_peak_mb"] < 1024 else 1
    if args.memory:
        res = memory_bench(
            args.model, args.big_sequential, args.big_concurrent, root=args.server_root
        )
        print(json.dumps(res, indent=1))
        _write(args.json_out, res)
        return 0 if res["errors"] == 0 else 1
    if args.overload:
        cs = tuple(int(c) for c in args.concurrencies.split(","))
        res = overload_bench(
            args.model, args.requests, cs, root=args.server_root, photos=args.photos
        )
        print("| concurrency | requests | 200 | 503 | other | goodput (200/s) |")
        print("|---:|---:|---:|---:|---:|---:|")
        for c, r in res.items():
            print(
                f"| {c} | {r['requests']} | {r['ok']} | {r['refused_503']} | {r['other']} "
                f"| {r['goodput_rps']} |"
            )
        _write(args.json_out, res)
        return 0

    model = args.model
    tmp = None
    if model is None and api.DEFAULT_MODEL not in api.embedded_models():
        tmp = tempfile.TemporaryDirectory()
        model = str(random_bundle(Path(tmp.name) / "random-svpe", "svpe", seed=0).path)
        print(f"note: no embedded default model; benchmarking a random bundle ({model})")
    res = bench(model, args.requests, args.concurrency, args.sequential, args.warmup, args.backend)
    metrics_text = res.pop("metrics_text")
    load = res["load"]
    print(f"model: {res['model']}  backend: {res['backend']}  payloads: {res['payloads']}")
    print(
        f"requests: {load['requests']} at concurrency {res['concurrency']}, errors "
        f"{load['errors']}, mismatches vs offline engine {load['mismatches']}, "
        f"{load['throughput_rps']} req/s over {load['wall_s']} s"
    )
    if res.get("sequential"):
        s = res["sequential"]
        print(
            f"sequential: {s['requests']} requests, errors {s['errors']}, mismatches "
            f"{s['mismatches']}"
        )
    print(
        f"server RSS: {res['rss_before_mb']} MB after warm-up -> {res['rss_after_mb']} MB "
        f"after the load (growth {res['rss_growth_mb']} MB)"
    )
    print(f"/metrics: HTTP {res['metrics_status']}, {len(metrics_text.splitlines())} lines")
    print()
    print(table(res))
    print()
    print(json.dumps(res, indent=1))
    _write(args.json_out, res)
    if tmp is not None:
        tmp.cleanup()
    return 0 if load["errors"] == 0 and load["mismatches"] == 0 else 1


def attacks(args: argparse.Namespace) -> dict:
    """Issue 22: every attack class against one server with default limits; a table of
    peak RSS per class (and the JSON)."""
    model = args.model
    if model is None:
        model = str(api.model_path(api.DEFAULT_MODEL))
    classes = args.classes.split(",") if args.classes else None
    extra = () if args.deadline_s is None else ("--deadline-s", str(args.deadline_s))
    img = image_attack_bench(model, classes, args.scale, server_args=extra)
    slow = [slow_reader_bench(model), slow_reader_bench(model, trickle=True)]
    bund = bundle_attack_bench(model, args.bomb_mb)
    print(f"server: {img['server']}")
    print(
        f"idle RSS {img['rss_idle_mb']} MB; images at scale {args.scale}, {img['concurrency']} "
        "clients x 2 rounds per class"
    )
    print()
    print("| class | body | statuses | peak RSS (MB) | RSS after (MB) | probe after |")
    print("|---|---:|---|---:|---:|---|")
    peaks = []
    for name, r in img["classes"].items():
        peaks.append(r["rss_peak_mb"] or 0)
        st = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        print(
            f"| {name} | {r['body_bytes']} B | {st} | {r['rss_peak_mb']} | {r['rss_after_mb']} "
            f"| {r['probe_after']['status']} in {r['probe_after']['ms']} ms |"
        )
    for r in slow:
        peaks.append(r["rss_peak_mb"] or 0)
        print(
            f"| pipelined slow readers ({r['connections']} x {r['pipelined']}, "
            f"{r['reader']}) | - | probes {r['probes_answered']}/{r['probes']} answered, worst "
            f"{r['probe_worst_ms']} ms, server CPU {r['server_cpu_s_per_s']} s/s | "
            f"{r['rss_peak_mb']} | - | - |"
        )
    for r in bund["bundles"].values():
        peaks.append(r["rss_peak_mb"] or 0)
        print(
            f"| bundle: {r['what']} | - | {r['status']} in {r['ms']} ms | {r['rss_peak_mb']} "
            f"| - | path shown: {r['absolute_path_shown']} |"
        )
    res = {"images": img, "slow_readers": slow, "bundles": bund, "worst_peak_mb": max(peaks)}
    print()
    print(f"worst peak RSS over all classes: {res['worst_peak_mb']} MB")
    print(json.dumps(res, indent=1))
    return res


def _write(path: str | None, res: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
