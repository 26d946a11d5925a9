"""Timing one model ("column") on a labelled set: latency, split, per layer, throughput.

All times come from ``time.perf_counter`` in this process.  Where each layer ran and
how long it took come from the engine's ``on_layer`` hook; the time spent inside the
device (the kernel call: on the board, the hardware and its DMA; in csim, the C++
simulation) comes from wrapping the backend's ``kernel(pe)`` device, so that
*driver overhead* = conv-engine layer time - device time (packing, tiling, checks).
Backends without a device (numpy) have no driver: those fields are None.

Units are in the key names: ``_ms`` milliseconds, ``_s`` seconds,
``_images_per_s`` images per second.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..api import Model
from .data import LabelledSet


@dataclass(frozen=True)
class Plan:
    """How much to run.  ``latency_images``: single-image runs for the percentiles;
    ``throughput_images``: at least this many images per batch size (whole batches);
    ``warmup_batches``: untimed batches before each timed pass."""

    batch_sizes: tuple[int, ...] = (1, 8, 64)
    latency_images: int = 200
    throughput_images: int = 256
    warmup_batches: int = 1

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.latency_images < 1 or self.throughput_images < 1 or self.warmup_batches < 0:
            raise ValueError("latency/throughput images must be >= 1 and warm-up >= 0")

    def steps(self, n_images: int) -> int:
        """Progress-bar units one column takes: images classified, warm-ups included."""
        warm = self.warmup_batches * (1 + sum(self.batch_sizes))
        tput = sum(b * max(1, -(-self.throughput_images // b)) for b in self.batch_sizes)
        return warm + self.latency_images + tput + n_images


def latency_stats_ms(seconds: Sequence[float], prefix: str = "latency_ms") -> dict[str, Any]:
    """mean, p50, p99, min and max of durations (s) in ms, with the sample count."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no durations to summarise")
    return {
        f"{prefix}_mean": float(ms.mean()),
        f"{prefix}_p50": float(np.percentile(ms, 50)),
        f"{prefix}_p99": float(np.percentile(ms, 99)),
        f"{prefix}_min": float(ms.min()),
        f"{prefix}_max": float(ms.max()),
        "samples_count": int(ms.size),
    }


class _TimedDevice:
    """A :class:`pynq_nbq.streams.ConvDevice` that adds its call time to a clock;
    every other attribute is the wrapped device's."""

    def __init__(self, inner: Any, clock: DeviceClock) -> None:
        self.inner = inner
        self.info = inner.info
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def call(self, regs, packets, out_nbytes):
        own = getattr(self.inner, "timings", None)
        before = dict(own) if isinstance(own, dict) else None
        t0 = time.perf_counter()
        try:
            return self.inner.call(regs, packets, out_nbytes)
        finally:
            self._clock.seconds += time.perf_counter() - t0
            self._clock.calls += 1
            if before is not None:
                for k, v in own.items():
                    if k != "calls" and isinstance(v, float):
                        self._clock.parts[k] += v - before.get(k, 0.0)


#: backend methods that return the device of a PE kind: fpga's ``device``, csim's ``kernel``
DEVICE_METHODS = ("device", "kernel")


class DeviceClock:
    """Seconds and number of calls spent inside a backend's device; ``parts``: the
    device's own timers (seconds), where it keeps a ``timings`` dict (the fpga driver:
    ``ready``, ``copy``, ``registers`` (register writes and sends), ``wait``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.parts: dict[str, float] = defaultdict(float)

    @classmethod
    def attach(cls, backend: Any) -> DeviceClock | None:
        """Time ``backend``'s device calls, if it runs tiles on a device (a ``device(pe)``
        or ``kernel(pe)`` method returning one, as fpga and csim have); else None.
        Attaching twice returns the same clock."""
        clock = getattr(backend, "_bench_device_clock", None)
        if clock is not None:
            return clock
        for method in DEVICE_METHODS:
            get = getattr(backend, method, None)
            if callable(get):
                break
        else:
            return None
        clock = cls()

        def timed(pe: str, _inner: Callable = get) -> _TimedDevice:
            return _TimedDevice(_inner(pe), clock)

        setattr(backend, method, timed)  # instance attribute: this backend object only
        backend._bench_device_clock = clock
        return clock


class LayerClock:
    """The engine's ``on_layer`` hook: seconds per layer name, and where it ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.placement: dict[str, str] = {}

    def __call__(self, name: str, placement: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.placement[name] = placement


@dataclass
class ColumnResult:
    """What :func:`measure_column` found; ``indices`` / ``logits_q`` are the accuracy
    pass's answers (not written to JSON)."""

    timings: dict[str, Any]
    indices: np.ndarray
    logits_q: np.ndarray


def measure_column(
    model: Model,
    data: LabelledSet,
    plan: Plan,
    tick: Callable[[int], None] = lambda n: None,
) -> ColumnResult:
    """Time ``model`` on ``data`` per ``plan``; ``tick(n)`` after every n images.

    Four passes: warm-up, single-image latency (with the split and per-layer
    times), throughput per batch size, and the accuracy pass over every image.
    """
    images = data.images

    def batch_of(start: int, size: int) -> list:
        return [images[(start + i) % len(images)] for i in range(size)]

    for w in range(plan.warmup_batches):  # builds csim kernels, loads overlays, fills caches
        model.classify(batch_of(w, 1))
        tick(1)
    latency, split, layers = _latency_pass(model, batch_of, plan.latency_images, tick)
    throughput = [_throughput_pass(model, batch_of, b, plan, tick) for b in plan.batch_sizes]

    big = max(plan.batch_sizes)
    idx, logits = [], []
    t0 = time.perf_counter()
    for s in range(0, len(images), big):
        pred = model.classify(images[s : s + big])
        idx.append(pred.indices)
        logits.append(pred.logits_q)
        tick(len(pred.indices))
    full_s = time.perf_counter() - t0

    timings = {
        "latency": latency,
        "split_per_image": split,
        "layers": layers,
        "throughput": throughput,
        "labelled_pass": {
            "batch_images": big,
            "images_count": len(images),
            "elapsed_s": full_s,
            "throughput_images_per_s": len(images) / full_s,
        },
    }
    return ColumnResult(timings, np.concatenate(idx), np.concatenate(logits))


def _latency_pass(
    model: Model, batch_of: Callable, n: int, tick: Callable[[int], None]
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """n single-image runs: (latency stats, split per image in ms, per-layer rows)."""
    engine = model.engine
    device = DeviceClock.attach(engine.backend)
    layers = LayerClock()
    e2e: list[float] = []
    parts: defaultdict[str, float] = defaultdict(float)
    dev_s0, dev_calls0 = (device.seconds, device.calls) if device else (0.0, 0)
    dev_parts0 = dict(device.parts) if device else {}
    engine.on_layer = layers
    try:
        for i in range(n):
            t0 = time.perf_counter()
            pred = model.classify(batch_of(i, 1))
            e2e.append(time.perf_counter() - t0)
            for k, v in pred.timings_ms.items():
                parts[k] += v
            tick(1)
    finally:
        engine.on_layer = None
    conv_ms = parts["conv_engine"] / n
    split: dict[str, Any] = {
        "decode_ms": parts["decode"] / n,
        "preprocess_ms": parts["preprocess"] / n,
        "quantize_ms": parts["quantize"] / n,
        "conv_engine_ms": conv_ms,
        "arm_ms": parts["arm"] / n,
        "postprocess_ms": parts["postprocess"] / n,
        "engine_bookkeeping_ms": (parts["engine"] - parts["conv_engine"] - parts["arm"]) / n,
        "total_ms": parts["total"] / n,
        "device_ms": None,
        "driver_overhead_ms": None,
        "device_calls_count": None,
    }
    if device is not None:
        dev_ms = 1e3 * (device.seconds - dev_s0) / n
        split.update(
            device_ms=dev_ms,
            driver_overhead_ms=conv_ms - dev_ms,
            device_calls_count=(device.calls - dev_calls0) / n,
        )
        if device.parts:  # the driver's own split of its calls, as it names them
            split["device_split_ms"] = {
                f"{k}_ms": 1e3 * (v - dev_parts0.get(k, 0.0)) / n for k, v in device.parts.items()
            }
    rows = [
        {
            "name": name,
            "op": op,
            "placement": placement,
            "time_ms": 1e3 * layers.seconds.get(name, 0.0) / n,
        }
        for name, op, placement in engine.placements
    ]
    return latency_stats_ms(e2e), split, rows


def _throughput_pass(
    model: Model, batch_of: Callable, b: int, plan: Plan, tick: Callable[[int], None]
) -> dict[str, Any]:
    """Whole batches of b images, end to end, after the warm-up batches."""
    for w in range(plan.warmup_batches):
        model.classify(batch_of(w * b, b))
        tick(b)
    reps = max(1, -(-plan.throughput_images // b))
    per_batch = []
    for r in range(reps):
        t0 = time.perf_counter()
        model.classify(batch_of(r * b, b))
        per_batch.append(time.perf_counter() - t0)
        tick(b)
    total_s = float(sum(per_batch))
    row = {"batch_images": b, "images_count": b * reps, "elapsed_s": total_s}
    row["throughput_images_per_s"] = b * reps / total_s
    row.update(latency_stats_ms(per_batch, "batch_latency_ms"))
    return row


def accuracy(indices: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy: the fraction of ``indices`` equal to ``labels``."""
    if len(indices) != len(labels) or len(labels) == 0:
        raise ValueError(f"{len(indices)} answers for {len(labels)} labels")
    return float(np.mean(np.asarray(indices) == np.asarray(labels)))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement: the fraction of images two models give the same class."""
    return accuracy(a, b)
