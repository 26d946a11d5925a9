"""``nbq serve``: serve a model bundle over HTTP (JSON API + a small web page)."""

from __future__ import annotations

import argparse
import os
import sys

from ..backends import BACKENDS
from ..cli import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    from ..api import DEFAULT_MODEL, MODELS_DIR

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
    p.add_argument("--backend", default="numpy", choices=BACKENDS, help="default: numpy")
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
        help="token for POST /v1/model (default $NBQ_TOKEN); mandatory beyond loopback",
    )
    p.add_argument("--threads", type=int, default=16, help="waitress request threads (default 16)")
    p.add_argument(
        "--max-queue", type=int, default=8, help="requests waiting for the device (default 8)"
    )
    p.add_argument(
        "--deadline-s", type=float, default=5.0, help="per-request deadline (default 5 s)"
    )
    p.add_argument(
        "--max-body-mb", type=float, default=8.0, help="largest request body (default 8 MiB)"
    )
    p.add_argument(
        "--power",
        default="auto",
        choices=("auto", "pynq", "hwmon", "off"),
        help="rail power readings: pynq.get_rails / hwmon / off (default auto)",
    )
    p.add_argument("--board", default="zcu102", help="board for the modelled energy estimate")
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads for the numpy engine (default 1; 0 keeps the library default)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, bind, print the URL and a curl line, serve until interrupted."""
    from pathlib import Path

    from ..api import model_path, sample_images
    from ..blas import limit_blas_threads
    from ..bundle import BundleError
    from ..errors import NbqError
    from ..server import ServerConfig, create_app
    from ..server.wsgi import make_server

    if args.threads < 1:
        raise CommandError(f"--threads must be >= 1, got {args.threads}")
    max_body = int(args.max_body_mb * 1024 * 1024)
    config = ServerConfig(
        model=args.model,
        backend=args.backend,
        models_dir=Path(args.models_dir),
        host=args.host,
        token=args.token or None,
        max_body_bytes=max_body,
        max_queue=args.max_queue,
        deadline_s=args.deadline_s,
        power=args.power,
        board=args.board,
    )
    try:
        config.validate()
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
        server = make_server(app, args.host, args.port, args.threads, max_body)
    except OSError as exc:
        svc.close()
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{server.effective_port}/"
    s = svc.served()
    blas = limit_blas_threads(args.blas_threads)
    print(f"nbq serve: listening on {url}", flush=True)
    print(
        f"nbq serve: model {s.bundle_id} ({s.manifest['datapath']}) on the "
        f"{s.model.backend_name} backend; power: "
        f"{'measured' if svc.power.available else 'unavailable - ' + svc.power.reason}; "
        f"{blas}",
        flush=True,
    )
    samples = sample_images()
    image = samples[0] if samples else "shoe.png"
    print(f"try: curl -F image=@{image} {url}v1/classify", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        print("nbq serve: stopping", file=sys.stderr)
    finally:
        server.close()
        svc.close()
    return 0
