"""Prometheus metrics for ``nbq serve``, through ``prometheus_client``.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (tests build many
apps in one process).  Label values are bounded: the endpoint is the matched URL rule
(or ``unmatched``), the method one of :data:`METHODS` (anything else is ``other``),
the status a 3-digit code.  Values read at scrape time (queue length, the model, power)
come from a collector callback, so they are never stale.  Units follow Prometheus
practice: seconds, watts, joules, in the metric names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import exposition as _exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = _exposition.CONTENT_TYPE_LATEST

#: request latency buckets (s): 0.5 ms .. 10 s
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
#: the HTTP methods counted by name; any other is counted as "other"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
STAGES = ("decode", "preprocess", "queue", "engine")
EXPIRED_WHERE = ("queued", "running")


def method_label(method: str) -> str:
    """``method`` if it is a standard one, else ``"other"`` (bounded label values)."""
    return method if method in METHODS else "other"


def status_label(code: int) -> str:
    """The status code as a label; codes outside 100..599 are ``"other"``."""
    return str(code) if 100 <= code <= 599 else "other"


class _Live(Collector):
    """Families computed at scrape time by ``callback`` (queue, model, power)."""

    def __init__(self, callback: Callable[[], list[Metric]]) -> None:
        self._callback = callback

    def collect(self) -> Iterator[Metric]:
        yield from self._callback()


class ServerMetrics:
    """The metrics ``nbq serve`` exports; ``live`` returns the scrape-time families."""

    def __init__(self, live: Callable[[], list[Metric]] = list) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "nbq_http_requests",
            "HTTP requests by endpoint, method (other = not a standard method) and status.",
            ("endpoint", "method", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "nbq_http_request_duration_seconds",
            "Server-side request latency (from the request reaching Flask to the answer).",
            ("endpoint",),
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stages = Histogram(
            "nbq_inference_stage_seconds",
            "Time per classification stage: decode, preprocess, queue (waiting for the "
            "device), engine (the integer network on the backend).",
            ("stage",),
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.images = Counter(
            "nbq_images_classified",
            "Images classified, by model, backend and datapath.",
            ("model", "backend", "datapath"),
            registry=r,
        )
        self.expired = Counter(
            "nbq_deadline_expired",
            "Requests past their deadline: 'queued' ones never ran, 'running' ones ran "
            "to completion and their result was discarded.",
            ("where",),
            registry=r,
        )
        self.rejected = Counter(
            "nbq_queue_rejected", "Requests refused with 503 (queue full).", registry=r
        )
        self.device_errors = Counter(
            "nbq_device_errors",
            "Inferences the backend failed ('timeout': 504, 'error': 503).",
            ("kind",),
            registry=r,
        )
        self.modelled_energy = Counter(
            "nbq_modelled_energy_joules",
            "MODELLED (not measured) energy of the images classified (J).",
            registry=r,
        )
        for where in EXPIRED_WHERE:  # present (at 0) before their first event
            self.expired.labels(where=where)
        for kind in ("timeout", "error"):
            self.device_errors.labels(kind=kind)
        for stage in STAGES:
            self.stages.labels(stage=stage)
        r.register(_Live(live))

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (labels bounded here)."""
        self.requests.labels(
            endpoint=endpoint, method=method_label(method), status=status_label(status)
        ).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def render(self) -> bytes:
        """The whole registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), e.g. ``value("nbq_queue_rejected_total")``."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v


def gauge(name: str, help_text: str, value: float | None = None, /, **labels: str) -> Metric:
    """A gauge family with one sample (none when ``value`` is None)."""
    fam = GaugeMetricFamily(name, help_text, labels=list(labels))
    if value is not None:
        fam.add_metric(list(labels.values()), value)
    return fam


def labelled_gauge(name: str, help_text: str, label: str, values: dict[str, float]) -> Metric:
    """A gauge family with one sample per ``label`` value."""
    fam = GaugeMetricFamily(name, help_text, labels=[label])
    for k, v in values.items():
        fam.add_metric([k], v)
    return fam


def labelled_counter(name: str, help_text: str, label: str, totals: dict[str, float]) -> Metric:
    """A counter family (``name`` without ``_total``) from totals accumulated elsewhere."""
    fam = CounterMetricFamily(name, help_text, labels=[label])
    for k, v in totals.items():
        fam.add_metric([k], v)
    return fam
