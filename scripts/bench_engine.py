#!/usr/bin/env python
"""Speed of the exact integer engines against the runtimes a user would pick instead.

One process, one command.  Contenders, each at batch 1 and 64:

* ``native-svpe``, ``native-vpe``: the engine on the native C kernel (the default
  ``auto`` backend where it builds), for the svpe and vpe bundles;
* ``numpy-svpe``, ``numpy-vpe``: the same engine on the numpy reference backend;
* ``torch-svpe``, ``torch-vpe``: PyTorch fp32 inference of the checkpoint each
  bundle was exported from (staircase weights baked into plain fp32 convolutions,
  eval, ``inference_mode``, channels-last), with ``--threads`` threads and with 1
  (``torch1-*``): on a machine busy with other work, torch's OpenMP threads wait for
  each other at every layer and 2 threads can be far slower than 1, so the ratios
  are taken against the **faster** of the two in each round (``best-torch-*``);
* ``ort-fp32``, ``ort-int8``, ``torch-int8``: ONNX Runtime fp32, ONNX Runtime int8
  (QOperator, per-channel int8 weights, static calibration on ``--calibration``
  training images) and PyTorch int8 PTQ (FX, ``x86`` backend), built from the svpe
  bundle's checkpoint (``scripts/bench_peers.py``), ``--threads`` threads each;
  their top-1 agreement with ``native-svpe`` and their accuracy on the Fashion-MNIST
  test set (``--data-dir``) are reported beside their speed.  A contender that cannot
  run here (no onnxruntime, no x86 quantized engine) is named with the reason;
* ``int16-peak``: this CPU's measured int16 multiply-accumulate peak on ``--threads``
  threads (``scripts/peak_int16.c``: independent ``vpdpwssd`` chains, AVX2
  ``vpmaddwd`` where VNNI is absent), timed in every round like a contender, so that
  ``native-svpe``'s multiply-accumulates per second are a fraction of the peak
  measured under the same load.

Timed calls: the engines from their int16 input (``Engine.run``; quantising uint8
pixels is a table lookup), the float runtimes from float32 normalised input.

The engines split a batch over ``--threads`` engine threads with a one-thread BLAS
each.  The
contenders are measured **interleaved**: ``--rounds`` rounds, each timing every
contender for ``--seconds`` in turn (the order rotates each round), so a change in
the machine's load hits all of them alike; ratios are taken within a round, then
the median and range over rounds are reported.  The integer results of native and
numpy are checked equal on the benchmark inputs (exactness, not speed).

    python scripts/bench_engine.py                  # about 4 minutes
    python scripts/bench_engine.py --json engine.json --rounds 7
    python scripts/bench_engine.py --no-numpy --no-torch   # native, peers, peak only

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


def macs_per_image(model) -> int:
    """Multiply-accumulates of one image through the model's conv and linear layers
    (every conv output pixel before its pool, times C_out, times the fan-in)."""
    total = 0
    for step in model.engine.steps:
        spec, layer = step.spec, step.layer
        if spec is None:
            continue
        shape = layer.in_shape
        h, w = (shape[1], shape[2]) if len(shape) == 3 else (1, 1)
        k, s, p = spec.kernel, spec.stride, spec.padding
        pixels = ((h + 2 * p - k) // s + 1) * ((w + 2 * p - k) // s + 1)
        total += pixels * spec.out_channels * spec.fan_in
    return total


def test_set(model, data_dir: Path, calibration: int):
    """(normalised float32 test images, labels, normalised calibration images from the
    training set), or None when the Fashion-MNIST files are not there."""
    from pynq_nbq.bench.data import fashion_idx

    try:
        x = fashion_idx(data_dir, "t10k-images-idx3-ubyte")[:, None]
        y = fashion_idx(data_dir, "t10k-labels-idx1-ubyte").astype(np.int64)
        xc = fashion_idx(data_dir, "train-images-idx3-ubyte")[:calibration, None]
    except (OSError, ValueError) as exc:
        print(f"test set: not read ({exc}); no agreement or accuracy", file=sys.stderr)
        return None
    spec = model.bundle.manifest["input"]
    mean = np.array(spec["mean"], np.float32)[:, None, None]
    std = np.array(spec["std"], np.float32)[:, None, None]

    def norm(u):
        return ((u.astype(np.float32) / 255 - mean) / std).astype(np.float32)

    return x, norm, y, norm(xc)


def contenders(args) -> tuple[dict, dict]:
    """(name -> (model or None, factory(float batch) -> zero-argument callable running
    one batch), name -> predict(float batch) -> logits for the peers)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # the engine threads each use a one-thread BLAS
    out, predictors = {}, {}
    for kind in ("svpe", "vpe"):
        bundle = getattr(args, kind)
        for backend in ("native",) if args.no_numpy else ("native", "numpy"):
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
    return out, predictors


def add_peers(args, runners: dict, predictors: dict, data) -> dict:
    """ORT fp32, ORT int8, torch int8 of the svpe bundle's checkpoint into ``runners``;
    returns name -> reason for each peer that cannot run here."""
    from scripts import bench_peers

    missing = {}
    model = runners["native-svpe"][0]
    shape = tuple(model.bundle.tensors[model.engine.input_name]["shape"])
    prov = model.bundle.manifest.get("provenance", {})
    try:
        net = bench_peers.float_net(api.MODELS_DIR / "checkpoints" / prov["checkpoint"])
    except Exception as exc:  # no torch, no checkpoint
        return {p: f"no float network ({exc})" for p in ("ort-fp32", "ort-int8", "torch-int8")}
    calib = data[3] if data is not None else None
    builders = {
        "ort-fp32": lambda: bench_peers.ort_fp32(net, shape, args.threads),
        "ort-int8": lambda: bench_peers.ort_int8(net, shape, args.threads, calib),
        "torch-int8": lambda: bench_peers.torch_int8(net, shape, args.threads, calib),
    }
    for name, build in builders.items():
        if calib is None and name != "ort-fp32":
            missing[name] = "no calibration images (Fashion-MNIST training set not found)"
            continue
        try:
            make, predict = build()
        except Exception as exc:  # Unavailable, or a runtime that refuses the network
            missing[name] = f"{type(exc).__name__}: {exc}"
            continue
        runners[name] = (None, make)
        predictors[name] = predict
    for name, why in missing.items():
        print(f"{name}: NOT MEASURED - {why}", file=sys.stderr)
    return missing


def agreement(runners: dict, predictors: dict, data) -> dict:
    """Top-1 agreement of every peer with ``native-svpe`` and every one's accuracy on
    the test set (batches of 500)."""
    if data is None:
        return {}
    x_u8, norm, y, _ = data
    native_model = runners["native-svpe"][0]
    top = {
        "native-svpe": np.concatenate(
            [native_model.predict(x_u8[i : i + 500]).logits_q for i in range(0, len(x_u8), 500)]
        ).argmax(1)
    }
    for name, predict in predictors.items():
        top[name] = np.concatenate(
            [predict(norm(x_u8[i : i + 500])) for i in range(0, len(x_u8), 500)]
        ).argmax(1)
    return {
        name: {
            "accuracy": float((t == y).mean()),
            "top1_agreement_with_native_svpe": float((t == top["native-svpe"]).mean()),
            "images": int(len(y)),
        }
        for name, t in top.items()
    }


#: the issue's targets: (numerator, denominator, batch, least ratio)
TARGETS = (
    ("native-svpe", "ort-int8", 1, 1.2),
    ("native-svpe", "ort-fp32", 1, 1.5),
    ("native-svpe", "ort-int8", 64, 1.0),
    ("native-svpe", "int16-peak", 64, 0.65),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--svpe", default="fmnist-svpe", help="svpe bundle (name or path)")
    ap.add_argument("--vpe", default="fmnist-vpe", help="vpe bundle (name or path)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per contender per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch fp32")
    ap.add_argument("--no-numpy", action="store_true", help="skip the numpy engines")
    ap.add_argument("--no-peers", action="store_true", help="skip ORT and torch int8")
    ap.add_argument("--calibration", type=int, default=512, help="int8 calibration images")
    ap.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST idx files")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    from pynq_nbq.bench.data import FASHION_DIR
    from scripts import bench_peers

    res: dict = {"machine": machine(), "threads": args.threads, "rounds": args.rounds}
    runners, predictors = contenders(args)
    native_model = runners["native-svpe"][0]
    res["native_kernel"] = native_model.backend_description
    macs = macs_per_image(native_model)
    res["macs_per_image"] = macs
    data = test_set(native_model, args.data_dir or FASHION_DIR, args.calibration)
    if not args.no_peers:
        res["not_measured"] = add_peers(args, runners, predictors, data)
        res["agreement"] = agreement(runners, predictors, data)
    try:
        peak = bench_peers.Int16Peak()
        res["int16_peak_instruction"] = peak.instruction
    except bench_peers.Unavailable as exc:
        peak = None
        print(f"int16-peak: NOT MEASURED - {exc}", file=sys.stderr)
    rng = np.random.default_rng(0)
    for b in BATCHES:
        shape = native_model.bundle.tensors[native_model.engine.input_name]["shape"]
        x = rng.standard_normal((b, *shape)).astype(np.float32)
        if not args.no_numpy:
            for kind in ("svpe", "vpe"):  # exactness of the fast engine on these very inputs
                a, n = (runners[f"{e}-{kind}"][0] for e in ("native", "numpy"))
                if not np.array_equal(a.predict(x).logits_q, n.predict(x).logits_q):
                    raise SystemExit(f"native and numpy {kind} engines differ at batch {b}")
        fns = {name: make(x) for name, (_, make) in runners.items()}
        for fn in fns.values():
            fn()  # warm-up: kernel plans, thread pools, caches
        rates: dict[str, list[float]] = {name: [] for name in fns}
        names = list(fns) + (["int16-peak"] if peak else [])
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if name == "int16-peak":  # G MAC/s -> "images/s" of this network at the peak
                    rate = peak.measure(args.threads, args.seconds) * 1e9 / macs
                else:
                    rate = images_per_s(fns[name], b, args.seconds)
                rates.setdefault(name, []).append(rate)
        block = {
            name: {
                "images_per_s_median": float(np.median(v)),
                "images_per_s_range": [float(min(v)), float(max(v))],
            }
            for name, v in rates.items()
        }
        if "int16-peak" in rates:
            block["int16-peak"]["gmacs_median"] = float(np.median(rates["int16-peak"])) * macs / 1e9
        for kind in ("svpe", "vpe"):
            torches = [rates[t] for t in (f"torch-{kind}", f"torch1-{kind}") if t in rates]
            if torches:
                rates[f"best-torch-{kind}"] = [max(v) for v in zip(*torches)]
        pairs = []
        for kind in ("svpe", "vpe"):
            best = f"best-torch-{kind}"
            pairs += [(f"native-{kind}", best), (f"numpy-{kind}", best)]
            pairs.append((f"native-{kind}", f"numpy-{kind}"))
        pairs += [("native-svpe", p) for p in ("ort-fp32", "ort-int8", "torch-int8", "int16-peak")]
        ratios = {}
        for num, den in pairs:
            if num in rates and den in rates:
                per_round = [a / c for a, c in zip(rates[num], rates[den])]
                ratios[f"{num} / {den}"] = {
                    "median": float(np.median(per_round)),
                    "range": [float(min(per_round)), float(max(per_round))],
                }
        res[f"batch{b}"] = {"images_per_s": block, "ratios": ratios}
        print(f"batch {b}:", file=sys.stderr)
        for name, v in block.items():
            print(f"  {name:14s} {v['images_per_s_median']:9.0f} images/s", file=sys.stderr)
        for k, v in ratios.items():
            print(
                f"  {k:32s} {v['median']:.2f}x  ({v['range'][0]:.2f}-{v['range'][1]:.2f})",
                file=sys.stderr,
            )
    res["targets"] = []
    for num, den, b, least in TARGETS:
        got = res[f"batch{b}"]["ratios"].get(f"{num} / {den}")
        row = {"batch": b, "ratio": f"{num} / {den}", "target": least}
        row["median"] = None if got is None else got["median"]
        row["met"] = None if got is None else got["median"] >= least
        res["targets"].append(row)
        verdict = "not measured" if got is None else ("MET" if row["met"] else "NOT MET")
        value = "-" if got is None else f"{got['median']:.2f}"
        print(f"target batch {b}: {num} / {den} >= {least}: {value} {verdict}", file=sys.stderr)
    res["machine"]["load_average_end"] = list(os.getloadavg())
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
