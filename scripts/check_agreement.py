#!/usr/bin/env python
"""Engine vs torch fake-quant on the Fashion-MNIST test set, for the embedded models.

python -m scripts.check_agreement               # all 10,000 test images, svpe and vpe
python -m scripts.check_agreement --limit 1000 --backend csim
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from host_train.agreement import agreement
    from scripts.make_embedded import CKPTS, EMBEDDED, MODELS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default all)")
    ap.add_argument("--backend", default="numpy")
    args = ap.parse_args()
    out = {}
    for name, _, stem in EMBEDDED:
        r = agreement(str(CKPTS / f"{stem}.npz"), str(MODELS / name), args.limit, args.backend)
        out[name] = r
        print(
            f"{name}: torch {100 * r['torch_accuracy']:.2f}%  engine "
            f"{100 * r['engine_accuracy']:.2f}%  top-1 agreement "
            f"{100 * r['top1_agreement']:.2f}% ({r['disagreements']} of {r['images']} differ)  "
            f"[{r['backend']}, {r['engine_images_per_s']:.0f} images/s]",
            flush=True,
        )
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
