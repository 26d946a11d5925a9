"""The reference backend: the conv engine's layers in numpy (``pynq_nbq.ops``)."""

from __future__ import annotations

import numpy as np

from ..ops import ConvSpec, conv_layer
from . import CPU_EXACT, Capabilities


class NumpyBackend:
    """Runs conv-engine layers with :func:`pynq_nbq.ops.conv_layer` on the host CPU."""

    name = "numpy"
    #: the engine may split a batch over threads: ops keeps its scratch arrays per thread
    capabilities: Capabilities = CPU_EXACT
    #: why ``auto`` chose this backend instead of the native kernel (None: asked for)
    fallback_reason: str | None = None

    @property
    def description(self) -> str:
        text = "numpy reference (float64 matrix products, exact)"
        if self.fallback_reason:
            text += f" (native kernel unavailable: {self.fallback_reason})"
        return text

    def run_conv(self, x: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return conv_layer(x, spec)
