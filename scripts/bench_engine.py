#!/usr/bin/env python
"""Speed of the numpy integer engine against PyTorch fp32 and the float64 roof.

In one process, on the same network, with the same thread count:

* images/s of the numpy engine (svpe and vpe bundles) at batch 1 and 64, its batch
  split over ``--threads`` engine threads with a one-thread BLAS each (the
  default way to use the cores); for comparison also the svpe engine unsplit with
  a ``--threads``-thread BLAS (``svpe-blas``);
* images/s of PyTorch fp32 inference of the checkpoint the svpe bundle came from
  (eval, ``inference_mode``, channels-last, 2 threads), batch 1 and 64;
* this machine's float64 matrix-product rate (GFLOP/s of a 2000x2000 product), and
  the engine's useful arithmetic rate (2 x MACs x images/s) as a fraction of it:
  the engine's products are exact float64 products, so that rate is its roof.

    python scripts/bench_engine.py                     # the embedded default models
    python scripts/bench_engine.py --json out.json

Other processes on the machine skew every figure; compare ratios, and run it on a
quiet machine for absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pynq_nbq import api  # noqa: E402

PARTS = ("svpe", "vpe", "svpe-blas", "torch")


def rate(fn, batch: int, seconds: float) -> float:
    """Images per second of ``fn()`` on a batch of ``batch`` (median of 5 windows)."""
    fn()
    rates = []
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            fn()
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    return float(np.median(rates))


def float64_roof(seconds: float) -> float:
    """GFLOP/s of float64 2000x2000 matrix products (median of 5)."""
    a = np.random.default_rng(0).standard_normal((2000, 2000))
    a @ a
    out = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        out.append(2 * 2000**3 / (time.perf_counter() - t0) / 1e9)
    return float(np.median(out))


def macs_of(bundle) -> int:
    total = 0
    for layer in bundle.layers:
        if layer["op"] in ("conv", "linear"):
            w = bundle.arrays[layer["arrays"]["weights"]]
            out = bundle.tensors[layer["output"]]["shape"]
            pre_pool = [out[0]] + [2 * s for s in out[1:]] if layer.get("pool") else out
            total += int(np.prod(w.shape[1:])) * int(np.prod(pre_pool))
    return total


def measure_numpy(kind_path: str, seconds: float, threads: int, engine_threads: int) -> dict:
    """Engine images/s at batch 1 and 64 and the float64 roof, in this process.

    The roof is measured with a ``threads``-thread BLAS; the engine then runs with
    ``engine_threads`` shards and a BLAS of ``threads // engine_threads`` threads.
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    threadpool_limits(threads)
    res = {"float64_roof_gflops": float64_roof(seconds)}
    threadpool_limits(max(1, threads // engine_threads))
    res["engine_threads"] = engine_threads
    res["blas_threads"] = max(1, threads // engine_threads)
    model = api.load_model(kind_path, threads=engine_threads)
    shape = model.bundle.tensors[model.engine.input_name]["shape"]
    macs = macs_of(model.bundle)
    res["macs_per_image"] = macs
    for b in (1, 64):
        xq = model.engine.quantize_input(rng.standard_normal((b, *shape)).astype(np.float32))
        r = rate(lambda xq=xq: model.engine.run(xq), b, seconds)
        res[f"batch{b}_images_per_s"] = r
        res[f"batch{b}_useful_gflops"] = 2 * macs * r / 1e9
        res[f"batch{b}_fraction_of_roof"] = 2 * macs * r / 1e9 / res["float64_roof_gflops"]
    return res


def measure_torch(svpe: str, checkpoint: str | None, seconds: float) -> dict:
    """PyTorch fp32 eval of the svpe bundle's source network: images/s at batch 1 and 64."""
    import torch

    from host_train import layers as L
    from host_train.train import load_checkpoint, model_from_checkpoint

    net, _ = model_from_checkpoint(load_checkpoint(checkpoint or _default_checkpoint(svpe)))
    with torch.no_grad():  # bake staircase(W) in: a plain fp32 network, no quantizer calls
        for _, m in L.pow2_layers(net):
            m.weight.copy_(m.effective_weight())
            m.method = "float"
    net = net.eval().to(memory_format=torch.channels_last)
    shape = api.load_model(svpe).bundle.tensors["input"]["shape"]
    res = {}
    for b in (1, 64):
        x = torch.randn(b, *shape).to(memory_format=torch.channels_last)

        def fwd(x=x):
            with torch.inference_mode():
                net(x)

        res[f"batch{b}_images_per_s"] = rate(fwd, b, seconds)
    return res


def run_part(args) -> dict:
    """One measurement, in this (fresh) process, with ``args.threads`` threads."""
    if args.part == "torch":
        import torch
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
        return measure_torch(args.svpe, args.checkpoint, args.seconds)
    if args.part == "svpe-blas":
        return measure_numpy(args.svpe, args.seconds, args.threads, 1)
    return measure_numpy(getattr(args, args.part), args.seconds, args.threads, args.threads)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--svpe", default="fmnist-svpe", help="svpe bundle (name or path)")
    ap.add_argument("--vpe", default="fmnist-vpe", help="vpe bundle (name or path)")
    ap.add_argument(
        "--checkpoint",
        default=None,
        help="torch checkpoint of the same network (default: the svpe bundle's "
        "source in pynq_nbq/models/checkpoints/)",
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="time per measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:  # a child: one measurement, JSON on stdout
        print(json.dumps(run_part(args)))
        return 0
    # Each measurement runs in its own process: numpy's OpenBLAS pool and torch's
    # OpenMP pool spin-wait after work and slow each other down in one process.
    res: dict = {"threads": args.threads}
    for part in PARTS:
        cmd = [
            sys.executable,
            __file__,
            "--part",
            part,
            "--threads",
            str(args.threads),
            "--seconds",
            str(args.seconds),
            "--svpe",
            args.svpe,
            "--vpe",
            args.vpe,
        ]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        try:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        except subprocess.CalledProcessError as exc:
            if part == "torch":
                res["torch"] = f"not measured: {exc.stderr.strip().splitlines()[-1]}"
                continue
            raise
        res[part] = json.loads(out.strip().splitlines()[-1])
    if isinstance(res.get("torch"), dict):
        for b in (1, 64):
            res[f"numpy_svpe_over_torch_batch{b}"] = (
                res["svpe"][f"batch{b}_images_per_s"] / res["torch"][f"batch{b}_images_per_s"]
            )
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def _default_checkpoint(svpe: str) -> str:
    bundle_dir = api.model_path(svpe)
    prov = json.loads((bundle_dir / "manifest.json").read_text())["provenance"]
    return str(api.MODELS_DIR / "checkpoints" / prov["checkpoint"])


if __name__ == "__main__":
    sys.exit(main())
