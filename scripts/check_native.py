#!/usr/bin/env python
"""The native engine against the numpy reference on the whole Fashion-MNIST test set.

A thin wrapper of ``nbq check --backend native`` (:mod:`pynq_nbq.bench.check`, one
JSON schema for every backend) with this script's defaults: all 10,000 test images,
2 engine threads, batches of 250.  Exits 1 if any logit differs.

    python -m scripts.check_native               # all 10,000 images, svpe and vpe
    python -m scripts.check_native --limit 1000
    python -m scripts.check_native --models bench_runs/fmnist-gap/bits5-s0/bundle-svpe
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pynq_nbq.cli import main as nbq
from pynq_nbq.idx import FASHION_DIR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, default=10_000, help="first N test images (default all)")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--models", nargs="+", default=["fmnist-svpe", "fmnist-vpe"])
    ap.add_argument("--data-dir", type=Path, default=FASHION_DIR)
    ap.add_argument("--json", type=Path, help="also write the report here")
    a = ap.parse_args(argv)
    args = ["check", "--backend", "native", "--images", str(a.limit), "--batch", str(a.batch)]
    args += ["--threads", "2", "--data-dir", str(a.data_dir), "--models", *a.models]
    return nbq(args + (["--json", str(a.json)] if a.json else []))


if __name__ == "__main__":
    sys.exit(main())
