"""Generators of hostile inputs for ``nbq serve`` (issue 22), one function per class.

Each returns small files that declare, or unpack to, something large.  ``scale`` (0..1]
shrinks the declared sizes for CI-sized tests; ``scripts/bench_server.py --attacks`` runs
them at full scale (1.0) against a server process and reports its peak RSS per class.
Not part of the installed package.

Classes (the keys of :data:`IMAGE_CLASSES`):

* ``container`` - an ICO whose directory says 256 x 256 but which holds a large PNG
  (its real size is known only once decoded);
* ``aspect-tall`` / ``aspect-wide`` - 1 x 39,000,000 and 39,000,000 x 1 PNGs (76 KB);
* ``webp-lossy`` / ``webp-lossless`` - 36 Mpixel WebPs of ~1-2 KB;
* ``progressive-jpeg`` - a 36 Mpixel progressive JPEG (libjpeg keeps every coefficient);
* ``tiff`` - a 36 Mpixel RGBA TIFF (deflate);
* ``metadata`` - a 1 x 1 PNG with 200 compressed 1 MB text chunks (~200 KB);

and, outside images: :func:`pipelined_gets` (one packet of 200 pipelined requests for a
client that never reads) and :func:`hostile_bundles` (zip bomb, FIFO, symlinks).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

#: pixels of the full-scale "at the pixel limit" images (the default limit is 40 Mpixel)
FULL_PIXELS = 36_000_000
#: the long side of the full-scale aspect-ratio attacks
FULL_LONG_SIDE = 39_000_000


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def blank_png(width: int, height: int, mode: str = "L", extra: bytes = b"") -> bytes:
    """A zero-filled PNG of any size, written row by row (no full raster in memory);
    ``mode`` ``L`` (8-bit grey) or ``RGBA``; ``extra``: chunks inserted before IDAT."""
    color, channels = {"L": (0, 1), "RGBA": (6, 4)}[mode]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + width * channels)  # filter byte 0 + pixels
    parts = []
    rows_per_call = max(1, (1 << 20) // len(row))
    for y in range(0, height, rows_per_call):
        parts.append(comp.compress(row * min(rows_per_call, height - y)))
    parts.append(comp.flush())
    body = b"".join(parts)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + extra
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def _side(scale: float) -> int:
    return max(16, int((FULL_PIXELS * scale) ** 0.5))


def container_ico(scale: float = 1.0) -> bytes:
    """An ICO whose directory declares 256 x 256 holding a PNG of ~12000 x 12000 x scale."""
    side = max(64, int(12_000 * scale**0.5))
    png = blank_png(side, side, "RGBA")
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def aspect_png(tall: bool, scale: float = 1.0) -> bytes:
    """A 1 x N (``tall``) or N x 1 grey PNG, N = 39,000,000 x scale."""
    n = max(1000, int(FULL_LONG_SIDE * scale))
    return blank_png(1, n) if tall else blank_png(n, 1)


def webp(lossless: bool, scale: float = 1.0) -> bytes:
    """A ~36 Mpixel x scale flat RGB WebP (a few KB); WebP's largest side is 16383."""
    side = min(16383, _side(scale))
    h = min(16383, max(16, int(FULL_PIXELS * scale) // side))
    img = Image.new("RGB", (side, h), (40, 90, 200))
    buf = io.BytesIO()
    if lossless:
        img.save(buf, "WEBP", lossless=True, quality=0, method=0)
    else:
        img.save(buf, "WEBP", quality=10, method=0)
    return buf.getvalue()


def progressive_jpeg(scale: float = 1.0) -> bytes:
    """A ~36 Mpixel x scale flat progressive RGB JPEG (4:4:4, the most coefficients)."""
    side = min(65_000, _side(scale))
    img = Image.new("RGB", (side, side), (120, 30, 60))
    buf = io.BytesIO()
    img.save(buf, "JPEG", progressive=True, quality=50, subsampling=0)
    return buf.getvalue()


def tiff_rgba(scale: float = 1.0) -> bytes:
    """A ~36 Mpixel x scale RGBA TIFF, deflate-compressed."""
    side = _side(scale)
    img = Image.new("RGBA", (side, side), (1, 2, 3, 255))
    buf = io.BytesIO()
    img.save(buf, "TIFF", compression="tiff_adobe_deflate")
    return buf.getvalue()


def metadata_png(chunks: int = 200, chunk_bytes: int = 1 << 20) -> bytes:
    """A 1 x 1 PNG carrying ``chunks`` zTXt chunks that each inflate to ``chunk_bytes``."""
    text = zlib.compress(b"a" * chunk_bytes, 9)
    extra = b"".join(_png_chunk(b"zTXt", f"k{i}".encode() + b"\0\0" + text) for i in range(chunks))
    return blank_png(1, 1, extra=extra)


#: class name -> generator(scale) of one request body
IMAGE_CLASSES: dict[str, Callable[[float], bytes]] = {
    "container": container_ico,
    "aspect-tall": lambda s: aspect_png(True, s),
    "aspect-wide": lambda s: aspect_png(False, s),
    "webp-lossy": lambda s: webp(False, s),
    "webp-lossless": lambda s: webp(True, s),
    "progressive-jpeg": progressive_jpeg,
    "tiff": tiff_rgba,
    "metadata": lambda s: metadata_png(max(4, int(200 * s))),
}


def pipelined_gets(n: int = 200, path: str = "/metrics") -> bytes:
    """One packet of ``n`` pipelined keep-alive GETs (for a client that never reads)."""
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n" * n).encode()


def zip_bomb_npz(path: Path, declared_mb: int = 1500) -> Path:
    """An ``arrays.npz`` whose one member inflates to ``declared_mb`` MB of zeros (~1 KB
    per MB compressed)."""
    chunk = b"\0" * (1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("w0.npy", "w", force_zip64=True) as f:
            header = b"\x93NUMPY\x01\x00"
            d = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({declared_mb << 20},), }}"
            d = d.ljust(118) + "\n"
            f.write(header + struct.pack("<H", len(d)) + d.encode())
            for _ in range(declared_mb):
                f.write(chunk)
    return path


def hostile_bundles(models_dir: Path, template: Path, bomb_mb: int = 1500) -> dict[str, str]:
    """Copies of the bundle ``template`` in ``models_dir``, each broken one way; returns
    {bundle name: what is wrong}.  (Needs the token and write access to the directory.)"""
    made = {}

    def copy(name: str) -> Path:
        dst = models_dir / name
        shutil.copytree(template, dst)
        return dst

    zip_bomb_npz(copy("bomb") / "arrays.npz", bomb_mb)
    made["bomb"] = f"arrays.npz inflates to {bomb_mb} MB"
    d = copy("zero-manifest")
    (d / "manifest.json").unlink()
    os.symlink("/dev/zero", d / "manifest.json")
    made["zero-manifest"] = "manifest.json is a symlink to /dev/zero"
    d = copy("fifo-manifest")
    (d / "manifest.json").unlink()
    os.mkfifo(d / "manifest.json")
    made["fifo-manifest"] = "manifest.json is a FIFO nobody writes"
    d = copy("fifo-arrays")
    (d / "arrays.npz").unlink()
    os.mkfifo(d / "arrays.npz")
    made["fifo-arrays"] = "arrays.npz is a FIFO nobody writes"
    outside = models_dir.parent / "outside-manifest.json"
    shutil.copy(template / "manifest.json", outside)
    d = copy("escaping-link")
    (d / "manifest.json").unlink()
    os.symlink(outside, d / "manifest.json")
    made["escaping-link"] = "manifest.json is a symlink out of the models directory"
    return made


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    """An RGB noise PNG (a normal, incompressible image)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").save(
        buf, "PNG"
    )
    return buf.getvalue()
