"""The device worker: the one thread that touches the device, and admission to it.

No Flask here: a :class:`DeviceWorker` runs callables in arrival order on its own
thread.  Requests first take a :class:`Reservation` (:meth:`DeviceWorker.reserve`),
*before* they decode anything; at most ``max_queue`` + 1 requests (``max_queue``
waiting, one running) hold one, so a request refused for a full queue costs no decode.
A job whose deadline has passed when its turn comes is dropped unrun; a running job is
never interrupted (numpy, the C simulation and a DMA transfer cannot be).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("pynq_nbq.server")


class QueueFull(Exception):
    """The device queue is at its bound."""


class DeadlineExceeded(Exception):
    """A job missed its deadline (``where``: "queued" or "running")."""

    def __init__(self, message: str, where: str):
        super().__init__(message)
        self.where = where


class Reservation:
    """A place in the device queue, held from admission until the job is done (or the
    request gives up before submitting).  :meth:`release` may be called more than once."""

    def __init__(self, slots: threading.Semaphore) -> None:
        self._slots = slots
        self._lock = threading.Lock()
        self._held = True
        self.handed_over = False  #: set when a job owns it (the job then releases it)

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._slots.release()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        """Release unless a job took the reservation over (it releases when done)."""
        if not self.handed_over:
            self.release()


@dataclass
class Job:
    """One call to run on the device thread; times on the monotonic clock (s)."""

    fn: Callable[[], Any]
    deadline: float
    enqueued: float
    reservation: Reservation | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    started: float | None = None
    finished: float | None = None
    abandoned: bool = False


_STOP = object()


class DeviceWorker:
    """The one thread that touches the device: runs queued jobs in order.

    ``max_queue`` bounds the requests waiting (not the one running): :meth:`reserve`
    refuses with :class:`QueueFull` once ``max_queue + 1`` reservations are out.  Jobs
    submitted without a reservation (model swaps) are not counted.
    """

    def __init__(self, max_queue: int, on_expired: Callable[[str], None] = lambda w: None):
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self._q: queue.Queue = queue.Queue()
        self._slots = threading.BoundedSemaphore(max_queue + 1)
        self.max_queue = max_queue
        self._on_expired = on_expired
        self._service_s = 0.01  # running mean of job time, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="nbq-device", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        """Jobs waiting for the device (not counting the one running)."""
        return self._q.qsize()

    def retry_after_s(self) -> int:
        """A hint for clients refused with 503: time to drain the queue, >= 1 s."""
        return max(1, math.ceil((self.waiting + 1) * self._service_s))

    def reserve(self, wait_s: float = 0.0) -> Reservation:
        """A place in the queue, waiting up to ``wait_s`` for one; else :class:`QueueFull`.

        A short wait turns clients that retry at once into sleeping request threads
        instead of a stream of refusals competing with the device thread for the GIL."""
        got = self._slots.acquire(timeout=wait_s) if wait_s > 0 else self._slots.acquire(False)
        if not got:
            raise QueueFull(f"{self.max_queue} requests already waiting for the device")
        return Reservation(self._slots)

    def submit(
        self, fn: Callable[[], Any], deadline: float, reservation: Reservation | None = None
    ) -> Job:
        """Queue ``fn`` to run on the device thread by ``deadline`` (monotonic s).  With a
        ``reservation``, the job releases it when it is done or dropped."""
        job = Job(fn, deadline, time.monotonic(), reservation)
        if reservation is not None:
            reservation.handed_over = True
        self._q.put(job)
        return job

    def wait(self, job: Job) -> Any:
        """Wait until ``job`` ran or its deadline passed; return its result or raise."""
        if not job.done.wait(max(0.0, job.deadline - time.monotonic())):
            job.abandoned = True
            if job.started is None:
                raise DeadlineExceeded(
                    "deadline passed while waiting for the device; the request did not run",
                    "queued",
                )
            raise DeadlineExceeded(
                "deadline passed while the inference was running (it was not interrupted; "
                "its result is discarded)",
                "running",
            )
        if job.error is not None:
            raise job.error
        if job.finished is not None and job.finished > job.deadline:
            raise DeadlineExceeded(
                "the inference finished after the deadline; its result is discarded", "running"
            )
        return job.result

    def run(self, fn: Callable[[], Any], timeout_s: float) -> Any:
        """Submit ``fn`` without a reservation and wait for it (model swaps)."""
        return self.wait(self.submit(fn, time.monotonic() + timeout_s))

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is _STOP:
                return
            try:
                self._run_one(job)
            finally:
                if job.reservation is not None:
                    job.reservation.release()
                job.done.set()

    def _run_one(self, job: Job) -> None:
        now = time.monotonic()
        if job.abandoned or now >= job.deadline:
            job.error = DeadlineExceeded(
                f"deadline passed after {1e3 * (now - job.enqueued):.1f} ms in the queue; "
                "the request did not run",
                "queued",
            )
            self._on_expired("queued")
            return
        job.started = now
        try:
            job.result = job.fn()
        except BaseException as exc:  # handed to the waiting request thread
            job.error = exc
        job.finished = time.monotonic()
        self._service_s = 0.9 * self._service_s + 0.1 * (job.finished - job.started)
        if job.finished > job.deadline and job.error is None:
            self._on_expired("running")

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the jobs already queued; wait up to ``timeout_s``."""
        self._q.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("device thread still busy %.1f s after close()", timeout_s)
