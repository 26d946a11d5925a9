"""The settings of one ``nbq serve`` instance (:class:`ServerConfig`) and their checks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .. import api
from ..backends import Backend
from ..preprocess import MAX_PIXELS
from ..rails import MIN_ENERGY_WINDOW_S, RailSource

#: the default decode budget (bytes): 640 MiB
DECODE_BUDGET_BYTES = 640 << 20


@dataclass
class ServerConfig:
    """Settings of one server.  Times in seconds, sizes in bytes or pixels."""

    model: str | None = None  #: embedded model name or bundle path (None: the default)
    backend: str | Backend = "auto"  #: native where its kernel builds, else numpy
    models_dir: Path = api.MODELS_DIR  #: POST /v1/model loads only from here
    host: str = "127.0.0.1"  #: where the server listens (a token is mandatory off loopback)
    token: str | None = None  #: needed by POST /v1/model; without one, switching is off
    max_body_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = MAX_PIXELS  #: width x height an image header may declare (bombs)
    #: bytes all decodes at once may hold, as charged from their headers (decode_cost.py);
    #: sized for a 4 GB board: the server's peak stays under 1 GB (docs/server.md)
    decode_budget_bytes: int = DECODE_BUDGET_BYTES
    #: a decode waits this long for room in the budget, then 503 (None: until the deadline,
    #: then 504)
    budget_wait_s: float | None = None
    max_queue: int = 8  #: jobs allowed to wait for the device (the running one not counted)
    admission_wait_s: float = 0.25  #: a full queue is waited on this long before 503
    deadline_s: float = 5.0  #: from the request's arrival to its answer
    swap_timeout_s: float = 120.0  #: for loading a model onto the device
    top_k: int = 3
    max_form_parts: int = 16  #: multipart parts accepted (one 'image' is all it takes)
    power: str = "auto"  #: auto | pynq | hwmon | off  (see power.open_power_source)
    power_source: RailSource | None = None  #: a ready reader (tests); overrides ``power``
    power_interval_s: float = 0.1
    energy_window_s: float = 2.0  #: window for measured energy per image (>= 1 s)
    board: str = "zcu102"  #: board the performance model estimates for

    def __post_init__(self) -> None:
        self.models_dir = Path(self.models_dir)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ServerConfig:
        """A config from a dict; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown server settings {unknown} (known: {sorted(known)})")
        return cls(**values)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.deadline_s <= 0 or self.swap_timeout_s <= 0:
            raise ValueError("deadline_s and swap_timeout_s must be positive")
        if not 0 <= self.admission_wait_s < self.deadline_s:
            raise ValueError(
                f"admission_wait_s must be in [0, deadline_s), got {self.admission_wait_s}"
            )
        positive = ("max_body_bytes", "max_image_pixels", "decode_budget_bytes", "max_form_parts")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.budget_wait_s is not None and self.budget_wait_s < 0:
            raise ValueError(f"budget_wait_s must be >= 0, got {self.budget_wait_s}")
        if self.power not in ("auto", "pynq", "hwmon", "off"):
            raise ValueError(f"power must be auto, pynq, hwmon or off, got {self.power!r}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.energy_window_s < MIN_ENERGY_WINDOW_S:
            raise ValueError(
                f"energy_window_s must be >= {MIN_ENERGY_WINDOW_S} s (the sensors need it), "
                f"got {self.energy_window_s}"
            )
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"a token is mandatory when listening beyond loopback (host {self.host!r}): "
                "set NBQ_TOKEN (or give --token)"
            )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
