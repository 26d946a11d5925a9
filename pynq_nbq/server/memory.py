"""Process memory for a 4 GB board: glibc allocator settings and RSS readings.

Why: decoding a 36 Mpx RGBA PNG needs a 144 MB raster.  Pillow allocates it in blocks
of up to 16 MB with ``malloc``; after the first large block is freed, glibc raises its
*dynamic* mmap threshold (up to 32 MB), so later blocks come from the heap arena of
the decoding thread and are kept there after ``free``.  With one arena per thread (up
to 8 x cores) the peaks of 16 request threads add up and are never returned: the RSS
of ``nbq serve`` grew to 7.7 GB on 16 such requests (issue 15).

What :func:`configure_allocator` does (``mallopt`` through ctypes, at server start,
never at import):

* ``M_MMAP_THRESHOLD`` = 1 MiB: fixing it turns the dynamic threshold off, so every
  large block (image rasters, big numpy arrays) is its own ``mmap`` and goes back to
  the kernel on ``free``;
* ``M_ARENA_MAX`` = 2: small allocations of all threads share two arenas instead of
  one per thread, so fragmentation cannot multiply by the thread count.

:func:`release_free_memory` (``malloc_trim(0)``) returns what the arenas still hold
after a large decode.  Elsewhere than glibc (musl, macOS) these are no-ops that say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from pathlib import Path

M_MMAP_THRESHOLD = -3  # glibc malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1 << 20
ARENA_MAX = 2


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else None


def configure_allocator(
    mmap_threshold: int = MMAP_THRESHOLD_BYTES, arena_max: int = ARENA_MAX
) -> str:
    """Apply the glibc settings above to this process; a line saying what was done."""
    libc = _libc()
    if libc is None:
        return "allocator: not glibc, left as it is"
    ok = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    ok &= libc.mallopt(M_ARENA_MAX, arena_max) == 1
    if not ok:
        return "allocator: mallopt refused the settings, left as it is"
    return f"allocator: glibc mmap threshold {mmap_threshold >> 10} KiB, {arena_max} arenas"


def release_free_memory() -> None:
    """Hand memory the allocator keeps but does not use back to the kernel (glibc)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def rss_bytes(pid: int | str = "self", field: str = "VmRSS") -> int | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of ``pid`` in bytes, from
    /proc (None where /proc is missing)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None
