#!/usr/bin/env python
"""Speed of the exact integer engines against PyTorch fp32, on the same network.

One process, one command.  Contenders, each at batch 1 and 64:

* ``native-svpe``, ``native-vpe``: the engine on the native C kernel (the default
  ``auto`` backend where it builds), for the svpe and vpe bundles;
* ``numpy-svpe``, ``numpy-vpe``: the same engine on the numpy reference backend;
* ``torch-svpe``, ``torch-vpe``: PyTorch fp32 inference of the checkpoint each
  bundle was exported from (staircase weights baked into plain fp32 convolutions,
  eval, ``inference_mode``, channels-last), with ``--threads`` threads and with 1
  (``torch1-*``): on a machine busy with other work, torch's OpenMP threads wait for
  each other at every layer and 2 threads can be far slower than 1, so the ratios
  are taken against the **faster** of the two in each round (``best-torch-*``).

The engines split a batch over ``--threads`` engine threads with a one-thread BLAS
each.  The
contenders are measured **interleaved**: ``--rounds`` rounds, each timing every
contender for ``--seconds`` in turn (the order rotates each round), so a change in
the machine's load hits all of them alike; ratios are taken within a round, then
the median and range over rounds are reported.  The integer results of native and
numpy are checked equal on the benchmark inputs (exactness, not speed).

    python scripts/bench_engine.py                  # about 2 minutes
    python scripts/bench_engine.py --json engine.json --rounds 7

Absolute images/s depend on the machine and on whatever else runs on it: compare
the ratios, and read the reported CPU model and load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pynq_nbq import api  # noqa: E402

BATCHES = (1, 64)


def machine() -> dict:
    """CPU model (``lscpu``), core count, Python's view of the platform, load averages."""
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu": model,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_start": list(os.getloadavg()),
    }


def images_per_s(fn, batch: int, seconds: float) -> float:
    """Images per second of ``fn()`` on a batch of ``batch`` over about ``seconds``."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += batch
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def torch_runner(bundle_name: str, threads: int):
    """A callable factory: batch (N, C, H, W) float32 -> PyTorch fp32 forward, on
    ``threads`` threads, of the checkpoint the bundle came from."""
    import torch

    from host_train import layers as L
    from host_train.train import load_checkpoint, model_from_checkpoint

    prov = json.loads((api.model_path(bundle_name) / "manifest.json").read_text())["provenance"]
    net, _ = model_from_checkpoint(
        load_checkpoint(api.MODELS_DIR / "checkpoints" / prov["checkpoint"])
    )
    with torch.no_grad():  # bake staircase(W) in: a plain fp32 network, no quantizer calls
        for _, m in L.pow2_layers(net):
            m.weight.copy_(m.effective_weight())
            m.method = "float"
    net = net.eval().to(memory_format=torch.channels_last)

    def make(x: np.ndarray):
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

        def fwd():
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            with torch.inference_mode():
                net(xt)

        return fwd

    return make


def contenders(args) -> dict:
    """name -> factory(float batch) -> zero-argument callable that runs one batch."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # the engine threads each use a one-thread BLAS
    out = {}
    for kind in ("svpe", "vpe"):
        bundle = getattr(args, kind)
        for backend in ("native", "numpy"):
            model = api.load_model(bundle, backend, threads=args.threads)

            def make(x, m=model):
                xq = m.engine.quantize_input(x)
                return lambda: m.engine.run(xq)

            out[f"{backend}-{kind}"] = (model, make)
        if not args.no_torch:
            try:
                out[f"torch-{kind}"] = (None, torch_runner(bundle, args.threads))
                if args.threads != 1:
                    out[f"torch1-{kind}"] = (None, torch_runner(bundle, 1))
            except Exception as exc:  # torch missing or the checkpoint: say so, go on
                print(f"torch-{kind}: not measured ({exc})", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--svpe", default="fmnist-svpe", help="svpe bundle (name or path)")
    ap.add_argument("--vpe", default="fmnist-vpe", help="vpe bundle (name or path)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per contender per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch (engines only)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    res: dict = {"machine": machine(), "threads": args.threads, "rounds": args.rounds}
    runners = contenders(args)
    native_model = runners["native-svpe"][0]
    res["native_kernel"] = native_model.backend_description
    rng = np.random.default_rng(0)
    for b in BATCHES:
        shape = native_model.bundle.tensors[native_model.engine.input_name]["shape"]
        x = rng.standard_normal((b, *shape)).astype(np.float32)
        for kind in ("svpe", "vpe"):  # exactness of the fast engine on these very inputs
            a, n = (runners[f"{e}-{kind}"][0] for e in ("native", "numpy"))
            if not np.array_equal(a.predict(x).logits_q, n.predict(x).logits_q):
                raise SystemExit(f"native and numpy {kind} engines differ at batch {b}")
        fns = {name: make(x) for name, (_, make) in runners.items()}
        for fn in fns.values():
            fn()  # warm-up: kernel plans, thread pools, caches
        rates: dict[str, list[float]] = {name: [] for name in fns}
        names = list(fns)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                rates[name].append(images_per_s(fns[name], b, args.seconds))
        block = {
            name: {
                "images_per_s_median": float(np.median(v)),
                "images_per_s_range": [float(min(v)), float(max(v))],
            }
            for name, v in rates.items()
        }
        for kind in ("svpe", "vpe"):
            torches = [rates[t] for t in (f"torch-{kind}", f"torch1-{kind}") if t in rates]
            if torches:
                rates[f"best-torch-{kind}"] = [max(v) for v in zip(*torches)]
        ratios = {}
        for kind in ("svpe", "vpe"):
            best = f"best-torch-{kind}"
            pairs = [(f"native-{kind}", best), (f"numpy-{kind}", best)]
            pairs.append((f"native-{kind}", f"numpy-{kind}"))
            for num, den in pairs:
                if num in rates and den in rates:
                    per_round = [a / c for a, c in zip(rates[num], rates[den])]
                    ratios[f"{num} / {den}"] = {
                        "median": float(np.median(per_round)),
                        "range": [float(min(per_round)), float(max(per_round))],
                    }
        res[f"batch{b}"] = {"images_per_s": block, "ratios": ratios}
        print(f"batch {b}:", file=sys.stderr)
        for k, v in ratios.items():
            print(
                f"  {k:32s} {v['median']:.2f}x  ({v['range'][0]:.2f}-{v['range'][1]:.2f})",
                file=sys.stderr,
            )
    res["machine"]["load_average_end"] = list(os.getloadavg())
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
