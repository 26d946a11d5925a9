#!/usr/bin/env python
"""The csim backend on Fashion-MNIST: bit-exactness against numpy, and images/s.

For each bundle (default: the embedded ``fmnist-svpe`` and ``fmnist-vpe``), the
first ``--images`` Fashion-MNIST test images go through the engine twice - with the
``csim`` backend (the HLS kernel compiled with g++, fed the DMA byte streams) and
with the ``numpy`` backend - and every logit is compared.  Reports, per bundle:
images, logit mismatches (must be 0), accuracy, csim images/s (whole engine and
the conv-engine layers alone) and numpy images/s.

    python scripts/bench_csim.py                          # 1,000 images per bundle
    python scripts/bench_csim.py --images 10000 --json csim.json
    python scripts/bench_csim.py --models path/to/bundle --images 200
    python scripts/bench_csim.py --models fmnist-svpe --define NBQ_CODE_BITS=3  # 3-bit build

Fashion-MNIST comes from ``/usr/share/datasets/fashion-mnist`` (Debian package
``dataset-fashion-mnist``) or ``--data-dir``.  The first run compiles the kernels
(about 5 s each; cached afterwards).  Exit status 1 if any logit differs.
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

from PIL import Image  # noqa: E402

from pynq_nbq import api  # noqa: E402
from pynq_nbq.backends.csim import CsimBackend  # noqa: E402
from pynq_nbq.bench.data import FASHION_DIR, fashion_idx  # noqa: E402
from pynq_nbq.preprocess import preprocess  # noqa: E402


def fashion_batch(input_spec: dict, n: int, start: int = 0, data_dir: Path = FASHION_DIR):
    """Test images ``start .. start+n`` preprocessed for a bundle: (uint8 pixels NCHW, labels)."""
    images = fashion_idx(data_dir, "t10k-images-idx3-ubyte")[start : start + n]
    labels = fashion_idx(data_dir, "t10k-labels-idx1-ubyte")[start : start + n].astype(np.int64)
    batch = np.stack([preprocess(Image.fromarray(im, "L"), input_spec) for im in images])
    return batch, labels


def bench(
    model: str, images: int, batch: int, data_dir: Path, defines: dict[str, int] | None = None
) -> dict:
    m_np = api.load_model(model, "numpy")
    m_cs = api.load_model(model, CsimBackend(defines=defines or None))
    x, labels = fashion_batch(m_np.input_spec, images, 0, data_dir)
    xq = m_np.engine.quantize_input(x)
    m_cs.engine.run(xq[:1])  # build/load the kernel outside the timing
    t_cs = t_conv = t_np = 0.0
    mismatches, correct = 0, 0
    for i in range(0, len(xq), batch):
        part = xq[i : i + batch]
        t0 = time.perf_counter()
        got = m_cs.engine.run(part)
        t1 = time.perf_counter()
        want = m_np.engine.run(part)
        t2 = time.perf_counter()
        t_cs += t1 - t0
        t_conv += m_cs.engine.timings.get("conv-engine", 0.0)
        t_np += t2 - t1
        mismatches += int((got != want).any(axis=1).sum())
        correct += int((np.argmax(got, axis=1) == labels[i : i + batch]).sum())
    n = len(xq)
    return {
        "model": model,
        "defines": defines or {},
        "datapath": m_np.bundle.datapath,
        "images": n,
        "mismatched_images": mismatches,
        "accuracy_percent": 100.0 * correct / n,
        "csim_images_per_s": n / t_cs,
        "csim_conv_engine_images_per_s": n / t_conv if t_conv else None,
        "numpy_images_per_s": n / t_np,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--models",
        nargs="+",
        default=["fmnist-svpe", "fmnist-vpe"],
        help="bundles: embedded names or paths",
    )
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--data-dir", type=Path, default=FASHION_DIR)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NBQ_NAME=VALUE",
        help="build the kernel with this -D override (e.g. NBQ_CODE_BITS=3); repeatable",
    )
    a = ap.parse_args()
    defines = {}
    for d in a.define:
        name, sep, value = d.partition("=")
        if not sep or not name.startswith("NBQ_") or not value.lstrip("-").isdigit():
            print(f"--define {d!r}: expected NBQ_NAME=INTEGER")
            return 2
        defines[name] = int(value)
    results = []
    for model in a.models:
        if not api.model_path(model).is_dir():
            print(f"bundle {model!r} not found (embedded: {api.embedded_models()})")
            return 2
        r = bench(model, a.images, a.batch, a.data_dir, defines)
        results.append(r)
        conv = r["csim_conv_engine_images_per_s"]
        print(
            f"{r['model']:>14} ({r['datapath']}{', ' if defines else ''}"
            f"{' '.join(f'{k}={v}' for k, v in defines.items())}): {r['images']} images, "
            f"{r['mismatched_images']} differ from numpy, accuracy {r['accuracy_percent']:.2f}%, "
            f"csim {r['csim_images_per_s']:.1f} images/s "
            f"(conv engine alone {conv:.1f}), numpy {r['numpy_images_per_s']:.0f} images/s"
        )
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return 1 if any(r["mismatched_images"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
