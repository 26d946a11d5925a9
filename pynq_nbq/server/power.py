"""Board power for the service: everything lives in :mod:`pynq_nbq.rails` (shared with
``pynq_nbq.bench``, which must not import the server); re-exported here for older imports."""

from __future__ import annotations

from ..rails import *  # noqa: F403
from ..rails import (  # noqa: F401  (names used as pynq_nbq.server.power.X)
    GROUPS,
    MIN_ENERGY_WINDOW_S,
    ZCU102_RAILS,
    ZCU102_SENSORS_CONF,
    HwmonRails,
    PowerSample,
    PowerSampler,
    PynqRails,
    RailSource,
    SensorUnavailable,
    board_compatible,
    group_totals_w,
    modelled_energy,
    open_power_source,
)
