"""Prometheus metrics for ``nbq serve``, written in the text exposition format (0.0.4).

A deliberately small, thread-safe implementation (counters, gauges, histograms with
labels) so that the board install needs no metrics library; the tests parse the output
with ``prometheus_client``'s own parser.  Units follow Prometheus practice: seconds,
watts, joules, in the metric names.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: request latency buckets (s): 0.5 ms .. 10 s
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v))


def _escape(v: str) -> str:
    return str(v).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], float] = {}

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {list(self.labelnames)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        lines = self.header()
        for key, v in items:
            lines.append(f"{self.name}{_labels(self.labelnames, key)} {_fmt(v)}")
        return lines

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


class Counter(_Metric):
    """A monotonically increasing count; ``name`` should end in ``_total``."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: counters only go up (got {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set_total(self, total: float, **labels: str) -> None:
        """Set the count to an externally accumulated total (must not decrease)."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = max(self._values.get(key, 0.0), float(total))

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)


class Gauge(_Metric):
    """A value that goes up and down."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)


class Histogram(_Metric):
    """Observations counted into cumulative ``le`` buckets, with ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Iterable[str] = (),
        buckets: Iterable[float] = LATENCY_BUCKETS_S,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts + [sum]

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            s = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, b in enumerate(self.buckets):
                if value <= b:
                    s[i] += 1
            s[-2] += 1  # +Inf == count
            s[-1] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            s = self._series.get(self._key(labels))
            return int(s[-2]) if s else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        lines = self.header()
        for key, s in items:
            for b, c in zip((*self.buckets, math.inf), s[:-1]):
                le = f'le="{_fmt(b)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {_fmt(c)}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_fmt(s[-1])}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {_fmt(s[-2])}")
        return lines


class Registry:
    """Metrics in registration order; ``collect_hooks`` refresh gauges before a scrape."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []
        self.collect_hooks: list[Callable[[], None]] = []

    def add(self, metric: _Metric) -> _Metric:
        if any(m.name == metric.name for m in self.metrics):
            raise ValueError(f"metric {metric.name} registered twice")
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        """The whole registry in the Prometheus text format."""
        for hook in self.collect_hooks:
            hook()
        lines: list[str] = []
        for m in self.metrics:
            lines.extend(m.render())
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """The metrics ``nbq serve`` exports (names carry units: seconds, watts, joules)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.add(
            Counter(
                "nbq_http_requests_total",
                "HTTP requests by endpoint, method and status code.",
                ("endpoint", "method", "status"),
            )
        )
        self.latency = r.add(
            Histogram(
                "nbq_http_request_duration_seconds",
                "Server-side request latency (from the request reaching Flask to the answer).",
                ("endpoint",),
            )
        )
        self.stages = r.add(
            Histogram(
                "nbq_inference_stage_seconds",
                "Time per classification stage: decode, preprocess, queue (waiting for the "
                "device), engine (the integer network on the backend).",
                ("stage",),
            )
        )
        self.images = r.add(
            Counter(
                "nbq_images_classified_total",
                "Images classified, by model, backend and datapath.",
                ("model", "backend", "datapath"),
            )
        )
        self.expired = r.add(
            Counter(
                "nbq_deadline_expired_total",
                "Requests past their deadline: 'queued' ones never ran, 'running' ones ran "
                "to completion and their result was discarded.",
                ("where",),
            )
        )
        self.rejected = r.add(
            Counter("nbq_queue_rejected_total", "Requests refused with 503 (queue full).")
        )
        self.queue_waiting = r.add(
            Gauge(
                "nbq_queue_waiting", "Jobs waiting for the device (not counting the one running)."
            )
        )
        self.queue_limit = r.add(Gauge("nbq_queue_limit", "Most jobs allowed to wait."))
        self.model_info = r.add(
            Gauge(
                "nbq_model_info",
                "The model being served (value 1).",
                ("name", "datapath", "backend", "sha256"),
            )
        )
        self.power_available = r.add(
            Gauge("nbq_power_available", "1 when board rail power is measured, 0 when not.")
        )
        self.power = r.add(
            Gauge("nbq_power_watts", "Latest measured power per rail group (W).", ("group",))
        )
        self.power_age = r.add(
            Gauge("nbq_power_sample_age_seconds", "Age of the latest power reading (s).")
        )
        self.energy = r.add(
            Counter(
                "nbq_energy_joules_total",
                "Measured board energy per rail group since start (J; trapezoid over samples).",
                ("group",),
            )
        )
        self.modelled_power = r.add(
            Gauge(
                "nbq_modelled_power_watts",
                "MODELLED (not measured) average power per image of the served model (W).",
            )
        )
        self.modelled_energy = r.add(
            Counter(
                "nbq_modelled_energy_joules_total",
                "MODELLED (not measured) energy of the images classified (J).",
            )
        )
