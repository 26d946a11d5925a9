#!/usr/bin/env python
"""A peer trains, we deploy - the full figure: Brevitas trains a power-of-two network
(``host_train.brevitas_peer``), exports QONNX, ``nbq import`` makes a bundle, and our
engine's classes are compared with Brevitas's own fake-quant inference on the whole
Fashion-MNIST test set (10,000 images).

    python scripts/brevitas_peer.py                     # 300 steps, 10,000 test images
    python scripts/brevitas_peer.py --steps 50 --test-images 1000 --out peer.json

Prints and (with ``--out``) writes: top-1 agreement, the accuracy of both, the largest
logit difference in LSBs, the import's notes.  ``--keep DIR`` keeps the .onnx and bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels", default="8,16", help="c1,c2 of the two conv layers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-images", type=int, default=10000)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--keep", default=None, help="directory for the .onnx and the bundle")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    from host_train import brevitas_peer as bp
    from host_train.data import load_fashion_mnist
    from pynq_nbq.bundle import save_bundle
    from pynq_nbq.engine import Engine
    from pynq_nbq.interop.qonnx_import import import_qonnx

    ds = load_fashion_mnist(args.data_dir)
    mean, std = ds.mean[0], ds.std[0]
    c1, c2 = (int(v) for v in args.channels.split(","))
    net = bp.make_net(c1, c2, args.seed)
    t0 = time.perf_counter()
    loss = bp.train_steps(net, ds.train_x, ds.train_y, mean, std, args.steps, args.batch,
                          seed=args.seed)  # fmt: skip
    train_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="nbq-peer-") as tmp:
        where = Path(args.keep or tmp)
        where.mkdir(parents=True, exist_ok=True)
        path = bp.export(net, where / "peer.onnx")
        result = import_qonnx(path, mean=[mean], std=[std], classes=ds.classes,
                              name="brevitas-peer")  # fmt: skip
        bundle = save_bundle(result.manifest, result.arrays, where / "bundle")
        px, labels = ds.test_x[: args.test_images], ds.test_y[: args.test_images]
        theirs = bp.fake_quant_logits(net, px, mean, std)
        engine = Engine(bundle)
        q = engine.run(engine.quantize_input(px))
    ours = q.astype(np.float64) * 2.0**-engine.output_frac
    out = {
        "steps": args.steps,
        "channels": [c1, c2],
        "last_loss": round(loss, 4),
        "train_seconds": round(train_s, 1),
        "test_images": len(px),
        "top1_agreement": float(np.mean(theirs.argmax(1) == ours.argmax(1))),
        "brevitas_accuracy": float(np.mean(theirs.argmax(1) == labels)),
        "engine_accuracy": float(np.mean(ours.argmax(1) == labels)),
        "max_logit_diff_lsb": float(np.abs(theirs - ours).max() * 2.0**engine.output_frac),
        "layer_weight_bits": {s.name: s.weight_bits for s in bundle.spec.layers if s.weighted},
        "notes": result.notes,
    }
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
