#!/usr/bin/env python
"""Peers run our exported model: qonnx's executor and hls4ml's C++ emulation vs our engine.

For a bundle (default the shipped ``fmnist-svpe``), the first ``--images`` Fashion-MNIST
test images go through the numpy engine (8-bit pixels, quantised exactly) and, as the
dequantised input ``q * 2**-f_in``, through each peer:

* ``qonnx-exact``: the ``exact`` export (float64 requantisation) in qonnx's executor;
* ``qonnx-fused``: the ``fused`` export (float32 constants) in qonnx's executor;
* ``hls4ml``: the fused export converted by hls4ml (io_stream, Vitis backend), compiled
  with g++, with the precisions the graph implies (``peers.hls4ml_model``);
* ``hls4ml-default``: the same with hls4ml's default precision (fixed<16,6>) wherever
  the graph states none.

Reported per peer: top-1 agreement with the engine, the share of images whose logits
are all identical, the largest and mean |logit difference| in LSBs of the output format,
the peer's seconds (the load of this machine is printed with them).  The fused-form
peers are also compared with the engine running the fused form's own numbers
(``peers.fused_bundle``: biases rounded as the float32 offsets are), which separates the
form's rounding from the peer's arithmetic.

    python scripts/interop_agreement.py                       # 1,000 images, all peers
    python scripts/interop_agreement.py --images 100 --peers qonnx-exact,qonnx-fused
    python scripts/interop_agreement.py --model pynq_nbq/models/fmnist-vpe --out vpe.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pynq_nbq.bench.data import FASHION_DIR, fashion_idx  # noqa: E402
from pynq_nbq.bundle import load_bundle  # noqa: E402
from pynq_nbq.interop import peers  # noqa: E402
from pynq_nbq.interop.qonnx_export import export_qonnx  # noqa: E402

PEERS = ("qonnx-exact", "qonnx-fused", "hls4ml", "hls4ml-default")
CHUNK = 100  # images per qonnx executor call (the graph's fixed batch)


def run_qonnx(bundle, real: np.ndarray, form: str) -> np.ndarray:
    n = len(real)
    outs = []
    for start in range(0, n, CHUNK):
        part = real[start : start + CHUNK]
        model = peers.qonnx_prepare(export_qonnx(bundle, form, batch=len(part)))
        outs.append(peers.qonnx_run(model, part))
    return np.concatenate(outs)


def run_hls4ml(bundle, real: np.ndarray, configure: bool) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="nbq-hls4ml-") as tmp:
        hm = peers.hls4ml_model(bundle, Path(tmp) / "prj", configure=configure)
        return np.asarray(hm.predict(np.ascontiguousarray(real))).reshape(len(real), -1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "pynq_nbq" / "models" / "fmnist-svpe"))
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {PEERS}")
    ap.add_argument("--data-dir", default=str(FASHION_DIR))
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    chosen = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(chosen) - set(PEERS))
    if unknown:
        ap.error(f"unknown peers {unknown} (known: {PEERS})")
    bundle = load_bundle(args.model)
    pixels = fashion_idx(Path(args.data_dir), "t10k-images-idx3-ubyte")[: args.images, None]
    ref, real = peers.engine_logits(bundle, pixels)
    fused_ref, _ = peers.engine_logits(peers.fused_bundle(bundle), pixels)
    alone = peers.agreement(fused_ref * 2.0**-bundle.spec.output_frac, ref,
                            bundle.spec.output_frac)  # fmt: skip
    print(f"{'fused numbers':15s} top-1 {alone.top1:.4f}  identical {alone.exact:.4f}  "
          f"max {alone.max_lsb:g} LSB (the engine on the fused form's float32 biases)")  # fmt: skip
    results = {
        "model": bundle.manifest["name"],
        "images": len(pixels),
        "load_before": os.getloadavg(),
        "peers": {},
        "fused_numbers_vs_engine": alone.as_dict(),
    }
    for peer in chosen:
        t0 = time.perf_counter()
        if peer.startswith("qonnx"):
            out = run_qonnx(bundle, real, peer.split("-")[1])
        else:
            out = run_hls4ml(bundle, real, configure=peer == "hls4ml")
        seconds = time.perf_counter() - t0
        a = peers.agreement(out, ref, bundle.spec.output_frac)
        results["peers"][peer] = {**a.as_dict(), "seconds": round(seconds, 1),
                                  "load": os.getloadavg()}  # fmt: skip
        print(f"{peer:15s} top-1 {a.top1:.4f}  identical {a.exact:.4f}  max {a.max_lsb:g} LSB  "
              f"mean {a.mean_lsb:.4f} LSB  ({seconds:.0f} s, load {os.getloadavg()[0]:.1f})",
              flush=True)  # fmt: skip
        if peer != "qonnx-exact":
            f = peers.agreement(out, fused_ref, bundle.spec.output_frac)
            results["peers"][peer]["vs_fused_numbers"] = f.as_dict()
            print(f"{'':15s} vs the fused numbers: identical {f.exact:.4f}  max {f.max_lsb:g} LSB")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
