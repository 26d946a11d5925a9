"""Board power: rail readers, a background sampler, energy over windows, the modelled estimate.

Shared by the service (``pynq_nbq.server``) and the benchmarks (``pynq_nbq.bench``); it
imports neither (``pynq_nbq.server.power`` re-exports it for older imports).

On a ZCU102 the rails are read through ``pynq.get_rails()`` with the label file shipped
beside this module (:data:`ZCU102_SENSORS_CONF`), or straight from the INA226 hwmon files
(``power1_input``, microwatts).  Off the board nothing is measured: readings say
``"available": False`` with the reason, and the answer carries the performance model's
estimate instead, marked ``"modelled": True``.  Nothing here ever invents a reading.

Units: times in seconds (monotonic clock), power in watts, energy in joules unless a key
says otherwise (``energy_per_image_mj``).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import datapath as dp

if TYPE_CHECKING:
    from .manifest import Manifest

#: the libsensors label file for the ZCU102's INA226 chips (see its header for sources)
ZCU102_SENSORS_CONF = Path(__file__).resolve().parent / "server" / "zcu102_sensors.conf"

#: shortest window the INA226s (averaging, ~35 ms per conversion by default) are trusted
#: over for energy; shorter windows give no energy figure at all
MIN_ENERGY_WINDOW_S = 1.0

#: rail groups reported as ``<group>_w``; ``other`` is every rail not in the table
GROUPS = ("ps", "pl", "ddr", "other")

HWMON_ROOT = Path("/sys/class/hwmon")
DEVICE_TREE_COMPATIBLE = Path("/proc/device-tree/compatible")


@dataclass(frozen=True)
class RailInfo:
    """One INA226 on the ZCU102 (unverified on hardware; sources in zcu102_sensors.conf)."""

    rail: str
    ref: str  # reference designator on the board, e.g. "u79"
    mux_channel: int  # PCA9544 (u60) channel: 0 = PS_PMBUS, 1 = PL_PMBUS
    address: int  # 7-bit I2C address
    shunt_mohm: float
    group: str


ZCU102_RAILS: tuple[RailInfo, ...] = (
    RailInfo("VCCPSINTFP", "u76", 0, 0x40, 5.0, "ps"),
    RailInfo("VCCPSINTLP", "u77", 0, 0x41, 5.0, "ps"),
    RailInfo("VCCPSAUX", "u78", 0, 0x42, 5.0, "ps"),
    RailInfo("VCCPSPLL", "u87", 0, 0x43, 5.0, "ps"),
    RailInfo("MGTRAVCC", "u85", 0, 0x44, 5.0, "ps"),
    RailInfo("MGTRAVTT", "u86", 0, 0x45, 5.0, "ps"),
    RailInfo("VCCO_PSDDR_504", "u93", 0, 0x46, 5.0, "ddr"),
    RailInfo("VCCOPS", "u88", 0, 0x47, 5.0, "ps"),
    RailInfo("VCCOPS3", "u15", 0, 0x4A, 5.0, "ps"),
    RailInfo("VCCPSDDRPLL", "u92", 0, 0x4B, 5.0, "ddr"),
    RailInfo("VCCINT", "u79", 1, 0x40, 2.0, "pl"),
    RailInfo("VCCBRAM", "u81", 1, 0x41, 5.0, "pl"),
    RailInfo("VCCAUX", "u80", 1, 0x42, 5.0, "pl"),
    RailInfo("VCC1V2", "u84", 1, 0x43, 5.0, "other"),
    RailInfo("VCC3V3", "u16", 1, 0x44, 5.0, "other"),
    RailInfo("VADJ_FMC", "u65", 1, 0x45, 5.0, "other"),
    RailInfo("MGTAVCC", "u74", 1, 0x46, 5.0, "pl"),
    RailInfo("MGTAVTT", "u75", 1, 0x47, 5.0, "pl"),
)
_GROUP_OF = {r.rail: r.group for r in ZCU102_RAILS}


class SensorUnavailable(RuntimeError):
    """No power sensor could be opened; the message says why."""


class RailSource(Protocol):
    """Something that reads rail powers: ``read_w()`` -> {rail name: watts}."""

    description: str

    def read_w(self) -> dict[str, float]: ...


def group_of(rail: str) -> str:
    """The group ("ps", "pl", "ddr" or "other") a rail name belongs to."""
    return _GROUP_OF.get(rail.upper(), "other")


def group_totals_w(rails_w: dict[str, float]) -> dict[str, float]:
    """Rail powers (W) -> ``{"ps_w", "pl_w", "ddr_w", "other_w", "total_w"}`` (W)."""
    out = {f"{g}_w": 0.0 for g in GROUPS}
    for rail, w in rails_w.items():
        out[f"{group_of(rail)}_w"] += w
    out["total_w"] = sum(rails_w.values())
    return out


# --- readers ------------------------------------------------------------------------
class PynqRails:
    """Rails through ``pynq.get_rails(config_file)`` (libsensors); board only.

    pynq is imported here, lazily: importing it costs seconds and needs the board."""

    def __init__(self, config_file: Path | None = ZCU102_SENSORS_CONF) -> None:
        try:
            import pynq  # board only: imported lazily
        except ImportError as exc:
            raise SensorUnavailable(f"pynq is not installed ({exc})") from exc
        conf = str(config_file) if config_file else None
        try:
            rails = pynq.get_rails(conf)
        except Exception as exc:  # libsensors errors surface as many types
            raise SensorUnavailable(f"pynq.get_rails({conf!r}) failed: {exc}") from exc
        self._sensors = {n: r.power for n, r in rails.items() if r.power is not None}
        if not self._sensors:
            raise SensorUnavailable(
                f"pynq.get_rails({conf!r}) found no rail with a power sensor "
                "(is the ina2xx driver loaded?)"
            )
        self.description = f"pynq.get_rails ({conf or 'system libsensors config'})"

    def read_w(self) -> dict[str, float]:
        return {name: float(s.value) for name, s in self._sensors.items()}


class HwmonRails:
    """The ZCU102 INA226 rails straight from hwmon ``power1_input`` files (microwatts).

    Finds them either as iio-hwmon devices named ``ina226_uNN`` (the device tree's
    nodes) or as ``ina226`` hwmon devices whose I2C client (``B-00AA``) sits on a mux
    channel named ``"i2c-0-mux (chan_id C)"``; the rail comes from :data:`ZCU102_RAILS`.
    """

    def __init__(self, root: Path = HWMON_ROOT, table: tuple[RailInfo, ...] = ZCU102_RAILS):
        self.root = Path(root)
        self.files = discover_hwmon(self.root, table)
        if not self.files:
            raise SensorUnavailable(f"no ZCU102 INA226 hwmon devices under {self.root}")
        self.description = f"hwmon ({self.root}, {len(self.files)} rails)"

    def read_w(self) -> dict[str, float]:
        out: dict[str, float] = {}
        errors = []
        for rail, path in self.files.items():
            try:
                out[rail] = int(path.read_text().strip()) * 1e-6
            except (OSError, ValueError) as exc:
                errors.append(f"{rail}: {exc}")
        if not out:
            raise SensorUnavailable("every rail failed to read: " + "; ".join(errors))
        return out


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def discover_hwmon(root: Path, table: tuple[RailInfo, ...] = ZCU102_RAILS) -> dict[str, Path]:
    """{rail name: path of its ``power1_input``} for the INA226s found under ``root``."""
    by_ref = {r.ref: r for r in table}
    by_bus = {(r.mux_channel, r.address): r for r in table}
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for hw in sorted(root.iterdir()):
        name = _read_text(hw / "name")
        power = hw / "power1_input"
        if not name or not power.exists():
            continue
        rail = None
        m = re.fullmatch(r"ina226_(u\d+)", name)
        if m:
            rail = by_ref.get(m.group(1))
        elif name in ("ina226", "ina2xx"):
            rail = _rail_from_i2c_client(hw / "device", by_bus)
        if rail is not None:
            found[rail.rail] = power
    return found


def _rail_from_i2c_client(device: Path, by_bus: dict) -> RailInfo | None:
    try:
        client = device.resolve(strict=True)
    except OSError:
        return None
    m = re.fullmatch(r"\d+-00([0-9a-fA-F]{2})", client.name)
    adapter = _read_text(client.parent / "name") or ""
    chan = re.search(r"chan_id (\d+)", adapter)
    if not m or not chan:
        return None
    return by_bus.get((int(chan.group(1)), int(m.group(1), 16)))


def board_compatible(path: Path = DEVICE_TREE_COMPATIBLE) -> list[str]:
    """The device tree's root ``compatible`` strings ([] off a device-tree board)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    return [s.decode("ascii", "replace") for s in raw.split(b"\0") if s]


def open_power_source(
    mode: str = "auto", hwmon_root: Path = HWMON_ROOT, compatible: list[str] | None = None
) -> tuple[RailSource | None, str]:
    """Open the board's rail reader: ``(source, description)`` or ``(None, reason)``.

    ``mode``: ``"auto"`` (pynq on a Zynq UltraScale+ board, else hwmon), ``"pynq"``,
    ``"hwmon"`` or ``"off"``.  pynq is only imported on a board whose device tree says
    ``xlnx,zynqmp``.
    """
    if mode == "off":
        return None, "power sampling switched off (--power off)"
    if mode not in ("auto", "pynq", "hwmon"):
        raise ValueError(f"power mode must be auto, pynq, hwmon or off, got {mode!r}")
    compat = board_compatible() if compatible is None else compatible
    on_zynqmp = any(c.startswith("xlnx,zynqmp") for c in compat)
    reasons = []
    if mode in ("auto", "pynq"):
        if on_zynqmp:
            conf = ZCU102_SENSORS_CONF if "xlnx,zynqmp-zcu102" in compat else None
            try:
                pynq_src = PynqRails(conf)
                return pynq_src, pynq_src.description
            except SensorUnavailable as exc:
                reasons.append(str(exc))
        else:
            reasons.append(
                "not a Zynq UltraScale+ board (device tree compatible: "
                f"{', '.join(compat) or 'none'})"
            )
    if mode in ("auto", "hwmon"):
        try:
            hwmon_src = HwmonRails(hwmon_root)
            return hwmon_src, hwmon_src.description
        except SensorUnavailable as exc:
            reasons.append(str(exc))
    return None, "; ".join(reasons)


# --- the sampler --------------------------------------------------------------------
@dataclass(frozen=True)
class PowerSample:
    """One reading of every rail: ``t_s`` on the monotonic clock, ``rails_w`` in watts."""

    t_s: float
    rails_w: dict[str, float]
    totals_w: dict[str, float] = field(default_factory=dict)
    count: int = 0  #: the owner's event counter (images done) when the sample was taken


class PowerSampler:
    """Reads ``source`` every ``interval_s`` seconds in a daemon thread.

    Keeps ``history_s`` seconds of samples for energy over windows and integrates
    cumulative energy per group (trapezoid rule) for the Prometheus counters.  With
    ``source=None`` it never starts and every reading says why (``reason``).
    ``counter()`` (e.g. images classified so far) is stored with each sample, so that a
    window's energy comes with the exact number of events inside it.
    """

    def __init__(
        self,
        source: RailSource | None,
        reason: str = "",
        interval_s: float = 0.1,
        history_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        counter: Callable[[], int] = lambda: 0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.source = source
        self.reason = reason or ("no power source" if source is None else "")
        self.interval_s = float(interval_s)
        self.clock = clock
        self.counter = counter
        self._samples: deque[PowerSample] = deque(maxlen=max(2, int(history_s / interval_s) + 2))
        self._energy_j = {g: 0.0 for g in (*GROUPS, "total")}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @property
    def available(self) -> bool:
        return self.source is not None

    def start(self) -> None:
        """Start the sampling thread (no-op without a source or when running)."""
        if self.source is None or self._thread is not None:
            return
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="nbq-power", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread and wait up to ``timeout_s`` for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def sample_once(self) -> PowerSample | None:
        """Read every rail now; on a read error keep the old samples and note the error."""
        if self.source is None:
            return None
        try:
            rails = self.source.read_w()
        except Exception as exc:  # a sensor hiccup must not kill the thread
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None
        s = PowerSample(self.clock(), rails, group_totals_w(rails), self.counter())
        with self._lock:
            if self._samples:
                prev = self._samples[-1]
                dt = s.t_s - prev.t_s
                for g in (*GROUPS, "total"):
                    k = f"{g}_w"
                    self._energy_j[g] += 0.5 * (prev.totals_w[k] + s.totals_w[k]) * dt
            self._samples.append(s)
            self.last_error = None
        return s

    def latest(self) -> dict[str, Any]:
        """The newest reading for an answer: group powers (W), rails (W) and its age (s);
        or ``{"available": False, "reason": ...}``."""
        if self.source is None:
            return {"available": False, "reason": self.reason}
        with self._lock:
            s = self._samples[-1] if self._samples else None
        if s is None:
            return {
                "available": False,
                "reason": f"no reading yet ({self.last_error or 'sampler starting'})",
            }
        out: dict[str, Any] = {"available": True, "source": self.source.description}
        out.update({k: round(v, 6) for k, v in s.totals_w.items()})
        out["rails_w"] = {k: round(v, 6) for k, v in sorted(s.rails_w.items())}
        out["age_s"] = round(max(0.0, self.clock() - s.t_s), 4)
        out["interval_s"] = self.interval_s
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    def energy_totals_j(self) -> dict[str, float]:
        """Energy per group (and "total") integrated since the sampler started (J)."""
        with self._lock:
            return dict(self._energy_j)

    def window_energy(self, window_s: float) -> dict[str, Any] | None:
        """Board energy over (at least) the newest ``window_s`` seconds of samples: from
        the last sample at or before ``t1 - window_s`` to the newest one ``t1``.

        Returns ``{"energy_j", "t0_s", "t1_s", "span_s", "samples", "events"}`` (events:
        the growth of ``counter()`` between the two ends) or None when the
        samples span less than :data:`MIN_ENERGY_WINDOW_S` (or ``window_s`` is shorter).
        """
        if window_s < MIN_ENERGY_WINDOW_S:
            return None
        with self._lock:
            samples = list(self._samples)
        if len(samples) < 2:
            return None
        t1 = samples[-1].t_s
        start = 0
        for i, s in enumerate(samples):
            if s.t_s <= t1 - window_s:
                start = i
        pts = samples[start:]
        span = pts[-1].t_s - pts[0].t_s
        if len(pts) < 2 or span < MIN_ENERGY_WINDOW_S:
            return None
        e = 0.0
        for a, b in zip(pts, pts[1:]):
            e += 0.5 * (a.totals_w["total_w"] + b.totals_w["total_w"]) * (b.t_s - a.t_s)
        return {
            "energy_j": e,
            "t0_s": pts[0].t_s,
            "t1_s": t1,
            "span_s": span,
            "samples": len(pts),
            "events": pts[-1].count - pts[0].count,
        }


# --- the modelled estimate ----------------------------------------------------------
def modelled_energy(manifest: Manifest, board: str = "zcu102") -> dict[str, Any]:
    """The performance model's latency (ms), power (W) and energy per image (mJ) for a
    bundle (its typed manifest, ``bundle.spec``), always marked ``"modelled": True``;
    never a measurement.

    The one place the server calls :mod:`pynq_nbq.perfmodel`; if the model cannot handle
    the bundle the dict says ``"available": False`` and why.
    """
    pe = manifest.pe.value
    bits = manifest.weight_bits if manifest.pe == dp.PEKind.SVPE else 3
    try:
        from .perfmodel import estimate_energy_per_image

        est = estimate_energy_per_image(manifest, board, pe=pe, n_bits=bits)
    except Exception as exc:  # a missing or failing model must not stop serving
        return {"modelled": True, "available": False, "reason": f"performance model: {exc}"}
    out = dict(est)
    out["modelled"] = True
    out["available"] = True
    return out
