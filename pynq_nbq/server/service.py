"""The service layer of ``nbq serve``: no Flask, no HTTP, only domain errors.

:class:`Service` owns the config, the :class:`~.worker.DeviceWorker`, the served model,
the power sampler and the metrics.  A classification goes

1. :meth:`Service.admit` - parameters checked and a place in the device queue reserved,
   before anything is decoded (so overload costs no decode);
2. :meth:`Service.classify` - header check (format allow-list, pixels), the decode's
   memory charged to the :class:`~.budget.MemoryBudget` (waiting for room), decode at
   reduced size, preprocess, inference on the device thread, the answer as JSON text
   whose ``timings_ms`` parts (a :class:`Timeline`) add up to its ``total``.

Failures raise :mod:`.errors` exceptions carrying their HTTP status.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .. import api
from ..bundle import Bundle, BundleError, load_bundle
from ..decode_cost import (
    ACCEPTED_FORMATS,
    Header,
    RefusedFormat,
    decode_bytes,
    limit_metadata,
    read_header,
)
from ..errors import NbqError
from ..manifest import Manifest
from ..preprocess import ImageError, ImageTooLarge, preprocess
from ..rails import (
    MIN_ENERGY_WINDOW_S,
    PowerSampler,
    RailSource,
    modelled_energy,
    open_power_source,
)
from . import errors, memory
from .budget import BudgetBusy, MemoryBudget, OverBudget
from .config import ServerConfig
from .live_metrics import live_metrics
from .metrics import ServerMetrics
from .models_dir import available_models, relative_paths, resolve_model_dir
from .timeline import Timeline
from .worker import DeadlineExceeded, DeviceWorker, QueueFull, Reservation

log = logging.getLogger("pynq_nbq.server")


@dataclass
class ServedModel:
    """A model on the device, with what the answers report about it."""

    model: api.Model
    bundle_id: str  #: directory name (what POST /v1/model takes)
    modelled: dict[str, Any]
    loaded_at: str

    @property
    def spec(self) -> Manifest:
        """The served bundle's typed manifest (the one view of a bundle)."""
        return self.model.spec

    @property
    def datapath(self) -> str:
        return self.spec.pe.value

    @property
    def name(self) -> str:
        return self.spec.name or self.bundle_id

    def summary(self) -> dict[str, Any]:
        """The manifest summary served by ``GET /v1/model``."""
        m = self.spec
        raw = self.model.bundle.manifest  # checksums and schema: the file's own fields
        return {
            "id": self.bundle_id,
            "name": self.name,
            "datapath": self.datapath,
            "weight_bits": m.weight_bits,
            "classes": list(m.classes),
            "input": dataclasses.asdict(m.input),
            "output": m.output,
            "layers": [
                {"name": n, "op": op, "placement": p} for n, op, p in self.model.engine.placements
            ],
            "schema_version": raw.get("schema_version"),
            "arrays_sha256": raw.get("arrays_sha256"),
            "provenance": dict(m.provenance),
            "backend": self.model.backend_name,
            "loaded_at": self.loaded_at,
            "modelled": self.modelled,
        }


#: the ``timings_ms`` parts that add up to ``total`` (conv_engine and arm split engine)
TOTAL_PARTS = tuple(k for k in api.TIMING_KEYS if k not in ("conv_engine", "arm", "total"))
#: a decode charged at least this much hands freed memory back to the kernel afterwards
TRIM_ABOVE_BYTES = 8 << 20


@dataclass
class Admission:
    """A request admitted to classification: its deadline, ``top_k``, queue place and
    the timeline of its parts."""

    arrival: float  #: perf_counter at arrival (s)
    deadline: float  #: monotonic (s)
    top_k: int | None  #: None: the configured default
    reservation: Reservation
    timeline: Timeline


class Service:
    """Everything one app owns: config, the device worker, the model, power, metrics."""

    def __init__(self, config: ServerConfig) -> None:
        config.validate()
        self.config = config
        self.started = time.monotonic()
        self.metrics = ServerMetrics(live=lambda: live_metrics(self))
        self.worker = DeviceWorker(
            config.max_queue, lambda where: self.metrics.expired.labels(where=where).inc()
        )
        self.images_done = 0  # incremented by the device thread only
        self.budget = MemoryBudget(config.decode_budget_bytes)
        self.image_limits = limit_metadata()
        self._lock = threading.Lock()
        self.current: ServedModel | None = None
        self.power: PowerSampler | None = None
        try:
            path = api.model_path(config.model)
            self.swap(load_bundle(path), path.name, timeout_s=config.swap_timeout_s)
        except BaseException:
            self.worker.close()
            raise
        src: RailSource | None
        if config.power_source is not None:
            src, why = config.power_source, config.power_source.description
        else:
            src, why = open_power_source(config.power)
        sampler = PowerSampler(src, why, config.power_interval_s, counter=lambda: self.images_done)
        self.power = sampler
        sampler.start()

    def close(self) -> None:
        """Stop the power sampler and the device worker."""
        if self.power is not None:
            self.power.stop()
        self.worker.close()

    def _sampler(self) -> PowerSampler:
        """The power sampler (set at the end of ``__init__``, before any request)."""
        if self.power is None:
            raise RuntimeError("server: the power sampler is not started yet")
        return self.power

    # --- the model -------------------------------------------------------------------
    def served(self) -> ServedModel:
        s = self.current_or_none()
        if s is None:
            raise RuntimeError("no model loaded")
        return s

    def current_or_none(self) -> ServedModel | None:
        """The served model, or None before the first load."""
        with self._lock:
            return self.current

    def swap(self, bundle: Bundle, bundle_id: str, timeout_s: float) -> ServedModel:
        """Build a Model for ``bundle`` on the device thread and make it current.

        Raises whatever building it raised; the current model then keeps serving."""

        def build() -> ServedModel:
            model = api.Model(bundle, self.config.backend)
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            modelled = modelled_energy(bundle.view, self.config.board)
            warm_up(model)
            served = ServedModel(model, bundle_id, modelled, stamp)
            with self._lock:
                self.current = served
            return served

        return self.worker.run(build, timeout_s)

    def switch_to(self, name: Any) -> ServedModel:
        """``POST /v1/model``: load bundle ``name`` from the models directory; any failure
        leaves the current model serving (422 names the field at fault)."""
        path = resolve_model_dir(self.config.models_dir, name)
        try:
            # regular files inside the models directory, declared sizes checked first
            bundle = load_bundle(path, within=path.parent, within_name="the models directory")
        except BundleError as exc:
            msg = relative_paths(str(exc), path)
            raise errors.Unprocessable(
                f"bundle refused, the current model keeps serving: {msg}"
            ) from None
        except Exception as exc:  # a validation gap: still the client's bundle, not a 500
            log.exception("load_bundle(%s) failed outside its checks", path.name)
            raise errors.Unprocessable(
                f"bundle refused, the current model keeps serving: unreadable manifest "
                f"({type(exc).__name__}: {relative_paths(str(exc), path)[:200]})"
            ) from None
        try:
            served = self.swap(bundle, path.name, self.config.swap_timeout_s)
        except DeadlineExceeded as exc:
            raise errors.Timeout(f"model load: {exc}") from None
        except errors.ServiceError:
            raise
        except Exception as exc:  # the backend refused it; the old model is untouched
            log.warning("building %s failed: %r", path.name, exc)
            raise errors.Unprocessable(
                f"model could not be loaded, the current model keeps serving: "
                f"{type(exc).__name__}: {relative_paths(str(exc), path)[:300]}"
            ) from None
        log.info("now serving %s (%s)", served.bundle_id, served.datapath)
        return served

    # --- classification --------------------------------------------------------------
    def admit(self, top_k_raw: str | None, arrival: float) -> Admission:
        """Check the parameters and reserve a place in the device queue, before any
        decoding: 400 for a bad ``top_k``, 503 with ``Retry-After`` when no place frees
        up within ``admission_wait_s``.  The deadline counts from ``arrival``
        (perf_counter s), so the wait for a place is part of it."""
        k = parse_top_k(top_k_raw)
        deadline = time.monotonic() + self.config.deadline_s - (time.perf_counter() - arrival)
        try:
            reservation = self.worker.reserve(self.config.admission_wait_s)
        except QueueFull as exc:
            self.metrics.rejected.inc()
            raise errors.Unavailable(
                f"busy: {exc}; retry later", self.worker.retry_after_s()
            ) from None
        timeline = Timeline(arrival)
        timeline.mark("admission")
        return Admission(arrival, deadline, k, reservation, timeline)

    def classify(self, adm: Admission, data: bytes) -> str:
        """Decode, preprocess and classify ``data`` for an admitted request; the answer
        as JSON text (its ``timings_ms`` parts, encoding included, sum to its ``total``)."""
        with adm.reservation:
            served = self.served()
            x, info = self._decode(data, served, adm)
            job = self.worker.submit(
                lambda: self._predict(served, x), adm.deadline, adm.reservation
            )
        pred, used = self._wait(job)
        waited = adm.timeline.mark("handoff")  # split below into queue, device stages, rest
        queue_s = (job.started or job.enqueued) - job.enqueued
        device_s = sum(pred.timings_ms[k] for k in ("quantize", "engine", "postprocess")) / 1e3
        adm.timeline.parts["handoff"] -= queue_s + device_s
        adm.timeline.add("queue", queue_s)
        return self._answer(adm, pred, used, info, waited)

    def _decode(self, data: bytes, served: ServedModel, adm: Admission) -> tuple[np.ndarray, dict]:
        """Header, budget charge, decode and preprocess: (input (C, H, W), image info)."""
        tl = adm.timeline
        header = self.check_header(data)
        spec = served.model.input_spec
        cost = decode_bytes(header, served.model.input_fit, spec.get("resize", "stretch"))
        tl.mark("decode")
        left = max(0.0, adm.deadline - time.monotonic())
        bounded = self.config.budget_wait_s
        try:
            charge = self.budget.charge(cost, left if bounded is None else min(bounded, left))
        except OverBudget as exc:
            raise errors.TooLarge(f"image too large: {exc}") from None
        except BudgetBusy as exc:
            if time.monotonic() >= adm.deadline:
                raise errors.Timeout(f"deadline passed while waiting: {exc}") from None
            self.metrics.rejected.inc()
            raise errors.Unavailable(f"busy: {exc}; retry later", 1) from None
        tl.mark("admission")
        try:
            with charge:
                x, info = decode_and_preprocess(data, served, tl)
        finally:
            if cost >= TRIM_ABOVE_BYTES:
                memory.release_free_memory()
        if time.monotonic() >= adm.deadline:  # do not queue work that can only be dropped
            raise errors.Timeout(
                f"deadline passed while decoding ({1e3 * tl.elapsed:.0f} ms since arrival; "
                f"deadline {self.config.deadline_s:g} s)"
            )
        info = {**header.as_info(), **info, "decode_charge_bytes": cost}
        return x, info

    def check_header(self, data: bytes) -> Header:
        """What the header declares; 415 for a refused format, 400 for no image, 413 for
        more pixels than ``max_image_pixels`` (all before decoding)."""
        try:
            header = read_header(data)
        except RefusedFormat as exc:
            raise errors.UnsupportedMediaType(str(exc)) from None
        except ImageTooLarge as exc:
            raise errors.TooLarge(str(exc)) from None
        except ImageError as exc:
            raise errors.BadRequest(str(exc)) from None
        limit = self.config.max_image_pixels
        if header.width * header.height > limit:
            raise errors.TooLarge(
                f"image too large: {header.width}x{header.height} = "
                f"{header.width * header.height} pixels (limit {limit})"
            )
        return header

    def _predict(self, prepared_for: ServedModel, x: np.ndarray) -> tuple[api.Prediction, Any]:
        """Device thread: classify one preprocessed image with the current model.

        If the model changed since ``x`` was preprocessed, run only when the new one
        takes the same input (else ask the client to retry)."""
        now = self.served()
        if now is not prepared_for and now.model.input_spec != prepared_for.model.input_spec:
            raise errors.Unavailable("the model was replaced while this request waited; retry")
        pred = now.model.predict(x[None])
        self.images_done += 1
        return pred, now

    def _wait(self, job) -> tuple[api.Prediction, ServedModel]:
        """The job's result; deadline and backend failures as 504/503 (the worker goes on)."""
        try:
            return self.worker.wait(job)
        except DeadlineExceeded as exc:
            raise errors.Timeout(f"{exc} (deadline {self.config.deadline_s:g} s)") from None
        except TimeoutError as exc:
            self.metrics.device_errors.labels(kind="timeout").inc()
            log.warning("device timeout: %s", exc)
            msg = f"the device timed out ({exc}); the request did not complete"
            raise errors.Timeout(msg) from None
        except (OSError, NbqError) as exc:  # e.g. KernelError: the kernel broke a call
            self.metrics.device_errors.labels(kind="error").inc()
            log.warning("device error: %s", exc)
            raise errors.Unavailable(f"the device failed ({exc}); retry later") from None

    def _answer(self, adm, pred, used, info, waited_s) -> str:
        n = len(used.model.classes)
        k = min(self.config.top_k if adm.top_k is None else adm.top_k, n)
        top = pred.top_k(0, k)
        order = np.argsort(-pred.probabilities[0], kind="stable")[:k]
        tm = pred.timings_ms
        self.metrics.images.labels(
            model=used.bundle_id,
            backend=used.model.backend_name,
            datapath=used.datapath,
        ).inc()
        if used.modelled.get("available"):
            self.metrics.modelled_energy.inc(float(used.modelled["energy_mj"]) / 1e3)
        body = {
            "label": pred.labels[0],
            "index": int(pred.indices[0]),
            "top_k": [
                {"label": lab, "index": int(i), "probability": p} for (lab, p), i in zip(top, order)
            ],
            "model": {
                "id": used.bundle_id,
                "name": used.name,
                "sha256": used.model.bundle.sha256,
            },
            "backend": used.model.backend_name,
            "datapath": used.datapath,
            "weight_bits": used.spec.weight_bits,
            "image": info,
            "timings_ms": _PLACEHOLDER,
            "power": self.power_block(),
        }
        text = json.dumps(body)
        tl = adm.timeline
        tl.mark("respond")
        parts = tl.parts
        timings = {
            "read": _ms(parts.get("read", 0.0)),
            "admission": _ms(parts["admission"]),
            "decode": _ms(parts["decode"]),
            "preprocess": _ms(parts["preprocess"]),
            "queue": _ms(parts["queue"]),
            "quantize": round(tm["quantize"], 4),
            "engine": round(tm["engine"], 4),
            "conv_engine": round(tm["conv_engine"], 4),
            "arm": round(tm["arm"], 4),
            "postprocess": round(tm["postprocess"], 4),
            "handoff": _ms(parts["handoff"]),
            "respond": _ms(parts["respond"]),
            "total": _ms(tl.elapsed),
        }  # keys as api.TIMING_KEYS
        for stage in ("decode", "preprocess", "queue", "engine"):
            self.metrics.stages.labels(stage=stage).observe(timings[stage] / 1e3)
        return text.replace(json.dumps(_PLACEHOLDER), json.dumps(timings), 1)

    # --- health, power, metrics -------------------------------------------------------
    def health(self) -> tuple[dict[str, Any], bool]:
        s = self.served()
        ok = self.worker.alive
        body = {
            "status": "ok" if ok else "device worker stopped",
            "model": s.bundle_id,
            "backend": s.model.backend_name,
            "datapath": s.datapath,
            "queue": {"waiting": self.worker.waiting, "limit": self.config.max_queue},
            "deadline_s": self.config.deadline_s,
            "power_available": self._sampler().available,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }
        return body, ok

    def model_info(self) -> dict[str, Any]:
        body = self.served().summary()
        body["available"] = available_models(self.config.models_dir)
        body["switching"] = "enabled (token)" if self.config.token else "disabled (no token set)"
        return body

    def power_block(self) -> dict[str, Any]:
        """The ``power`` part of an answer: the latest reading with its age, measured
        energy per image over the window, and the modelled estimate."""
        power = self._sampler()
        measured = power.latest()
        if measured.get("available"):
            w = power.window_energy(self.config.energy_window_s)
            if w is None:
                measured["energy_per_image_mj"] = None
                measured["energy_note"] = (
                    f"needs >= {MIN_ENERGY_WINDOW_S:g} s of samples; not enough yet"
                )
            else:
                n = w["events"]
                measured["energy_window_s"] = round(w["span_s"], 3)
                measured["images_in_window"] = n
                measured["energy_per_image_mj"] = round(1e3 * w["energy_j"] / n, 6) if n else None
                measured["energy_note"] = (
                    "whole-board rail energy over the window divided by the images finished "
                    "in it (idle power included)"
                )
        return {"measured": measured, "modelled": self.served().modelled}


# --- image and parameter helpers -------------------------------------------------------
def parse_top_k(raw: str | None) -> int | None:
    """``?top_k=``: a positive integer (more than the class count means all classes), or
    None when absent (the configured default)."""
    if raw is None:
        return None
    try:
        k = int(raw)
    except ValueError:
        raise errors.BadRequest(f"top_k must be a positive integer, got {raw[:40]!r}") from None
    if k < 1:
        raise errors.BadRequest(f"top_k must be a positive integer, got {k}")
    return k


def decode_and_preprocess(
    data: bytes, served: ServedModel, timeline: Timeline
) -> tuple[np.ndarray, dict]:
    """Decode ``data`` (accepted formats only) no larger than ``served`` needs and
    preprocess it: (input (C, H, W), decoded size); the times go to ``timeline``'s
    ``decode`` and ``preprocess``.  Image failures are 400/413."""
    try:
        img = served.model.open_image(data, formats=ACCEPTED_FORMATS)
        info = {"decoded_width": img.width, "decoded_height": img.height}
        timeline.mark("decode")
        x = preprocess(img, served.model.input_spec)
        timeline.mark("preprocess")
        return x, info
    except ImageTooLarge as exc:
        raise errors.TooLarge(str(exc)) from None
    except ImageError as exc:
        raise errors.BadRequest(str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:  # a decoder failing in convert()
        raise errors.BadRequest(f"broken image: {exc}") from None


def warm_up(model: api.Model) -> None:
    """Run the model once on a blank input (first-call costs: imports, BLAS and kernel
    set-up), so a fresh server's first answer is timed like every other."""
    spec = model.input_spec
    channels = int(spec.get("channels") or len(spec["mode"]))  # "L": 1, "RGB": 3
    shape = (1, channels, int(spec["height"]), int(spec["width"]))
    model.predict(np.zeros(shape, np.uint8))


def _ms(seconds: float) -> float:
    return round(1e3 * seconds, 4)


_PLACEHOLDER = "\u0000timings"
