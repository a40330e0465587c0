"""The Python client of pushgate: a WebSocket connection that stays up, and the API.

::

    from pushgate.client import PushAPI, connect

    async with PushAPI("http://127.0.0.1:9999") as api, connect(
        "ws://127.0.0.1:8888/connect", api=api
    ) as conn:
        print("connected as", conn.ws_id)
        await conn.join("news")              # through the logic API
        await conn.subscribe("lobby:1")      # by itself, where the room's namespace allows
        await conn.publish("lobby:1", {"text": "hi"}, tag=7)  # to the room's other members
        async for push in conn:              # Push(type=3, data=..., room="news")
            print(push.type, push.room, push.data, push.sender)

What a caller must know:

- ``async with connect(url)`` returns once the server's welcome has arrived, so
  ``conn.ws_id`` and ``conn.heartbeat`` are set. A first connection that fails raises
  :class:`ConnectError`; only later drops are retried.
- The client sends ``{"type":1,"data":"PING"}`` every ``heartbeat`` seconds (the
  server's interval, unless a number is given) and swallows the ``PONG``\\ s; ``async
  for`` yields only pushes, as :class:`Push`.
- When the connection drops (the server restarts, the network breaks, the server
  closes it), the client reconnects with jittered exponential backoff (at once after
  1012, a gateway draining for a restart), to the next of its URLs if it was given
  several, and **resumes its session** (docs/recovery.md): the same wsId, in the
  same rooms, and every push sent meanwhile, once each and in order per stream,
  before any new one. ``conn.recovered`` then says whether the server could give
  everything; when it could not (the session expired, history was trimmed or lost),
  ``conn.recovered`` is False and ``on_recovery`` is called: refetch your state.
- Pushes are delivered exactly once: a push whose position the client has already
  seen is dropped. A close with 4001 (another connection resumed this session), or
  with a code from 4400 to 4499 (the server says: do not come back; 4410, the
  operator ended the session), ends the connection for good.
- Iteration ends after :meth:`Connection.close`, or when the connection drops and
  ``reconnect=False``; ``conn.close_code`` then tells why.
- Pushes wait in a queue of ``max_queue`` messages; while it is full the client stops
  reading, and a server that then holds too much for it closes it (1008, slow
  consumer), after which it reconnects. Replies and room events are read in order
  behind the pushes before them: while the queue is full they wait too.

Rooms (docs/protocol.md, "Subscribing" and "Events"; docs/sdk.md):

- ``conn.rooms`` is the rooms the connection is in, kept from what the server says
  and in its order: the welcome's list, the replies to :meth:`Connection.subscribe`
  and :meth:`~Connection.unsubscribe`, and its ``joined``/``left`` events (the back
  end's moves, and a subscription token's expiry). :meth:`~Connection.join` and
  :meth:`~Connection.leave` (through the logic API) return once it says so too. Each
  change is handed to ``on_room_change`` as a :class:`RoomChange`.
- :meth:`Connection.subscribe` returns once the server has answered: a
  :class:`Subscribed`, or :class:`SubscribeError` with the refusal's ``code`` and
  ``reason`` (:class:`NoReplyError` when no answer can come: not connected, or the
  connection dropped first). Nothing is retried by itself.
- A resumed session keeps its rooms: nothing is subscribed or joined again. A NEW
  session (the old one could not be resumed: a new wsId) is put back in the rooms
  the client put itself in (``conn.own_rooms``: :meth:`~Connection.join` and
  :meth:`~Connection.subscribe`) before it counts as open; a grant is made for one
  wsId, so a room subscribed with a grant or a token gets a new one from
  ``grant_for(room, ws_id)`` (without it, a token is shown again, and a grant room is
  given up). The rooms the back end put it in are the back end's to redo.
- The client sends at most ``max_send_rate`` messages a second (PINGs, operations),
  under the server's ``--max-client-messages-per-second``.

Publishing (docs/protocol.md, "Publishing"; docs/sdk.md):

- :meth:`Connection.publish` sends a message to a room the connection is a member of,
  in a namespace with ``+publish``; it returns once the server has accepted it, and
  raises :class:`SubscribeError` for a refusal (403: not a member, or no ``+publish``).
  The other members get it as a :class:`Push` whose ``sender`` says who sent it; the
  sender does not, unless ``echo=True``.
- A publish is never sent again by the client: one cut off by a drop raises
  :class:`NoReplyError`, and it may or may not have reached the room (after a resume
  the room's stream, seen by the others, says). Sending it again is the caller's
  choice, and may deliver it twice.

Presence (docs/protocol.md, "Presence"; docs/sdk.md):

- In a room whose namespace keeps presence, ``conn.presence(room)`` is who is there:
  a dict of :class:`PresenceMember` by user (an anonymous member by its wsId), None
  for a room without presence (or not known yet). The client takes the members a
  subscribe's reply carries, or asks for them (the ``presence`` operation) for a room
  it learns it is in otherwise (the welcome, a ``joined`` event), once a namespace is
  known to keep presence (a namespace that keeps none is asked once). It then applies
  each join and leave event of the room after the members' position; events that
  come while the members are asked for wait, and those the members already count are
  passed over. Each change of a view is handed to ``on_presence`` as a
  :class:`PresenceChange`, in order with the ``on_room_change`` changes.
- A resume keeps the views: the events missed come from history like pushes (a
  stream the server could not recover is asked for again). A new session asks for
  every view again, and tells only what differs.
"""

import asyncio
import contextlib
import enum
import inspect
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.http11 import Response
from websockets.typing import Subprotocol

from pushgate.apicalls import DEFAULT_TAG
from pushgate.connectrefusal import HandshakeRefusal, read_refusal
from pushgate.ids import ConnId, RoomId
from pushgate.pushapi import (
    APIConnectionError,
    BadRequestError,
    BatchItemResult,
    ConflictError,
    ConnectionInfo,
    DisconnectResult,
    JoinResult,
    LeaveResult,
    Member,
    MembersPage,
    NotFoundError,
    PayloadTooLargeError,
    PushAPI,
    PushAPIError,
    PushResult,
    ServiceUnavailableError,
    Stats,
    UnauthorizedError,
    UserMembershipResult,
)
from pushgate.streams import ROOM_TOPIC_PREFIX
from pushgate.syncpushapi import SyncPushAPI
from pushgate.tokens import make_token
from pushgate.wire import (
    CLOSE_GOING_AWAY,
    CLOSE_NO_RECONNECT,
    CLOSE_SERVICE_RESTART,
    CLOSE_SESSION_TAKEN,
    PING,
    Notice,
    Operation,
    PresenceEvent,
    PresenceMember,
    PresenceRoster,
    Push,
    Reply,
    ResumeRequest,
    RoomEvent,
    Sender,
    StreamReport,
    Welcome,
    is_pong,
    parse_server_message,
    parse_welcome,
    room_stream,
)

__all__ = [
    "DEFAULT_TAG",
    "APIConnectionError",
    "BadRequestError",
    "BatchItemResult",
    "ClientClosed",
    "ConflictError",
    "ConnectError",
    "Connection",
    "ConnectionInfo",
    "DisconnectResult",
    "HandshakeRefusal",
    "JoinResult",
    "LeaveResult",
    "Member",
    "MembersPage",
    "NoReplyError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PresenceChange",
    "PresenceMember",
    "PresenceRoster",
    "Push",
    "PushAPI",
    "PushAPIError",
    "PushResult",
    "RoomChange",
    "Sender",
    "ServiceUnavailableError",
    "State",
    "Stats",
    "SubscribeError",
    "Subscribed",
    "SyncPushAPI",
    "UnauthorizedError",
    "UserMembershipResult",
    "connect",
    "make_token",
]

log = logging.getLogger("pushgate.client")


class State(enum.Enum):
    """Where a :class:`Connection` is. OPEN means welcomed, and in its joined rooms."""

    CONNECTING = "connecting"  # the first connection is being opened
    OPEN = "open"
    RECONNECTING = "reconnecting"  # dropped; waiting out the backoff or retrying
    CLOSED = "closed"  # for good: closed by the caller, or dropped with reconnect=False


class ConnectError(Exception):
    """A connection could not be opened, or the server sent no valid welcome.

    When the server answered the handshake with a refusal, ``refusal`` holds its
    HTTP status, the reason it gave ("the token has expired") and a hint, all in
    the message too; else it is None (nothing answered, or no welcome came)."""

    def __init__(self, message: str, refusal: HandshakeRefusal | None = None) -> None:
        super().__init__(message)
        self.refusal = refusal


class ClientClosed(Exception):
    """:meth:`Connection.recv` on a connection that is closed for good."""


class SubscribeError(Exception):
    """The server refused an operation on ``room`` (``op``: subscribe, unsubscribe,
    refresh or publish; the name is older than publishing): ``code`` and ``reason`` as
    it sent them. 400 malformed (a publish's tag), 401 the room needs a grant or a
    token, 403 not allowed (a ``server`` room, a grant or token not good for this
    connection and room; a publish by a non-member, or in a namespace without
    ``+publish``), 409 the connection is in too many rooms (or has no token's
    subscription to refresh), 429 over the message rate, 503 the broker is away.
    ``retryable``: the same call may succeed later (429, 503, and no reply)."""

    def __init__(self, op: str, room: str, code: int | None, reason: str) -> None:
        said = f"{code} {reason}" if code is not None else reason
        super().__init__(f"{op} {room}: {said}")
        self.op = op
        self.room = room
        self.code = code
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return self.code is None or self.code in (429, 503)


class NoReplyError(SubscribeError):
    """No reply can come (``code`` None): the connection is not open, or it dropped
    before the reply. The operation may have been done or not; once the connection is
    open again, ``conn.rooms`` says (of a publish, nothing does: it is not sent again)."""

    def __init__(self, op: str, room: str, reason: str) -> None:
        super().__init__(op, room, None, reason)


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A subscription done (or renewed): where the room's stream stood then
    (``position``, ``(epoch, seq)``; None when the server keeps no history), and when
    a token's subscription ends unless renewed (``expires``, Unix seconds; None: for
    as long as the session lasts). In a room that keeps presence, ``presence`` is who
    was there (``conn.presence(room)`` is kept true from it)."""

    room: str
    position: tuple[str, int] | None
    expires: int | None
    presence: PresenceRoster | None = None


@dataclass(frozen=True, slots=True)
class RoomChange:
    """``conn.rooms`` gained ``room`` (``joined``) or lost it, and why: ``subscribe``
    or ``unsubscribe`` (this client's operation), ``server`` (the back end: POST
    /room/join or /room/leave, :meth:`Connection.join` included), ``expired`` (a
    subscription token's ``exp`` passed without a refresh), or ``welcome`` (the
    welcome listed the rooms so: a connection token's rooms; after a reconnect, a
    change made while it was away, or a new session's rooms)."""

    room: str
    joined: bool
    reason: str


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """``conn.presence(room)`` gained ``member`` (``joined``: a join event, or the
    members a reply told; a join of a member there already with other info replaces
    it) or lost it (a leave event; or the view went: the connection left the room)."""

    room: str
    joined: bool
    member: PresenceMember


StateCallback = Callable[["Connection", State], Awaitable[None] | None]
RecoveryCallback = Callable[["Connection", dict[str, bool]], Awaitable[None] | None]
RoomCallback = Callable[["Connection", RoomChange], Awaitable[None] | None]
PresenceCallback = Callable[["Connection", PresenceChange], Awaitable[None] | None]
TokenSource = str | Callable[[], str | Awaitable[str]]
GrantSource = Callable[[str, str], str | Awaitable[str]]

_END = object()


@dataclass(slots=True)
class _Own:
    """How the client put itself in a room, to do it again in a new session: through
    the logic API (``join``), or by subscribing with nothing (``subscribe``), a
    ``grant`` (and the ``info`` it signed, sent again as it was), or a ``token`` (the
    last one shown)."""

    via: str
    token: str | None = None
    info: str | None = None


@dataclass(slots=True)
class _View:
    """Who is in one presence room, as far as the client knows (``known``: a roster
    was taken), as of ``position`` of its stream. ``buffer`` (not None) while the
    members are asked for: the events held until they come. ``ask``: the connection
    and the id of the operation whose reply brings them (id 0: about to be sent)."""

    members: dict[str, PresenceMember] = field(default_factory=dict)
    known: bool = False
    position: tuple[str, int] | None = None
    buffer: list[PresenceEvent] | None = None
    ask: tuple[object, int] | None = None


def _namespace(room: str) -> str:
    """A room's namespace: what comes before its first ``:`` (none: the default)."""
    return room.partition(":")[0] if ":" in room else ""


class _RedoFailed(Exception):
    """Putting a new session back in its rooms failed for now: reconnect and retry."""


class _Pacer:
    """At most ``rate`` messages a second, in bursts of as many (a token bucket):
    any second then holds at most twice ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._stamp: float | None = None

    def delay(self, now: float) -> float:
        """Take one message's token: how long to wait before sending it."""
        if self._stamp is not None:
            self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class Connection:
    """One logical connection to a gateway, reopened as needed. Make it with
    :func:`connect`; see the module docstring for the behaviour."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        heartbeat: bool | float,
        reconnect: bool,
        api: PushAPI | None,
        token: TokenSource | None,
        on_state_change: StateCallback | None,
        backoff_initial: float,
        backoff_max: float,
        open_timeout: float,
        max_queue: int,
        max_message_bytes: int,
        on_recovery: RecoveryCallback | None = None,
        on_room_change: RoomCallback | None = None,
        grant_for: GrantSource | None = None,
        max_send_rate: float = 20.0,
        on_presence: PresenceCallback | None = None,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("give at least one gateway URL")
        for each in urls:
            if not each.startswith(("ws://", "wss://")):
                raise ValueError(f"url must start with ws:// or wss://, got {each!r}")
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if max_send_rate < 1:
            raise ValueError(f"max_send_rate must be 1 or more, got {max_send_rate}")
        self.urls = urls
        self.url = urls[0]
        """The gateway URL of the current (or last) connection."""
        self.session = ""
        """The session's secret token (empty when the server has sessions off)."""
        self.resumed = False
        """Whether the last reconnect resumed the session (same wsId, same rooms)."""
        self.recovered: bool | None = None
        """Whether the last resume, and every gap since, recovered every push missed
        (None before any resume)."""
        self.positions: dict[str, tuple[str, int]] = {}
        """The position of the last push received on each stream."""
        self._on_recovery = on_recovery
        self.ws_id = ""
        """The current connection's wsId; a new one after each reconnect."""
        self.heartbeat = 0.0
        """The PING interval the server announced, in seconds."""
        self.state = State.CONNECTING
        self.connects = 0
        """How many times a connection was opened: 1, then one more per reconnect."""
        self.close_code: int | None = None
        """The close code of the last connection that ended (1006: no close frame)."""
        self._heartbeat_option = heartbeat
        self._reconnect = reconnect
        self._api = api
        self._token = token
        self._on_state_change = on_state_change
        self._backoff = (backoff_initial, backoff_max)
        self._open_timeout = open_timeout
        self._max_message_bytes = max_message_bytes
        self._queue: asyncio.Queue[object] = asyncio.Queue(max_queue)
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._done = False
        self._closing = False
        # Reading: one task per connection; pushes held until it counts as open.
        self._reader: asyncio.Task[None] | None = None
        self._holding = False
        self._held: list[Push] = []
        self._handing = asyncio.Lock()  # one hands pushes to the queue at a time
        # Sending: paced, PINGs counted so that a PONG tells what was read before it.
        self._pacer = _Pacer(max_send_rate)
        self._sending = asyncio.Lock()
        self._pings = 0
        self._pongs = 0
        self._catching_up: list[tuple[int, asyncio.Future[None]]] = []
        # Rooms: the server's word (v=2), and what the client put itself in.
        self._rooms: dict[str, None] = {}  # insertion-ordered sets
        self._own: dict[str, _Own] = {}
        self._events = False  # the server tells this connection of its rooms (v=2)
        self._redo_pending = False  # a new session is not yet back in its own rooms
        self._grant_for = grant_for
        self._on_room_change = on_room_change
        self._changes: asyncio.Queue[RoomChange | PresenceChange] | None = None
        self._notifier: asyncio.Task[None] | None = None
        # Presence: a view per presence room, whether each namespace keeps presence
        # (as the server has said), and the asks under way.
        self._on_presence = on_presence
        self._views: dict[str, _View] = {}
        self._namespaces: dict[str, bool] = {}
        self._renewing = False  # a new session: views kept until it is back in its rooms
        self._asks: set[asyncio.Task[None]] = set()
        # Operations sent and not yet answered, by id.
        self._pending: dict[int, tuple[Operation, asyncio.Future[Reply]]] = {}
        self._last_id = 0

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms the connection is in, as the server has said (after it is closed
        for good: the last ones)."""
        return tuple(self._rooms)

    @property
    def own_rooms(self) -> tuple[str, ...]:
        """The rooms the client put itself in (:meth:`join`, :meth:`subscribe`), which
        a new session is put back in; a room the server takes it out of is dropped."""
        return tuple(self._own)

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """Of :attr:`own_rooms`, those it subscribed itself (not through :meth:`join`)."""
        return tuple(room for room, own in self._own.items() if own.via != "join")

    def presence(self, room: str) -> dict[str, PresenceMember] | None:
        """Who is in ``room``, by user (an anonymous member by its wsId): a copy, kept
        true by the events the client reads. None for a room without presence, one
        the connection is not in, or one whose members are not known yet."""
        view = self._views.get(room)
        return dict(view.members) if view is not None and view.known else None

    # Lifecycle

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the first connection and read its welcome, trying each URL once.
        Raises :class:`ConnectError` (the last URL's) when none answers."""
        if self._runner is not None:
            raise RuntimeError("this connection is already open")
        await self._set_state(State.CONNECTING)
        for attempt in range(len(self.urls)):
            try:
                await self._open_once()
                break
            except ConnectError as exc:
                if attempt + 1 < len(self.urls):
                    log.info("%s; trying the next URL", exc)
                    self._next_url()
                    continue
                self._done = True
                await self._set_state(State.CLOSED)
                raise
        self._end_renewal()
        await self._set_state(State.OPEN)
        await self._release()
        if not self._closing:
            self._runner = asyncio.create_task(self._run(), name=f"pushgate client {self.url}")

    async def close(self) -> None:
        """Close for good (with code 1000): iteration ends once the queue is read."""
        self._closing = True
        current = asyncio.current_task()
        for task in (self._runner, self._reader):
            if task is not None and task is not current and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._ws is not None:
            await self._ws.close()
            self.close_code = self._ws.close_code
            self._ws = None
        self._end_waits()
        for ask in list(self._asks):
            ask.cancel()
        if not self._done:
            self._finish()
            await self._set_state(State.CLOSED)

    # Receiving

    def __aiter__(self) -> AsyncIterator[Push]:
        return self

    async def __anext__(self) -> Push:
        if self._done and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # for any other reader
            raise StopAsyncIteration
        assert isinstance(item, Push)
        return item

    async def recv(self) -> Push:
        """The next push; raises :class:`ClientClosed` once closed for good."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise ClientClosed(f"the connection to {self.url} is closed") from None

    # Subscriptions (docs/protocol.md, "Subscribing")

    async def subscribe(
        self,
        room: str,
        grant: str | None = None,
        token: str | None = None,
        info: str | None = None,
    ) -> Subscribed:
        """Put this connection in ``room`` (where its namespace lets a client do it:
        with nothing, a ``grant`` from the back end, or a subscription ``token``), and
        again after a new session. ``info``: in a presence room, the member info the
        grant signs (the JSON text exactly as the back end signed it, sent as it is).
        Returns once the server has; raises :class:`SubscribeError` (not retried: see
        its ``retryable``)."""
        if grant is not None and token is not None:
            raise ValueError("give a grant or a token, not both")
        reply = await self._operate("subscribe", room, grant=grant, token=token, info=info)
        return Subscribed(room, reply.position, reply.expires, reply.presence)

    async def unsubscribe(self, room: str) -> None:
        """Take this connection out of ``room`` (one it could put itself in) and stop
        putting it back. Raises :class:`SubscribeError`."""
        await self._operate("unsubscribe", room)

    async def refresh(self, room: str, token: str) -> Subscribed:
        """Renew a token's subscription with a newer token before its ``expires``.
        Raises :class:`SubscribeError` (409: no token's subscription of ``room``)."""
        reply = await self._operate("refresh", room, token=token)
        return Subscribed(room, reply.position, reply.expires, reply.presence)

    # Publishing (docs/protocol.md, "Publishing")

    async def publish(
        self, room: str, data: object, *, tag: int = DEFAULT_TAG, echo: bool = False
    ) -> None:
        """Send ``data`` (any JSON value, None included) to the other members of
        ``room``, a room this connection is in whose namespace has ``+publish``; they
        get it as a push of type ``tag`` (2 to 2**53-1) with this connection as its
        ``sender``, and so does this connection with ``echo``. Returns once the server
        has accepted it (it is in the room's stream, in order with its pushes).

        Raises :class:`SubscribeError` for a refusal (403 not a member or no
        ``+publish``, 400 a bad tag, 429, 503), :class:`NoReplyError` when no reply
        can come (never sent again by the client: see the module docstring), and
        ValueError or TypeError, before sending, for ``data`` JSON cannot carry (NaN, a
        set). A message over the server's ``--max-message-bytes`` (4 KiB by default)
        makes the server close the connection (1009): NoReplyError, and a reconnect."""
        await self._operate("publish", room, tag=tag, data=data, echo=echo)

    # Rooms through the logic API (need the api argument)

    async def join(self, room: str) -> JoinResult:
        """Join ``room`` now, and again after a new session; returns once
        ``conn.rooms`` has it. Raises PushAPIError."""
        result = await self._require_api().join(room, self.ws_id)
        self._own[room] = _Own("join")
        await self._settle([room], joined=True)
        return result

    async def leave(self, room: str) -> LeaveResult:
        """Leave ``room`` and stop rejoining it; returns once ``conn.rooms`` has it
        no more. Raises PushAPIError."""
        self._own.pop(room, None)
        result = await self._require_api().leave(room, self.ws_id)
        await self._settle([room], joined=False)
        return result

    def _require_api(self) -> PushAPI:
        if self._api is None:
            raise RuntimeError("join and leave need connect(..., api=PushAPI(...))")
        return self._api

    async def _settle(self, rooms: list[str], *, joined: bool) -> None:
        """After API calls that moved this connection: the server's events come
        before the PONG to a PING sent now (a server without events: take its word)."""
        if self._events:
            await self._catch_up()
            return
        for room in rooms:
            if joined:
                self._enter(room, "server")
            else:
                self._exit(room, "server")

    # Internals: the runner

    async def _run(self) -> None:
        """Wait for the open connection to end; then reconnect (or finish)."""
        try:
            while (ws := self._ws) is not None and not self._closing:
                assert self._reader is not None
                await self._reader
                self.close_code = ws.close_code or 1006
                log.info("connection %s closed (%s)", self.ws_id, self.close_code)
                self._ws = None
                if not self._reconnect or self._closing:
                    break
                if self.close_code == CLOSE_SESSION_TAKEN:
                    log.warning("session %s was resumed by another connection", self.ws_id)
                    break
                if self.close_code in CLOSE_NO_RECONNECT:
                    log.warning("the server closed %s for good (%d)", self.ws_id, self.close_code)
                    break
                await self._set_state(State.RECONNECTING)
                if self._closing:  # close() called by the callback
                    break
                await self._reopen()
                await self._set_state(State.OPEN)
                await self._release()
        except Exception:
            log.exception("pushgate client for %s failed", self.url)
        finally:
            if not self._closing:  # close() reports its own
                self._finish()
                await self._set_state(State.CLOSED)

    async def _reopen(self) -> None:
        """Open a new connection, retrying with full-jitter exponential backoff, and
        put a new session back in its own rooms."""
        initial, cap = self._backoff
        attempt = 0
        at_once = self.close_code == CLOSE_SERVICE_RESTART
        while True:
            if not at_once:
                await asyncio.sleep(random.uniform(0, min(cap, initial * 2**attempt)))
            at_once = False
            try:
                await self._open_once(resume=True)
            except ConnectError as exc:
                log.info("reconnect to %s failed: %s", self.url, exc)
                self._next_url()
            else:
                if not self.resumed:
                    self._redo_pending = True
                try:
                    await self._redo()
                    self._end_renewal()
                    return
                except _RedoFailed as exc:
                    # The next attempt resumes this session and finishes the work.
                    log.warning("putting %s back in its rooms failed: %s", self.ws_id, exc)
                    await self._stop_reading()
            attempt = min(attempt + 1, 30)

    async def _redo(self) -> None:
        """Put a new session back in the rooms the client had put itself in and it is
        not in. A room refused for good is given up; anything else raises _RedoFailed."""
        if not self._redo_pending:
            return
        missing = [(room, own) for room, own in self._own.items() if room not in self._rooms]
        joins = [room for room, own in missing if own.via == "join"]
        if joins:
            api = self._require_api()
            try:
                for room in joins:
                    await api.join(room, self.ws_id)
            except PushAPIError as exc:
                raise _RedoFailed(str(exc)) from None
            await self._settle(joins, joined=True)
        shown: dict[str, dict[str, str]] = {}  # all asked for first: then all sent
        for room, own in missing:
            if own.via == "join":
                continue
            try:
                credentials = await self._credentials(room, own)
            except Exception as exc:
                raise _RedoFailed(f"grant_for({room!r}, ...) failed: {exc!r}") from None
            if credentials is None:
                self._give_up(room, "it was subscribed with a grant, and there is no grant_for")
            else:
                shown[room] = credentials
        operations = [
            asyncio.create_task(
                self._operate(
                    "subscribe",
                    room,
                    grant=credentials.get("grant"),
                    token=credentials.get("token"),
                    info=credentials.get("info"),
                    redo=True,
                )
            )
            for room, credentials in shown.items()
        ]
        failed: BaseException | None = None
        for outcome in await asyncio.gather(*operations, return_exceptions=True):
            if isinstance(outcome, SubscribeError) and not outcome.retryable:
                self._give_up(outcome.room, str(outcome))
            elif isinstance(outcome, BaseException):
                failed = outcome
        if failed is not None:
            raise _RedoFailed(str(failed))
        self._redo_pending = False

    async def _credentials(self, room: str, own: _Own) -> dict[str, str] | None:
        """What to show to subscribe to ``room`` again (None: nothing will do)."""
        if own.via == "subscribe":
            return {}
        if self._grant_for is not None:
            made = self._grant_for(room, self.ws_id)
            shown = {own.via: made if isinstance(made, str) else await made}
            if own.info is not None:
                shown["info"] = own.info  # the grant_for must sign it again
            return shown
        if own.via == "token" and own.token is not None:
            return {"token": own.token}  # good unless bound to the old wsId, or expired
        return None

    def _give_up(self, room: str, why: str) -> None:
        self._own.pop(room, None)
        log.warning("%s is not subscribed to %s again: %s", self.ws_id, room, why)

    # Internals: one connection

    async def _open_once(self, resume: bool = False) -> None:
        """One connection, welcomed and read from: sets ws_id, heartbeat and rooms.
        With ``resume`` (and a session to resume) it asks for the session back;
        ``resumed`` says if it was. Pushes are held until :meth:`_release`."""
        subprotocols = None
        if self._token is not None:
            token = self._token() if callable(self._token) else self._token
            if not isinstance(token, str):
                token = await token
            subprotocols = [Subprotocol("pushgate"), Subprotocol(token)]
        resume = resume and bool(self.session)
        url = self.url + ("&" if "?" in self.url else "?") + "v=2"  # events: docs/protocol.md
        if resume:
            url += "&resume=1"
        try:
            ws = await ws_connect(
                url,
                open_timeout=self._open_timeout,
                max_size=self._max_message_bytes,
                compression=None,
                subprotocols=subprotocols,
            )
        except InvalidStatus as exc:
            raise _refused(self.url, exc.response) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {self.url}: {_reason(exc)}") from None
        except InvalidURI as exc:
            raise ValueError(str(exc)) from None
        try:
            if resume:
                request = ResumeRequest(ConnId(self.ws_id), self.session, dict(self.positions))
                await self._send(ws, json.dumps(request.as_message()))
            async with asyncio.timeout(self._open_timeout):
                frame = await ws.recv()
            welcome = parse_welcome(frame)
        except (ConnectionClosed, TimeoutError, ValueError) as exc:
            await ws.close(CLOSE_GOING_AWAY, "no welcome")  # not 1000: a session stays
            raise ConnectError(f"no welcome from {self.url}: {_reason(exc)}") from None
        ws_id, self.heartbeat = welcome.ws_id, welcome.heartbeat
        self.session = welcome.session
        self.resumed = resume and welcome.resumed and ws_id == self.ws_id
        self.ws_id = ws_id
        self.connects += 1
        if not self.resumed:
            self._renew_presence()
        self._take_rooms(welcome)
        if resume:
            await self._on_resume_welcome(welcome)
        self._ws = ws
        self._pings = self._pongs = 0
        self._holding, self._held = True, []
        self._reader = asyncio.create_task(self._read(ws), name=f"pushgate reader {ws_id}")
        self._flush_asks()

    def _take_rooms(self, welcome: Welcome) -> None:
        """The welcome's rooms are the connection's (a server without events lists
        none: a new session is in none, a resumed one where it was)."""
        self._events = welcome.rooms is not None
        if welcome.rooms is None and self.resumed:
            return
        rooms = welcome.rooms or ()
        for room in [room for room in self._rooms if room not in rooms]:
            self._exit(room, "welcome")
        for room in rooms:
            self._enter(room, "welcome")

    async def _on_resume_welcome(self, welcome: Welcome) -> None:
        """After a resume: note whether everything missed is coming, or start over."""
        if self.resumed:
            self.recovered = welcome.recovered
            log.info(
                "resumed %s (%s)", welcome.ws_id, "recovered" if self.recovered else "NOT recovered"
            )
            if not self.recovered:
                await self._apply_streams(welcome.streams)
        else:
            self.recovered = False
            self.positions.clear()
            log.warning("could not resume (%s); new wsId %s", welcome.reason, welcome.ws_id)
            await self._call_recovery({})

    async def _stop_reading(self) -> None:
        """Close the connection to connect again, and wait until its reader has ended.
        With 1001, not 1000: the server ends the session of a client that closed with
        1000 (it said goodbye), and this one resumes it."""
        ws, reader = self._ws, self._reader
        self._ws = None
        if ws is not None:
            await ws.close(CLOSE_GOING_AWAY, "reconnecting")
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, ws: ClientConnection) -> None:
        beat = asyncio.create_task(self._beat(ws)) if self._heartbeat_option else None
        try:
            async for frame in ws:
                await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            if beat is not None:
                beat.cancel()
            self._end_waits()

    async def _on_frame(self, frame: str | bytes) -> None:
        """Queue a push not seen before; apply a reply, an event or a notice."""
        if is_pong(frame):
            self._pongs += 1
            self._wake_caught_up()
            return
        try:
            message = parse_server_message(frame)
        except ValueError:
            log.warning("ignored a message that is not JSON: %r", frame[:100])
            return
        if isinstance(message, Push):
            if self._is_new(message.stream, message.seq, message.epoch):
                await self._deliver(message)
            return
        if isinstance(message, PresenceEvent):
            if self._is_new(room_stream(message.room), message.seq, message.epoch):
                self._on_presence_event(message)
        elif isinstance(message, Reply):
            self._on_reply(message)
        elif isinstance(message, RoomEvent):
            if message.joined:
                self._enter(message.room, message.reason)
            else:
                self._own.pop(message.room, None)  # the server's word: not put back
                self._exit(message.room, message.reason)
        elif isinstance(message, Notice):
            await self._apply_streams(message.streams)
        self._flush_asks()

    async def _deliver(self, push: Push) -> None:
        if self._holding:
            self._held.append(push)
            return
        async with self._handing:
            await self._queue.put(push)

    async def _release(self) -> None:
        """The connection counts as open: hand over the pushes held meanwhile."""
        async with self._handing:
            self._holding = False
            while self._held:
                await self._queue.put(self._held.pop(0))

    def _is_new(self, stream: str, seq: int, epoch: str) -> bool:
        """Track the stream's position (pushes and presence events alike); False for
        what was delivered already."""
        if not seq:
            return True
        known = self.positions.get(stream)
        if known is not None and known[0] == epoch and seq <= known[1]:
            return False
        self.positions[stream] = (epoch, seq)
        return True

    async def _apply_streams(self, streams: dict[str, StreamReport]) -> None:
        """Take the server's position for each stream it could not recover."""
        report: dict[str, bool] = {}
        for name, stream in streams.items():
            report[name] = stream.recovered
            if not stream.recovered:
                self._stream_lost(name)
            known = self.positions.get(name)
            if not stream.recovered and (known is None or known[0] != stream.epoch):
                # A new epoch: every push of it is new to us. (Its seq in the report is
                # where the server is, and pushes up to it may still be on their way.)
                self.positions[name] = (stream.epoch, 0)
        if all(report.values()):
            return
        self.recovered = False
        lost = sorted(name for name, ok in report.items() if not ok)
        log.warning("%s: pushes on %s could not be recovered", self.ws_id, ", ".join(lost))
        await self._call_recovery(report)

    async def _call_recovery(self, report: dict[str, bool]) -> None:
        if self._on_recovery is None:
            return
        try:
            result = self._on_recovery(self, report)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_recovery failed")

    # Internals: operations, and sending

    async def _operate(
        self,
        op: str,
        room: str,
        *,
        grant: str | None = None,
        token: str | None = None,
        info: str | None = None,
        tag: int = 0,
        data: object = None,
        echo: bool = False,
        redo: bool = False,
    ) -> Reply:
        """Send an operation on the open connection (or, ``redo``, the one being
        reopened) and wait for its reply; a refusal raises SubscribeError. It is sent
        once: a connection that drops first raises NoReplyError, whatever the op."""
        ws = self._ws
        if ws is None or (self.state is not State.OPEN and not redo):
            raise NoReplyError(op, room, f"the connection is not open ({self.state.value})")
        self._last_id = op_id = self._last_id + 1
        operation = Operation(op, RoomId(room), op_id, grant, token, info, tag, data, echo)
        # Serialized before anything is waited for: NaN, which the server reads as no
        # JSON and closes the connection for (1007), is the caller's ValueError here.
        message = json.dumps(operation.as_message(), allow_nan=False)
        answered: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[op_id] = (operation, answered)
        if op in ("subscribe", "presence"):
            self._roster_asked(room, ws, op_id, op)
        try:
            await self._send(ws, message)
            reply = await answered
        except ConnectionClosed:
            raise NoReplyError(op, room, "the connection dropped before the reply") from None
        finally:
            self._pending.pop(op_id, None)
        if not reply.ok:
            raise SubscribeError(op, room, reply.code, reply.reason)
        return reply

    def _on_reply(self, reply: Reply) -> None:
        """An answer: the rooms change here, in the order the server said things."""
        pending = self._pending.get(reply.id) if isinstance(reply.id, int) else None
        room = reply.room
        if reply.ok and room is not None:
            if reply.op == "subscribe":
                if pending is not None:
                    self._own[room] = _own_of(pending[0])
                self._enter(room, "subscribe")
            elif reply.op == "refresh" and pending is not None and room in self._own:
                self._own[room] = _own_of(pending[0])
            elif reply.op == "unsubscribe":
                self._own.pop(room, None)
                self._exit(room, "unsubscribe")
        if room is not None and reply.op in ("subscribe", "refresh", "presence"):
            self._presence_reply(room, reply)
        if pending is not None and not pending[1].done():
            pending[1].set_result(reply)

    async def _send(self, ws: ClientConnection, message: str | bytes, *, ping: bool = False) -> int:
        """Send one message, paced; returns how many PINGs were sent on ``ws``."""
        async with self._sending:
            delay = self._pacer.delay(asyncio.get_running_loop().time())
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(message, text=True)
            if ping and ws is self._ws:
                self._pings += 1
            return self._pings

    async def _catch_up(self) -> None:
        """Wait until the server has answered a PING sent now, so that everything it
        sent before (the events of an API call that has returned) has been read."""
        ws = self._ws
        if ws is None or self._reader is None or self._reader.done():
            return
        try:
            sent = await self._send(ws, PING, ping=True)
        except ConnectionClosed:
            return
        if self._pongs >= sent or ws is not self._ws:
            return
        answered = asyncio.get_running_loop().create_future()
        self._catching_up.append((sent, answered))
        with contextlib.suppress(TimeoutError):  # a PING over the server's rate is dropped
            async with asyncio.timeout(self._open_timeout):
                await answered

    def _wake_caught_up(self) -> None:
        waiting = self._catching_up
        self._catching_up = [(n, f) for n, f in waiting if n > self._pongs]
        for n, answered in waiting:
            if n <= self._pongs and not answered.done():
                answered.set_result(None)

    def _end_waits(self) -> None:
        """The connection has ended: no reply or PONG will come on it."""
        pending, self._pending = self._pending, {}
        for _, answered in pending.values():
            if not answered.done():
                answered.set_exception(ConnectionClosed(None, None))
        waiting, self._catching_up = self._catching_up, []
        for _, caught_up in waiting:
            if not caught_up.done():
                caught_up.set_result(None)

    async def _beat(self, ws: ClientConnection) -> None:
        option = self._heartbeat_option
        interval = self.heartbeat if option is True else float(option)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval)
                await self._send(ws, PING, ping=True)

    # Internals: rooms

    def _enter(self, room: str, reason: str) -> None:
        if room not in self._rooms:
            self._rooms[room] = None
            self._tell(RoomChange(room, True, reason))
            self._want_roster(room)

    def _exit(self, room: str, reason: str) -> None:
        self.positions.pop(room_stream(room), None)  # a later join starts afresh
        if room in self._rooms:
            del self._rooms[room]
            self._tell(RoomChange(room, False, reason))
        if not self._renewing:  # a new session keeps them, to tell only what differs
            self._drop_view(room)

    def _tell(self, change: RoomChange | PresenceChange) -> None:
        """Hand a change to on_room_change or on_presence, in order, from a task of
        its own (so that the callback may subscribe, which needs the reader)."""
        if isinstance(change, RoomChange) and self._on_room_change is None:
            return
        if isinstance(change, PresenceChange) and self._on_presence is None:
            return
        if self._changes is None:
            self._changes = asyncio.Queue()
            self._notifier = asyncio.create_task(self._notify(self._changes))
        self._changes.put_nowait(change)

    async def _notify(self, changes: asyncio.Queue[RoomChange | PresenceChange]) -> None:
        while not self._done:
            change = await changes.get()
            try:
                if isinstance(change, RoomChange):
                    assert self._on_room_change is not None
                    result = self._on_room_change(self, change)
                else:
                    assert self._on_presence is not None
                    result = self._on_presence(self, change)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                name = "on_room_change" if isinstance(change, RoomChange) else "on_presence"
                log.exception("%s(%s) failed", name, change)

    # Internals: presence

    def _want_roster(self, room: str) -> None:
        """The connection is in ``room``: know who is there, if its namespace keeps
        presence (or may: then one room of it asks, and the answer tells for all)."""
        if room in self._views or self._namespaces.get(_namespace(room)) is False:
            return
        self._views[room] = _View(buffer=[])
        self._flush_asks()

    def _roster_asked(self, room: str, ws: object, op_id: int, op: str) -> None:
        """An operation whose reply may carry ``room``'s members is being sent."""
        view = self._views.get(room)
        if op == "subscribe":
            if self._namespaces.get(_namespace(room)) is False:
                return
            if view is None:
                view = self._views[room] = _View(buffer=[])
            elif view.buffer is None:
                return  # known, and kept true: the reply's members tell nothing new
        elif view is None or view.buffer is None:
            return
        view.ask = (ws, op_id)

    def _flush_asks(self) -> None:
        """Ask for the members of each room that waits for them and has no ask under
        way on this connection (one room at a time of a namespace not known to keep
        presence); forget the views of rooms the connection is not in."""
        ws = self._ws
        if ws is None or self._done:
            return
        views = self._views
        probing = {
            _namespace(room)
            for room, view in views.items()
            if view.ask is not None and view.ask[0] is ws
        }
        for room, view in list(views.items()):
            if view.buffer is None or (view.ask is not None and view.ask[0] is ws):
                continue
            namespace = _namespace(room)
            keeps = self._namespaces.get(namespace)
            if room not in self._rooms or keeps is False:
                if room in self._rooms or not self._renewing:
                    self._drop_view(room)
                continue
            if keeps is None:
                if namespace in probing:
                    continue  # its answer tells for this one too
                probing.add(namespace)
            view.ask = (ws, 0)
            task = asyncio.create_task(self._ask(room, ws))
            self._asks.add(task)
            task.add_done_callback(self._asks.discard)

    async def _ask(self, room: str, ws: object) -> None:
        """The ``presence`` operation (unless a subscribe sent meanwhile took it over):
        its reply is read by :meth:`_presence_reply`."""
        view = self._views.get(room)
        if view is None or view.ask != (ws, 0) or ws is not self._ws:
            return
        with contextlib.suppress(SubscribeError):
            await self._operate("presence", room, redo=True)

    def _presence_reply(self, room: str, reply: Reply) -> None:
        """A reply that may carry ``room``'s members, or say it has none."""
        namespace = _namespace(room)
        view = self._views.get(room)
        mine = view is not None and view.ask is not None and view.ask[1] == reply.id
        if reply.ok and reply.presence is not None:
            self._namespaces[namespace] = True
            if mine:
                assert view is not None
                self._take_roster(room, view, reply.presence)
        elif reply.ok:
            if reply.op != "presence":  # a subscription in a room without presence
                self._namespaces[namespace] = False
                if mine:
                    self._drop_view(room)
        elif reply.op == "presence":
            if reply.code == 404:  # the room's namespace keeps no presence
                self._namespaces[namespace] = False
            if not mine:
                return
            assert view is not None
            if reply.code in (409, 429, 503):  # not now: ask again in a moment
                view.ask = None
                asyncio.get_running_loop().call_later(1.0, self._flush_asks)
            else:
                self._drop_view(room)
        elif mine:
            assert view is not None
            view.ask = None  # a subscribe refused: ask, if the connection is in the room

    def _take_roster(self, room: str, view: _View, roster: PresenceRoster) -> None:
        """The members as of the roster's position; tell what differs from the view
        (all of them, the first time), then apply the events held meanwhile that came
        after it (without history: none, it is after them all)."""
        before = view.members if view.known else {}
        held = (view.buffer or []) if roster.position is not None else []
        members = {member.key: member for member in roster.members}
        view.members, view.known, view.position = members, True, roster.position
        view.buffer = view.ask = None
        for key, member in before.items():
            if key not in members:
                self._tell(PresenceChange(room, False, member))
        for key, member in members.items():
            if before.get(key) != member:
                self._tell(PresenceChange(room, True, member))
        for event in held:
            self._on_presence_event(event)

    def _on_presence_event(self, event: PresenceEvent) -> None:
        view = self._views.get(event.room)
        if view is None:
            return  # not asked for: the members, when asked, count it
        if view.buffer is not None:
            view.buffer.append(event)
            return
        position = view.position
        if event.seq and position is not None:
            if event.epoch != position[0]:  # the stream started over: ask again
                view.buffer, view.ask = [], None
                return
            if event.seq <= position[1]:
                return  # the members told of it already
        member, key = event.member, event.member.key
        if event.joined:
            if view.members.get(key) != member:
                view.members[key] = member
                self._tell(PresenceChange(event.room, True, member))
        elif (gone := view.members.pop(key, None)) is not None:
            self._tell(PresenceChange(event.room, False, gone))
        if event.seq:
            view.position = (event.epoch, event.seq)

    def _drop_view(self, room: str) -> None:
        """Forget ``room``'s view: each member it had leaves it."""
        view = self._views.pop(room, None)
        if view is not None and view.known:
            for member in view.members.values():
                self._tell(PresenceChange(room, False, member))

    def _stream_lost(self, stream: str) -> None:
        """Events of ``stream`` may have been lost: ask for its room's members again."""
        if not stream.startswith(ROOM_TOPIC_PREFIX):
            return
        view = self._views.get(stream[len(ROOM_TOPIC_PREFIX) :])
        if view is not None and view.buffer is None:
            view.buffer, view.ask = [], None

    def _renew_presence(self) -> None:
        """A new session: what it is in, and whether a namespace keeps presence, is to
        be learnt again; every view waits for its members, asked again."""
        self._namespaces.clear()
        self._renewing = True
        for view in self._views.values():
            view.buffer, view.ask = [], None

    def _end_renewal(self) -> None:
        """The new session is back in its rooms: the views of the others go."""
        self._renewing = False
        self._flush_asks()

    # Internals: the rest

    def _next_url(self) -> None:
        self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]

    def _finish(self) -> None:
        self._done = True
        if not self._queue.full():
            self._queue.put_nowait(_END)
        if self._notifier is not None and self._notifier is not asyncio.current_task():
            self._notifier.cancel()

    async def _set_state(self, state: State) -> None:
        self.state = state
        callback = self._on_state_change
        if callback is None:
            return
        try:
            result = callback(self, state)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_state_change(%s) failed", state.name)


def connect(
    url: str | Sequence[str],
    *,
    heartbeat: bool | float = True,
    reconnect: bool = True,
    api: PushAPI | None = None,
    token: TokenSource | None = None,
    on_state_change: StateCallback | None = None,
    backoff_initial: float = 0.5,
    backoff_max: float = 30.0,
    open_timeout: float = 10.0,
    max_queue: int = 1024,
    max_message_bytes: int = 16 << 20,
    on_recovery: RecoveryCallback | None = None,
    on_room_change: RoomCallback | None = None,
    grant_for: GrantSource | None = None,
    max_send_rate: float = 20.0,
    on_presence: PresenceCallback | None = None,
) -> Connection:
    """A connection to the gateway at ``url`` (``ws://HOST:8888/connect``), opened by
    ``async with`` (or ``await conn.open()``).

    ``heartbeat``: True sends PING at the server's interval, a number at that many
    seconds, False never (the server's protocol pings then keep it alive).
    ``reconnect``: reopen a dropped connection, waiting a random time up to
    ``backoff_initial`` seconds, doubling up to ``backoff_max``, between tries.
    ``api``: the logic API, needed by :meth:`Connection.join` and :meth:`~Connection.leave`.
    ``token``: a connection token (JWT) for a gateway that checks them, sent as the
    WebSocket subprotocols ``["pushgate", token]``; a function (sync or async) is called
    before every (re)connect, so an expiring token can be renewed.
    ``on_state_change(conn, state)``: called (and awaited, if it returns an awaitable)
    on each :class:`State` change; pushes wait while it runs after a reconnect.
    ``url`` may be a list of gateway URLs: a failed connect moves to the next.
    ``on_recovery(conn, streams)``: called when pushes could not be recovered (a
    resume that could not give everything, or that got a new session, or a gap the
    server could not fill); ``streams`` maps each stream to whether it was recovered.
    ``on_room_change(conn, change)``: called with each :class:`RoomChange` of
    ``conn.rooms``, in order, from a task of its own (it may await
    :meth:`Connection.subscribe`); ``conn.rooms`` may be ahead of it by then.
    ``grant_for(room, ws_id)`` (sync or async): a new grant (or subscription token,
    whichever the room was subscribed with) for ``ws_id``, asked of your back end when
    a new session subscribes again; an exception is retried, as a failed reconnect is.
    ``max_send_rate``: messages sent per second at most, in bursts of as many (keep
    twice it under the server's ``--max-client-messages-per-second``, 50).
    ``on_presence(conn, change)``: called with each :class:`PresenceChange` of a
    ``conn.presence(room)`` view, in order (with the room changes), like
    ``on_room_change``.
    """
    return Connection(
        url,
        heartbeat=heartbeat,
        reconnect=reconnect,
        api=api,
        token=token,
        on_state_change=on_state_change,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        open_timeout=open_timeout,
        max_queue=max_queue,
        max_message_bytes=max_message_bytes,
        on_recovery=on_recovery,
        on_room_change=on_room_change,
        grant_for=grant_for,
        max_send_rate=max_send_rate,
        on_presence=on_presence,
    )


def _own_of(operation: Operation) -> _Own:
    """How a subscription was made, from its operation."""
    if operation.grant is not None:
        return _Own("grant", info=operation.info)
    if operation.token is not None:
        return _Own("token", operation.token)
    return _Own("subscribe")


def _refused(url: str, response: Response) -> ConnectError:
    """The error for a handshake the server answered without a WebSocket: with the
    reason it gave, which says what to fix (an expired token, a wrong path)."""
    refusal = read_refusal(
        response.status_code,
        response.reason_phrase,
        response.headers.get("Content-Type"),
        bytes(response.body),
    )
    return ConnectError(f"cannot connect to {url}: {refusal.describe()}", refusal)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
