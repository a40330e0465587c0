"""The Python client's :class:`Connection`: its options, its public methods and
properties, and the callbacks it calls. Its internals are layers below it
(clientstate.py says which). Import it from :mod:`pushgate.client`."""

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self

from websockets.asyncio.client import ClientConnection

from pushgate.apicalls import DEFAULT_TAG
from pushgate.clientreconnect import Reconnect
from pushgate.clientstate import GrantSource, TokenSource, _Own, _Pacer, _View
from pushgate.clienttypes import (
    ClientClosed,
    ConnectError,
    PresenceChange,
    RoomChange,
    State,
    Subscribed,
)
from pushgate.pushapi import JoinResult, LeaveResult, PushAPI
from pushgate.wireclient import PresenceMember, Push, Reply
from pushgate.wireops import Operation

log = logging.getLogger("pushgate.client")  # one logger for the whole SDK


StateCallback = Callable[["Connection", State], Awaitable[None] | None]
RecoveryCallback = Callable[["Connection", dict[str, bool]], Awaitable[None] | None]
RoomCallback = Callable[["Connection", RoomChange], Awaitable[None] | None]
PresenceCallback = Callable[["Connection", PresenceChange], Awaitable[None] | None]

_END = object()


class Connection(Reconnect):
    """One logical connection to a gateway, reopened as needed. Make it with
    :func:`connect`; see the docstring of :mod:`pushgate.client` for the behaviour."""

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

    # Internals: the callbacks

    async def _call_recovery(self, report: dict[str, bool]) -> None:
        if self._on_recovery is None:
            return
        try:
            result = self._on_recovery(self, report)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_recovery failed")

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
