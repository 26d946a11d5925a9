"""The simulated board's DMA buffer: pynq's own, usable under numpy 2."""

from __future__ import annotations

from pynq.buffer import PynqBuffer


class SimBuffer(PynqBuffer):
    """pynq's buffer; ``device`` is made a plain attribute again: numpy >= 2.x gives
    ``ndarray`` a read-only ``device`` property, which pynq 3.0.1's ``PynqBuffer``
    (written for numpy 1.x) cannot assign."""

    device = None
