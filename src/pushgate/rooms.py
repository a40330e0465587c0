"""Room membership: which connections are in which rooms, both ways.

A room exists while it has members. :meth:`Rooms.add` says when a room gets its
first member and :meth:`Rooms.discard` when it loses its last, so that the node can
subscribe to a room's broker topic only while someone here listens to it.

Pure and synchronous: nothing here awaits, so no other task can see a
half-updated membership.
"""

from collections.abc import Iterable
from typing import Generic, TypeVar

from pushgate.ids import ConnId, RoomId

T = TypeVar("T")


class Rooms(Generic[T]):
    """Maps each room to its members (a value ``T`` per connection, e.g. its sink)."""

    def __init__(self) -> None:
        # Insertion-ordered dicts: iteration is fast and deterministic.
        self._members: dict[RoomId, dict[ConnId, T]] = {}
        self._rooms_of: dict[ConnId, set[RoomId]] = {}

    def add(self, room: RoomId, conn: ConnId, value: T) -> tuple[bool, bool]:
        """Put ``conn`` in ``room``; return ``(added, room_created)``.

        ``added`` is false when it was already a member (joining twice is not an error).
        """
        members = self._members.get(room)
        created = members is None
        if members is None:
            members = self._members[room] = {}
        elif conn in members:
            return False, False
        members[conn] = value
        self._rooms_of.setdefault(conn, set()).add(room)
        return True, created

    def discard(self, room: RoomId, conn: ConnId) -> tuple[bool, bool]:
        """Take ``conn`` out of ``room``; return ``(removed, room_emptied)``."""
        members = self._members.get(room)
        if members is None or conn not in members:
            return False, False
        del members[conn]
        rooms = self._rooms_of[conn]
        rooms.discard(room)
        if not rooms:
            del self._rooms_of[conn]
        if members:
            return True, False
        del self._members[room]
        return True, True

    def discard_all(self, conn: ConnId) -> list[RoomId]:
        """Take ``conn`` out of every room at once; return the rooms this emptied."""
        emptied = []
        for room in self._rooms_of.pop(conn, ()):
            members = self._members[room]
            del members[conn]
            if not members:
                del self._members[room]
                emptied.append(room)
        return emptied

    def members(self, room: RoomId) -> Iterable[T]:
        """The members' values; empty for a room that does not exist."""
        members = self._members.get(room)
        return () if members is None else members.values()

    def member_ids(self, room: RoomId) -> Iterable[ConnId]:
        """The members' wsIds; empty for a room that does not exist."""
        members = self._members.get(room)
        return () if members is None else members.keys()

    def room_ids(self) -> Iterable[RoomId]:
        return self._members.keys()

    def size(self, room: RoomId) -> int:
        members = self._members.get(room)
        return 0 if members is None else len(members)

    def rooms_of(self, conn: ConnId) -> frozenset[RoomId]:
        return frozenset(self._rooms_of.get(conn, ()))

    def count_rooms_of(self, conn: ConnId) -> int:
        rooms = self._rooms_of.get(conn)
        return 0 if rooms is None else len(rooms)

    def sizes(self) -> dict[RoomId, int]:
        """Every room with its member count."""
        return {room: len(members) for room, members in self._members.items()}

    def __len__(self) -> int:
        return len(self._members)
