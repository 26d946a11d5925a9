"""The idx file format (MNIST, Fashion-MNIST) and where Fashion-MNIST lives, numpy only.

:func:`read_idx` is the one reader (``host_train.data`` and ``nbq bench``/``nbq check``
use it); :func:`fashion_idx` finds a Fashion-MNIST file, gzip or plain, in a folder.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

#: Debian package ``dataset-fashion-mnist`` installs the files here
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """A gzip (``.gz``) or plain unsigned-byte idx file as a uint8 array of its shape;
    ValueError naming the file when it is not one (or is cut short)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} bytes of data, got {body.size}")
    return body.reshape(dims)


def fashion_idx(data_dir: str | os.PathLike, stem: str) -> np.ndarray:
    """The idx file ``stem`` (``.gz`` or plain) of a Fashion-MNIST folder as uint8;
    FileNotFoundError saying how to get it."""
    d = Path(data_dir)
    for p in (d / f"{stem}.gz", d / stem):
        if p.exists():
            return read_idx(p)
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {d}; install the Debian "
        "package dataset-fashion-mnist or pass --data-dir"
    )
