"""The production WSGI server: waitress, one process, a pool of threads.

One process on purpose: the device (FPGA or the simulated kernel) is a single resource
owned by the app's device thread; pre-forked workers would each try to own it.
"""

from __future__ import annotations

from flask import Flask

#: waitress threads: request threads decode/preprocess in parallel, then queue for the device
DEFAULT_THREADS = 16


def make_server(
    app: Flask,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = DEFAULT_THREADS,
    max_body_bytes: int = 8 * 1024 * 1024,
):
    """A bound (not yet running) waitress server for ``app``; ``port=0`` picks a free
    port (read it from ``server.effective_port``).  Raises OSError if the port is taken."""
    from waitress import create_server

    return create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        # waitress refuses bodies a little over the app's limit itself (before buffering);
        # the app answers 413 as JSON for anything between
        max_request_body_size=max_body_bytes + 64 * 1024,
        ident="nbq",
        clear_untrusted_proxy_headers=True,
    )
