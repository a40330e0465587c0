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

from collections.abc import Sequence

from pushgate.apicalls import DEFAULT_TAG
from pushgate.clientconnection import (
    Connection,
    PresenceCallback,
    RecoveryCallback,
    RoomCallback,
    StateCallback,
)
from pushgate.clientstate import GrantSource, TokenSource
from pushgate.clienttypes import (
    ClientClosed,
    ConnectError,
    NoReplyError,
    PresenceChange,
    RoomChange,
    State,
    Subscribed,
    SubscribeError,
)
from pushgate.connectrefusal import HandshakeRefusal
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
from pushgate.tokens import make_token
from pushgate.wireclient import PresenceMember, PresenceRoster, Push, Sender

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
