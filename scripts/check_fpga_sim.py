#!/usr/bin/env python
"""The ``fpga`` backend on the simulated ZCU102 against the numpy engine, on Fashion-MNIST.

For each bundle (default: the embedded ``fmnist-svpe`` and ``fmnist-vpe``), the
first ``--images`` Fashion-MNIST test images go through the engine twice - with
the ``fpga`` backend driving the unmodified pynq library against
:mod:`pynq_nbq.sim.board` (PG021 DMA model + the csim kernel) and with ``numpy`` -
and every logit is compared.  Reports images, logit mismatches (must be 0),
accuracy, kernel calls and the driver's time split (copy into DMA buffers,
register writes and sends, waiting for the kernel: the last is the csim kernel's
own run time on this host, not a board figure).

    python scripts/check_fpga_sim.py                 # 1,000 images per bundle
    python scripts/check_fpga_sim.py --images 100 --json fpga_sim.json

Exit status 1 if any logit differs.
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
sys.path.insert(0, str(ROOT / "scripts"))

from bench_csim import FASHION_DIR, fashion_batch  # noqa: E402

from pynq_nbq import api  # noqa: E402
from pynq_nbq.backends.fpga import FpgaBackend  # noqa: E402


def check(model: str, images: int, batch: int, data_dir: Path) -> dict:
    m_np = api.load_model(model, "numpy")
    backend = FpgaBackend("sim")
    m_fp = api.load_model(model, backend)
    x, labels = fashion_batch(m_np.input_spec, images, 0, data_dir)
    xq = m_np.engine.quantize_input(x)
    dev = backend.device(m_np.bundle.datapath)
    runs0 = backend.board.kernel_runs
    mismatches, correct, t_fp = 0, 0, 0.0
    for i in range(0, len(xq), batch):
        part = xq[i : i + batch]
        t0 = time.perf_counter()
        got = m_fp.engine.run(part)
        t_fp += time.perf_counter() - t0
        want = m_np.engine.run(part)
        mismatches += int((got != want).any(axis=1).sum())
        correct += int((np.argmax(got, axis=1) == labels[i : i + batch]).sum())
    n = len(xq)
    t = dev.timings
    return {
        "model": model,
        "datapath": m_np.bundle.datapath,
        "images": n,
        "mismatched_images": mismatches,
        "accuracy_percent": 100.0 * correct / n,
        "kernel_calls": backend.board.kernel_runs - runs0,
        "images_per_s_simulated": n / t_fp,
        "driver_split_s": {k: t[k] for k in ("ready", "copy", "registers", "wait")},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fmnist-svpe", "fmnist-vpe"])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--data-dir", type=Path, default=FASHION_DIR)
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    results = [check(m, a.images, a.batch, a.data_dir) for m in a.models]
    for r in results:
        print(
            f"{r['model']:>14} ({r['datapath']}): {r['images']} images, "
            f"{r['mismatched_images']} differ from numpy, accuracy {r['accuracy_percent']:.2f} %, "
            f"{r['kernel_calls']} kernel calls"
        )
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["mismatched_images"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
