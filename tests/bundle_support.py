"""Small trained bundles for tests: a checkpoint trained and exported to svpe, and a
bundle on disk run by the numpy engine and by the independent reference
(``reference_net``, written from docs/datapath.md), logits compared exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import reference_net as ref

from pynq_nbq.bundle import load_bundle
from pynq_nbq.engine import Engine


def assert_engine_matches_reference(bundle_dir: Path, images_u8: np.ndarray) -> None:
    """Engine logits == reference logits for every image (uint8 (N, C, H, W))."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    with np.load(bundle_dir / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k].tolist() for k in z.files}
    eng = Engine(load_bundle(bundle_dir))
    x = eng.quantize_input(images_u8)
    got = eng.run(x)
    for i in range(len(x)):
        want = ref.run(manifest, arrays, x[i].transpose(1, 2, 0).tolist())
        assert got[i].tolist() == want, f"image {i}"


def train_and_export(cfg, out: Path, dataset) -> dict:
    """Train ``cfg`` (a host_train TrainConfig) into ``out/run`` on ``dataset`` and export
    it to the svpe bundle ``out/bundle``; returns export's layer report."""
    from host_train.export import export
    from host_train.train import train

    train(cfg, out / "run", progress=False, dataset=dataset, log=lambda s: None)
    _, report = export(
        str(out / "run"), str(out / "bundle"), "svpe", calib_images=128, report_images=64,
        log=lambda s: None,
    )  # fmt: skip
    return report
