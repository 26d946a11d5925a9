"""What a training run writes beside its checkpoint: ``metrics.json`` (one record per
epoch) and ``curves.png`` (loss and accuracy curves), and its progress bar."""

from __future__ import annotations

import json
import os
from pathlib import Path


def progress_bar(it, enabled: bool, desc: str):
    """``it`` wrapped in a tqdm bar when ``enabled`` (else ``it`` itself)."""
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False, unit="batch")


def write_metrics(out: Path, metrics: list[dict]) -> None:
    """``out/metrics.json`` (atomically) and, for trained runs, ``out/curves.png``."""
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1))
    os.replace(tmp, out / "metrics.json")
    if len(metrics) and "train_loss" in metrics[0]:
        plot_curves(metrics, out / "curves.png")


def plot_curves(metrics: list[dict], path: Path) -> None:
    """Training loss and train/test accuracy per epoch, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [m["epoch"] for m in metrics]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.plot(ep, [m["train_loss"] for m in metrics], label="train loss")
    a1.set_xlabel("epoch")
    a1.legend()
    a2.plot(ep, [100 * m["train_acc"] for m in metrics], label="train acc %")
    a2.plot(ep, [100 * m["test_acc"] for m in metrics], label="test acc %")
    a2.set_xlabel("epoch")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
