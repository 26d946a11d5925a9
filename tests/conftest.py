"""Test-wide settings: one compute thread per library.

The suite's models are small; one thread is as fast as two for them, and it keeps
timings sane when the machine is shared (two-thread OpenMP/OpenBLAS pools on two
busy cores spin and slow down by an order of magnitude).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # pragma: no cover
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - board installs have no torch
    pass
