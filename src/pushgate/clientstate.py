"""The state one :class:`~pushgate.client.Connection` keeps, shared by its layers.

A Connection is one object whose methods live in layers, each a class over the one
below it and each in its own module: :class:`ClientState` (this one: the slots, and
the small records kept in them), presence views (clientpresence.py), rooms
(clientrooms.py), operations and sending (clientoperations.py), one connection
opened and read (clientlink.py), the runner that reconnects (clientreconnect.py),
and :class:`~pushgate.clientconnection.Connection` itself (the public methods and the
callbacks). A layer calls the ones below it directly; the few calls up are declared,
for the type checker only, where they are made. :meth:`Connection.__init__` sets
every slot."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection

from pushgate.clienttypes import State
from pushgate.wireclient import PresenceEvent, PresenceMember, Push, Reply
from pushgate.wireops import Operation

TokenSource = str | Callable[[], str | Awaitable[str]]
GrantSource = Callable[[str, str], str | Awaitable[str]]


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


class ClientState:
    """The slots of a :class:`~pushgate.client.Connection` that its layers use."""

    # What the caller reads (Connection.__init__ says what each is)
    url: str
    session: str
    resumed: bool
    recovered: bool | None
    positions: dict[str, tuple[str, int]]
    ws_id: str
    heartbeat: float
    state: State
    connects: int
    close_code: int | None
    # Options
    _heartbeat_option: bool | float
    _reconnect: bool
    _token: TokenSource | None
    _backoff: tuple[float, float]
    _open_timeout: float
    _max_message_bytes: int
    _queue: asyncio.Queue[object]
    _ws: ClientConnection | None
    _done: bool
    _closing: bool
    # Reading: one task per connection; pushes held until it counts as open.
    _reader: asyncio.Task[None] | None
    _holding: bool
    _held: list[Push]
    _handing: asyncio.Lock
    # Sending: paced, PINGs counted so that a PONG tells what was read before it.
    _pacer: _Pacer
    _sending: asyncio.Lock
    _pings: int
    _pongs: int
    _catching_up: list[tuple[int, asyncio.Future[None]]]
    # Rooms: the server's word (v=2), and what the client put itself in.
    _rooms: dict[str, None]
    _own: dict[str, _Own]
    _events: bool
    _redo_pending: bool
    _grant_for: GrantSource | None
    # Presence: a view per presence room, whether each namespace keeps presence
    # (as the server has said), and the asks under way.
    _views: dict[str, _View]
    _namespaces: dict[str, bool]
    _renewing: bool
    _asks: set[asyncio.Task[None]]
    # Operations sent and not yet answered, by id.
    _pending: dict[int, tuple[Operation, asyncio.Future[Reply]]]
    _last_id: int
