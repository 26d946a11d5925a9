"""The ``native`` backend: every conv and linear layer in the C kernel of :mod:`pynq_nbq.native`.

Bit-identical to the ``numpy`` reference and several times faster on the CPU
(x86 and the board's Cortex-A53 cores).  Besides the conv-engine layers it also
runs the engine's ARM-side conv and linear layers (``arm_conv``).  ``auto`` (the
default of ``nbq classify``, ``nbq info`` and the server) picks it when the kernel
builds and loads, else the numpy engine, saying why (:func:`auto_backend`).
"""

from __future__ import annotations

import numpy as np

from .. import native
from ..ops import ConvSpec


class NativeBackend:
    """Conv-engine and ARM conv/linear layers in the native C kernel.

    Raises :class:`pynq_nbq.native.NativeError` (a ValueError) at construction when
    the kernel cannot be built or loaded.
    """

    name = "native"
    #: the kernel keeps no state between calls and releases the GIL: batches may be split
    thread_safe = True

    def __init__(self) -> None:
        self.library = native.library()

    @property
    def description(self) -> str:
        """What runs the layers, e.g. ``native C kernel, x86-64 AVX-512 VNNI (vpdpwssd)``."""
        return f"native C kernel, {self.library.isa}"

    def run_conv(self, x: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return native.conv_layer(x, spec, self.library)

    arm_conv = run_conv


def auto_backend():
    """The fastest exact backend available here: ``native``, else ``numpy``.

    The numpy backend it falls back to carries the reason in ``fallback_reason``
    (and in its ``description``).
    """
    from .numpy_backend import NumpyBackend

    try:
        return NativeBackend()
    except native.NativeError as exc:
        backend = NumpyBackend()
        backend.fallback_reason = str(exc)
        return backend
