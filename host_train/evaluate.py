"""Evaluation of a checkpoint: accuracies, confusion matrix, weight-level histograms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import layers as L
from . import quant
from .data import load_dataset
from .train import accuracy, load_checkpoint, model_from_checkpoint, predict


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """k x k counts: rows true class, columns predicted class."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def weight_level_histograms(model: torch.nn.Module) -> dict[str, dict]:
    """Per power-of-two layer: bits, exponent e, and the count of each level (x 2**e)."""
    out = {}
    for name, m in L.pow2_layers(model):
        q, e = m.staircase()
        levels = quant.level_set(m.n_bits)
        scaled = (q / quant.scale_of(e, q.ndim)).flatten()
        counts = {str(lv): int((scaled == lv).sum()) for lv in levels}
        out[name] = {
            "n_bits": m.n_bits,
            "exp": e if isinstance(e, int) else e.tolist(),
            "counts": counts,
            "zero_fraction": float((scaled == 0).float().mean()),
        }
    return out


def evaluate(ckpt_path: str, out_dir: str | None = None, data_dir: str | None = None) -> dict:
    """Evaluate a checkpoint on its dataset's test split; write JSON + PNGs to out_dir."""
    ck = load_checkpoint(ckpt_path)
    model, cfg = model_from_checkpoint(ck)
    ds = load_dataset(ck["dataset"], data_dir or cfg.data_dir)
    mean, std = ck["mean"], ck["std"]
    logits = predict(model, ds.test_x, mean, std)
    pred = logits.argmax(1)
    quant_acc = float((pred == ds.test_y).mean())
    method = cfg.method
    result: dict = {
        "checkpoint": str(ckpt_path),
        "method": method,
        "dataset": ds.name,
        "test_images": int(len(ds.test_y)),
    }
    if method == "float":
        result["float_accuracy"] = quant_acc
    else:
        result["quantized_accuracy"] = quant_acc
        L.set_method(model, "float")
        result["latent_float_accuracy"] = accuracy(model, ds.test_x, ds.test_y, mean, std)
        L.set_method(model, method)
        result["weight_levels"] = weight_level_histograms(model)
    cm = confusion_matrix(ds.test_y, pred, len(ds.classes))
    result["confusion_matrix"] = cm.tolist()
    result["classes"] = ds.classes
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=1))
        _plot_confusion(cm, ds.classes, out / "confusion.png")
        if "weight_levels" in result:
            _plot_levels(result["weight_levels"], out / "weight_levels.png")
    return result


def _plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_levels(levels: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(levels)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.4), squeeze=False)
    for ax, (name, h) in zip(axes[0], levels.items()):
        keys = list(h["counts"])
        ax.bar(range(len(keys)), [h["counts"][k] for k in keys])
        ax.set_xticks(range(len(keys)), [f"{float(k):g}" for k in keys], rotation=90, fontsize=6)
        ax.set_title(f"{name}\n2^{h['exp']}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
