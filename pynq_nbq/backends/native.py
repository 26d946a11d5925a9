"""The ``native`` backend: every conv and linear layer in the C kernel of :mod:`pynq_nbq.native`.

Bit-identical to the ``numpy`` reference and several times faster on the CPU
(x86 and the board's Cortex-A53 cores).  Besides the conv-engine layers it also
runs the engine's ARM-side conv and linear layers (``arm_conv``).  ``auto`` (the
default of ``nbq classify``, ``nbq info`` and the server) picks it when the kernel
builds and loads, else the numpy engine, saying why (:func:`auto_backend`).
Networks that are a plain chain (conv, linear, global average pool) run whole in
one native call (:meth:`NativeBackend.compile_network`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .. import native
from ..bundle import LayerSpec
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

    def compile_network(
        self,
        chain: Sequence[tuple[LayerSpec, ConvSpec | None]],
        input_name: str,
        output_name: str,
        threads: int,
    ) -> Callable[[np.ndarray], np.ndarray] | None:
        """The whole network in one native call (optional backend capability).

        ``chain``: every layer in order with its ConvSpec (None for layers without
        weights).  Returns ``run(x_q) -> logits_q`` (int16 NCHW in, int16 (N, out)
        out, on ``threads`` threads inside the kernel), or None when the network is
        not a chain the kernel runs whole (:mod:`pynq_nbq.native.network`); the
        engine then runs it layer by layer.
        """
        from ..native.network import compile_network

        net = compile_network(chain, input_name, output_name, threads, self.library)
        return None if net is None else net.run


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
