"""One request's time as consecutive parts that always add up to its total."""

from __future__ import annotations

import time


class Timeline:
    """Consecutive parts of one request's time: :meth:`mark` adds the time since the
    previous mark to a part, so the parts always sum to :attr:`elapsed` (perf_counter s)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.t = t0
        self.parts: dict[str, float] = {}

    def mark(self, part: str) -> float:
        """Charge the time since the last mark to ``part``; return that time (s)."""
        now = time.perf_counter()
        dt = now - self.t
        self.parts[part] = self.parts.get(part, 0.0) + dt
        self.t = now
        return dt

    def add(self, part: str, seconds: float) -> None:
        """Charge ``seconds`` of the time already marked elsewhere to ``part`` (a split)."""
        self.parts[part] = self.parts.get(part, 0.0) + seconds

    @property
    def elapsed(self) -> float:
        return self.t - self.t0
