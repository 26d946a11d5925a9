"""Backends run the layers the hardware conv engine takes (contract 3).

A backend has ``name`` and ``run_conv(x, spec) -> y`` with int16 NHWC ``x`` and
``y`` exactly equal to :func:`pynq_nbq.ops.conv_layer` (x, spec); optionally
``check_bundle(manifest)`` raising ``ValueError`` when it cannot run a bundle, and
``thread_safe = True`` when ``run_conv`` may be called from several threads at once
(the engine then splits batches over its ``threads``); ``arm_conv(x, spec)`` to run
the engine's ARM-side conv and linear layers too (default: the numpy reference);
``description``, one line saying what runs the layers.
The engine (:mod:`pynq_nbq.engine`) decides what runs where and calls them.

* ``auto``  - ``native`` where its kernel builds and loads, else ``numpy`` (the default);
* ``numpy`` - the reference;
* ``native`` - the same integers in a C kernel built at first use (fast; x86, Arm);
* ``csim``  - the HLS C++ kernel compiled with g++, fed the DMA byte streams;
* ``fpga``  - the overlay on a ZCU102 through pynq (board only).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..ops import ConvSpec

BACKENDS = ("auto", "numpy", "native", "csim", "fpga")


class Backend(Protocol):
    name: str

    def run_conv(self, x: np.ndarray, spec: ConvSpec) -> np.ndarray: ...


def get_backend(name: str) -> Backend:
    """A backend by name; raises ValueError naming the choices or what is missing."""
    if name == "auto":
        from .native import auto_backend

        return auto_backend()
    if name == "native":
        from .native import NativeBackend

        return NativeBackend()
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "csim":
        from .csim import CsimBackend

        return CsimBackend()
    if name == "fpga":
        try:
            from .fpga import FpgaBackend
        except ModuleNotFoundError as exc:
            raise ValueError(f"backend 'fpga' is not available: {exc}") from exc
        return FpgaBackend()
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
