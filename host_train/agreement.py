"""Measured agreement between the torch fake-quant model and the integer engine.

The torch model (float32 activations, exact power-of-two weights) and the
numpy engine (int16 activations, integer requantisation) cannot be bit-exact;
they are held to accuracy and top-1 agreement figures on the test set.
"""

from __future__ import annotations

import time

import numpy as np

from pynq_nbq.api import Model
from pynq_nbq.bundle import load_bundle

from .data import load_dataset
from .train import load_checkpoint, model_from_checkpoint, predict


def agreement(
    ckpt_path: str,
    bundle_path: str,
    limit: int | None = None,
    backend: str = "numpy",
    batch: int = 250,
    data_dir: str | None = None,
) -> dict:
    """Accuracy of both and their top-1 agreement on the first ``limit`` test images."""
    ck = load_checkpoint(ckpt_path)
    net, cfg = model_from_checkpoint(ck)
    ds = load_dataset(ck["dataset"], data_dir)
    x, y = ds.test_x[:limit], ds.test_y[:limit]
    torch_pred = predict(net, x, ck["mean"], ck["std"]).argmax(1)
    model = Model(load_bundle(bundle_path), backend)
    eng_pred = np.empty(len(y), dtype=np.int64)
    t0 = time.perf_counter()
    for i in range(0, len(y), batch):
        # the engine quantises the 8-bit pixels exactly (as for any image it is given)
        eng_pred[i : i + batch] = model.predict(np.ascontiguousarray(x[i : i + batch])).indices
    secs = time.perf_counter() - t0
    return {
        "images": int(len(y)),
        "datapath": model.bundle.datapath,
        "backend": model.backend_name,
        "torch_accuracy": float((torch_pred == y).mean()),
        "engine_accuracy": float((eng_pred == y).mean()),
        "top1_agreement": float((torch_pred == eng_pred).mean()),
        "disagreements": int((torch_pred != eng_pred).sum()),
        "engine_images_per_s": len(y) / secs,
    }
