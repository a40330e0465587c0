"""One client connection: the asyncio edge around the websockets library's sans-I/O
``ServerProtocol`` (as :class:`~pushgate.wsprotocol.GatewayProtocol`).

Theory of operation
-------------------

A connection is a **transport** (this module, with its reading half in wsinput.py
and its writing half in wsoutput.py: WebSocket framing, budgets, backpressure,
timers), a **wire protocol** (pushgateproto.py: what the client says and is told)
and the **session core** (sessioncore.py, through the node: rooms, streams,
positions, resume). The one HTTP request the connection makes is answered by the
gateway's request hook (gatewayhttp.py), which says which protocol it speaks from
then on; the connection's lifecycle is one :class:`~pushgate.phase.Phase`. A
request for Server-Sent Events (``/events``) is not a WebSocket: the socket is
handed to the other transport (sseconnection.py), and this object is done.

Nothing ever awaits a client. Timers are not per connection: the gateway's sweeper
calls :meth:`WebSocketConnection.check_timers` when something of the connection may
be due (its timer wheel, timerwheel.py), a few times per shortest timeout at most.
Each check also parks the WebSocket parser of a connection that waits between frames
(wsprotocol.py: its state, about 600 bytes, is made again by the next read that
needs it); so does the handshake's answer.
"""

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from websockets.extensions.permessage_deflate import (
    ServerPerMessageDeflateFactory,
)
from websockets.protocol import State

from pushgate import speedups
from pushgate.backlog import WATCH_BYTES
from pushgate.connsettings import ConnectionSettings
from pushgate.connstate import Asking
from pushgate.framing import DEFLATE_LEVEL, text_frame
from pushgate.gatewayhttp import GatewayRoutes
from pushgate.ids import ConnId, RoomId
from pushgate.limits import ClientBudget
from pushgate.outbox import ConnectionRegistry, Outbox
from pushgate.phase import IN_HUB, Phase
from pushgate.pusherproto import PusherProtocol
from pushgate.pushgateproto import RESUME_MAX_MESSAGE_BYTES, PushgateProtocol
from pushgate.wire import (
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
)
from pushgate.wshandshake import PUSHGATE_OVER_WEBSOCKET, Handshake
from pushgate.wsinput import INPUT_PER_TURN, Input
from pushgate.wsoutput import Output
from pushgate.wsprotocol import new_protocol

if TYPE_CHECKING:
    from pushgate.clientops import Transport
    from pushgate.hub import Sink
    from pushgate.node import Node

__all__ = [
    "INPUT_PER_TURN",
    "RESUME_MAX_MESSAGE_BYTES",
    "ConnectionSettings",
    "WebSocketConnection",
]

log = logging.getLogger("pushgate.gateway")
# websockets logs every open and close at INFO; pushgate logs those itself at DEBUG.
_protocol_log = logging.getLogger("pushgate.websocket")

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


class WebSocketConnection(Handshake, Input, Output, asyncio.Protocol):
    """One client socket, from TCP accept to connection lost."""

    __slots__ = ()  # the slots are ConnectionState's

    def __init__(
        self,
        node: "Node",
        settings: ConnectionSettings,
        outbox: Outbox,
        registry: "ConnectionRegistry[Any]",  # the gateway's, of either transport
        routes: GatewayRoutes,
    ) -> None:
        self._node = node
        self._routes = routes
        self._admitted_ip: str | None = None  # set while counted by the gatekeeper
        self._asking: Asking | None = None  # while the connect hook decides
        ClientBudget.__init__(self, settings.input)  # what it sends (a base, not an object)
        self._settings = settings
        self._outbox = outbox
        self._registry = registry
        self._loop = asyncio.get_running_loop()
        self._proto = new_protocol(  # parked: its first read makes its parser
            max_size=settings.max_message_bytes,
            logger=_protocol_log,
            extensions=DEFLATE if settings.compression else None,
        )
        self._phase = Phase.HANDSHAKE
        self._client: PushgateProtocol | PusherProtocol | None = None  # once upgraded
        self._deflate_bits = 0  # the window of a negotiated permessage-deflate
        self.encoding = PUSHGATE_OVER_WEBSOCKET
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._head = 0
        self._fragments: list[bytes] | None = None  # the frames of a message in progress
        self._fragmented_text = False
        self.conn_id: ConnId | None = None  # set once the session core knows it
        self.ip = "?"
        self._held_bytes = 0  # fan-out bytes held while WELCOMING
        # True while this connection holds enough unsent to be in the output budget.
        self._backlogged = False
        self._handshake_bytes = 0  # bytes received before the handshake was answered
        self._unread = b""  # input left for the next turn of the loop (reading paused)
        # Clocks (loop.time())
        self.connected_at = self.last_seen = routes.now()
        self._pinged_at = 0.0
        self._abort_at: float | None = None  # closing: drop the TCP connection then
        self.sweep_tick: int | None = None

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
            # One string per address, not per connection (a proxy's are all one).
            self.ip = sys.intern(str(peer[0]))
        self._registry.add(self, self.connected_at)
        # Counted from the TCP accept: a handshake in progress holds a file too.
        refusal = self._routes.gatekeeper.admit(self.ip, self.connected_at)
        if refusal is None:
            self._admitted_ip = self.ip  # released in connection_lost
        else:
            self._refuse_at_accept(refusal)

    def data_received(self, data: bytes) -> None:
        self.last_seen = self._routes.now()
        if self._unread:  # read before reading paused: it waits its turn
            self._unread += data
            return
        self._take_input(data)

    def eof_received(self) -> bool | None:
        if self._asking is not None:  # gone before it was answered: nothing is owed
            self.abort()
            return None
        if self._unread:  # the rest of the input first, then the end of it
            self._take_input(self._take_unread())
        self._proto.receive_eof()
        self._write_protocol_output()
        return None  # the transport closes itself once its buffer is written

    def connection_lost(self, exc: Exception | None) -> None:
        asking, self._asking = self._asking, None
        if asking is not None:  # the connect hook's call is dropped, its place freed
            asking.task.cancel()
        self._leave_hub()
        self._phase = Phase.CLOSING
        self._pending.clear()
        self._unread = b""
        self._leave_budget()
        self._registry.discard(self)
        if self._admitted_ip is not None:
            self._routes.gatekeeper.release(self._admitted_ip)
            self._admitted_ip = None
        if self.conn_id is not None:
            close = self._proto.close_rcvd or self._proto.close_sent
            self._node.meters.closes[close.code if close is not None else 1006] += 1
            if log.isEnabledFor(logging.DEBUG):  # its arguments are made at once
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
        if self._client is not None:
            self._client.closed()
        self._client = None  # it holds this connection: no cycle left behind either

    # What the wire protocol asks of its transport (pushgateproto.Transport)

    @property
    def alive(self) -> bool:
        transport = self._transport
        return self._proto.state is State.OPEN and not (transport is None or transport.is_closing())

    def log_context(self, code: int | None = None) -> dict[str, object]:
        return self._context(code)

    def limit_message_size(self, size: int) -> None:
        self._proto.max_message_size = size

    def begin_resume(self) -> None:
        self._phase = Phase.RESUMING

    def enter_hub(self, *, held: bool) -> None:
        self._phase = Phase.WELCOMING if held else Phase.OPEN

    def reply(self, message: bytes) -> None:
        # Written by the outbox at the end of this turn, with whatever else the turn
        # sends this client: one write, and a client (often a sleeping one) woken once.
        pending = self._pending
        pending.append(text_frame(message))
        if len(pending) == 1:
            self._outbox.mark(self)

    def member(self, room: RoomId, joined: bool, reason: str) -> None:
        """Sink: the session core moved it; its protocol says so, or not."""
        if self._client is not None:
            self._client.member(room, joined, reason)

    def subscription_ends(self) -> dict[RoomId, float]:
        """sessioncore.TimedRooms: the rooms a token's grant opened, and their ends."""
        client = self._client
        return dict(client.expiring) if client is not None and client.expiring else {}

    # Closing

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the TCP connection is dropped after
        ``close_timeout`` if the client does not complete it."""
        if self._proto.state is State.OPEN:
            self._proto.send_close(code, reason)
            self._write_protocol_output()
        elif self._proto.state is State.CONNECTING and self._transport is not None:
            self._transport.abort()

    def check_timers(self, now: float) -> float:
        """Called by the gateway's sweeper: heartbeat, and every timeout. Returns when
        something may next be due (loop clock; timerwheel.py): only input delays
        that, and whatever brings a deadline closer tells the sweeper itself
        (:meth:`_abort_by`, :meth:`check_timers_by`)."""
        settings = self._settings
        state = self._proto.state
        abort_at = self._abort_at
        if abort_at is not None:
            if now < abort_at:
                return abort_at
            self.abort()
            return now + settings.close_timeout  # gone by then, unless its transport is not
        if state is State.OPEN:
            client = self._client
            if client is not None and client.expiring is not None:
                client.check_expiry(time.time())
            silent = now - self.last_seen
            if self._phase is Phase.AWAITING and now - self.connected_at >= (
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
            # Between frames, its parser waits without holding memory (wsprotocol.py).
            self._proto.park()
            return self._next_due(now)
        if state is State.CONNECTING:
            if now - self.connected_at < settings.handshake_timeout:
                return self.connected_at + settings.handshake_timeout
            log.info(
                "dropped %s: %s within %g s",
                self.peer,
                "no verdict of the connect hook" if self._asking else "no WebSocket handshake",
                settings.handshake_timeout,
                extra=self._context(),
            )
            self.abort()
        return now + settings.close_timeout  # closing: its abort time decides, once set

    def _next_due(self, now: float) -> float:
        """When an open connection's next timer is due: its close, its resume message,
        its heartbeat ping, its idle timeout, a subscription's end."""
        if self._abort_at is not None:
            return self._abort_at
        settings, last_seen = self._settings, self.last_seen
        due = last_seen + settings.idle_timeout
        if self._pinged_at < last_seen:  # not pinged since it was last heard
            due = min(due, last_seen + settings.ping_after)
        if self._phase is Phase.AWAITING:
            due = min(due, self.connected_at + settings.handshake_timeout)
        client = self._client
        if client is not None and client.expiring is not None:
            due = min(due, now + min(client.expiring.values()) - time.time())
        return due

    def check_timers_by(self, when: float) -> None:
        """Something is due at ``when`` (loop clock): the sweeper looks by then."""
        self._registry.check_by(self, when)

    def _abort_by(self, when: float) -> None:
        """Drop the TCP connection at ``when`` (loop clock) unless it is gone by then."""
        self._abort_at = when
        self._registry.check_by(self, when)

    def _write_protocol_output(self, *, hold: bool = False) -> None:
        """Write what the protocol wants sent, behind what is queued, and act on its
        state; with ``hold``, queue it first in line instead (see _answer)."""
        proto = self._proto
        end_of_stream = False
        for chunk in proto.data_to_send():
            if chunk:
                self._pending.append(chunk)
            else:
                end_of_stream = True
        if hold and proto.state is State.OPEN:
            self._head = len(self._pending)
            return
        if proto.state is not State.OPEN and self._phase is not Phase.CLOSING:
            self._closing()  # a closing connection owes nobody a welcome: all goes out
        self.flush()
        if self._abort_at is None and proto.close_expected():
            self._abort_by(self._loop.time() + self._settings.close_timeout)
        if end_of_stream and self._transport is not None:
            self._transport.close()  # after the buffered bytes are written

    def _closing(self) -> None:
        """The protocol left OPEN (a close sent or received, or an error): out of the
        hub at once, and say why when the protocol itself refused a frame."""
        proto = self._proto
        in_hub = self._phase in IN_HUB
        self._leave_hub()
        self._phase = Phase.CLOSING
        if in_hub and proto.parser_exc is not None and proto.close_sent is not None:
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

    def _leave_hub(self) -> None:
        if self._phase in IN_HUB and self.conn_id is not None:
            self._phase = Phase.CLOSING
            self._node.connection_closed(self.conn_id, self, ended=self._said_goodbye())

    def _said_goodbye(self) -> bool:
        """The client closed first, with 1000: it is done, and its session ends now
        instead of waiting --session-ttl for a resume that will not come (a drop, a
        timeout, 1001 or any other code keeps it)."""
        proto = self._proto
        rcvd = proto.close_rcvd
        return rcvd is not None and rcvd.code == CLOSE_NORMAL and bool(proto.close_rcvd_then_sent)

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


if TYPE_CHECKING:
    _: type[Sink] = WebSocketConnection
    __: type[Transport] = WebSocketConnection

# The compiled fan-out (speedups.py) does Output.send and Output.flush for this type
# in the common case, reading its slots by offset.
if speedups.BUILT is not None:
    speedups.BUILT.setup(WebSocketConnection, Outbox, Phase.OPEN)
