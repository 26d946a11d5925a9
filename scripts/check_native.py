#!/usr/bin/env python
"""The native engine against the numpy reference on the whole Fashion-MNIST test set.

For each bundle (default: the embedded ``fmnist-svpe`` and ``fmnist-vpe``; any
Fashion-MNIST bundle name or path with ``--models``), every one of the 10,000 test
images goes through both engines as 8-bit pixels (``Model.predict`` quantises them
exactly); the script reports how many images' int16 logits differ in any element
(must be 0), the accuracy, and each engine's images/s in this run (one after the
other, 2 engine threads each).
Exits 1 if any logit differs.

    python scripts/check_native.py               # all 10,000 images, svpe and vpe
    python scripts/check_native.py --limit 1000
    python scripts/check_native.py --models bench_runs/fmnist-gap/bits5-s0/bundle-svpe
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def logits(model, x_u8: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """int16 logits of every image (uint8 pixels, N x C x H x W) and the images/s."""
    out, secs = [], 0.0
    for i in range(0, len(x_u8), batch):
        xb = np.ascontiguousarray(x_u8[i : i + batch])
        t0 = time.perf_counter()
        out.append(model.predict(xb).logits_q)
        secs += time.perf_counter() - t0
    return np.concatenate(out), len(x_u8) / secs


def main() -> int:
    from threadpoolctl import threadpool_limits

    from pynq_nbq import api
    from pynq_nbq.bench.data import FASHION_DIR, fashion_idx
    from scripts.make_embedded import EMBEDDED

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default all)")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument(
        "--models",
        nargs="+",
        default=[name for name, *_ in EMBEDDED],
        help="Fashion-MNIST bundles: embedded names or paths",
    )
    ap.add_argument("--data-dir", type=Path, default=FASHION_DIR)
    args = ap.parse_args()
    threadpool_limits(1, user_api="blas")
    x = fashion_idx(args.data_dir, "t10k-images-idx3-ubyte")[: args.limit, None]
    y = fashion_idx(args.data_dir, "t10k-labels-idx1-ubyte")[: args.limit].astype(np.int64)
    report, bad = {}, 0
    for name in args.models:
        fast = api.load_model(name, "native", threads=2)
        ref = api.load_model(name, "numpy", threads=2)
        lf, rate_f = logits(fast, x, args.batch)
        lr, rate_r = logits(ref, x, args.batch)
        differ = int((lf != lr).any(axis=1).sum())
        bad += differ
        report[name] = {
            "images": int(len(y)),
            "images_with_different_logits": differ,
            "accuracy_native": float((lf.argmax(1) == y).mean()),
            "accuracy_numpy": float((lr.argmax(1) == y).mean()),
            "native_images_per_s": rate_f,
            "numpy_images_per_s": rate_r,
            "native_kernel": fast.backend_description,
        }
        print(
            f"{name}: {differ} of {len(y)} images differ; accuracy native "
            f"{100 * report[name]['accuracy_native']:.2f}% numpy "
            f"{100 * report[name]['accuracy_numpy']:.2f}%  [{rate_f:.0f} vs {rate_r:.0f} images/s]",
            flush=True,
        )
    print(json.dumps(report, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
