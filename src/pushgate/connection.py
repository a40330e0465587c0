"""One client's WebSocket connection: the asyncio edge around the websockets
library's sans-I/O ``ServerProtocol`` (as :class:`~pushgate.wsprotocol.GatewayProtocol`).

Theory of operation
-------------------

Bytes from the socket go to ``ServerProtocol.receive_data``; the events it parses
(the handshake request, then frames) are handled here, and whatever it wants to
send (handshake response, pongs to protocol pings, close frames) is written back.

Outgoing messages take two paths that share one per-connection queue, so order
is kept:

- **Fan-out** (:meth:`WebSocketConnection.send`, the hub's :class:`~pushgate.hub.Sink`):
  the frame bytes, already framed once for all recipients, are appended to the
  queue and the connection is marked in the :class:`Outbox`. Once per turn of the
  event loop the outbox writes each marked connection's queue in a single
  ``transport.write``: several pushes to one socket cost one system call.
- **Replies** (PONG, protocol output): appended to the same queue, which is
  written at once.

Backpressure is per connection and never waits: the transport's high-water mark
is the ``max_output_bytes`` limit, and when a client reads too slowly for the
bytes held for it to stay under it, ``pause_writing`` fires and that connection
alone is closed with 1008 (its close frame queued behind what it already has).
Nothing ever awaits a client.

Timers are not per connection: the gateway's sweeper calls :meth:`check_timers`
on every connection about four times per shortest timeout.
"""

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs

from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State

from pushgate import __version__
from pushgate.backlog import WATCH_BYTES
from pushgate.console import static_file
from pushgate.errors import BrokerUnavailable, ClientFrameError, SessionTaken
from pushgate.framing import DEFLATE_LEVEL, text_frame
from pushgate.gatekeeper import Admitted, Gatekeeper
from pushgate.ids import ConnId, new_conn_id
from pushgate.limits import ClientBudget, InputLimits
from pushgate.outbox import ConnectionRegistry, Outbox
from pushgate.security import Claims, Refusal
from pushgate.sessions import ANY_USER, AnyUser
from pushgate.streams import Position
from pushgate.wire import (
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SESSION_TAKEN,
    CLOSE_TRY_AGAIN_LATER,
    PONG,
    ResumeRequest,
    encode_welcome,
    parse_client_message,
    parse_resume,
)
from pushgate.wsprotocol import GatewayProtocol

if TYPE_CHECKING:
    from pushgate.hub import Sink
    from pushgate.node import Node

log = logging.getLogger("pushgate.gateway")
# websockets logs every open and close at INFO; pushgate logs those itself at DEBUG.
_protocol_log = logging.getLogger("pushgate.websocket")

ENDPOINT = "/connect"
ECHO_ENDPOINT = "/echo"
HEALTH_PATHS = ("/healthz", "/readyz")
BROWSER_CLIENT_PATH = "/static/pushgate.js"
# A resume message names every stream of its session: allow it more than other messages.
RESUME_MAX_MESSAGE_BYTES = 64 * 1024
# Resume states
NOT_RESUMING, AWAITING_RESUME, RESUMING = 0, 1, 2
# The resumes under way (each catches and logs its own failure).
_resumes: set["asyncio.Task[None]"] = set()
# An echo connection's largest message: Autobahn's case 9 sends up to 16 MiB.
ECHO_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_HEADER = f"pushgate/{__version__}"
PONG_FRAME = text_frame(PONG)
# Input is parsed this many bytes at a time, and the limits checked between slices:
# 4 KiB holds at most ~680 empty frames, so a flood is stopped within a millisecond.
INPUT_SLICE = 4 * 1024
# At most this much input of one connection is handled per turn of the event loop;
# the rest waits, its socket not read, until the next turn.
INPUT_PER_TURN = 64 * 1024
# A message may come in at most this many frames (the first and its continuations).
MAX_FRAGMENTS = 64
# A connection closed for holding too much of the process's output budget is
# dropped this soon if it does not read its close frame (it was not reading).
OVERFLOW_GRACE = 1.0
# A client answered with a refusal before its request was read is dropped this
# soon if it does not close (it normally does at once, once it read the answer).
REFUSAL_LINGER = 1.0
# The HTTP methods the gateway answers: a WebSocket upgrade is a GET; the side paths
# (health, pushgate.js, 404s) are read with GET or HEAD.
UPGRADE_METHODS = ("GET",)
READ_METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """What every connection of one gateway shares. Durations are in seconds."""

    # Heartbeat
    heartbeat: float  # the PING interval advertised to clients in the welcome frame
    ping_after: float  # send a protocol ping to a connection silent this long
    idle_timeout: float  # close a connection silent this long, with 1011
    # Timeouts
    handshake_timeout: float  # from TCP accept to a complete WebSocket handshake
    close_timeout: float  # from starting a close to dropping the TCP connection
    # Limits
    max_message_bytes: int  # a client message over this closes it with 1009
    max_output_bytes: int  # bytes held unsent for one client before it is closed with 1008
    # What one client may send (messages, frames, bytes per second); past it: 1008
    input: InputLimits = field(default_factory=InputLimits)
    max_handshake_bytes: int = 16 * 1024  # a larger handshake request is answered 431
    max_output_total_bytes: int = 0  # held unsent for all clients; past it, the largest go
    # Testing
    conformance_echo: bool = False  # serve /echo, which echoes every message (Autobahn)
    # permessage-deflate for clients that offer it, without context takeover both ways
    compression: bool = True


# permessage-deflate, offered by browsers and most clients. No context takeover on
# either side: a server message is compressed on its own, so once per push for every
# connection, and no connection keeps a zlib state (tens of KB) between messages.
DEFLATE = [
    ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        compress_settings={"level": DEFLATE_LEVEL},
    )
]

# Refused handshakes that are a limit tripping, and the option that sets the limit.
LIMIT_REFUSALS = {
    "server_full": "max_connections",
    "ip_limit": "max_connections_per_ip",
    "connect_rate": "max_connects_per_second",
    "ip_connect_rate": "max_connects_per_second_per_ip",
}


class WebSocketConnection(asyncio.Protocol):
    """One client socket, from TCP accept to connection lost."""

    # Slots, not a __dict__: tens of thousands of these are alive at once.
    __slots__ = (
        "_abort_at",
        "_accepting",
        "_admitted",
        "_admitted_ip",
        "_backlogged",
        "_budget",
        "_deflate_bits",
        "_echo",
        "_fragmented_text",
        "_fragments",
        "_gatekeeper",
        "_handshake_bytes",
        "_held",
        "_held_bytes",
        "_in_hub",
        "_loop",
        "_node",
        "_outbox",
        "_pending",
        "_pinged_at",
        "_proto",
        "_registry",
        "_resuming",
        "_settings",
        "_transport",
        "_unread",
        "conn_id",
        "connected_at",
        "ip",
        "last_seen",
        "peer",
    )

    def __init__(
        self,
        node: "Node",
        settings: ConnectionSettings,
        outbox: Outbox,
        registry: "ConnectionRegistry[WebSocketConnection]",
        gatekeeper: Gatekeeper | None = None,
    ) -> None:
        self._node = node
        self._gatekeeper = gatekeeper or Gatekeeper()
        self._admitted_ip: str | None = None  # set while counted by the gatekeeper
        self._budget = ClientBudget(settings.input)
        self._settings = settings
        self._outbox = outbox
        self._registry = registry
        self._loop = asyncio.get_running_loop()
        self._proto = GatewayProtocol(
            max_size=settings.max_message_bytes,
            logger=_protocol_log,
            extensions=DEFLATE if settings.compression else None,
        )
        self._deflate_bits = 0  # the window of a negotiated permessage-deflate
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        # The frames of a message in progress (None: none is)
        self._fragments: list[bytes] | None = None
        self._fragmented_text = False
        self._echo = False  # a --conformance-echo connection: echoes, no pushgate protocol
        self.conn_id: ConnId | None = None  # set once the handshake succeeds
        self.peer = self.ip = "?"
        # True while fan-out may queue frames here: open and not closing.
        self._accepting = False
        self._in_hub = False
        # True while the welcome (and all after it) waits for the wsId to be findable.
        self._held = False
        self._held_bytes = 0
        # True while this connection holds enough unsent to be in the output budget.
        self._backlogged = False
        # Bytes received before the handshake was answered (bounded).
        self._handshake_bytes = 0
        # Input received but left for the next turn of the loop (reading is paused).
        self._unread = b""
        # A connection opened with ?resume=1 waits for its resume message, then resumes.
        self._resuming = NOT_RESUMING
        self._admitted: Admitted | None = None  # what the gatekeeper said, for a resume
        # Clocks (loop.time())
        self.connected_at = self.last_seen = self._loop.time()
        self._pinged_at = 0.0
        self._abort_at: float | None = None  # closing: drop the TCP connection then

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        # Past this much held, the connection is watched by the output budget (and
        # its own bound checked on each write).
        transport.set_write_buffer_limits(high=min(WATCH_BYTES, self._settings.max_output_bytes))
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.ip = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        self._registry.add(self)
        # Counted from the TCP accept: a handshake in progress holds a file too.
        refusal = self._gatekeeper.admit(self.ip, self.connected_at)
        if refusal is None:
            self._admitted_ip = self.ip  # released in connection_lost
        else:
            self._refuse_at_accept(refusal)

    def data_received(self, data: bytes) -> None:
        self.last_seen = self._loop.time()
        if self._unread:  # read before reading paused: it waits its turn
            self._unread += data
            return
        self._take_input(data)

    def eof_received(self) -> bool | None:
        if self._unread:  # the rest of the input first, then the end of it
            self._take_input(self._take_unread())
        self._proto.receive_eof()
        self._write_protocol_output()
        return None  # the transport closes itself once its buffer is written

    def connection_lost(self, exc: Exception | None) -> None:
        self._accepting = False
        self._pending.clear()
        self._unread = b""
        self._leave_hub()
        self._leave_budget()
        self._registry.discard(self)
        if self._admitted_ip is not None:
            self._gatekeeper.release(self._admitted_ip)
            self._admitted_ip = None
        if self.conn_id is not None:
            close = self._proto.close_rcvd or self._proto.close_sent
            self._node.meters.closes[close.code if close is not None else 1006] += 1
            log.debug(
                "closed %s from %s (%s)",
                self.conn_id,
                self.peer,
                self._close_summary(),
                extra=self._context(),
            )
        # The protocol's parser is a generator suspended inside a method of the
        # protocol, so the protocol holds a frame that holds the protocol; a connection
        # that ended without a close frame also left the parser's EOFError, whose
        # traceback holds the same. Those reference cycles only a full garbage
        # collection would free; broken here, the connection is freed by reference
        # counting alone, which keeps frozen objects (pushgate.gcpolicy) from leaking.
        self._proto.parser.close()
        self._proto.parser_exc = None

    def pause_writing(self) -> None:
        """The transport holds more than WATCH_BYTES for this client: from now on its
        own bound is checked on each write, and it counts in the output budget."""
        if self._accepting and not self._backlogged:
            self._backlogged = True
            self._outbox.budget.watch(self)
            self._check_output_bound()

    def resume_writing(self) -> None:
        """It drained: it holds little again."""
        self._leave_budget()

    # Input

    def _take_input(self, data: bytes) -> None:
        """Parse ``data`` a slice at a time, checking the limits between slices; at
        most INPUT_PER_TURN bytes now, the rest on the next turns of the loop."""
        proto = self._proto
        if (
            proto.state is State.CONNECTING
            and not proto.eof_sent  # not answered yet (a refusal discards what follows)
            and not self._handshake_fits(len(data))
        ):
            return
        if len(data) > INPUT_PER_TURN and self._transport is not None:
            data, self._unread = data[:INPUT_PER_TURN], data[INPUT_PER_TURN:]
            self._transport.pause_reading()
            self._loop.call_soon(self._read_on)
        try:
            for start in range(0, len(data), INPUT_SLICE):
                chunk = data[start : start + INPUT_SLICE]
                proto.receive_data(chunk)
                if not self._on_events(proto.events_received(), chunk):
                    break
        except Exception:
            # A bug here must cost this connection only, and say so.
            log.exception("internal error on the connection from %s; closing it", self.peer)
            if proto.state is State.OPEN:
                proto.fail(CLOSE_INTERNAL_ERROR, "internal error")
            elif self._transport is not None:
                self._transport.abort()
        self._write_protocol_output()

    def _on_events(self, events: list[Request | Response | Frame], chunk: bytes) -> bool:
        """Handle one slice's events; False once the connection should read no more."""
        if self._abort_at is None and not self._echo and self._proto.state is State.OPEN:
            frames = len(events) - (1 if events and isinstance(events[0], Request) else 0)
            now, limits = self._loop.time(), self._settings.input
            over = self._budget.received(now, frames, len(chunk), limits)
            if over is not None:
                self._limit_close(*over)
                return False
        for event in events:
            if isinstance(event, Frame):
                self._on_frame(event)
            elif isinstance(event, Request):
                # Nothing came after the request: the parser waits at a frame boundary.
                boundary = len(events) == 1 and chunk.endswith(b"\r\n\r\n")
                self._on_handshake(event, at_frame_boundary=boundary)
            if self._proto.state is not State.OPEN and self._proto.state is not State.CONNECTING:
                return False  # closing: what came after the close (or the error) is moot
        return True

    def _read_on(self) -> None:
        """The next turn: take the next part of what was left, and read again once
        nothing is left."""
        transport = self._transport
        if transport is None or transport.is_closing():
            self._unread = b""
            return
        self._take_input(self._take_unread())
        if not self._unread and not transport.is_closing() and not self._proto.eof_sent:
            transport.resume_reading()

    def _take_unread(self) -> bytes:
        data, self._unread = self._unread, b""
        return data

    def _handshake_fits(self, size: int) -> bool:
        """Count bytes received before the handshake is answered; past the bound,
        answer 431 without parsing them."""
        self._handshake_bytes += size
        limit = self._settings.max_handshake_bytes
        if self._handshake_bytes <= limit:
            return True
        self._node.meters.limits["max_handshake_bytes"] += 1
        self._gatekeeper.refusals.refused(
            "handshake_size",
            f"answered a connection from {self.peer} with 431: handshake over {limit} bytes",
            self._loop.time(),
        )
        self._answer_and_linger(
            self._proto.reject(
                431, f"Request Header Fields Too Large: over {limit} bytes of handshake\n"
            )
        )
        return False

    def _refuse_at_accept(self, refusal: Refusal) -> None:
        """Over a connection limit at the TCP accept: answer the refusal at once, stop
        sending, and let the client close (it reads the answer first); dropped after
        the close timeout if it does not. Never parsed, never counted."""
        self._count_refusal(refusal)
        self._answer_and_linger(self._proto.reject(refusal.status, refusal.reason + "\n"))

    def _answer_and_linger(self, response: Response) -> None:
        """Answer an HTTP request that was not (or not all) read, then send nothing
        more and read nothing more, and drop the connection REFUSAL_LINGER seconds
        later: closing a socket at once, with input unread, would reset the
        connection and the client could lose the answer; reading on would let a
        client that keeps sending (a never-ending handshake) cost the loop."""
        response.headers["Server"] = SERVER_HEADER
        self._proto.send_response(response)  # the parser now discards all input
        transport = self._transport
        assert transport is not None
        for chunk in self._proto.data_to_send():
            if chunk:
                transport.write(chunk)
        if transport.can_write_eof():
            transport.write_eof()
        transport.pause_reading()
        self._unread = b""
        self._abort_at = self._loop.time() + min(REFUSAL_LINGER, self._settings.close_timeout)

    def _count_refusal(self, refusal: Refusal) -> None:
        meters = self._node.meters
        meters.refused[refusal.kind] += 1
        if refusal.kind in LIMIT_REFUSALS:
            meters.limits[LIMIT_REFUSALS[refusal.kind]] += 1
        self._gatekeeper.refusals.refused(
            refusal.kind,
            f"refused a connection from {self.peer}: {refusal.reason}",
            self._loop.time(),
        )

    def _limit_close(self, limit: str, reason: str) -> None:
        """Close this connection (1008) for passing one of its input limits."""
        self._node.meters.limits[limit] += 1
        log.info(
            "closing %s from %s: %s",
            self.conn_id,
            self.peer,
            reason,
            extra=self._context(CLOSE_POLICY_VIOLATION),
        )
        self._proto.fail(CLOSE_POLICY_VIOLATION, reason)

    # Output

    def unsent(self) -> int:
        """Bytes held for this client, not yet taken by the kernel."""
        transport = self._transport
        held = self._held_bytes
        return held if transport is None else held + transport.get_write_buffer_size()

    def overflow(self, reason: str) -> None:
        """The process's output budget closes this connection (1008); it is dropped
        OVERFLOW_GRACE seconds later if it does not read its close frame."""
        self._node.meters.limits["max_output_total_bytes"] += 1
        self._stop_output(reason, OVERFLOW_GRACE)

    def _check_output_bound(self) -> None:
        limit = self._settings.max_output_bytes
        if self.unsent() > limit:
            self._node.meters.limits["max_output_bytes"] += 1
            self._stop_output(f"slow consumer: over {limit} bytes unsent", None)

    def _stop_output(self, reason: str, grace: float | None) -> None:
        """No more fan-out to this client, from this instant; close it with 1008 on
        the next turn of the loop (not from inside a write), its close frame queued
        behind what it already has, so that a client that is merely slow learns why."""
        if not self._accepting:
            return
        self._accepting = False
        self._leave_budget()
        log.info(
            "closing %s from %s: %s",
            self.conn_id,
            self.peer,
            reason,
            extra=self._context(CLOSE_POLICY_VIOLATION),
        )
        self._loop.call_soon(self._close_with_grace, CLOSE_POLICY_VIOLATION, reason, grace)

    def _close_with_grace(self, code: int, reason: str, grace: float | None) -> None:
        self.close(code, reason)
        if grace is not None and self._abort_at is not None:
            self._abort_at = min(self._abort_at, self._loop.time() + grace)

    def _leave_budget(self) -> None:
        if self._backlogged:
            self._backlogged = False
            self._outbox.budget.forget(self)

    # Sink: fan-out

    def send(self, frame: bytes) -> None:
        """Queue a frame; the outbox writes it on this turn of the event loop."""
        if self._accepting:
            if self._deflate_bits:
                frame = self._outbox.deflated(frame, self._deflate_bits)
            pending = self._pending
            pending.append(frame)
            if len(pending) == 1:
                self._outbox.mark(self)
            if self._held:  # held output counts against the same bound
                self._held_bytes += len(frame)
                if self._held_bytes > self._settings.max_output_bytes:
                    self._check_output_bound()

    def flush(self) -> None:
        """Write everything queued for this connection in one write."""
        pending = self._pending
        if not pending or self._held:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            pending.clear()
            return
        frames = len(pending)
        data = pending[0] if frames == 1 else b"".join(pending)
        pending.clear()
        transport.write(data)
        if self._backlogged:  # it holds more than a little: within its own bound?
            self._check_output_bound()
        meters = self._outbox.meters
        if meters is not None:
            meters.writes += 1
            meters.frames_written += frames
            meters.bytes_written += len(data)

    # Closing

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the TCP connection is dropped after
        ``close_timeout`` if the client does not complete it."""
        if self._proto.state is State.OPEN:
            self._proto.send_close(code, reason)
            self._write_protocol_output()
        elif self._proto.state is State.CONNECTING and self._transport is not None:
            self._transport.abort()

    def check_timers(self, now: float) -> None:
        """Called by the gateway's sweeper: heartbeat, and every timeout."""
        settings = self._settings
        state = self._proto.state
        if self._abort_at is not None:
            if now >= self._abort_at:
                self.abort()
        elif state is State.OPEN:
            silent = now - self.last_seen
            if self._resuming == AWAITING_RESUME and now - self.connected_at >= (
                settings.handshake_timeout
            ):
                log.info(
                    "closing %s: no resume message within the handshake timeout",
                    self.peer,
                    extra=self._context(),
                )
                self.close(CLOSE_POLICY_VIOLATION, "expected a resume message first")
            elif silent >= settings.idle_timeout:
                log.info(
                    "closing %s from %s: heartbeat timeout, silent for %.1f s",
                    self.conn_id,
                    self.peer,
                    silent,
                    extra=self._context(),
                )
                self.close(CLOSE_HEARTBEAT_TIMEOUT, f"heartbeat timeout: silent for {silent:.0f} s")
            elif silent >= settings.ping_after and self._pinged_at < self.last_seen:
                self._pinged_at = now
                self._proto.send_ping(b"")
                self._write_protocol_output()
        elif state is State.CONNECTING and now - self.connected_at >= settings.handshake_timeout:
            log.info(
                "dropped %s: no WebSocket handshake within %g s",
                self.peer,
                settings.handshake_timeout,
                extra=self._context(),
            )
            self.abort()

    # Internals

    def _on_handshake(self, request: Request, *, at_frame_boundary: bool = False) -> None:
        """Route the one HTTP request a connection makes, answer it, and open."""
        proto = self._proto
        path = request.path.partition("?")[0]
        admitted = None
        if "Host" not in request.headers:  # RFC 9112 3.2: a request without one is a 400
            response = proto.reject(400, "Bad Request: no Host header\n")
        elif request.method not in _allowed_methods(path):
            allowed = ", ".join(_allowed_methods(path))
            response = proto.reject(405, f"Method Not Allowed: {path} answers {allowed}\n")
            response.headers["Allow"] = allowed
        elif path == ENDPOINT:
            response, admitted = self._admit(request)
        elif path == ECHO_ENDPOINT and self._settings.conformance_echo:
            response = proto.accept(request)
            self._echo = response.status_code == 101
        elif path in HEALTH_PATHS:
            response = self._health(path)
        elif path == BROWSER_CLIENT_PATH:
            response = self._browser_client()
        else:
            response = proto.reject(404, f"Not Found: the WebSocket endpoint is {ENDPOINT}\n")
        response.headers["Server"] = SERVER_HEADER
        if request.method == "HEAD":
            response.body = b""  # its headers, Content-Length included, as for a GET
        proto.send_response(response)
        self._write_protocol_output()  # the 101 goes out before the welcome frame
        for extension in proto.extensions:
            if isinstance(extension, PerMessageDeflate):
                self._deflate_bits = extension.local_max_window_bits
        if response.status_code != 101:
            log.debug(
                "answered %s from %s with %d",
                path,
                self.peer,
                response.status_code,
                extra=self._context(),
            )
            return
        if at_frame_boundary and not proto.reader.buffer:
            self._forget_request()
        if self._echo:
            proto.max_message_size = ECHO_MAX_MESSAGE_BYTES
            if self._transport is not None:  # a test peer, not a client: no output bound
                self._transport.set_write_buffer_limits(high=2**30)
        elif admitted is not None:
            if "resume" in parse_qs(request.path.partition("?")[2]):
                # The client speaks first: its resume message (see _on_message).
                self._resuming = AWAITING_RESUME
                self._admitted = admitted
                self._held = True
                proto.max_message_size = max(
                    self._settings.max_message_bytes, RESUME_MAX_MESSAGE_BYTES
                )
            else:
                self._open(admitted.claims)

    def _forget_request(self) -> None:
        """Let the handshake request go: websockets' server parser keeps it (with its
        headers, a dozen objects) in its frame for the life of the connection. A
        fresh frame parser, started where the old one waits (between frames, checked
        by the caller), parses the same stream without it: about 1.5 KB and 14
        garbage-collected objects less per connection."""
        proto = self._proto
        proto.parser = Protocol.parse(proto)
        next(proto.parser)

    def _admit(self, request: Request) -> tuple[Response, Admitted | None]:
        """A valid upgrade to /connect goes to the gatekeeper; refused, it gets the
        gatekeeper's status and reason and no WebSocket."""
        response = self._proto.accept(request)
        if response.status_code != 101:
            return response, None
        verdict = self._gatekeeper.check(request)
        if isinstance(verdict, Refusal):
            self._count_refusal(verdict)
            return self._proto.reject(verdict.status, verdict.reason + "\n"), None
        if verdict.subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = verdict.subprotocol
        return response, verdict

    def _open(self, claims: Claims | None, reason: str | None = None) -> None:
        """Register the new connection (a new session) and queue its welcome first."""
        conn_id = self.conn_id = new_conn_id()
        self._accepting = self._in_hub = True  # before registering: a failure must unregister
        opened = self._node.connection_opened(
            conn_id,
            self,
            user=claims.user if claims else None,
            rooms=claims.rooms if claims else (),
        )
        welcome = encode_welcome(
            conn_id, self._settings.heartbeat, session=opened.token, reason=reason
        )
        self._pending.insert(0, text_frame(welcome))
        registered = opened.ready
        if registered is not None and not registered.done():
            # In a cluster: send the welcome once other nodes can find the wsId, or
            # after the handshake timeout anyway, so a client never waits on a lost broker.
            self._held = True
            timer = self._loop.call_later(self._settings.handshake_timeout, self._release)

            def on_registered(_: "asyncio.Future[None]") -> None:
                timer.cancel()
                self._release()

            registered.add_done_callback(on_registered)
        log.debug("opened %s from %s", conn_id, self.peer, extra=self._context())

    def _start_resume(self, data: bytes) -> None:
        """The first message of a ?resume=1 connection: resume the session it names."""
        self._proto.max_message_size = self._settings.max_message_bytes
        try:
            request = parse_resume(parse_client_message(data))
        except ClientFrameError as exc:
            log.info(
                "closing %s: %d %s", self.peer, exc.code, exc.reason, extra=self._context(exc.code)
            )
            self._proto.fail(exc.code, exc.reason)
            return
        self._resuming = RESUMING
        task = self._loop.create_task(self._resume(request))
        _resumes.add(task)  # the loop holds tasks weakly
        task.add_done_callback(_resumes.discard)

    async def _resume(self, request: ResumeRequest) -> None:
        node, admitted = self._node, self._admitted
        claims = admitted.claims if admitted else None
        since = {stream: Position(e, s) for stream, (e, s) in request.since.items()}
        # Where tokens are verified, a session resumes only for its own user, and a
        # session of a user never for a connection without one (docs/security.md).
        user: str | AnyUser | None = ANY_USER
        if admitted is not None and admitted.verified:
            user = claims.user if claims else None
        self.conn_id = request.ws_id
        try:
            resumed = await node.resume(request.ws_id, request.session, since, self, user)
        except SessionTaken:
            log.info(
                "resume of %s from %s lost to a later one",
                request.ws_id,
                self.peer,
                extra=self._context(CLOSE_SESSION_TAKEN),
            )
            self.close(CLOSE_SESSION_TAKEN, "session resumed by another connection")
            return
        except BrokerUnavailable as exc:
            log.info(
                "resume of %s from %s failed: %s",
                request.ws_id,
                self.peer,
                exc,
                extra=self._context(),
            )
            self.close(CLOSE_TRY_AGAIN_LATER, "cannot resume now; retry")
            return
        except Exception:  # a bug must cost this connection only, and say so
            log.exception("resume of %s from %s failed; closing it", request.ws_id, self.peer)
            self.close(CLOSE_INTERNAL_ERROR, "internal error")
            return
        finally:
            self._resuming = NOT_RESUMING
        transport = self._transport
        alive = self._proto.state is State.OPEN and not (
            transport is None or transport.is_closing()
        )
        if resumed is None:
            self.conn_id = None
            if alive:
                log.info(
                    "%s could not resume %s: unknown session",
                    self.peer,
                    request.ws_id,
                    extra=self._context(),
                )
                self._held = False
                self._open(claims, reason="session expired, unknown, or not yours")
            return
        if not alive:  # it went while resuming: the session waits again
            node.connection_closed(request.ws_id, self)
            return
        welcome = encode_welcome(
            request.ws_id,
            self._settings.heartbeat,
            session=request.session,
            resumed=True,
            streams=resumed.streams,
        )
        self._pending[:0] = [text_frame(welcome), *map(text_frame, resumed.frames)]
        self._accepting = self._in_hub = True
        recovered = all(r.recovered for r in resumed.streams.values())
        log.debug(
            "resumed %s from %s: %d pushes replayed, %s",
            request.ws_id,
            self.peer,
            len(resumed.frames),
            "recovered" if recovered else "NOT recovered",
            extra=self._context(),
        )
        self._release()

    def _health(self, path: str) -> Response:
        """``/healthz``: the process serves. ``/readyz``: and its broker is ready."""
        ready = path == "/healthz" or self._node.ready
        status = "serving" if path == "/healthz" else ("ready" if ready else "not ready")
        body = json.dumps({"ok": ready, "status": status}, separators=(",", ":"))
        response = self._proto.reject(200 if ready else 503, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _browser_client(self) -> Response:
        """pushgate.js, so a page can import the client from the gateway it talks to."""
        body, content_type = static_file("pushgate.js")
        response = self._proto.reject(200, "")
        response.body = body
        for name, value in (
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
        ):
            del response.headers[name]
            response.headers[name] = value
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    def _release(self) -> None:
        if self._held:
            self._held, self._held_bytes = False, 0
            self.flush()

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._on_message(bytes(frame.data), opcode is Opcode.TEXT)
            else:
                self._fragments = [bytes(frame.data)]
                self._fragmented_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            # The protocol has checked that a fragmented message is in progress.
            fragments = self._fragments
            assert fragments is not None
            fragments.append(bytes(frame.data))
            if frame.fin:
                self._fragments = None
                self._on_message(b"".join(fragments), self._fragmented_text)
            elif len(fragments) >= MAX_FRAGMENTS and not self._echo:
                # Empty continuation frames add no bytes: without this bound a
                # message that never ends would grow this list without limit.
                self._fragments = None
                self._node.meters.limits["max_message_fragments"] += 1
                reason = f"message too big: over {MAX_FRAGMENTS} frames"
                log.info(
                    "closing %s from %s: %s",
                    self.conn_id,
                    self.peer,
                    reason,
                    extra=self._context(CLOSE_MESSAGE_TOO_BIG),
                )
                self._proto.fail(CLOSE_MESSAGE_TOO_BIG, reason)

    def _on_message(self, data: bytes, is_text: bool) -> None:
        if self._proto.state is not State.OPEN:
            return  # a close or an error earlier in the same read
        if self._echo:
            self._echo_message(data, is_text)
            return
        if self._resuming == AWAITING_RESUME:
            self._start_resume(data)
            return
        limits = self._settings.input
        if self._budget.message(self._loop.time(), limits):
            self._limit_close(
                "max_messages_per_second",
                f"rate limit: over {limits.messages_per_second} messages per second",
            )
            return
        try:
            message = parse_client_message(data)
        except ClientFrameError as exc:
            log.info(
                "closing %s from %s: %d %s",
                self.conn_id,
                self.peer,
                exc.code,
                exc.reason,
                extra=self._context(exc.code),
            )
            self._proto.fail(exc.code, exc.reason)
            return
        if message.is_heartbeat:
            self._pending.append(PONG_FRAME)
        # Other types are ignored: room for client messages of later versions.

    def _echo_message(self, data: bytes, is_text: bool) -> None:
        """--conformance-echo: send the message back as it came, once checked."""
        if is_text:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                # RFC 6455 section 8.1: text must be UTF-8.
                self._proto.fail(CLOSE_INVALID_DATA, f"invalid UTF-8 at byte {exc.start}")
                return
            self._proto.send_text(data)
        else:
            self._proto.send_binary(data)

    def _write_protocol_output(self) -> None:
        """Write what the protocol wants sent, behind what is queued, and act on its state."""
        proto = self._proto
        end_of_stream = False
        for chunk in proto.data_to_send():
            if chunk:
                self._pending.append(chunk)
            else:
                end_of_stream = True
        if proto.state is not State.OPEN:
            self._held = False  # a closing connection owes nobody a welcome
        self.flush()
        if proto.state is not State.OPEN and self._in_hub:
            self._accepting = False
            self._leave_hub()
            if proto.parser_exc is not None and proto.close_sent is not None:
                # The protocol itself refused a frame (too big: 1009; malformed: 1002).
                if proto.close_sent.code == 1009:
                    self._node.meters.limits["max_message_bytes"] += 1
                log.info(
                    "closing %s from %s: %d %s",
                    self.conn_id,
                    self.peer,
                    proto.close_sent.code,
                    proto.close_sent.reason,
                    extra=self._context(proto.close_sent.code),
                )
        if self._abort_at is None and proto.close_expected():
            self._abort_at = self._loop.time() + self._settings.close_timeout
        if end_of_stream and self._transport is not None:
            self._transport.close()  # after the buffered bytes are written

    def _leave_hub(self) -> None:
        if self._in_hub and self.conn_id is not None:
            self._in_hub = False
            self._node.connection_closed(self.conn_id, self)

    def abort(self) -> None:
        """Drop the TCP connection now, discarding anything unsent."""
        if self._transport is not None:
            self._transport.abort()

    def _context(self, code: int | None = None) -> dict[str, object]:
        """The fields a JSON log line carries for this connection (logformat.py): the
        close ``code`` given, or the one already exchanged."""
        if code is None:
            close = self._proto.close_sent or self._proto.close_rcvd
            code = close.code if close is not None else None
        return {"wsId": self.conn_id, "remote": self.peer, "code": code}

    def _close_summary(self) -> str:
        proto = self._proto
        if proto.close_rcvd is not None:
            return f"client sent {proto.close_rcvd.code}"
        if proto.close_sent is not None:
            return f"server sent {proto.close_sent.code}"
        return "no close frame"


def _allowed_methods(path: str) -> tuple[str, ...]:
    return UPGRADE_METHODS if path in (ENDPOINT, ECHO_ENDPOINT) else READ_METHODS


if TYPE_CHECKING:
    _: type[Sink] = WebSocketConnection
