"""One memory budget for image decoding (issue 22): requests are charged, before any
pixel is decoded, what their decode will hold at its peak
(:func:`pynq_nbq.decode_cost.decode_bytes`, from the header), and wait for room.

No Flask here.  A request whose charge alone exceeds the budget can never run
(:class:`OverBudget`, answered 413); one that finds no room within its wait gets
:class:`BudgetBusy` (503).  Charges are granted first come, first served among those that
fit, so small images are never stuck behind a large one that waits for room.
"""

from __future__ import annotations

import threading
import time


class OverBudget(Exception):
    """The charge is larger than the whole budget."""


class BudgetBusy(Exception):
    """No room for the charge within the wait."""


class Charge:
    """Bytes held from the budget until :meth:`release` (or the ``with`` block ends)."""

    def __init__(self, budget: MemoryBudget, nbytes: int, waited_s: float) -> None:
        self.budget = budget
        self.nbytes = nbytes
        self.waited_s = waited_s  #: how long the request waited for room (s)
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self.budget._give_back(self.nbytes)

    def __enter__(self) -> Charge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class MemoryBudget:
    """``total_bytes`` shared by all decodes at once; thread-safe."""

    def __init__(self, total_bytes: int) -> None:
        if total_bytes < 1:
            raise ValueError(f"the decode budget must be positive, got {total_bytes}")
        self.total = int(total_bytes)
        self.in_use = 0  #: bytes charged now
        self.peak = 0  #: most bytes charged at once so far
        self.waiting = 0  #: requests waiting for room
        self._cond = threading.Condition()

    def charge(self, nbytes: int, wait_s: float) -> Charge:
        """Take ``nbytes``, waiting up to ``wait_s`` seconds for room."""
        nbytes = max(0, int(nbytes))
        if nbytes > self.total:
            raise OverBudget(
                f"decoding this image needs ~{_mib(nbytes)} MiB, more than the service's "
                f"whole decode budget ({_mib(self.total)} MiB)"
            )
        t0 = time.perf_counter()
        end = time.monotonic() + max(0.0, wait_s)
        with self._cond:
            self.waiting += 1
            try:
                while self.in_use + nbytes > self.total:
                    left = end - time.monotonic()
                    if left <= 0:
                        raise BudgetBusy(
                            f"no room to decode this image (~{_mib(nbytes)} MiB; "
                            f"{_mib(self.in_use)} of {_mib(self.total)} MiB in use by other "
                            f"decodes after {wait_s:g} s)"
                        )
                    self._cond.wait(left)
            finally:
                self.waiting -= 1
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)
        return Charge(self, nbytes, time.perf_counter() - t0)

    def _give_back(self, nbytes: int) -> None:
        with self._cond:
            self.in_use -= nbytes
            self._cond.notify_all()


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"
