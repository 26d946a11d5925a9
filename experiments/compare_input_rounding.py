#!/usr/bin/env python
"""The input rule before and after schema 2, on the Fashion-MNIST test set.

Before: float32 ``(p/255 - mean)/std``, then float64 ``floor(x * 2**f + 0.5)``
(``datapath.quantize_real``).  Now: the exact rational table from 8-bit pixels
(``datapath.pixel_table``).  Counts the input values that differ and, running the
numpy engine on the images that have one, the images whose logits or class change.

    python -m experiments.compare_input_rounding              # all 10,000 test images
    python -m experiments.compare_input_rounding --limit 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from pynq_nbq import api  # noqa: E402
from pynq_nbq import datapath as dp  # noqa: E402
from pynq_nbq.bench.data import FASHION_DIR, fashion_idx  # noqa: E402
from pynq_nbq.preprocess import normalise  # noqa: E402


def compare(name: str, pixels: np.ndarray, batch: int = 500) -> dict:
    """pixels: uint8 (N, 1, 28, 28).  Returns the counts for one embedded bundle."""
    model = api.load_model(name)
    spec, frac = model.input_spec, model.engine.input_frac
    exact = model.engine.quantize_input(pixels)
    old = dp.quantize_real(normalise(pixels, spec), frac)
    differ = (exact != old).reshape(len(pixels), -1).any(axis=1)
    idx = np.flatnonzero(differ)
    logits_changed = class_changed = 0
    for i in range(0, len(idx), batch):
        part = idx[i : i + batch]
        a, b = model.engine.run(exact[part]), model.engine.run(old[part])
        logits_changed += int((a != b).any(axis=1).sum())
        class_changed += int((a.argmax(1) != b.argmax(1)).sum())
    return {
        "images": int(len(pixels)),
        "input_values_differing": int((exact != old).sum()),
        "max_abs_difference_lsb": int(np.abs(exact.astype(int) - old).max(initial=0)),
        "images_with_a_differing_input": int(differ.sum()),
        "images_with_differing_logits": logits_changed,
        "images_with_a_different_class": class_changed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default all)")
    args = ap.parse_args()
    pixels = fashion_idx(FASHION_DIR, "t10k-images-idx3-ubyte")[: args.limit][:, None].copy()
    out = {name: compare(name, pixels) for name in ("fmnist-svpe", "fmnist-vpe")}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
