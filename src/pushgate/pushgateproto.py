"""The pushgate wire protocol (the seed's, extended) on one connection: what a
client says and what it is told, over whatever transport carries its messages.

Theory of operation (docs/recovery.md for the messages)
-------------------------------------------------------

A client admitted at ``/connect`` either opens a new session at once, or, with
``?resume=1``, speaks first: its first message names the session to resume (wsId,
session token, its position in each stream). Then:

- **Open**: the session core registers a new wsId; the welcome frame (wsId,
  heartbeat, session token) is the first thing the client gets. In a cluster it is
  held until other nodes can find the wsId (or the handshake timeout passes, so a
  client never waits on a lost broker), and so is everything behind it.
- **Resume**: the session core claims the session; the welcome (``resumed``, each
  stream's report) and the pushes the client missed go first, then live pushes.
  An unknown session gets a new one, and the welcome says why. A resume that lost
  to a later one is closed with 4001; one the broker cannot serve now, with 1013.
- **Messages**: ``{"type":1,"data":"PING"}`` is answered with PONG; other valid
  messages are ignored (room for later versions); an invalid one closes the
  connection with the code :func:`~pushgate.wire.parse_client_message` names; more
  than the message rate closes it with 1008.
- **Operations** (type 0 with an ``op``, docs/protocol.md "Subscribing"): a client
  subscribes itself to a room, or unsubscribes, where the room's namespace allows
  it, or renews a subscription token. They run one after another, and each gets its
  reply in the order sent; a token's subscription ends at its ``exp`` unless renewed.
- **Events** (``?v=2``): the client is told when the back end moves it in or out of
  a room, and its welcome lists its rooms.

The transport (connection.py) frames and writes; this module never touches a
socket or a frame, only messages and the :class:`Transport` it is given.
"""

import asyncio
import logging
import time

from pushgate.clientops import Serial, Transport, release_when_registered, spawn
from pushgate.commands import Membership
from pushgate.errors import (
    BrokerUnavailable,
    ClientFrameError,
    SessionTaken,
    UnknownConnection,
)
from pushgate.gatekeeper import Admitted
from pushgate.ids import ConnId, RoomId, new_conn_id
from pushgate.pushgateops import OperationAnswers, PushgateShared, rate_refusal
from pushgate.sessions import ANY_USER, AnyUser
from pushgate.streams import Position, room_of
from pushgate.wire import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_SESSION_TAKEN,
    CLOSE_TRY_AGAIN_LATER,
    PING,
    PONG,
    TYPE_WELCOME,
    ResumeRequest,
    encode_welcome,
    parse_client_message,
    parse_resume,
)
from pushgate.wireops import Operation, OperationError, encode_event, is_operation, parse_operation

log = logging.getLogger("pushgate.gateway")


def encode(message: bytes) -> bytes:
    """A pushgate message as this protocol sends it: as it is (wire.py is its format)."""
    return message


# A resume message names every stream of its session: allow it more than other messages.
RESUME_MAX_MESSAGE_BYTES = 64 * 1024
# Operations of one client waiting for their turn; more closes it (1008).
MAX_PENDING_OPERATIONS = 32
OVER_PENDING = f"over {MAX_PENDING_OPERATIONS} operations waiting for an answer"


class PushgateProtocol(OperationAnswers):
    """One client's side of the pushgate protocol."""

    __slots__ = (
        "_admitted",
        "_awaiting",
        "_conn",
        "_events",
        "_ops",
        "_shared",
        "_user",
        "expiring",
    )

    def __init__(
        self,
        shared: PushgateShared,
        conn: Transport,
        admitted: Admitted,
        *,
        events: bool = False,
    ) -> None:
        self._shared = shared  # the node, the subscribe policy, the timeouts
        self._conn = conn
        self._admitted = admitted
        self._events = events  # ?v=2: told of its rooms and their changes
        self._awaiting = False  # a ?resume=1 client, whose first message is to come
        # Its user, once known: its token's, or its resumed session's.
        self._user = admitted.claims.user if admitted.claims else None
        # Operations waiting their turn (None until the first one).
        self._ops: Serial[Operation | OperationError] | None = None
        # Rooms whose subscription token ends, and when (Unix seconds).
        self.expiring: dict[RoomId, float] | None = None

    def opened(self, *, resume: bool) -> None:
        """The upgrade was written. A resuming client speaks first: its resume
        message may be larger than others."""
        if resume:
            self._awaiting = True
            self._conn.limit_message_size(RESUME_MAX_MESSAGE_BYTES)
        else:
            self._open()

    def on_message(self, data: bytes, max_message_bytes: int, *, over_rate: bool = False) -> None:
        """A client message (its rate already counted by the transport: ``over_rate``,
        it is refused: an operation gets a 429, anything else is dropped)."""
        if self._awaiting:
            self._awaiting = False
            self._conn.limit_message_size(max_message_bytes)
            self._start_resume(data)
            return
        if data == PING and not over_rate:  # the SDKs' and the seed's heartbeat, as is
            self._conn.send_message(PONG)
            return
        try:
            message = parse_client_message(data)
        except ClientFrameError as exc:
            self._refuse(exc)
            return
        if over_rate:
            if message.type == TYPE_WELCOME and is_operation(message.data):
                self._queue(rate_refusal(message.data))
        elif message.is_heartbeat:
            self._conn.send_message(PONG)
        elif message.type == TYPE_WELCOME and is_operation(message.data):
            try:
                self._queue(parse_operation(message.data))
            except OperationError as exc:
                self._queue(exc)
        # Other types are ignored: room for client messages of later versions.

    def _refuse(self, exc: ClientFrameError) -> None:
        conn = self._conn
        log.info(
            "closing %s from %s: %d %s",
            conn.conn_id,
            conn.peer,
            exc.code,
            exc.reason,
            extra=conn.log_context(exc.code),
        )
        conn.fail(exc.code, exc.reason)

    def _open(self, reason: str | None = None) -> None:
        """Register a new connection (a new session) and queue its welcome first."""
        conn, claims = self._conn, self._admitted.claims
        conn_id = conn.conn_id = self._admitted.conn_id or new_conn_id()
        conn.enter_hub(held=True)  # before registering: a failure must unregister
        opened = self._node.connection_opened(
            conn_id,
            conn,
            user=claims.user if claims else None,
            rooms=claims.rooms if claims else (),
            info=claims.info if claims else None,
        )
        rooms: list[str] | None = None
        if self._events:  # a client reading events learns its rooms from the start
            rooms = list(claims.rooms) if claims else []
        welcome = encode_welcome(
            conn_id, self._shared.heartbeat, session=opened.token, reason=reason, rooms=rooms
        )
        conn.send_first([welcome])
        # In a cluster: once other nodes can find the wsId (or after the handshake
        # timeout anyway, so that a client never waits on a lost broker).
        release_when_registered(conn, opened.ready, self._shared.handshake_timeout)
        if log.isEnabledFor(logging.DEBUG):  # its arguments are made at once
            log.debug("opened %s from %s", conn_id, conn.peer, extra=conn.log_context())

    def _start_resume(self, data: bytes) -> None:
        """The first message of a ?resume=1 connection: resume the session it names."""
        try:
            request = parse_resume(parse_client_message(data))
        except ClientFrameError as exc:
            self._refuse(exc)
            return
        self._conn.begin_resume()
        spawn(self._resume(request))

    def _bound_user(self) -> str | AnyUser | None:
        """Where tokens are verified, a session resumes only for its own user, and a
        session of a user never for a connection without one (docs/security.md)."""
        if not self._admitted.verified:
            return ANY_USER
        claims = self._admitted.claims
        return claims.user if claims else None

    async def _resume(self, request: ResumeRequest) -> None:
        conn, node = self._conn, self._node
        since = {stream: Position(e, s) for stream, (e, s) in request.since.items()}
        conn.conn_id = request.ws_id
        claims = self._admitted.claims
        try:
            resumed = await node.resume(
                request.ws_id,
                request.session,
                since,
                conn,
                self._bound_user(),
                claims.info if claims else None,
            )
        except SessionTaken:
            self._close_resume(request, "lost to a later one", CLOSE_SESSION_TAKEN)
            return
        except BrokerUnavailable as exc:
            self._close_resume(request, f"failed: {exc}", CLOSE_TRY_AGAIN_LATER)
            return
        except Exception:  # a bug must cost this connection only, and say so
            log.exception("resume of %s from %s failed; closing it", request.ws_id, conn.peer)
            conn.close(CLOSE_INTERNAL_ERROR, "internal error")
            return
        if resumed is None:
            conn.conn_id = None
            if conn.alive:
                log.info(
                    "%s could not resume %s: unknown session",
                    conn.peer,
                    request.ws_id,
                    extra=conn.log_context(),
                )
                self._open(reason="session expired, unknown, or not yours")
            return
        if not conn.alive:  # it went while resuming: the session waits again
            node.connection_closed(request.ws_id, conn)
            return
        session = resumed.session
        self._user = session.user
        for stream, end in session.expires.items():
            room = room_of(stream)
            if room is not None:
                self._expires(room, end)
        welcome = encode_welcome(
            request.ws_id,
            self._shared.heartbeat,
            session=request.session,
            resumed=True,
            streams=resumed.streams,
            rooms=session.rooms if self._events else None,
        )
        conn.enter_hub(held=True)
        conn.send_first([welcome, *resumed.frames])
        recovered = all(r.recovered for r in resumed.streams.values())
        log.debug(
            "resumed %s from %s: %d pushes replayed, %s",
            request.ws_id,
            conn.peer,
            len(resumed.frames),
            "recovered" if recovered else "NOT recovered",
            extra=conn.log_context(),
        )
        conn.release()

    def _close_resume(self, request: ResumeRequest, what: str, code: int) -> None:
        conn = self._conn
        log.info(
            "resume of %s from %s %s", request.ws_id, conn.peer, what, extra=conn.log_context(code)
        )
        reasons = {
            CLOSE_SESSION_TAKEN: "session resumed by another connection",
            CLOSE_TRY_AGAIN_LATER: "cannot resume now; retry",
        }
        conn.close(code, reasons[code])

    # Operations: one after another, each reply in the order sent

    def _queue(self, op: Operation | OperationError) -> None:
        """Queue an operation (its runner made at the first one: most clients send none)."""
        ops = self._ops
        if ops is None:
            ops = self._ops = Serial(
                self._conn,
                self._answer,
                limit=MAX_PENDING_OPERATIONS,
                over=OVER_PENDING,
                what="operation",
                at_once=self._node.broker.answers_at_once,
            )
        ops.push(op)

    def closed(self) -> None:
        """Its connection ended (the session core was told already): nothing to do."""

    # Rooms: told, and ended

    def member(self, room: RoomId, joined: bool, reason: str) -> None:
        """The session core moved this connection (the back end, or an expiry)."""
        if not joined:
            self._forget_expiry(room)
        if self._events or reason == "expired":  # a token's client hears of its end
            self._conn.reply(encode_event("joined" if joined else "left", room, reason))

    def _expires(self, room: RoomId, end: float) -> None:
        """A subscription ends at ``end`` (Unix seconds)."""
        if self.expiring is None:
            self.expiring = {}
        self.expiring[room] = end
        self._conn.check_timers_by(asyncio.get_running_loop().time() + end - time.time())

    def _forget_expiry(self, room: RoomId) -> None:
        if self.expiring is not None:
            self.expiring.pop(room, None)
            if not self.expiring:
                self.expiring = None

    def check_expiry(self, now: float) -> None:
        """Called by the transport's timers (``now``: Unix seconds): end the
        subscriptions whose token ran out."""
        expiring, conn_id = self.expiring, self._conn.conn_id
        if expiring is None or conn_id is None:
            return
        for room in [room for room, end in expiring.items() if end <= now]:
            del expiring[room]
            spawn(self._expire(conn_id, room))
        if not expiring:
            self.expiring = None

    async def _expire(self, conn_id: ConnId, room: RoomId) -> None:
        try:
            await self._node.leave(Membership(room, conn_id), reason="expired")
        except (UnknownConnection, BrokerUnavailable) as exc:
            log.info("could not end %s's subscription of %s: %s", conn_id, room, exc)
