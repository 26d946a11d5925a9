"""Compiled helper libraries built on first use and cached (the csim kernel, the native engine).

A library is named by a hash of everything that shapes it (sources, compiler,
flags, CPU), so a cached file is reused only when it would be rebuilt identically.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """Where built libraries of ``kind`` ("csim", "native") live (created on demand):
    ``$NBQ_CACHE_DIR``, else ``$XDG_CACHE_HOME/pynq_nbq/<kind>``, else
    ``~/.cache/pynq_nbq/<kind>``."""
    env = os.environ.get("NBQ_CACHE_DIR")
    if env:
        d = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        d = Path(base) / "pynq_nbq" / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


def build_once(
    out: Path,
    command_for: Callable[[Path], list[str]],
    what: str,
    error: type[Exception] = ValueError,
) -> Path:
    """Run ``command_for(tmp)`` to build ``out`` unless it exists; returns ``out``.

    Concurrent builders (threads, processes) take a file lock next to ``out``; the
    result is renamed into place atomically, so readers see no file or the whole
    file.  A failed build raises ``error`` naming ``what``, the command and the
    compiler's last messages, and leaves nothing in the cache.
    """
    if out.exists():
        return out
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others then find it
        if out.exists():
            return out
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        os.close(fd)
        cmd = command_for(Path(tmp))
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            Path(tmp).unlink(missing_ok=True)
            raise error(f"building {what} failed ({' '.join(cmd)}):\n" + res.stderr[-4000:])
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    return out
