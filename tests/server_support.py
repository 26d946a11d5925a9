"""Helpers shared by the server tests: an app factory, a backend held at a gate, and a
bounded wait for a condition."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from flask import Flask

from pynq_nbq.backends.numpy_backend import NumpyBackend
from pynq_nbq.server import ServerConfig, create_app


def app_factory(models_dir: Path) -> Iterator[Callable[..., Flask]]:
    """For a fixture: yields ``make(**settings)`` building apps on the ``rand-svpe``
    bundle of ``models_dir`` (power off); closes them afterwards."""
    made = []

    def make(**kw) -> Flask:
        kw.setdefault("model", str(models_dir / "rand-svpe"))
        kw.setdefault("models_dir", models_dir)
        kw.setdefault("power", "off")
        a = create_app(ServerConfig(**kw))
        made.append(a)
        if isinstance(kw.get("backend"), GatedBackend):
            kw["backend"].armed = True  # the warm-up at load ran ungated
        return a

    yield make
    for a in made:
        a.extensions["nbq"].close()


class GatedBackend(NumpyBackend):
    """The numpy backend, held at its first conv until ``gate`` opens (bounded wait), once
    ``armed`` (:func:`app_factory` arms it after the app's warm-up run)."""

    name = "gated"

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.armed = False

    def run_conv(self, x, spec):
        if not self.armed:
            return super().run_conv(x, spec)
        self.entered.set()
        self.gate.wait(10)
        return super().run_conv(x, spec)


def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``cond`` until true; fail the test after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)
