"""The HTTP classification service: the Flask application factory.

    from pynq_nbq.server import ServerConfig, create_app
    app = create_app(ServerConfig(model="fmnist-svpe", backend="numpy"))

The parts (``docs/server.md`` has the reference):

* ``config.py`` - :class:`ServerConfig`, the settings and their checks;
* ``worker.py`` - the device thread and admission to its queue (no Flask);
* ``service.py`` - the service layer: admission, decoding, inference, answers; it
  raises the domain errors of ``errors.py``;
* ``routes.py`` - the routes (a blueprint) and the one error handler;
* ``metrics.py`` - Prometheus metrics (prometheus_client), ``power.py`` - rail power;
* ``wsgi.py`` - waitress with connection limits and read deadlines.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, jsonify, request

from . import routes
from .config import ServerConfig
from .service import Service

CSP = "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'"


class NbqFlask(Flask):
    """Flask whose automatic ``OPTIONS`` answer is JSON like every other answer."""

    def make_default_options_response(self) -> Response:
        allow = super().make_default_options_response().allow
        resp = jsonify(allow=sorted(allow))
        resp.allow.update(allow)
        return resp


def create_app(config: ServerConfig | dict[str, Any] | None = None) -> Flask:
    """Build the Flask app: load the model onto its device thread, start the power
    sampler.  ``app.extensions["nbq"]`` is the :class:`~.service.Service`; call its
    ``close()`` (tests) to stop the threads."""
    if config is None:
        config = ServerConfig()
    elif isinstance(config, dict):
        config = ServerConfig.from_mapping(config)
    svc = Service(config)
    app = NbqFlask(__name__, static_folder=str(routes.STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["MAX_FORM_PARTS"] = config.max_form_parts
    # text fields may be as large as the body (Flask >= 3.1 caps them at 500 kB with the
    # same 413 as too many parts); so a multipart 413 within the body limit means parts
    app.config["MAX_FORM_MEMORY_SIZE"] = config.max_body_bytes
    # Flask >= 2.2: the default provider's attribute (``app.json`` is typed as the base
    # JSONProvider, which has no ``sort_keys``); getattr because Flask 2.1 has no app.json
    provider = getattr(app, "json", None)
    if provider is not None:
        provider.sort_keys = False
    else:  # Flask 2.1 (the PYNQ 3.0 image's)
        app.config["JSON_SORT_KEYS"] = False
    app.extensions["nbq"] = svc
    app.before_request(routes.start_clock)
    app.after_request(_finish)
    routes.register_error_handlers(app)
    app.register_blueprint(routes.bp)
    return app


def _finish(resp: Response) -> Response:
    """Count the request (bounded labels) and add the security headers."""
    svc: Service = routes.service()
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    elapsed = time.perf_counter() - g.t0 if "t0" in g else 0.0
    svc.metrics.observe_request(endpoint, request.method, resp.status_code, elapsed)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Content-Security-Policy", CSP)
    if resp.mimetype == "application/json":
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp
