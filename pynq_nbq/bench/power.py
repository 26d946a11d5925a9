"""Board power during a benchmark: idle, then active, from rail readings.

The rails are read by :mod:`pynq_nbq.server.power` (``pynq.get_rails`` or the INA226
hwmon files on a ZCU102) through its :class:`PowerSampler`; this module only decides
*when* to look: an idle window with nothing running, then an active window while a
workload runs back to back.  Each window is bounded by two readings taken on purpose
(``sample_once``), so its energy (trapezoid rule over every reading inside it, from
``PowerSampler.window_energy``) and its image count are exact for that span.

Units: seconds, watts, millijoules per image.  Where no rail source exists the result
says ``"available": False`` with the reason; nothing here invents a reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..rails import MIN_ENERGY_WINDOW_S, PowerSample, PowerSampler, RailSource

#: the window handed to ``window_energy`` is shrunk by this factor so that float
#: rounding of ``t1 - (t1 - t0)`` still lands on the reading taken at ``t0``
_WINDOW_SHRINK = 1 - 1e-9


def _window(sampler: PowerSampler, first: PowerSample, last: PowerSample) -> dict[str, Any]:
    """Energy between two readings the caller took (see the module docstring)."""
    got = sampler.window_energy((last.t_s - first.t_s) * _WINDOW_SHRINK)
    if got is None:
        raise RuntimeError(
            f"power window of {last.t_s - first.t_s:.3f} s is shorter than "
            f"{MIN_ENERGY_WINDOW_S} s or has too few readings"
        )
    return got


def _reading(sampler: PowerSampler) -> PowerSample:
    s = sampler.sample_once()
    if s is None:
        raise RuntimeError(f"rail read failed: {sampler.last_error}")
    return s


def measure_power(
    source: RailSource,
    workload: Callable[[], int],
    idle_s: float = 2.0,
    active_s: float = 3.0,
    interval_s: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Idle power, then active power and energy per image while ``workload`` runs.

    ``workload()`` runs one batch and returns how many images it classified; it is
    called until ``active_s`` seconds have passed (at least once).  Both windows must
    be at least :data:`pynq_nbq.server.power.MIN_ENERGY_WINDOW_S` long.

    Returns ``available``, ``source``, ``idle_power_w``, ``active_power_w``,
    ``dynamic_power_w`` (active - idle), ``idle_window_s``, ``active_window_s``,
    ``images_count`` (inside the active window), ``energy_mj_per_image`` (board
    energy) and ``dynamic_energy_mj_per_image`` (above idle), ``samples_count``.
    """
    if min(idle_s, active_s) < MIN_ENERGY_WINDOW_S:
        raise ValueError(f"power windows must be >= {MIN_ENERGY_WINDOW_S} s")
    done = [0]
    sampler = PowerSampler(
        source,
        interval_s=interval_s,
        history_s=2 * (idle_s + active_s) + 10,
        counter=lambda: done[0],
    )
    sampler.start()  # takes the first reading
    try:
        first = _reading(sampler)
        sleep(idle_s)
        idle = _window(sampler, first, _reading(sampler))
        done[0] += workload()  # one batch before the window opens: the engine is busy
        start = _reading(sampler)
        while True:
            done[0] += workload()
            if time.monotonic() - start.t_s >= active_s:
                break
        active = _window(sampler, start, _reading(sampler))
    finally:
        sampler.stop()
    if active["events"] <= 0:
        raise RuntimeError("no image finished inside the active power window")
    idle_w = idle["energy_j"] / idle["span_s"]
    active_w = active["energy_j"] / active["span_s"]
    per_image_s = active["span_s"] / active["events"]
    return {
        "available": True,
        "source": source.description,
        "idle_power_w": idle_w,
        "active_power_w": active_w,
        "dynamic_power_w": active_w - idle_w,
        "idle_window_s": idle["span_s"],
        "active_window_s": active["span_s"],
        "images_count": active["events"],
        "energy_mj_per_image": 1e3 * active["energy_j"] / active["events"],
        "dynamic_energy_mj_per_image": 1e3 * (active_w - idle_w) * per_image_s,
        "samples_count": idle["samples"] + active["samples"],
    }


def unavailable(reason: str, modelled: dict[str, Any] | None) -> dict[str, Any]:
    """The power entry where no rail can be read: the reason and the model's estimate."""
    out: dict[str, Any] = {"available": False, "reason": reason}
    if modelled is not None:
        out["modelled_estimate"] = {_UNIT_KEYS.get(k, k): v for k, v in modelled.items()}
    return out


#: keys of :func:`pynq_nbq.server.power.modelled_energy` renamed so that they carry units
_UNIT_KEYS = {"gops": "gop_per_s", "energy_mj": "energy_mj_per_image"}
