"""The logic API's listening socket: a request header timeout and a connection cap.

aiohttp alone accepts as many connections as come and keeps one that never
finishes a request for its whole keep-alive timeout (an hour by default), long
before any API key is read: 1,300 idle connections under a 1,200-file limit once
left no open file for a WebSocket client or an API call. :class:`GuardedSite`
serves an aiohttp runner as ``web.TCPSite`` does, and puts each connection's aiohttp
protocol inside a :class:`_Guarded` one, which

- closes the connection when it has not sent a whole request header within
  ``header_timeout`` of connecting, or of the first byte of a later request on a
  kept-alive connection; bytes trickled one at a time (slowloris) do not extend it.
  Between requests, an idle kept-alive connection is aiohttp's own
  ``keepalive_timeout``'s;
- answers one connection more than ``limit`` at once with a 503 and a JSON body,
  and closes it gracefully: the FIN follows the answer, and what the client still
  sends is read and dropped (for up to ``REFUSAL_LINGER`` seconds), because closing
  a socket with unread bytes makes the kernel send a reset, which can destroy the
  answer before the client reads it.

A request's header is whole once aiohttp hands the request to the application: the
:func:`track_requests` middleware, which must come first in the application's list
(``GuardedSite`` checks), tells the connection, which stops its clock until the
answer is made. (Bytes of a next request that arrive while one is being answered, a
pipelining client's, start no clock: aiohttp's keep-alive timer, which runs from
the answer, bounds a header left unfinished among them.)

No per-connection timers: deadlines are stamped on the connections, and one timer
per site, armed at the earliest deadline, sweeps the connections past theirs (at most
``limit + REFUSALS_LINGERING``, so a sweep is cheap) and re-arms at the next one. A
timer is made at most once per header timeout however many requests come, and an
idle site has no wake-up.
"""

import asyncio
import json
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Literal, cast

from aiohttp import web
from yarl import URL

log = logging.getLogger("pushgate.api")

# A refused connection is read and dropped this long at most, and at most this
# many at once (beyond, one is closed as soon as its 503 is written).
REFUSAL_LINGER = 1.0
REFUSALS_LINGERING = 4

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What becomes of a new connection: served, or answered 503 and then read and
# dropped for a while, or answered 503 and closed at once.
Admission = Literal["serve", "linger", "close"]


def files_needed(limit: int) -> int:
    """Open files a site with this connection limit can hold at once."""
    return limit + REFUSALS_LINGERING


def refusal_response(what: str, limit: int) -> bytes:
    """The whole HTTP answer to a connection beyond the limit."""
    error = f"the {what} connection limit ({limit}) was reached; try again when a connection closes"
    body = (json.dumps({"ok": False, "error": error}) + "\n").encode()  # one JSON line
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "Retry-After: 1\r\n"
        "\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """The connections of one site, their deadlines, and the timer that enforces them.

    ``what`` names the server in the 503 and the log ("API", "metrics"); ``tripped``,
    when given, counts the header timeouts and the refusals under the options that
    set them (``pushgate_limits_tripped``)."""

    def __init__(
        self,
        limit: int,
        header_timeout: float,
        *,
        what: str,
        tripped: "Counter[str] | None" = None,
    ) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.what = what
        self._tripped = tripped
        self.refusal = refusal_response(what, limit)
        self.open: set[_Guarded] = set()
        self.refusing: set[_Guarded] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._full = False

    def protocol_factory(
        self, make: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        """The factory to serve with: each connection is ``make()``'s protocol, guarded."""
        self._loop = asyncio.get_running_loop()
        return lambda: _Guarded(self, make)

    def close_refusing(self) -> None:
        """Drop the refused connections still lingering (the site stops)."""
        for conn in list(self.refusing):
            conn.abort()

    # Called by the connections

    def admit(self, conn: "_Guarded") -> Admission:
        """What becomes of a new connection (its deadline is set accordingly)."""
        if len(self.open) < self.limit:
            self.open.add(conn)
            self.set_deadline(conn, self.header_timeout)
            return "serve"
        self._note_full()
        if len(self.refusing) >= REFUSALS_LINGERING:
            return "close"
        self.refusing.add(conn)
        self.set_deadline(conn, REFUSAL_LINGER)
        return "linger"

    def set_deadline(self, conn: "_Guarded", seconds: float) -> None:
        assert self._loop is not None
        conn.deadline = deadline = self._loop.time() + seconds
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = self._loop.call_at(deadline, self._sweep), deadline

    def forget(self, conn: "_Guarded") -> None:
        self.open.discard(conn)
        self.refusing.discard(conn)
        if len(self.open) < self.limit:
            self._full = False
        if not self.open and not self.refusing and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def timed_out(self, conn: "_Guarded") -> None:
        log.debug(
            "%s connection from %s closed: no whole request header in time", self.what, conn.peer
        )
        self._count("api_header_timeout")

    # The sweep

    def _sweep(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        later = []
        for conn in [*self.open, *self.refusing]:
            if conn.deadline is None:
                continue
            if conn.deadline <= now:
                conn.expire()
            else:
                later.append(conn.deadline)
        if later:
            earliest = min(later)
            self._timer, self._timer_at = self._loop.call_at(earliest, self._sweep), earliest

    def _note_full(self) -> None:
        self._count("max_api_connections")
        if not self._full:
            self._full = True
            log.warning(
                "the %s has %d connections open, its limit: answering more with 503 "
                "until some close",
                self.what,
                self.limit,
            )

    def _count(self, limit: str) -> None:
        if self._tripped is not None:
            self._tripped[limit] += 1


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol inside (once admitted), a deadline around."""

    __slots__ = ("_busy", "_guard", "_inner", "_make", "deadline", "transport")

    def __init__(self, guard: ConnectionGuard, make: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make = make
        self._inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        # When the connection is closed unless it has sent a whole header (or, when
        # refused, when it is closed anyway); None while a request is answered or
        # the connection is idle between requests.
        self.deadline: float | None = None
        self._busy = False

    @property
    def peer(self) -> object:
        return self.transport.get_extra_info("peername") if self.transport else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = transport = cast(asyncio.Transport, transport)
        admission = self._guard.admit(self)
        if admission == "serve":
            self._inner = self._make()
            self._inner.connection_made(transport)
            return
        transport.write(self._guard.refusal)
        if admission == "close" or not transport.can_write_eof():
            transport.close()  # too many lingering already: best effort
            return
        transport.write_eof()  # then read and drop until the client closes

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: dropped
        if self.deadline is None and not self._busy:
            self._guard.set_deadline(self, self._guard.header_timeout)  # a new request begins
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return False  # refused: the client has read the answer and closed
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.forget(self)
        self.deadline = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # Told by track_requests

    def request_started(self) -> None:
        self._busy, self.deadline = True, None

    def request_done(self) -> None:
        self._busy = False

    # Told by the sweep

    def expire(self) -> None:
        """The deadline has passed: close (a refused connection's lingering is over).
        It stops counting at once, not when the transport reports it gone."""
        self._guard.forget(self)
        self.deadline = None
        if self._inner is not None:
            self._guard.timed_out(self)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._guard.forget(self)
        self.deadline = None
        if self.transport is not None:
            self.transport.abort()


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stop the connection's header clock while its request is answered (see the
    module docstring). A request served by any other site passes untouched."""
    transport = request.transport
    conn = transport.get_protocol() if transport is not None else None
    if not isinstance(conn, _Guarded):
        return await handler(request)
    conn.request_started()
    try:
        return await handler(request)
    finally:
        conn.request_done()


class GuardedSite(web.BaseSite):
    """``web.TCPSite`` with every connection guarded by ``guard`` (module docstring).
    The runner's application must have :func:`track_requests` as its first middleware."""

    __slots__ = ("_guard", "_host", "_port", "_reuse_address", "_tls")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        backlog: int = 128,
        reuse_address: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        middlewares = list(runner.app.middlewares)
        if not middlewares or middlewares[0] is not track_requests:
            raise ValueError(
                "a GuardedSite's application must have track_requests as its first middleware"
            )
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_address = reuse_address
        self._guard = guard
        self._tls = tls

    @property
    def name(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return str(URL.build(scheme=scheme, host=self._host, port=self._port))

    @property
    def guard(self) -> ConnectionGuard:
        return self._guard

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            ssl=self._tls,
        )

    async def stop(self) -> None:
        await super().stop()
        self._guard.close_refusing()
