"""The one HTTP request of a WebSocket connection, answered: the handshake's
response, then the wire protocol the connection speaks from then on (pushgate's,
Pusher's, the conformance echo), or the socket handed to a Server-Sent Events
stream (sseconnection.py). A part of :class:`~pushgate.connection.WebSocketConnection`
(as wsinput.py and wsoutput.py are), over the state in connstate.py.

The request itself is judged by the gateway's request hook (gatewayhttp.py); with
``--connect-hook``, the answer waits for the hook's verdict (:meth:`_decided`).
"""

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame
from websockets.http11 import Request, Response
from websockets.protocol import State

from pushgate.connstate import Asking, ConnectionState
from pushgate.framing import text_frame
from pushgate.gatekeeper import Admitted
from pushgate.gatewayhttp import Upgrade
from pushgate.hub import Encoding
from pushgate.phase import Phase
from pushgate.plainupgrade import parse_plain_upgrade, switching_protocols
from pushgate.pusherproto import PusherProtocol
from pushgate.pusherwire import encode_push as pusher_encode
from pushgate.pushgateproto import PushgateProtocol, encode
from pushgate.security import Refusal
from pushgate.sseconnection import SseConnection
from pushgate.ssequery import SseStart
from pushgate.wire import CLOSE_INTERNAL_ERROR

if TYPE_CHECKING:
    from pushgate.clientops import Transport

log = logging.getLogger("pushgate.gateway")

# The pushgate protocol over WebSocket: its messages in text frames.
PUSHGATE_OVER_WEBSOCKET = Encoding(
    "pushgate over WebSocket", encode, text_frame, "pushgate", "websocket"
)
# Pusher's protocol over WebSocket: each push as a Pusher event, in a text frame.
PUSHER_OVER_WEBSOCKET = Encoding(
    "pusher over WebSocket", pusher_encode, text_frame, "pusher", "websocket"
)
# An echo connection's largest message: Autobahn's case 9 sends up to 16 MiB.
ECHO_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class Handshake(ConnectionState):
    """Answer the handshake, and start the protocol it upgrades to."""

    __slots__ = ()

    if TYPE_CHECKING:  # the connection's own (connection.py); not stubs here, which
        # would come before them in its method order

        def _write_protocol_output(self, *, hold: bool = False) -> None: ...

        def _context(self, code: int | None = None) -> dict[str, object]: ...

        def abort(self) -> None: ...

        # The reading half's (wsinput.py)
        def _take_input(self, data: bytes) -> None: ...

        def _on_events(self, events: list[Request | Response | Frame], chunk: bytes) -> bool: ...

    def _on_handshake(self, request: Request) -> None:
        """Answer the one HTTP request a connection makes, then speak its protocol;
        or, when the connect hook decides, wait for its verdict (``_asking``: what
        the client sends meanwhile waits too, within --max-handshake-bytes)."""
        response, upgrade = self._routes.answer(self._proto, request, self.peer, self._loop.time())
        if upgrade is not None and upgrade.deciding is not None:
            self._asking = Asking(upgrade.deciding, request, response, upgrade)
            upgrade.deciding.add_done_callback(self._decided)
            return
        self._answer(request, response, upgrade)

    def _decided(self, task: "asyncio.Task[Admitted | Refusal]") -> None:
        """The connect hook's verdict: answer the handshake with it, then take what
        the client sent meanwhile."""
        asking = self._asking
        if asking is None or asking.task is not task:
            return  # the client went, or was answered otherwise (431)
        self._asking = None
        if task.cancelled():  # the gateway stops
            self.abort()
            return
        try:
            verdict = task.result()
            if isinstance(verdict, Refusal):
                now = self._loop.time()
                response = self._routes.hook_refusal(self._proto, verdict, self.peer, now)
                self._answer(asking.request, response, None)  # what was held is moot
            else:
                upgrade = replace(asking.upgrade, admitted=verdict, deciding=None)
                self._answer(asking.request, asking.response, upgrade)
                held: list[Request | Response | Frame] = [*asking.frames]
                if (not held or self._on_events(held, b"")) and asking.data:
                    self._take_input(asking.data)
        except Exception:  # a bug must cost this connection only, and say so
            log.exception("internal error on the connection from %s; closing it", self.peer)
            if self._proto.state is State.OPEN:
                self._proto.fail(CLOSE_INTERNAL_ERROR, "internal error")
            else:
                self.abort()
        self._write_protocol_output()

    def _answer(
        self,
        request: Request,
        response: Response,
        upgrade: Upgrade | None,
    ) -> None:
        """Send the handshake's answer; with an upgrade, speak its protocol from now on."""
        proto = self._proto
        if upgrade is not None and upgrade.stream is not None:  # GET /events
            now = self._loop.time()
            response, start = self._routes.open_stream(proto, response, upgrade, self.peer, now)
            if start is not None:
                self._hand_over(response, start)
                return
            upgrade = None  # refused: answered below as any request
        proto.send_response(response)
        # The 101 of a connection its protocol may welcome at once waits for the
        # welcome: one write for both where it is released at once (a Pusher client's,
        # one without a session). It stays first (send_first puts the welcome behind
        # it), and goes alone at the end of this call if the welcome is held (until
        # the session is written, or a cluster's registration).
        at_once = upgrade is not None and not upgrade.echo and not upgrade.resume
        self._write_protocol_output(hold=at_once)
        if upgrade is None:
            self._phase = Phase.ANSWERED
            log.debug(
                "answered %s from %s with %d",
                request.path.partition("?")[0],
                self.peer,
                response.status_code,
                extra=self._context(),
            )
            return
        self._speak(upgrade)

    def _take_plain(self, data: bytes) -> bool:
        """Answer ``data`` without the websockets parser if it is a plain upgrade to
        /connect that the gateway admits at once (plainupgrade.py), as :meth:`_answer`
        answers it; False (nothing done): the full path reads it."""
        plain = parse_plain_upgrade(data)
        if plain is None:
            return False
        upgrade = self._routes.plain_upgrade(plain.origin, plain.query)
        if upgrade is None:
            return False
        self._proto.open_plain(switching_protocols(plain.key), plain.origin)
        self._write_protocol_output(hold=not upgrade.resume)  # as _answer holds it
        self._speak(upgrade)
        return True

    def _speak(self, upgrade: Upgrade) -> None:
        """The 101 is queued: speak the protocol ``upgrade`` names from now on."""
        proto = self._proto
        for extension in proto.extensions:
            if isinstance(extension, PerMessageDeflate):
                self._deflate_bits = extension.local_max_window_bits
        # websockets' server parser keeps the request (with its headers, a dozen
        # objects) in its frame for the life of the connection: parked, it goes.
        proto.park()
        if upgrade.echo:
            self._phase = Phase.ECHO
            proto.max_message_size = ECHO_MAX_MESSAGE_BYTES
            if self._transport is not None:  # a test peer, not a client: no output bound
                self._transport.set_write_buffer_limits(high=2**30)
            return
        assert upgrade.admitted is not None
        settings = self._settings
        if upgrade.pusher:
            self.encoding = PUSHER_OVER_WEBSOCKET
            pusher = self._client = PusherProtocol(
                self._node,
                cast("Transport", self),
                upgrade.app,
                activity_timeout=settings.heartbeat,
                handshake_timeout=settings.handshake_timeout,
                refusal=upgrade.pusher_refusal,
                counts=self._routes.pusher_counts,
            )
            pusher.opened(resume=False)
            self._flush_head()
            return
        self._client = PushgateProtocol(
            self._routes.pushgate(settings.heartbeat, settings.handshake_timeout),
            cast("Transport", self),
            upgrade.admitted,
            events=upgrade.events,
        )
        if upgrade.resume:
            self._phase = Phase.AWAITING  # the client speaks first: its resume message
        self._client.opened(resume=upgrade.resume)
        self._flush_head()

    def _hand_over(self, response: Response, start: SseStart) -> None:
        """Give the socket to a Server-Sent Events stream, which writes ``response``
        and the events: it takes this connection's place in the registry and its
        count at the gatekeeper. Whatever is still parsed here (the rest of this
        read) is dropped, having no transport."""
        peer = self.peer  # while it has the transport to tell it
        transport, self._transport = self._transport, None
        assert transport is not None
        ip, self._admitted_ip = self._admitted_ip, None
        self._phase = Phase.ANSWERED
        stream = SseConnection(
            self._node,
            self._settings,
            self._outbox,
            self._registry,
            self._routes.gatekeeper,
            peer=peer,
            ip=self.ip,
            admitted_ip=ip,
            connected_at=self.connected_at,
        )
        transport.set_protocol(stream)
        stream.start(transport, response.serialize(), start)
        # Out of the registry once the stream is in it: never empty meanwhile (a stop
        # waiting for no connection to be left must not wake).
        self._registry.discard(self)
        # The parser's reference cycle (see connection_lost), broken once this read
        # is over: it is still running it.
        self._loop.call_soon(self._drop_parser)

    def _drop_parser(self) -> None:
        self._proto.parser.close()
        self._proto.parser_exc = None

    def _flush_head(self) -> None:
        """Write the held 101 now if its welcome did not take it along (held)."""
        head = self._head
        if head and self._transport is not None and not self._transport.is_closing():
            pending = self._pending
            data = b"".join(pending[:head])
            del pending[:head]
            self._head = 0
            self._transport.write(data)
            meters = self._outbox.meters
            if meters is not None:  # counted as flush() counts a write
                meters.writes += 1
                meters.frames_written += head
                meters.bytes_written += len(data)
