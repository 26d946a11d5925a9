"""The production WSGI server: waitress, one process, a pool of threads, hardened
against clients that hold connections.

One process on purpose: the device (FPGA or the simulated kernel) is a single resource
owned by the app's device thread; pre-forked workers would each try to own it.

waitress alone stops *accepting* at ``connection_limit`` open connections and drops a
connection only after ``channel_timeout`` seconds of silence, so 100 sockets that send
nothing, or a request body one byte a minute, lock everyone else out (issue 15).
:class:`HardenedServer` adds:

* a **request read deadline**: a request whose header and body are not complete
  ``read_timeout_s`` after its first byte is dropped, however steadily it trickles;
* **idle keep-alive connections** are dropped after ``idle_timeout_s``;
* **eviction at the limit**: at ``connection_limit`` the server does not stop accepting;
  it closes the least recently active connections that are not being answered (idle or
  still sending), so a new client always gets in.  Connections with a request being
  served or an answer being sent are never evicted.

waitress still reads a whole request before a thread sees it, so slow clients never
hold a request thread; only connections.
"""

from __future__ import annotations

import time

from flask import Flask
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

#: waitress threads: request threads decode/preprocess in parallel, then queue for the device
DEFAULT_THREADS = 16
CONNECTION_LIMIT = 100  #: open connections (waitress's default)
IDLE_TIMEOUT_S = 30  #: an idle keep-alive connection is closed after this (s)
READ_TIMEOUT_S = 30  #: a request must be fully received this long after its first byte (s)


class _TimedParser(HTTPRequestParser):
    """waitress's request parser, stamped with when the request's first byte came."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.monotonic()


class _Channel(HTTPChannel):
    parser_class = _TimedParser


class HardenedServer(TcpWSGIServer):
    """waitress's TCP server with a read deadline and eviction at the connection limit
    (see the module docstring).  Build it with :func:`make_server`."""

    channel_class = _Channel
    read_timeout_s: float = READ_TIMEOUT_S

    def maintenance(self, now: float) -> None:
        """waitress's idle check, plus: drop requests still arriving past the deadline."""
        super().maintenance(now)
        cutoff = time.monotonic() - self.read_timeout_s
        for ch in list(self.active_channels.values()):
            req = ch.request
            if not ch.requests and req is not None and req.started < cutoff:
                ch.will_close = True

    def readable(self) -> bool:
        if len(self._map) >= self.adj.connection_limit:
            self.evict()
        return super().readable()

    def evict(self) -> int:
        """Mark the least recently active connections not being answered for closing,
        enough to get below the limit; return how many were marked."""
        chans = list(self.active_channels.values())
        closing = sum(1 for c in chans if c.will_close or c.close_when_flushed)
        excess = len(self._map) - self.adj.connection_limit + 1 - closing
        if excess <= 0:
            return 0
        idle = [
            c
            for c in chans
            if not (c.requests or c.will_close or c.close_when_flushed or c.total_outbufs_len)
        ]
        idle.sort(key=lambda c: c.last_activity)
        for c in idle[:excess]:
            c.will_close = True
        return min(excess, len(idle))


def make_server(
    app: Flask,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = DEFAULT_THREADS,
    max_body_bytes: int = 8 * 1024 * 1024,
    connection_limit: int = CONNECTION_LIMIT,
    idle_timeout_s: int = IDLE_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> HardenedServer:
    """A bound (not yet running) :class:`HardenedServer` for ``app``; ``port=0`` picks a
    free port (read it from ``server.effective_port``).  Raises OSError if the port is
    taken, ValueError for a limit below 1."""
    for name, v in (
        ("threads", threads),
        ("connection_limit", connection_limit),
        ("idle_timeout_s", idle_timeout_s),
        ("read_timeout_s", read_timeout_s),
    ):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    adj = Adjustments(
        host=host,
        port=port,
        threads=threads,
        # waitress refuses bodies a little over the app's limit itself (before buffering);
        # the app answers 413 as JSON for anything between
        max_request_body_size=max_body_bytes + 64 * 1024,
        ident="nbq",
        clear_untrusted_proxy_headers=True,
        connection_limit=connection_limit,
        channel_timeout=int(idle_timeout_s),
        cleanup_interval=1,  # how often the deadlines above are checked (s)
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    (sockinfo,) = adj.listen[:1]
    server = HardenedServer(app, {}, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
    server.read_timeout_s = float(read_timeout_s)
    return server
