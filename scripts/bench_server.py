#!/usr/bin/env python3
"""Load-test ``nbq serve``: the server (waitress, one process) is spawned on 127.0.0.1,
this process is the client.  Prints p50/p99 latency, server overhead (total - engine)
and memory growth as Markdown, and the full result as JSON.

    python scripts/bench_server.py                      # embedded default, 2,000 x 8
    python scripts/bench_server.py --model DIR --requests 500 --json out.json

Without the embedded default model it benchmarks a random bundle (and says so).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pynq_nbq import api  # noqa: E402
from pynq_nbq.testing import random_bundle  # noqa: E402
from scripts.server_load import bench  # noqa: E402

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
    args = ap.parse_args(argv)

    model = args.model
    tmp = None
    if model is None and api.DEFAULT_MODEL not in api.embedded_models():
        tmp = tempfile.TemporaryDirectory()
        model = str(random_bundle(Path(tmp.name) / "random-svpe", "svpe", seed=0).path)
        print(f"note: no embedded default model; benchmarking a random bundle ({model})")
    res = bench(model, args.requests, args.concurrency, args.sequential, args.warmup, args.backend)
    metrics_text = res.pop("metrics_text")
    load = res["load"]
    print(f"command: {' '.join(['python', 'scripts/bench_server.py', *sys.argv[1:]])}")
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
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0 if load["errors"] == 0 and load["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
