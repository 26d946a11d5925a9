"""The HTTP routes of ``nbq serve`` (a Flask blueprint) and the one error handler.

Routes only translate: request -> :class:`~.service.Service` call -> JSON.  Every
refusal is a :class:`~.errors.ServiceError` (or a werkzeug HTTP error) answered by
:func:`register_error_handlers` as ``{"error": message, "status": code}``.
"""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from ..errors import NbqError
from . import errors
from .metrics import CONTENT_TYPE
from .service import Service

log = logging.getLogger("pynq_nbq.server")

STATIC_DIR = Path(__file__).resolve().parent / "static"

bp = Blueprint("nbq", __name__)


def service() -> Service:
    return current_app.extensions["nbq"]


@bp.get("/")
def index():
    return send_from_directory(STATIC_DIR, "index.html")


@bp.get("/v1/health")
def health():
    body, ok = service().health()
    return jsonify(body), 200 if ok else 503


@bp.get("/v1/model")
def model_info():
    return jsonify(service().model_info())


@bp.post("/v1/model")
def model_swap():
    svc = service()
    require_token(svc.config.token)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "name" not in body:
        raise errors.BadRequest('send JSON {"name": "<bundle directory in the models directory>"}')
    return jsonify(svc.switch_to(body["name"]).summary())


@bp.post("/v1/classify")
def classify():
    svc = service()
    admission = svc.admit(request.args.get("top_k"), g.t0)  # before reading any image
    with admission.reservation:
        data = read_image_bytes()
        admission.timeline.mark("read")
        return Response(svc.classify(admission, data), mimetype="application/json")


@bp.get("/metrics")
def metrics():
    return Response(service().metrics.render(), content_type=CONTENT_TYPE)


def read_image_bytes() -> bytes:
    """The image from the current request: multipart field ``image`` or the raw body."""
    if request.mimetype == "multipart/form-data":
        f = request.files.get("image")
        if f is None:
            sent = sorted(set(request.files) | set(request.form))
            raise errors.BadRequest(
                f"multipart form has no 'image' field (fields sent: {sent or 'none'}); "
                "send the file as field 'image' or the image bytes as the raw body"
            )
        data = f.read()
    else:  # any other type, including curl's default form-urlencoded, is the raw image
        # Werkzeug < 2.3 (the PYNQ 3.0 image has 2.2.1) does not apply MAX_CONTENT_LENGTH
        # to get_data(): check the declared length here as well.
        limit = request.max_content_length
        if limit is not None and (request.content_length or 0) > limit:
            raise RequestEntityTooLarge()
        data = request.get_data(cache=False)
    if not data:
        raise errors.BadRequest(
            "empty body: send an image as the raw body or as multipart field 'image'"
        )
    return data


def require_token(token: str | None) -> None:
    """Check ``Authorization: Bearer <token>`` (scheme in any case, RFC 9110) or
    ``X-NBQ-Token``, in constant time."""
    if not token:
        raise errors.Forbidden(
            "model switching is disabled: start nbq serve with NBQ_TOKEN (or --token)"
        )
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        given = value.strip()
    else:
        given = request.headers.get("X-NBQ-Token", "")
    if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
        raise errors.Unauthorized("missing or wrong token")


def register_error_handlers(app: Flask) -> None:
    """One mapping from exceptions to JSON answers: domain errors carry their status,
    the package's own errors (:class:`~pynq_nbq.errors.NbqError`) that the service did
    not map are 422, werkzeug's HTTP errors keep theirs, anything else is a logged 500
    without traceback."""

    @app.errorhandler(errors.ServiceError)
    def _service_error(exc: errors.ServiceError):
        return jsonify(error=exc.message, status=exc.status), exc.status, exc.headers

    @app.errorhandler(NbqError)
    def _package_error(exc: NbqError):  # refused on purpose, not mapped above: the input
        return jsonify(error=str(exc), status=422), 422

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = exc.code or 500
        msg = exc.description or exc.name
        if isinstance(exc, RequestEntityTooLarge):
            msg = too_large_message(app)
        headers = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:  # werkzeug's only 405
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return jsonify(error=msg, status=code), code, headers

    @app.errorhandler(Exception)
    def _internal_error(exc: Exception):
        log.exception("internal error on %s %s", request.method, request.path)
        return jsonify(
            error=f"internal error ({type(exc).__name__}); see the server log", status=500
        ), 500


def too_large_message(app: Flask) -> str:
    """Why werkzeug refused the body: its size, or (multipart) too many parts."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    size = request.content_length
    if size is not None and size <= limit and request.mimetype == "multipart/form-data":
        return (
            f"too many multipart form parts (limit {app.config['MAX_FORM_PARTS']}): send one "
            "field 'image'"
        )
    return f"request body too large (limit {limit} bytes)"


def start_clock() -> None:
    g.t0 = time.perf_counter()
