"""``nbq serve``: serve a model bundle over HTTP (JSON API + a small web page)."""

from __future__ import annotations

import argparse
import os
import sys

from ..cli import CommandError, add_backend_option


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    from ..api import DEFAULT_MODEL, MODELS_DIR
    from ..server.config import ServerConfig

    d = ServerConfig()  # the defaults live there once; this parser only shows them

    p = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP: POST /v1/classify, a web page at /",
        description=(
            "Serve a model bundle with waitress (one process, threads; the device is owned "
            "by one thread).  API reference: docs/server.md."
        ),
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"embedded model name or bundle path (default {DEFAULT_MODEL})",
    )
    add_backend_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port")
    p.add_argument(
        "--models-dir",
        default=str(MODELS_DIR),
        help="the only directory POST /v1/model loads bundles from (default: the embedded models)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("NBQ_TOKEN"),
        help=(
            "token for POST /v1/model (default $NBQ_TOKEN); mandatory beyond loopback. "
            "Prefer the environment variable: a --token value is visible to every user "
            "in the process list (ps)"
        ),
    )
    p.add_argument("--threads", type=int, default=16, help="waitress request threads (default 16)")
    p.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help=f"requests waiting for the device (default {d.max_queue})",
    )
    p.add_argument(
        "--admission-wait-s",
        type=float,
        default=d.admission_wait_s,
        help="how long a request waits for a place in a full queue before 503 "
        f"(default {d.admission_wait_s} s)",
    )
    p.add_argument(
        "--deadline-s",
        type=float,
        default=d.deadline_s,
        help=f"per-request deadline (default {d.deadline_s} s)",
    )
    _add_request_limits(p, d)
    p.add_argument(
        "--power",
        default=d.power,
        choices=("auto", "pynq", "hwmon", "off"),
        help=f"rail power readings: pynq.get_rails / hwmon / off (default {d.power})",
    )
    p.add_argument(
        "--board", default=d.board, help=f"board for the modelled energy estimate ({d.board})"
    )
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads for the numpy engine (default 1; 0 keeps the library default)",
    )
    p.set_defaults(func=run)


def _add_request_limits(p: argparse.ArgumentParser, d) -> None:
    """The body, connection, pipelining and decode-memory limits of ``serve`` (``d``: a
    default :class:`~pynq_nbq.server.config.ServerConfig`)."""
    from ..server.config import DECODE_BUDGET_BYTES
    from ..server.wsgi import (
        CONNECTION_LIMIT,
        IDLE_TIMEOUT_S,
        MAX_PIPELINED,
        READ_TIMEOUT_S,
        WRITE_TIMEOUT_S,
    )

    p.add_argument(
        "--max-body-mb",
        type=float,
        default=d.max_body_bytes / 2**20,
        help=f"largest request body (default {d.max_body_bytes / 2**20:g} MiB)",
    )
    p.add_argument(
        "--connection-limit",
        type=int,
        default=CONNECTION_LIMIT,
        help=f"open connections; at the limit the least recently active idle or still-sending "
        f"ones are closed (default {CONNECTION_LIMIT})",
    )
    p.add_argument(
        "--read-timeout-s",
        type=float,
        default=READ_TIMEOUT_S,
        help=f"a request must arrive in full within this time of its first byte "
        f"(default {READ_TIMEOUT_S} s)",
    )
    p.add_argument(
        "--idle-timeout-s",
        type=int,
        default=IDLE_TIMEOUT_S,
        help=f"idle keep-alive connections are closed after this (default {IDLE_TIMEOUT_S} s)",
    )
    p.add_argument(
        "--write-timeout-s",
        type=float,
        default=WRITE_TIMEOUT_S,
        help=f"a connection whose answers wait unsent this long (its client does not read) "
        f"is closed (default {WRITE_TIMEOUT_S} s)",
    )
    p.add_argument(
        "--max-pipelined",
        type=int,
        default=MAX_PIPELINED,
        help=f"requests one connection may have waiting; more are dropped and the connection "
        f"closed after the kept ones (default {MAX_PIPELINED})",
    )
    p.add_argument(
        "--decode-budget-mb",
        type=float,
        default=DECODE_BUDGET_BYTES / 2**20,
        help=f"memory all image decodes at once may use, charged from each image's header; "
        f"a decode waits for room until its deadline (default {DECODE_BUDGET_BYTES >> 20} MiB)",
    )


def curl_hint(model, url: str) -> str:
    """The ``try: curl ...`` line for ``model`` (an :class:`pynq_nbq.api.Model`) served at
    ``url``: a shipped sample of the model's own classes, or, for a model of another dataset
    (the samples are Fashion-MNIST), a placeholder and what image the model expects."""
    from ..api import sample_for

    image = sample_for(model.classes)
    if image is not None:
        return f"try: curl -F image=@{image} {url}v1/classify"
    spec = model.input_spec
    shown = ", ".join(model.classes[:10]) + (", ..." if len(model.classes) > 10 else "")
    return (
        f"try: curl -F image=@YOUR_IMAGE.png {url}v1/classify   (an image of one of "
        f"{shown}; resized to {spec['width']}x{spec['height']} {spec['mode']}; "
        "no shipped sample is of this model's classes)"
    )


def run(args: argparse.Namespace) -> int:
    """Load the model, bind, print the URL and a curl line, serve until interrupted."""
    from pathlib import Path

    from ..api import model_path
    from ..blas import limit_blas_threads
    from ..bundle import BundleError
    from ..errors import NbqError
    from ..server import ServerConfig, create_app
    from ..server.memory import configure_allocator
    from ..server.wsgi import make_server

    # the socket server's settings (not ServerConfig's; config.validate() checks those)
    for opt in (
        "threads",
        "connection_limit",
        "read_timeout_s",
        "idle_timeout_s",
        "write_timeout_s",
        "max_pipelined",
        "decode_budget_mb",
    ):
        if getattr(args, opt) < 1:
            raise CommandError(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    if not 0 <= args.port <= 65535:  # waitress would bind port % 65536 without a word
        raise CommandError(f"--port must be 0..65535 (0 picks a free port), got {args.port}")
    if not args.max_body_mb > 0:
        raise CommandError(f"--max-body-mb must be > 0, got {args.max_body_mb}")
    max_body = int(args.max_body_mb * 1024 * 1024)
    config = ServerConfig(
        model=args.model,
        backend=args.backend,
        models_dir=Path(args.models_dir),
        host=args.host,
        token=args.token or None,
        max_body_bytes=max_body,
        max_queue=args.max_queue,
        admission_wait_s=args.admission_wait_s,
        deadline_s=args.deadline_s,
        decode_budget_bytes=int(args.decode_budget_mb * 2**20),
        power=args.power,
        board=args.board,
    )
    try:
        config.validate()
        allocator = configure_allocator()  # before the threads start (see server/memory.py)
        app = create_app(config)
    except BundleError as exc:
        raise CommandError(
            f"cannot load model {str(model_path(args.model))!r}: {exc} "
            "(give --model NAME_OR_PATH, e.g. a bundle written by 'nbq export')"
        ) from exc
    except (NbqError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    svc = app.extensions["nbq"]
    try:
        server = make_server(
            app,
            args.host,
            args.port,
            args.threads,
            max_body,
            connection_limit=args.connection_limit,
            idle_timeout_s=args.idle_timeout_s,
            read_timeout_s=args.read_timeout_s,
            write_timeout_s=args.write_timeout_s,
            max_pipelined=args.max_pipelined,
        )
    except OSError as exc:
        svc.close()
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{server.effective_port}/"
    s = svc.served()
    blas = limit_blas_threads(args.blas_threads)
    print(f"nbq serve: listening on {url}", flush=True)
    print(
        f"nbq serve: model {s.bundle_id} ({s.model.spec.pe.value}) on the "
        f"{s.model.backend_name} backend; power: "
        f"{'measured' if svc.power.available else 'unavailable - ' + svc.power.reason}; "
        f"{blas}; {allocator}; {svc.image_limits}",
        flush=True,
    )
    print(curl_hint(s.model, url), flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        print("nbq serve: stopping", file=sys.stderr)
    finally:
        server.close()
        svc.close()
    return 0
