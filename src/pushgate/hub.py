"""The local connections of one gateway and the rooms they are in; fan-out.

The hub hands each recipient's :class:`Sink` the bytes of one :class:`Outgoing`
message. A sink only queues them (see :mod:`pushgate.wsoutput`), so a fan-out to N
connections is N method calls and never waits for any of them: a slow client
costs the others nothing.

Connections may speak different wire protocols over different transports: each
sink has its :class:`Encoding`. The message makes its bytes for an encoding the
first time a recipient of that encoding needs them, and every other recipient of
it gets the same bytes object: encoded once per push per protocol, framed once per
push per transport, on each node (deflate is then once per gateway, outbox.py).
While every connection of the hub has one encoding (the common case), the bytes
are made once before the loop and the loop is what it was with one protocol; it is
then compiled where pushgate._speedups was built (speedups.py).

Pure and synchronous: nothing here awaits.
"""

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from pushgate import speedups
from pushgate.errors import RoomLimitExceeded, UnknownConnection
from pushgate.ids import ConnId, RoomId
from pushgate.rooms import Rooms


@dataclass(frozen=True, eq=False, slots=True)
class Encoding:
    """How one wire protocol over one transport sends a pushgate message: the
    protocol's ``encode`` (from pushgate's own JSON message, wire.py, to its own),
    then the transport's ``frame``."""

    name: str
    encode: Callable[[bytes], bytes]
    frame: Callable[[bytes], bytes]
    # Its labels in /metrics (pushgate_connections_by_transport).
    protocol: str = ""
    transport: str = ""


class Outgoing:
    """One message (a push or a notice) on its way to many connections, with the
    bytes each encoding sends made once: by the first recipient that asks."""

    __slots__ = ("_first", "_first_bytes", "_more", "message")

    def __init__(self, message: bytes) -> None:
        self.message = message  # pushgate's JSON and a newline (wire.py)
        self._first: Encoding | None = None
        self._first_bytes = b""
        self._more: dict[Encoding, bytes] | None = None

    def bytes_for(self, encoding: Encoding) -> bytes:
        """The bytes a connection of ``encoding`` sends (the same object each time)."""
        if encoding is self._first:
            return self._first_bytes
        if self._first is None:
            self._first = encoding
            self._first_bytes = encoding.frame(encoding.encode(self.message))
            return self._first_bytes
        more = self._more
        if more is None:
            more = self._more = {}
        made = more.get(encoding)
        if made is None:
            made = more[encoding] = encoding.frame(encoding.encode(self.message))
        return made


class Sink(Protocol):
    """Where the hub puts frames for one connection.

    Contract: :meth:`send` returns at once, never raises, and never calls back into
    the hub (the hub may be iterating its members while it runs). Frames handed to
    one sink go out in the order they were handed over. :meth:`close` starts
    closing the connection; once it has closed, its owner tells the node
    (``Node.connection_closed``), which takes it out of the hub.
    """

    connected_at: float  # when it opened (the event loop's clock)
    encoding: Encoding  # how its protocol over its transport sends a message

    def send(self, frame: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def member(self, room: RoomId, joined: bool, reason: str) -> None:
        """Its rooms changed without its asking: the back end joined (``joined``) or
        left it, or its subscription ended (``reason``); its protocol may say so."""
        ...


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """What a join or leave did: whether membership changed, and whether the room
    was created (first member) or emptied (last member left)."""

    changed: bool
    room_boundary: bool


class Hub:
    """Open connections by wsId, and room membership. Fan-out lives here."""

    def __init__(self, *, max_rooms_per_conn: int) -> None:
        self.max_rooms_per_conn = max_rooms_per_conn
        self._sinks: dict[ConnId, Sink] = {}
        self._rooms: Rooms[Sink] = Rooms()
        # A user's connections, kept like a room per user (authenticated connections only).
        self._users: Rooms[Sink] = Rooms()
        # How many connections speak each encoding; the one, while there is one.
        self._encodings: Counter[Encoding] = Counter()
        self._only: Encoding | None = None
        # Deliveries so far by encoding (for /metrics: by protocol and transport).
        self.delivered: Counter[Encoding] = Counter()

    # Connections

    def register(self, conn: ConnId, sink: Sink, user: str | None = None) -> None:
        """Add an open connection, of ``user`` if it authenticated as one; it receives
        every later broadcast, and every push to its user."""
        if conn in self._sinks:
            raise ValueError(f"wsId {conn} is already registered")
        self._sinks[conn] = sink
        self._count_encoding(sink.encoding, 1)
        if user is not None:
            self._users.add(RoomId(user), conn, sink)

    def sign_in(self, conn: ConnId, user: str) -> bool:
        """An open connection without a user authenticated as ``user`` after opening
        (Pusher's ``pusher:signin``): pushes to the user reach it from now on. False
        if it is not here, or has a user already."""
        sink = self._sinks.get(conn)
        if sink is None or self.user_of(conn) is not None:
            return False
        self._users.add(RoomId(user), conn, sink)
        return True

    def unregister(self, conn: ConnId) -> list[RoomId]:
        """Remove a connection and take it out of every room at once.

        Returns the rooms this left empty. Unregistering twice is harmless.
        """
        sink = self._sinks.pop(conn, None)
        if sink is None:
            return []
        self._count_encoding(sink.encoding, -1)
        self._users.discard_all(conn)
        return self._rooms.discard_all(conn)

    def _count_encoding(self, encoding: Encoding, change: int) -> None:
        encodings = self._encodings
        encodings[encoding] += change
        if not encodings[encoding]:
            del encodings[encoding]
        self._only = next(iter(encodings)) if len(encodings) == 1 else None

    def encodings(self) -> dict[Encoding, int]:
        """How many open connections speak each encoding (for /metrics)."""
        return dict(self._encodings)

    def sink(self, conn: ConnId) -> Sink | None:
        """The open connection with this wsId, if there is one here."""
        return self._sinks.get(conn)

    def user_of(self, conn: ConnId) -> str | None:
        for user in self._users.rooms_of(conn):
            return user
        return None

    def users(self) -> Iterable[str]:
        """The users with at least one open connection here."""
        return self._users.room_ids()

    def conns_of_user(self, user: str) -> list[ConnId]:
        return list(self._users.member_ids(RoomId(user)))

    def user_size(self, user: str) -> int:
        """How many open connections ``user`` has here."""
        return self._users.size(RoomId(user))

    def __contains__(self, conn: object) -> bool:
        return conn in self._sinks

    def __len__(self) -> int:
        return len(self._sinks)

    def conn_ids(self) -> Iterator[ConnId]:
        return iter(self._sinks)

    # Rooms

    def join(self, room: RoomId, conn: ConnId) -> MembershipChange:
        """Put an open connection in a room; joining twice changes nothing.

        Raises :class:`UnknownConnection` for a wsId that is not open here and
        :class:`RoomLimitExceeded` when the connection is at the per-connection cap.
        """
        sink = self._sinks.get(conn)
        if sink is None:
            raise UnknownConnection(conn)
        if self._rooms.count_rooms_of(conn) >= self.max_rooms_per_conn and room not in (
            self._rooms.rooms_of(conn)
        ):
            raise RoomLimitExceeded(conn, self.max_rooms_per_conn)
        added, created = self._rooms.add(room, conn, sink)
        return MembershipChange(added, created)

    def leave(self, room: RoomId, conn: ConnId) -> MembershipChange:
        """Take an open connection out of a room; leaving a room one is not in is no error.

        Raises :class:`UnknownConnection` for a wsId that is not open here.
        """
        if conn not in self._sinks:
            raise UnknownConnection(conn)
        removed, emptied = self._rooms.discard(room, conn)
        return MembershipChange(removed, emptied)

    def members_of(self, room: RoomId) -> Iterable[ConnId]:
        """The wsIds in ``room`` (a live view: do not change the room while iterating)."""
        return self._rooms.member_ids(room)

    def rooms_of(self, conn: ConnId) -> frozenset[RoomId]:
        return self._rooms.rooms_of(conn)

    def room_sizes(self) -> dict[RoomId, int]:
        return self._rooms.sizes()

    def room_count(self) -> int:
        return len(self._rooms)

    def room_size(self, room: RoomId) -> int:
        return self._rooms.size(room)

    # Fan-out

    def broadcast(self, message: Outgoing, skip: Sink | None = None) -> int:
        """Hand ``message`` to every open connection (but ``skip``); return how many
        got it."""
        return self._hand(self._sinks.values(), len(self._sinks), message, skip)

    def send_user(self, user: str, message: Outgoing, skip: Sink | None = None) -> int:
        """Hand ``message`` to every connection of ``user`` (but ``skip``); return how
        many got it."""
        user_id = RoomId(user)
        return self._hand(self._users.members(user_id), self._users.size(user_id), message, skip)

    def send_room(self, room: RoomId, message: Outgoing, skip: Sink | None = None) -> int:
        """Hand ``message`` to every member of ``room`` (but ``skip``); return how many
        got it."""
        return self._hand(self._rooms.members(room), self._rooms.size(room), message, skip)

    def _hand(self, sinks: Iterable[Sink], size: int, message: Outgoing, skip: Sink | None) -> int:
        """Hand ``message`` to the ``size`` ``sinks`` (but ``skip``); return how many got
        it, counted by encoding in ``delivered`` (once per push while one encoding is
        here; per connection only while several are)."""
        only = self._only
        if only is None:
            return self._hand_each(sinks, size, message, skip)
        frame = message.bytes_for(only)  # one encoding here: its bytes made once, up front
        compiled = speedups.compiled
        if compiled is not None:  # the same loop, compiled (speedups.py)
            handed = compiled.hand(sinks, frame, skip)
        elif skip is None:
            for sink in sinks:
                sink.send(frame)
            handed = size
        else:
            handed = size
            for sink in sinks:
                if sink is skip:
                    handed -= 1
                else:
                    sink.send(frame)
        self.delivered[only] += handed
        return handed

    def _hand_each(
        self, sinks: Iterable[Sink], size: int, message: Outgoing, skip: Sink | None
    ) -> int:
        """:meth:`_hand` while connections of several encodings are here: each
        recipient's bytes asked of the message, and counted, one by one (compiled,
        once per encoding)."""
        delivered = self.delivered
        compiled = speedups.compiled
        if compiled is not None:
            return compiled.hand_each(sinks, message, skip, delivered)
        handed = size
        for sink in sinks:
            if sink is skip:
                handed -= 1
            else:
                encoding = sink.encoding
                sink.send(message.bytes_for(encoding))
                delivered[encoding] += 1
        return handed
