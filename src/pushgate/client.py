"""The Python client of pushgate: a WebSocket connection that stays up, and the API.

::

    from pushgate.client import PushAPI, connect

    async with PushAPI("http://127.0.0.1:9999") as api, connect(
        "ws://127.0.0.1:8888/connect", api=api
    ) as conn:
        print("connected as", conn.ws_id)
        await conn.join("news")              # and again after every reconnect
        async for push in conn:              # Push(type=3, data=..., room="news")
            print(push.type, push.room, push.data)

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
  A session that could not be resumed at all gives a new wsId: rooms joined through
  :meth:`Connection.join` are joined again before the connection counts as open.
- Pushes are delivered exactly once: a push whose position the client has already
  seen is dropped. A close with 4001 (another connection resumed this session) ends
  the connection for good.
- Iteration ends after :meth:`Connection.close`, or when the connection drops and
  ``reconnect=False``; ``conn.close_code`` then tells why.
- Pushes wait in a queue of ``max_queue`` messages; while it is full the client stops
  reading, and a server that then holds too much for it closes it (1008, slow
  consumer), after which it reconnects.
"""

import asyncio
import contextlib
import enum
import inspect
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from pushgate.ids import ConnId
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
from pushgate.syncpushapi import SyncPushAPI
from pushgate.wire import (
    CLOSE_SERVICE_RESTART,
    CLOSE_SESSION_TAKEN,
    PING,
    Notice,
    Push,
    ResumeRequest,
    StreamReport,
    Welcome,
    parse_server_message,
    parse_welcome,
)

__all__ = [
    "APIConnectionError",
    "BadRequestError",
    "BatchItemResult",
    "ClientClosed",
    "ConflictError",
    "ConnectError",
    "Connection",
    "ConnectionInfo",
    "DisconnectResult",
    "JoinResult",
    "LeaveResult",
    "Member",
    "MembersPage",
    "NotFoundError",
    "PayloadTooLargeError",
    "Push",
    "PushAPI",
    "PushAPIError",
    "PushResult",
    "ServiceUnavailableError",
    "State",
    "Stats",
    "SyncPushAPI",
    "UnauthorizedError",
    "UserMembershipResult",
    "connect",
]

log = logging.getLogger("pushgate.client")


class State(enum.Enum):
    """Where a :class:`Connection` is. OPEN means welcomed, and in its joined rooms."""

    CONNECTING = "connecting"  # the first connection is being opened
    OPEN = "open"
    RECONNECTING = "reconnecting"  # dropped; waiting out the backoff or retrying
    CLOSED = "closed"  # for good: closed by the caller, or dropped with reconnect=False


class ConnectError(Exception):
    """A connection could not be opened, or the server sent no valid welcome."""


class ClientClosed(Exception):
    """:meth:`Connection.recv` on a connection that is closed for good."""


StateCallback = Callable[["Connection", State], Awaitable[None] | None]
RecoveryCallback = Callable[["Connection", dict[str, bool]], Awaitable[None] | None]
TokenSource = str | Callable[[], str | Awaitable[str]]

_END = object()


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
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("give at least one gateway URL")
        for each in urls:
            if not each.startswith(("ws://", "wss://")):
                raise ValueError(f"url must start with ws:// or wss://, got {each!r}")
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
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
        self._rooms: dict[str, None] = {}  # insertion-ordered set
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._done = False
        self._closing = False

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms joined through :meth:`join`, rejoined after each reconnect."""
        return tuple(self._rooms)

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
                self._ws = await self._open_once()
                break
            except ConnectError as exc:
                if attempt + 1 < len(self.urls):
                    log.info("%s; trying the next URL", exc)
                    self._next_url()
                    continue
                self._done = True
                await self._set_state(State.CLOSED)
                raise
        await self._set_state(State.OPEN)
        self._runner = asyncio.create_task(self._run(), name=f"pushgate client {self.url}")

    async def close(self) -> None:
        """Close for good (with code 1000): iteration ends once the queue is read."""
        self._closing = True
        if self._runner is not None and self._runner is not asyncio.current_task():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._ws is not None:
            await self._ws.close()
            self.close_code = self._ws.close_code
            self._ws = None
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

    # Rooms (need the api argument)

    async def join(self, room: str) -> JoinResult:
        """Join ``room`` now, and again after every reconnect. Raises PushAPIError."""
        result = await self._require_api().join(room, self.ws_id)
        self._rooms[room] = None
        return result

    async def leave(self, room: str) -> LeaveResult:
        """Leave ``room`` and stop rejoining it. Raises PushAPIError."""
        self._rooms.pop(room, None)
        return await self._require_api().leave(room, self.ws_id)

    def _require_api(self) -> PushAPI:
        if self._api is None:
            raise RuntimeError("join and leave need connect(..., api=PushAPI(...))")
        return self._api

    # Internals

    async def _run(self) -> None:
        """Pump the open connection; when it drops, reconnect (or finish)."""
        try:
            while (ws := self._ws) is not None and not self._closing:
                await self._pump(ws)
                self.close_code = ws.close_code or 1006
                log.info("connection %s closed (%s)", self.ws_id, self.close_code)
                self._ws = None
                if not self._reconnect or self._closing:
                    break
                if self.close_code == CLOSE_SESSION_TAKEN:
                    log.warning("session %s was resumed by another connection", self.ws_id)
                    break
                await self._set_state(State.RECONNECTING)
                if self._closing:  # close() called by the callback
                    break
                self._ws = await self._reopen()
                await self._set_state(State.OPEN)
        except Exception:
            log.exception("pushgate client for %s failed", self.url)
        finally:
            if not self._closing:  # close() reports its own
                self._finish()
                await self._set_state(State.CLOSED)

    async def _pump(self, ws: ClientConnection) -> None:
        beat = asyncio.create_task(self._beat(ws)) if self._heartbeat_option else None
        try:
            async for frame in ws:
                await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            if beat is not None:
                beat.cancel()

    async def _on_frame(self, frame: str | bytes) -> None:
        """Queue a push not seen before; apply a notice; pass over the rest (PONGs)."""
        try:
            message = parse_server_message(frame)
        except ValueError:
            log.warning("ignored a message that is not JSON: %r", frame[:100])
            return
        if isinstance(message, Notice):
            await self._apply_streams(message.streams)
        elif isinstance(message, Push) and self._is_new(message):
            await self._queue.put(message)

    def _is_new(self, push: Push) -> bool:
        """Track the stream's position; False for a push already delivered."""
        if not push.seq:
            return True
        stream = push.stream
        known = self.positions.get(stream)
        if known is not None and known[0] == push.epoch and push.seq <= known[1]:
            return False
        self.positions[stream] = (push.epoch, push.seq)
        return True

    async def _apply_streams(self, streams: dict[str, StreamReport]) -> None:
        """Take the server's position for each stream it could not recover."""
        report: dict[str, bool] = {}
        for name, stream in streams.items():
            report[name] = stream.recovered
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

    async def _beat(self, ws: ClientConnection) -> None:
        option = self._heartbeat_option
        interval = self.heartbeat if option is True else float(option)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval)
                await ws.send(PING, text=True)

    async def _reopen(self) -> ClientConnection:
        """Open a new connection, retrying with full-jitter exponential backoff."""
        initial, cap = self._backoff
        attempt = 0
        at_once = self.close_code == CLOSE_SERVICE_RESTART
        while True:
            if not at_once:
                await asyncio.sleep(random.uniform(0, min(cap, initial * 2**attempt)))
            at_once = False
            try:
                ws = await self._open_once(resume=True)
            except ConnectError as exc:
                log.info("reconnect to %s failed: %s", self.url, exc)
                self._next_url()
            else:
                self._ws = ws  # so that close() closes it
                if self.resumed:
                    return ws
                try:
                    await self._rejoin()
                except PushAPIError as exc:
                    log.warning("rejoining rooms as %s failed: %s", self.ws_id, exc)
                    self._ws = None
                    await ws.close()
                else:
                    return ws
            attempt = min(attempt + 1, 30)

    async def _rejoin(self) -> None:
        if self._rooms:
            api = self._require_api()
            for room in list(self._rooms):
                await api.join(room, self.ws_id)

    def _next_url(self) -> None:
        self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]

    async def _open_once(self, resume: bool = False) -> ClientConnection:
        """One connection, welcomed: sets ws_id and heartbeat. With ``resume`` (and a
        session to resume) it asks for the session back; ``resumed`` says if it was."""
        subprotocols = None
        if self._token is not None:
            token = self._token() if callable(self._token) else self._token
            if not isinstance(token, str):
                token = await token
            subprotocols = [Subprotocol("pushgate"), Subprotocol(token)]
        resume = resume and bool(self.session)
        url = self.url
        if resume:
            url += ("&" if "?" in url else "?") + "resume=1"
        try:
            ws = await ws_connect(
                url,
                open_timeout=self._open_timeout,
                max_size=self._max_message_bytes,
                compression=None,
                subprotocols=subprotocols,
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {self.url}: {_reason(exc)}") from None
        except InvalidURI as exc:
            raise ValueError(str(exc)) from None
        try:
            if resume:
                request = ResumeRequest(ConnId(self.ws_id), self.session, dict(self.positions))
                await ws.send(json.dumps(request.as_message()))
            async with asyncio.timeout(self._open_timeout):
                frame = await ws.recv()
            welcome = parse_welcome(frame)
        except (ConnectionClosed, TimeoutError, ValueError) as exc:
            await ws.close()
            raise ConnectError(f"no welcome from {self.url}: {_reason(exc)}") from None
        ws_id, self.heartbeat = welcome.ws_id, welcome.heartbeat
        self.session = welcome.session
        self.resumed = resume and welcome.resumed and ws_id == self.ws_id
        self.ws_id = ws_id
        self.connects += 1
        if resume:
            await self._on_resume_welcome(welcome)
        return ws

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

    def _finish(self) -> None:
        self._done = True
        if not self._queue.full():
            self._queue.put_nowait(_END)

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
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
