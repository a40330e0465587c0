"""What the Python client (:mod:`pushgate.client`) tells its caller: the
:class:`State` of a connection, its errors, and the records it hands back
(:class:`Subscribed`) or reports (:class:`RoomChange`, :class:`PresenceChange`).
Import them from :mod:`pushgate.client`."""

import enum
from dataclasses import dataclass

from pushgate.connectrefusal import HandshakeRefusal
from pushgate.wireclient import PresenceMember, PresenceRoster


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
