#!/usr/bin/env python
"""(Re)build the embedded default models and sample images shipped in ``pynq_nbq``.

From two finished runs of the training benchmark (``scripts/bench_train.py``):

* the 3-bit reconstructed-gradient run  -> ``pynq_nbq/models/fmnist-svpe``
* the float run of the same architecture -> ``pynq_nbq/models/fmnist-vpe``

it writes the source checkpoints without pickle
(``pynq_nbq/models/checkpoints/*.npz|json``), exports both bundles from *those*
files, and saves one Fashion-MNIST test image per class as PNG in
``pynq_nbq/samples/``.  ``tests/test_embedded.py`` re-exports the checkpoints and
checks the shipped bundles' checksums, so a datapath change must re-run this.

    python -m scripts.make_embedded --svpe-run bench_runs/fmnist/rg-s0 \\
        --vpe-run bench_runs/fmnist/float-s0
    python -m scripts.make_embedded --from-checkpoints      # re-export only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

MODELS = ROOT / "pynq_nbq" / "models"
CKPTS = MODELS / "checkpoints"
SAMPLES = ROOT / "pynq_nbq" / "samples"
#: (bundle name, datapath, portable checkpoint stem)
EMBEDDED = (("fmnist-svpe", "svpe", "fmnist-rg3"), ("fmnist-vpe", "vpe", "fmnist-float"))


def export_all(log=print) -> None:
    from host_train.export import export

    for name, datapath, stem in EMBEDDED:
        bundle, report = export(
            str(CKPTS / f"{stem}.npz"), str(MODELS / name), datapath, name=name, log=log
        )
        log(f"{name}: {bundle.sha256}")


def write_samples() -> None:
    from PIL import Image

    from host_train.data import FASHION_CLASSES, load_fashion_mnist

    ds = load_fashion_mnist()
    SAMPLES.mkdir(parents=True, exist_ok=True)
    for c, cname in enumerate(FASHION_CLASSES):
        i = int(np.flatnonzero(ds.test_y == c)[0])
        slug = cname.lower().replace("/", "-").replace(" ", "-")
        Image.fromarray(ds.test_x[i, 0]).save(SAMPLES / f"{c}-{slug}.png", optimize=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--svpe-run", help="finished 3-bit rg run directory")
    ap.add_argument("--vpe-run", help="finished float run directory")
    ap.add_argument(
        "--from-checkpoints",
        action="store_true",
        help="only re-export from the committed portable checkpoints",
    )
    args = ap.parse_args()
    from host_train.train import load_checkpoint, save_portable

    if not args.from_checkpoints:
        if not (args.svpe_run and args.vpe_run):
            ap.error("give --svpe-run and --vpe-run, or --from-checkpoints")
        CKPTS.mkdir(parents=True, exist_ok=True)
        for run, (_, _, stem) in zip((args.svpe_run, args.vpe_run), EMBEDDED):
            ck = load_checkpoint(run)
            if int(ck["epoch"]) < int(ck["config"]["epochs"]):
                ap.error(f"{run} has not finished ({ck['epoch']}/{ck['config']['epochs']})")
            save_portable(ck, CKPTS / stem)
        write_samples()
    export_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
