"""The HTTP classification service: a Flask application factory, JSON everywhere.

    from pynq_nbq.server import ServerConfig, create_app
    app = create_app(ServerConfig(model="fmnist-svpe", backend="numpy"))

Endpoints (``docs/server.md`` has the reference):

* ``POST /v1/classify`` - an image as multipart field ``image`` or as the raw body;
* ``GET /v1/health``, ``GET /v1/model``, ``POST /v1/model`` (token), ``GET /metrics``;
* ``GET /`` - a small page to try it from a browser.

The device is one resource: a single worker thread (:class:`DeviceWorker`) owns the
model and runs every inference and model swap, one at a time.  Request threads decode
and preprocess in parallel, then queue a job.  The queue is bounded (503 with
``Retry-After`` when full); a job still waiting at its deadline is dropped without
running (504); a job already running is never interrupted, and if it ends past the
deadline its result is discarded and the client gets 504.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, g, jsonify, request, send_from_directory
from PIL import Image
from werkzeug.exceptions import HTTPException

from .. import api
from ..backends import Backend
from ..bundle import Bundle, BundleError, load_bundle
from ..errors import NbqError
from ..preprocess import MAX_PIXELS, ImageError, ImageTooLarge, open_image, preprocess
from .metrics import CONTENT_TYPE, ServerMetrics
from .power import MIN_ENERGY_WINDOW_S, PowerSampler, RailSource, modelled_energy, open_power_source

log = logging.getLogger("pynq_nbq.server")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class ServerConfig:
    """Settings of one server.  Times in seconds, sizes in bytes or pixels."""

    model: str | None = None  #: embedded model name or bundle path (None: the default)
    backend: str | Backend = "numpy"
    models_dir: Path = api.MODELS_DIR  #: POST /v1/model loads only from here
    host: str = "127.0.0.1"  #: where the server listens (a token is mandatory off loopback)
    token: str | None = None  #: needed by POST /v1/model; without one, switching is off
    max_body_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = MAX_PIXELS  #: decoded width x height limit (bombs)
    large_image_pixels: int = 1_000_000  #: images above this decode under a semaphore
    large_decode_slots: int = 2  #: concurrent decodes of large images (bounds memory)
    max_queue: int = 8  #: jobs allowed to wait for the device (the running one not counted)
    deadline_s: float = 5.0  #: from the request's arrival to its answer
    swap_timeout_s: float = 120.0  #: for loading a model onto the device
    top_k: int = 3
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
        if self.max_body_bytes < 1 or self.max_image_pixels < 1 or self.large_decode_slots < 1:
            raise ValueError(
                "max_body_bytes, max_image_pixels and large_decode_slots must be positive"
            )
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
                "give --token or set NBQ_TOKEN"
            )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ApiError(Exception):
    """An error answered as JSON ``{"error": message, "status": code}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# --- the device worker --------------------------------------------------------------
class QueueFull(Exception):
    """The device queue is at its bound."""


class DeadlineExceeded(Exception):
    """A job missed its deadline (``where``: "queued" or "running")."""

    def __init__(self, message: str, where: str):
        super().__init__(message)
        self.where = where


@dataclass
class Job:
    """One call to run on the device thread; times on the monotonic clock (s)."""

    fn: Callable[[], Any]
    deadline: float
    enqueued: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    started: float | None = None
    finished: float | None = None
    abandoned: bool = False


_STOP = object()


class DeviceWorker:
    """The one thread that touches the device: runs queued jobs in order.

    ``max_queue`` bounds the jobs waiting (not the one running).  A job whose deadline
    has passed when its turn comes is dropped unrun; a running job is not interrupted.
    """

    def __init__(self, max_queue: int, on_expired: Callable[[str], None] = lambda w: None):
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
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

    def submit(self, fn: Callable[[], Any], deadline: float) -> Job:
        """Queue ``fn``; raise :class:`QueueFull` at the bound."""
        job = Job(fn, deadline, time.monotonic())
        try:
            self._q.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.max_queue} requests already waiting for the device") from None
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

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is _STOP:
                return
            now = time.monotonic()
            if job.abandoned or now >= job.deadline:
                job.error = DeadlineExceeded(
                    f"deadline passed after {1e3 * (now - job.enqueued):.1f} ms in the queue; "
                    "the request did not run",
                    "queued",
                )
                self._on_expired("queued")
                job.done.set()
                continue
            job.started = now
            try:
                job.result = job.fn()
            except BaseException as exc:  # handed to the waiting request thread
                job.error = exc
            job.finished = time.monotonic()
            self._service_s = 0.9 * self._service_s + 0.1 * (job.finished - job.started)
            if job.finished > job.deadline and job.error is None:
                self._on_expired("running")
            job.done.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the jobs already queued; wait up to ``timeout_s``."""
        try:
            self._q.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.warning("device queue still full at shutdown")
            return
        self._thread.join(timeout_s)


# --- the served model and the service state -----------------------------------------
@dataclass
class ServedModel:
    """A model on the device, with what the answers report about it."""

    model: api.Model
    bundle_id: str  #: directory name (what POST /v1/model takes)
    modelled: dict[str, Any]
    loaded_at: str

    @property
    def manifest(self) -> dict[str, Any]:
        return self.model.bundle.manifest

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.bundle_id)

    def summary(self) -> dict[str, Any]:
        """The manifest summary served by ``GET /v1/model``."""
        m = self.manifest
        return {
            "id": self.bundle_id,
            "name": self.name,
            "datapath": m["datapath"],
            "weight_bits": m["weight_bits"],
            "classes": m["classes"],
            "input": m["input"],
            "output": m["output"],
            "layers": [
                {"name": n, "op": op, "placement": p} for n, op, p in self.model.engine.placements
            ],
            "schema_version": m.get("schema_version"),
            "arrays_sha256": m.get("arrays_sha256"),
            "provenance": m.get("provenance", {}),
            "backend": self.model.backend_name,
            "loaded_at": self.loaded_at,
            "modelled": self.modelled,
        }


class Service:
    """Everything one app owns: config, the device worker, the model, power, metrics."""

    def __init__(self, config: ServerConfig) -> None:
        config.validate()
        self.config = config
        self.started = time.monotonic()
        self.metrics = ServerMetrics()
        self.worker = DeviceWorker(
            config.max_queue, lambda where: self.metrics.expired.inc(where=where)
        )
        self.images_done = 0  # incremented by the device thread only
        self.large_decodes = threading.BoundedSemaphore(config.large_decode_slots)
        self._lock = threading.Lock()
        self.current: ServedModel | None = None
        try:
            path = api.model_path(config.model)
            bundle = load_bundle(path)
            self.swap(bundle, path.name, timeout_s=config.swap_timeout_s)
        except BaseException:
            self.worker.close()
            raise
        if config.power_source is not None:
            src, why = config.power_source, config.power_source.description
        else:
            src, why = open_power_source(config.power)
        self.power = PowerSampler(
            src, why, config.power_interval_s, counter=lambda: self.images_done
        )
        self.power.start()
        self.metrics.queue_limit.set(config.max_queue)
        self.metrics.registry.collect_hooks.append(self._refresh_gauges)

    def close(self) -> None:
        """Stop the power sampler and the device worker."""
        self.power.stop()
        self.worker.close()

    def swap(self, bundle: Bundle, bundle_id: str, timeout_s: float) -> ServedModel:
        """Build a Model for ``bundle`` on the device thread and make it current.

        Raises whatever building it raised; the current model then keeps serving."""

        def build() -> ServedModel:
            model = api.Model(bundle, self.config.backend)
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            modelled = modelled_energy(bundle.manifest, self.config.board)
            served = ServedModel(model, bundle_id, modelled, stamp)
            with self._lock:
                self.current = served
            return served

        return self.worker.wait(self.worker.submit(build, time.monotonic() + timeout_s))

    def served(self) -> ServedModel:
        with self._lock:
            if self.current is None:
                raise RuntimeError("no model loaded")
            return self.current

    def predict(
        self, prepared_for: ServedModel, x: np.ndarray
    ) -> tuple[api.Prediction, ServedModel]:
        """Device thread: classify one preprocessed image with the current model.

        If the model changed since ``x`` was preprocessed, run only when the new one
        takes the same input (else ask the client to retry)."""
        now = self.served()
        if now is not prepared_for and now.model.input_spec != prepared_for.model.input_spec:
            raise ApiError(
                503, "the model was replaced while this request waited; retry", {"Retry-After": "1"}
            )
        pred = now.model.predict(x[None])
        self.images_done += 1
        return pred, now

    def power_block(self) -> dict[str, Any]:
        """The ``power`` part of an answer: the latest reading with its age, measured
        energy per image over the window, and the modelled estimate."""
        measured = self.power.latest()
        if measured.get("available"):
            w = self.power.window_energy(self.config.energy_window_s)
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

    def _refresh_gauges(self) -> None:
        m = self.metrics
        m.queue_waiting.set(self.worker.waiting)
        s = self.served()
        m.model_info.clear()
        m.model_info.set(
            1,
            name=s.bundle_id,
            datapath=s.manifest["datapath"],
            backend=s.model.backend_name,
            sha256=str(s.manifest.get("arrays_sha256", "")),
        )
        latest = self.power.latest()
        m.power_available.set(1 if latest.get("available") else 0)
        if latest.get("available"):
            for k, v in latest.items():
                if k.endswith("_w") and isinstance(v, float):
                    m.power.set(v, group=k[:-2])
            m.power_age.set(latest["age_s"])
            for group, joules in self.power.energy_totals_j().items():
                m.energy.set_total(joules, group=group)
        if s.modelled.get("available"):
            m.modelled_power.set(float(s.modelled["power_w"]))


# --- request helpers ----------------------------------------------------------------
def read_image_bytes() -> bytes:
    """The image from the current request: multipart field ``image`` or the raw body."""
    if request.mimetype == "multipart/form-data":
        f = request.files.get("image")
        if f is None:
            sent = sorted(set(request.files) | set(request.form))
            raise ApiError(
                400,
                f"multipart form has no 'image' field (fields sent: {sent or 'none'}); "
                "send the file as field 'image' or the image bytes as the raw body",
            )
        data = f.read()
    else:  # any other type, including curl's default form-urlencoded, is the raw image
        data = request.get_data(cache=False)
    if not data:
        raise ApiError(
            400, "empty body: send an image as the raw body or as multipart field 'image'"
        )
    return data


def check_dimensions(data: bytes, max_pixels: int) -> tuple[str | None, int]:
    """Refuse images whose header declares more than ``max_pixels``, before decoding;
    return the format Pillow recognised and the pixel count ((None, 0) if unreadable)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            fmt = im.format
    except Exception:
        return None, 0  # not readable as an image: open_image names the problem
    if w * h > max_pixels:
        raise ApiError(413, f"image too large: {w}x{h} = {w * h} pixels (limit {max_pixels})")
    return fmt, w * h


def decode_and_preprocess(data: bytes, spec: dict) -> tuple[np.ndarray, dict, float, float]:
    """Decode ``data`` and preprocess it per ``spec``: (input (C, H, W), image info,
    decode seconds, preprocess seconds).  Maps image failures to a 4xx :class:`ApiError`."""
    t0 = time.perf_counter()
    try:
        img = open_image(data)
        info = {"mode": img.mode, "width": img.width, "height": img.height}
        t1 = time.perf_counter()
        x = preprocess(img, spec)
        return x, info, t1 - t0, time.perf_counter() - t1
    except ImageError as exc:
        raise ApiError(image_error_status(exc), str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:  # a decoder failing in convert()
        raise ApiError(400, f"broken image: {exc}") from None


def image_error_status(exc: ImageError) -> int:
    """413 for images refused for their size, 400 for everything else."""
    return 413 if isinstance(exc, ImageTooLarge) else 400


def top_k_param(default: int, n_classes: int) -> int:
    """``?top_k=`` (a positive integer; more than the class count means all classes),
    else ``default``; capped at the class count."""
    raw = request.args.get("top_k")
    if raw is None:
        return min(default, n_classes)
    try:
        k = int(raw)
    except ValueError:
        raise ApiError(400, f"top_k must be a positive integer, got {raw!r}") from None
    if k < 1:
        raise ApiError(400, f"top_k must be a positive integer, got {k}")
    return min(k, n_classes)


def resolve_model_dir(models_dir: Path, name: Any) -> Path:
    """The bundle directory ``name`` inside ``models_dir``; refuses anything else."""
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name) or ".." in name:
        raise ApiError(
            400,
            f"bad model name {name!r}: give the name of a bundle directory in the models "
            "directory (letters, digits, '.', '_', '-'; no paths)",
        )
    root = models_dir.resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ApiError(400, f"model name {name!r} escapes the models directory")
    if not path.is_dir():
        raise ApiError(
            404,
            f"no model {name!r} in the models directory (available: "
            f"{available_models(models_dir)})",
        )
    return path


def available_models(models_dir: Path) -> list[str]:
    """Bundle directories (with a manifest) in ``models_dir``."""
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if (p / "manifest.json").is_file())


def _ms(seconds: float) -> float:
    return round(1e3 * seconds, 4)


# --- the application factory --------------------------------------------------------
def create_app(config: ServerConfig | dict[str, Any] | None = None) -> Flask:
    """Build the Flask app: load the model onto its device thread, start the power
    sampler.  ``app.extensions["nbq"]`` is the :class:`Service`; call its ``close()``
    (tests) to stop the threads."""
    if config is None:
        config = ServerConfig()
    elif isinstance(config, dict):
        config = ServerConfig.from_mapping(config)
    svc = Service(config)
    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    app.extensions["nbq"] = svc

    @app.before_request
    def _start_clock() -> None:
        g.t0 = time.perf_counter()

    @app.after_request
    def _finish(resp: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        svc.metrics.requests.inc(
            endpoint=endpoint, method=request.method, status=str(resp.status_code)
        )
        if "t0" in g:
            svc.metrics.latency.observe(time.perf_counter() - g.t0, endpoint=endpoint)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'",
        )
        if resp.mimetype == "application/json":
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return jsonify(error=exc.message, status=exc.status), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = exc.code or 500
        msg = {
            413: f"request body too large (limit {config.max_body_bytes} bytes)",
        }.get(code, exc.description or exc.name)
        return jsonify(error=msg, status=code), code

    @app.errorhandler(Exception)
    def _internal_error(exc: Exception):
        log.exception("internal error on %s %s", request.method, request.path)
        return jsonify(
            error=f"internal error ({type(exc).__name__}); see the server log", status=500
        ), 500

    @app.get("/")
    def index():
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/v1/health")
    def health():
        s = svc.served()
        ok = svc.worker.alive
        body = {
            "status": "ok" if ok else "device worker stopped",
            "model": s.bundle_id,
            "backend": s.model.backend_name,
            "datapath": s.manifest["datapath"],
            "queue": {"waiting": svc.worker.waiting, "limit": config.max_queue},
            "deadline_s": config.deadline_s,
            "power_available": svc.power.available,
            "uptime_s": round(time.monotonic() - svc.started, 3),
        }
        return jsonify(body), 200 if ok else 503

    @app.get("/v1/model")
    def model_info():
        body = svc.served().summary()
        body["available"] = available_models(config.models_dir)
        body["switching"] = "enabled (token)" if config.token else "disabled (no token set)"
        return jsonify(body)

    @app.post("/v1/model")
    def model_swap():
        require_token(config.token)
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "name" not in body:
            raise ApiError(400, 'send JSON {"name": "<bundle directory in the models directory>"}')
        path = resolve_model_dir(config.models_dir, body["name"])
        try:
            bundle = load_bundle(path)
        except BundleError as exc:
            msg = str(exc).replace(str(path), path.name)
            raise ApiError(422, f"bundle refused, the current model keeps serving: {msg}") from None
        try:
            served = svc.swap(bundle, path.name, config.swap_timeout_s)
        except (NbqError, ValueError, RuntimeError, OSError) as exc:
            raise ApiError(
                422, f"model could not be loaded, the current model keeps serving: {exc}"
            ) from None
        log.info("now serving %s (%s)", served.bundle_id, served.manifest["datapath"])
        return jsonify(served.summary())

    @app.post("/v1/classify")
    def classify():
        t_arrival = g.t0
        deadline = time.monotonic() + config.deadline_s
        data = read_image_bytes()
        fmt, pixels = check_dimensions(data, config.max_image_pixels)
        served = svc.served()
        if pixels > config.large_image_pixels:  # bound the memory of big decodes
            if not svc.large_decodes.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise ApiError(504, "deadline passed while waiting to decode a large image")
            try:
                x, info, decode_s, pre_s = decode_and_preprocess(data, served.model.input_spec)
            finally:
                svc.large_decodes.release()
        else:
            x, info, decode_s, pre_s = decode_and_preprocess(data, served.model.input_spec)
        info = {"format": fmt, **info}
        try:
            job = svc.worker.submit(lambda: svc.predict(served, x), deadline)
        except QueueFull as exc:
            svc.metrics.rejected.inc()
            raise ApiError(
                503, f"busy: {exc}; retry later", {"Retry-After": str(svc.worker.retry_after_s())}
            ) from None
        try:
            pred, used = svc.worker.wait(job)
        except DeadlineExceeded as exc:
            raise ApiError(504, f"{exc} (deadline {config.deadline_s:g} s)") from None
        queue_s = (job.started or job.enqueued) - job.enqueued
        k = top_k_param(config.top_k, len(used.model.classes))
        top = pred.top_k(0, k)
        order = np.argsort(-pred.probabilities[0], kind="stable")[:k]
        tm = pred.timings_ms
        timings = {
            "decode": _ms(decode_s),
            "preprocess": _ms(pre_s),
            "queue": _ms(queue_s),
            "quantize": round(tm["quantize"], 4),
            "engine": round(tm["engine"], 4),
            "conv_engine": round(tm["conv_engine"], 4),
            "arm": round(tm["arm"], 4),
            "postprocess": round(tm["postprocess"], 4),
        }  # keys as api.TIMING_KEYS
        for stage in ("decode", "preprocess", "queue", "engine"):
            svc.metrics.stages.observe(timings[stage] / 1e3, stage=stage)
        svc.metrics.images.inc(
            model=used.bundle_id,
            backend=used.model.backend_name,
            datapath=used.manifest["datapath"],
        )
        if used.modelled.get("available"):
            svc.metrics.modelled_energy.inc(float(used.modelled["energy_mj"]) / 1e3)
        body = {
            "label": pred.labels[0],
            "index": int(pred.indices[0]),
            "top_k": [
                {"label": lab, "index": int(i), "probability": p} for (lab, p), i in zip(top, order)
            ],
            "model": {
                "id": used.bundle_id,
                "name": used.name,
                "sha256": used.manifest.get("arrays_sha256"),
            },
            "backend": used.model.backend_name,
            "datapath": used.manifest["datapath"],
            "weight_bits": used.manifest["weight_bits"],
            "image": info,
            "timings_ms": timings,
            "power": svc.power_block(),
        }
        timings["total"] = _ms(time.perf_counter() - t_arrival)
        return jsonify(body)

    @app.get("/metrics")
    def metrics():
        return Response(svc.metrics.registry.render(), content_type=CONTENT_TYPE)

    return app


def require_token(token: str | None) -> None:
    """Check ``Authorization: Bearer <token>`` (or ``X-NBQ-Token``) in constant time."""
    if not token:
        raise ApiError(
            403, "model switching is disabled: start nbq serve with --token or NBQ_TOKEN"
        )
    auth = request.headers.get("Authorization", "")
    given = (
        auth[7:].strip() if auth.startswith("Bearer ") else request.headers.get("X-NBQ-Token", "")
    )
    if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
        raise ApiError(401, "missing or wrong token", {"WWW-Authenticate": "Bearer"})
