"""Datasets, read from local files only (no downloads at run time).

Images come back as uint8 arrays (N, C, H, W) with int64 labels; normalisation
and augmentation happen on torch tensors in :mod:`host_train.train`.

* ``fashion-mnist``: gzip idx files, from ``--data-dir`` or the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``).
* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, values 0..16 scaled
  to 0..255), split 1,347 train / 450 test with a fixed permutation.
* ``cifar10``: the binary version's files, user-provided with ``--data-dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pynq_nbq.idx import read_idx

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DATASETS = ("fashion-mnist", "digits", "cifar10")
#: Whether a mirror image keeps its class (clothes, CIFAR-10's objects: yes; digits: no);
#: sets the trainer's default for random horizontal flips.
MIRROR_SYMMETRIC = {"fashion-mnist": True, "digits": False, "cifar10": True}
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


class DatasetMissing(FileNotFoundError):
    """A dataset's files are not on this machine; the message says how to get them."""


@dataclass
class Dataset:
    """A split dataset: uint8 images (N, C, H, W), int64 labels, class names,
    the per-channel mean/std (of pixels scaled to 0..1) of the training split, and
    whether a horizontal mirror image is still an image of the same class
    (``mirror_symmetric``: clothes and CIFAR-10's objects yes, digits no), which sets
    the trainer's default for random horizontal flips."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    mean: list[float]
    std: list[float]
    mirror_symmetric: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


def _find_fashion(data_dir: str | None) -> Path:
    candidates = [Path(data_dir)] if data_dir else [Path(d) for d in FASHION_DIRS]
    for d in candidates:
        if (d / "train-images-idx3-ubyte.gz").exists() or (d / "train-images-idx3-ubyte").exists():
            return d
    where = ", ".join(str(c) for c in candidates)
    raise DatasetMissing(
        f"Fashion-MNIST not found in {where}. Install it with "
        "'apt-get install dataset-fashion-mnist' (Debian) or pass --data-dir DIR holding "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        "and t10k-labels-idx1-ubyte.gz."
    )


def _idx(d: Path, stem: str) -> np.ndarray:
    p = d / f"{stem}.gz"
    return read_idx(p if p.exists() else d / stem)


def _stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    xf = x.astype(np.float64) / 255.0
    return xf.mean(axis=(0, 2, 3)).tolist(), xf.std(axis=(0, 2, 3)).tolist()


def load_fashion_mnist(data_dir: str | None = None) -> Dataset:
    d = _find_fashion(data_dir)
    tx = _idx(d, "train-images-idx3-ubyte")[:, None]
    ty = _idx(d, "train-labels-idx1-ubyte").astype(np.int64)
    vx = _idx(d, "t10k-images-idx3-ubyte")[:, None]
    vy = _idx(d, "t10k-labels-idx1-ubyte").astype(np.int64)
    mean, std = _stats(tx)
    return Dataset(
        "fashion-mnist",
        tx,
        ty,
        vx,
        vy,
        list(FASHION_CLASSES),
        mean,
        std,
        MIRROR_SYMMETRIC["fashion-mnist"],
    )


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.RandomState(0).permutation(len(y))
    x, y = x[perm], y[perm]
    tx, ty, vx, vy = x[:1347], y[:1347], x[1347:], y[1347:]
    mean, std = _stats(tx)
    return Dataset(
        "digits", tx, ty, vx, vy, [str(i) for i in range(10)], mean, std, MIRROR_SYMMETRIC["digits"]
    )


def read_cifar_binary(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary batches (records of 1 label byte + 3x32x32 pixel bytes)."""
    raw = b"".join(p.read_bytes() for p in paths)
    rec = 1 + 3 * 32 * 32
    if not raw or len(raw) % rec:
        raise ValueError(f"{paths[0].parent}: CIFAR-10 binary files must hold {rec}-byte records")
    a = np.frombuffer(raw, dtype=np.uint8).reshape(-1, rec)
    return a[:, 1:].reshape(-1, 3, 32, 32).copy(), a[:, 0].astype(np.int64)


def load_cifar10(data_dir: str | None) -> Dataset:
    """CIFAR-10 from the binary version's files (``data_batch_1..5.bin``,
    ``test_batch.bin``) in ``data_dir`` - user-provided; nothing is downloaded."""
    d = Path(data_dir) if data_dir else None
    train = sorted(d.glob("data_batch_*.bin")) if d else []
    test = d / "test_batch.bin" if d else None
    if not train or test is None or not test.exists():
        raise DatasetMissing(
            "CIFAR-10 not found: pass --data-dir DIR holding the binary version's "
            "data_batch_1.bin .. data_batch_5.bin and test_batch.bin (cifar-10-binary.tar.gz "
            "from the dataset's authors); this project downloads nothing."
        )
    tx, ty = read_cifar_binary(train)
    vx, vy = read_cifar_binary([test])
    mean, std = _stats(tx)
    return Dataset(
        "cifar10", tx, ty, vx, vy, list(CIFAR10_CLASSES), mean, std, MIRROR_SYMMETRIC["cifar10"]
    )


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Load a dataset by name (see :data:`DATASETS`)."""
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if name == "digits":
        return load_digits()
    if name == "cifar10":
        return load_cifar10(data_dir)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


#: Seed of the permutation that picks the held-out validation images (the same for every
#: run and every training seed, so that every row of a benchmark is chosen on one set).
HOLDOUT_SEED = 20261130


def hold_out(
    x: np.ndarray, y: np.ndarray, n_val: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``n_val`` images off a training split for choices (never tune on test).

    Returns (train_x, train_y, val_x, val_y); the validation images are a fixed random
    subset (:data:`HOLDOUT_SEED`), both parts keep the original order.  ``n_val = 0``
    returns the split unchanged and empty validation arrays.
    """
    if not 0 <= n_val < len(y):
        raise ValueError(f"--val-split must be 0 .. {len(y) - 1} images, got {n_val}")
    is_val = np.zeros(len(y), dtype=bool)
    is_val[np.random.RandomState(HOLDOUT_SEED).permutation(len(y))[:n_val]] = True
    return x[~is_val], y[~is_val], x[is_val], y[is_val]
