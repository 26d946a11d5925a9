"""Reading files someone else controls, without hanging or running out of memory
(issue 22: hostile bundles in the models directory of ``nbq serve``).

* :func:`read_regular` opens a file only if it is a **regular file inside a given root**
  (a symlink is followed only when its target stays inside the root; FIFOs, devices,
  sockets and directories are refused; the open never blocks on a FIFO) and reads at most
  a given number of bytes;
* :func:`check_npz` checks an ``.npz`` archive's **declared** sizes before anything is
  decompressed: every member's uncompressed size from the zip central directory, their
  total against a limit, and each ``.npy`` header's shape x item size against its member;
* :func:`pynq_nbq.bundle.load_bundle` applies both to a bundle's ``manifest.json`` and
  ``arrays.npz`` (``nbq serve`` with its models directory as the root).

Errors are :class:`UnsafeFile` (an :class:`~pynq_nbq.errors.NbqError`) and name paths
relative to the root, never the root itself.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from .errors import NbqError

#: the largest manifest.json read (bytes)
MAX_MANIFEST_BYTES = 16 << 20
#: the largest arrays.npz read (bytes, compressed)
MAX_ARRAYS_FILE_BYTES = 512 << 20
#: the most all arrays of one bundle may declare, uncompressed (bytes)
MAX_ARRAYS_BYTES = 512 << 20
#: zip members an arrays file may hold
MAX_MEMBERS = 10_000


class UnsafeFile(NbqError):
    """A file that is not a bounded regular file inside its root, or an archive whose
    declared sizes exceed the limits; the message names it relative to the root."""


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def read_regular(
    root: str | os.PathLike,
    rel: str | os.PathLike,
    max_bytes: int,
    root_name: str = "the models directory",
) -> bytes:
    """The bytes of ``root/rel`` if it is a regular file inside ``root`` (after following
    symlinks) of at most ``max_bytes``; else :class:`UnsafeFile` (``root_name``: how the
    message names ``root``)."""
    root = Path(root).resolve()
    path = root / rel
    name = _rel(root, path)
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise UnsafeFile(f"{name}: missing or a broken symlink") from None
    if real != root and root not in real.parents:
        raise UnsafeFile(f"{name}: a symlink out of {root_name}")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise UnsafeFile(f"{name}: cannot be opened ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeFile(f"{name}: not a regular file (a FIFO, device, socket or directory)")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > max_bytes:
            raise UnsafeFile(f"{name}: {st.st_size} bytes, more than the limit of {max_bytes}")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeFile(f"{name}: grew past the limit of {max_bytes} bytes while read")
    return data


def check_npz(
    raw: bytes, where: str = "arrays.npz", max_total: int | None = None, headers: bool = True
) -> int:
    """Check an ``.npz`` archive from its declared sizes, decompressing nothing but each
    member's ``.npy`` header; return the total declared uncompressed bytes.

    Refuses: more than :data:`MAX_MEMBERS` members; a total above ``max_total`` (default
    :data:`MAX_ARRAYS_BYTES`); with ``headers``, an ``.npy`` header whose shape x item size
    is larger than its member (``headers=False``: the central directory alone, nothing
    decompressed).  (Python's zipfile never inflates a member past its declared size, so
    the declared sizes bound memory.)"""
    if max_total is None:
        max_total = MAX_ARRAYS_BYTES
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnsafeFile(f"{where}: not a zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise UnsafeFile(f"{where}: {len(infos)} members (limit {MAX_MEMBERS})")
        total = sum(i.file_size for i in infos)
        if total > max_total:
            raise UnsafeFile(
                f"{where}: its arrays declare {total} bytes uncompressed, more than the limit "
                f"of {max_total}"
            )
        for info in infos if headers else ():
            _check_npy_header(zf, info, where)
    return total


def _check_npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except Exception as exc:  # numpy's and zipfile's errors for a malformed member
        raise UnsafeFile(
            f"{where}: member {info.filename!r} has no valid .npy header ({exc})"
        ) from None
    count = 1
    for n in shape:
        count *= int(n)
    if count * dtype.itemsize > info.file_size:
        raise UnsafeFile(
            f"{where}: member {info.filename!r} declares {count * dtype.itemsize} bytes of "
            f"array in {info.file_size} bytes"
        )
