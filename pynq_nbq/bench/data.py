"""Labelled image sets for ``nbq bench``: Fashion-MNIST's test set or a folder of images.

Images are kept undecoded-to-float (PIL images), so that the benchmark can time the
preprocessing step itself.  Labels are class indices into the bundle's ``classes``.

* Fashion-MNIST: the gzip (or plain) idx files of the test set
  (``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``), by default from
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
* A folder: either one sub-folder per class (named by the class name or index), or
  files named ``<index>-anything.<ext>`` (like ``pynq_nbq/samples/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..idx import FASHION_DIR, fashion_idx, read_idx
from ..preprocess import open_image

__all__ = ["FASHION_DIR", "LabelledSet", "fashion_idx", "fashion_mnist", "image_folder", "read_idx"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm")


@dataclass
class LabelledSet:
    """``images``: N decoded PIL images; ``labels``: (N,) int64 class indices;
    ``source``: where they came from, in words."""

    images: list[Image.Image]
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.images)


def fashion_mnist(n: int, data_dir: Path = FASHION_DIR, start: int = 0) -> LabelledSet:
    """Test images ``start .. start + n`` of Fashion-MNIST (28x28 grey) with labels."""
    images = fashion_idx(Path(data_dir), "t10k-images-idx3-ubyte")[start : start + n]
    labels = fashion_idx(Path(data_dir), "t10k-labels-idx1-ubyte")[start : start + n]
    if len(images) == 0:
        raise ValueError(f"no Fashion-MNIST test images in range {start}..{start + n}")
    return LabelledSet(
        [Image.fromarray(im, "L") for im in images],
        labels.astype(np.int64),
        f"Fashion-MNIST test images {start}..{start + len(images) - 1} ({data_dir})",
    )


def _class_index(token: str, classes: list[str], where: Path) -> int:
    if token.isdigit() and int(token) < len(classes):
        return int(token)
    norm = {re.sub(r"[^a-z0-9]", "", c.lower()): i for i, c in enumerate(classes)}
    key = re.sub(r"[^a-z0-9]", "", token.lower())
    if key in norm:
        return norm[key]
    raise ValueError(f"{where}: {token!r} is neither a class index nor one of {classes}")


def image_folder(folder: Path, classes: list[str], n: int | None = None) -> LabelledSet:
    """Labelled images from ``folder`` (see the module docstring for the two layouts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist")
    pairs: list[tuple[Path, int]] = []
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if subdirs:
        for d in subdirs:
            label = _class_index(d.name, classes, d)
            pairs += [(f, label) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            m = re.match(r"(\d+)[-_]", f.name)
            if not m:
                raise ValueError(
                    f"{f}: cannot tell its label; name files <class index>-<anything> or "
                    "put them in one sub-folder per class"
                )
            pairs.append((f, _class_index(m.group(1), classes, f)))
    if not pairs:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    pairs = pairs[:n] if n else pairs
    return LabelledSet(
        [open_image(p) for p, _ in pairs],
        np.array([lab for _, lab in pairs], dtype=np.int64),
        f"{len(pairs)} labelled images from {folder}",
    )
