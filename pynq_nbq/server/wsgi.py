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
  still sending), then those whose client does not read its answers (unsent output and
  nothing sent for :data:`STALL_S`), so a new client always gets in.  A connection whose
  request is being computed, or whose answer is flowing, is never evicted;
* a **pipelining cap** (issue 22): a connection may have at most ``max_pipelined``
  requests waiting (:data:`MAX_PIPELINED`); the ones beyond are dropped unread and the
  connection is closed once the kept ones are answered, so one packet of 200 pipelined
  ``GET /metrics`` costs 2 renders, not 200;
* a **write deadline** (``write_timeout_s``): a connection whose answers have waited
  unsent for that long (a client that does not read, or reads 64 bytes a second) is
  closed.

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
WRITE_TIMEOUT_S = 30  #: answers left unsent this long (the client does not read) close it (s)
MAX_PIPELINED = 2  #: requests one connection may have waiting; more are dropped, then close
STALL_S = 1.0  #: unsent output and nothing sent for this long: a stalled reader (s)


class _TimedParser(HTTPRequestParser):
    """waitress's request parser, stamped with when the request's first byte came."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.monotonic()


class _Channel(HTTPChannel):
    """waitress's channel with a cap on pipelined requests and the time its output has
    waited unsent (``unsent_since``, monotonic s; None while there is none)."""

    parser_class = _TimedParser
    max_pipelined = MAX_PIPELINED
    unsent_since: float | None = None
    capped = False  #: requests beyond the cap were dropped: close after the kept ones

    def received(self, data: bytes) -> bool:
        if self.capped:
            return False
        out = super().received(data)
        with self.requests_lock:
            if len(self.requests) > self.max_pipelined:
                del self.requests[self.max_pipelined :]
                # answer the kept ones, then close (waitress honours Connection: close)
                self.requests[-1].headers["CONNECTION"] = "close"
                self.request = None
                self.capped = True
        return out


class HardenedServer(TcpWSGIServer):
    """waitress's TCP server with a read deadline and eviction at the connection limit
    (see the module docstring).  Build it with :func:`make_server`."""

    channel_class = _Channel
    read_timeout_s: float = READ_TIMEOUT_S
    write_timeout_s: float = WRITE_TIMEOUT_S

    def maintenance(self, now: float) -> None:
        """waitress's idle check, plus: drop requests still arriving past the read
        deadline, and connections whose answers wait unsent past the write deadline."""
        super().maintenance(now)
        mono = time.monotonic()
        cutoff = mono - self.read_timeout_s
        for ch in list(self.active_channels.values()):
            req = ch.request
            if not ch.requests and req is not None and req.started < cutoff:
                ch.will_close = True
            if not ch.total_outbufs_len:
                ch.unsent_since = None
            elif ch.unsent_since is None:
                ch.unsent_since = mono
            elif mono - ch.unsent_since > self.write_timeout_s:
                # not will_close: that is acted on when the socket turns writable, which a
                # client that does not read never lets happen
                self.close_soon(ch)

    def close_soon(self, ch: HTTPChannel) -> None:
        """Close ``ch`` from the main loop right after its current poll (closing it while
        the loop is collecting sockets to poll would hand the poll a closed descriptor)."""
        if not getattr(ch, "closing_soon", False):
            ch.closing_soon = True
            ch.will_close = True
            self.trigger.pull_trigger(ch.handle_close)

    def readable(self) -> bool:
        if len(self._map) >= self.adj.connection_limit:
            self.evict()
        return super().readable()

    def evict(self) -> int:
        """Mark connections for closing, enough to get below the limit: first the least
        recently active ones not being answered (idle or still sending), then those whose
        client has stopped reading (unsent output, nothing sent for :data:`STALL_S`);
        return how many were marked."""
        chans = list(self.active_channels.values())
        closing = sum(1 for c in chans if c.will_close or c.close_when_flushed)
        excess = len(self._map) - self.adj.connection_limit + 1 - closing
        if excess <= 0:
            return 0
        open_ = [c for c in chans if not (c.will_close or c.close_when_flushed)]
        idle = [c for c in open_ if not (c.requests or c.total_outbufs_len)]
        idle.sort(key=lambda c: c.last_activity)
        stale = time.time() - STALL_S  # waitress stamps last_activity with time.time()
        stalled = [
            c for c in open_ if c.total_outbufs_len and c.last_activity < stale and c not in idle
        ]
        stalled.sort(key=lambda c: c.last_activity)
        victims = (idle + stalled)[:excess]
        for c in victims:
            if c.total_outbufs_len:
                self.close_soon(c)  # its socket will not turn writable
            else:
                c.will_close = True
        return len(victims)


def make_server(
    app: Flask,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = DEFAULT_THREADS,
    max_body_bytes: int = 8 * 1024 * 1024,
    connection_limit: int = CONNECTION_LIMIT,
    idle_timeout_s: int = IDLE_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    write_timeout_s: float = WRITE_TIMEOUT_S,
    max_pipelined: int = MAX_PIPELINED,
) -> HardenedServer:
    """A bound (not yet running) :class:`HardenedServer` for ``app``; ``port=0`` picks a
    free port (read it from ``server.effective_port``).  Raises OSError if the port is
    taken, ValueError for a limit below 1."""
    for name, v in (
        ("threads", threads),
        ("connection_limit", connection_limit),
        ("idle_timeout_s", idle_timeout_s),
        ("read_timeout_s", read_timeout_s),
        ("write_timeout_s", write_timeout_s),
        ("max_pipelined", max_pipelined),
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
    server.write_timeout_s = float(write_timeout_s)
    # a subclass per server, so that two servers in one process keep their own cap
    cap = int(max_pipelined)

    class Channel(_Channel):
        max_pipelined = cap

    server.channel_class = Channel
    return server
