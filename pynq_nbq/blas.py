"""Thread count of the BLAS library behind numpy's matrix products (the engine's)."""

from __future__ import annotations

import os


def limit_blas_threads(n: int) -> str:
    """Limit the BLAS library numpy uses to ``n`` threads in this process; say what was done.

    The device thread runs one image at a time: a multi-threaded BLAS gains little on
    such small matrices and, on a busy machine, loses a lot (the numpy engine took
    ~90 ms per Fashion-MNIST image with 2 OpenBLAS threads and ~2 ms with 1 on a loaded
    2-core host).  Uses threadpoolctl when installed; an ``OPENBLAS_NUM_THREADS`` (or
    ``OMP_NUM_THREADS``) set by the user wins.
    """
    if n < 1:
        return "BLAS threads: library default"
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            return f"BLAS threads: {var}={os.environ[var]} (from the environment)"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return (
            f"BLAS threads: library default (install threadpoolctl or set "
            f"OPENBLAS_NUM_THREADS={n} for steadier single-image latency)"
        )
    threadpool_limits(limits=n, user_api="blas")
    return f"BLAS threads: {n}"
