"""Presence: who is in a room, by user, and the join and leave events its members get.

In a namespace with presence on (``presence = true``, docs/presence.md), a room's
**members** are sessions, not connections: a session that drops and resumes stays a
member throughout, and leaves only when it leaves the room (an unsubscribe, the back
end's leave, a subscription's expiry) or ends (``endSession``, or it was not resumed
within ``--session-ttl``). Members are grouped by **user** (the token's ``sub``; a
connection without one is a user of its own, named by its wsId): a ``join`` event goes
to the room when a user's first session enters it, a ``leave`` event when its last one
goes. So a user's second tab joins silently, and a resume storm makes no event at all.

Each entry is held by a *holder* (the connection's, as sessions have: docs/recovery.md)
with a *deadline*: a held entry's is pushed forward by its holder's node while the
connection lives (so an entry whose node died, or whose connection closed while it
was entering, still ends); a detached one's is the session's end. Past its
deadline an entry is swept, as a leave. A detach names its holder, so that the close
of a connection whose session another connection resumed cannot start the countdown
of the new one.

This module is pure: :class:`PresenceTable` decides, for one process's store and as
the model of the Redis store's Lua script; the stores (presencestore.py,
broker/redis_presence.py) publish the events it decides on, in the room's stream
(ordered with its pushes, kept in history, recovered by a resume).
"""

import heapq
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pushgate.ids import ConnId, RoomId
from pushgate.streams import Position

# A deadline that never comes.
NEVER = math.inf
# A member's info, encoded: what a token's or a grant's "info" may hold.
MAX_INFO_BYTES = 1024
# Connections whose entries a node writes back per turn of its event loop, after its
# store lost them (PresenceRooms.enter_again).
KEEP_SLICE = 200
# Entries a node's keeper reads or keeps per turn of its event loop, counted by member
# (a room counts one more), not by room: 10,000 members at once held up every push and
# subscribe for milliseconds, and a few rooms of thousands each would all be one turn.
KEEP_SLICE_ENTRIES = 1000


def encode_info(value: object) -> str:
    """A member's ``info`` as kept and sent: a JSON object, compact. Raises
    ValueError saying what is wrong (not an object; over MAX_INFO_BYTES encoded)."""
    if not isinstance(value, dict):
        raise ValueError('"info" must be a JSON object')
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'"info" cannot be sent as JSON: {exc}') from None
    if len(text.encode()) > MAX_INFO_BYTES:
        raise ValueError(f'"info" is over {MAX_INFO_BYTES} bytes')
    return text


def decode_info(text: str) -> dict[str, object]:
    """A grant's ``info`` string (the JSON the back end signed): the object it holds.
    Raises ValueError saying what is wrong."""
    if len(text.encode()) > MAX_INFO_BYTES:
        raise ValueError(f'"info" is over {MAX_INFO_BYTES} bytes')
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError('"info" is not JSON') from None
    if not isinstance(value, dict):
        raise ValueError('"info" must be a JSON object')
    return value


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a member is: its user (None: anonymous, then a user of its own, named by
    its wsId) and ``info``, a JSON object encoded (compact, from its token or its
    grant; None for none), told to the room with its join."""

    conn: ConnId
    user: str | None
    info: str | None = None

    @property
    def key(self) -> str:
        """What members are grouped by: the user, or the wsId of an anonymous one."""
        return f"u:{self.user}" if self.user is not None else f"c:{self.conn}"


@dataclass(frozen=True, slots=True)
class Present:
    """One user in a room: its identity as its first session entered (for an
    anonymous member, its wsId), and the wsIds of its sessions there."""

    user: str | None
    info: str | None
    ws_ids: tuple[ConnId, ...]

    def as_json(self) -> dict[str, object]:
        """How a client is told of it: ``user``, ``info`` when it has one, and for an
        anonymous member its ``wsId``."""
        member: dict[str, object] = {"user": self.user}
        if self.user is None:
            member["wsId"] = self.ws_ids[0]
        if self.info is not None:
            member["info"] = json.loads(self.info)
        return member


@dataclass(frozen=True, slots=True)
class Roster:
    """A room's users, and the room's stream position they are as of (None without
    history): a client that applies the presence events after that position to it
    knows who is there."""

    members: list[Present]
    position: Position | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A user's first session entered a room (``joined``), or its last one left;
    ``edge`` when that user was the room's first (it is occupied now) or its last
    (it is vacated): what webhooks report as room_occupied and room_vacated."""

    room: RoomId
    joined: bool
    identity: Identity
    edge: bool = False


@dataclass(slots=True)
class _Entry:
    identity: Identity
    holder: str
    deadline: float


@dataclass(slots=True)
class _Room:
    entries: dict[ConnId, _Entry] = field(default_factory=dict)
    # How many sessions each user has here, and the identity it joined with.
    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, Identity] = field(default_factory=dict)


class PresenceTable:
    """The members of every presence room of one process, and when each entry ends.

    Every method returns the changes it made, in order; the caller publishes them.
    Clocks are the caller's (``now`` and deadlines on one clock).

    A sweep looks only at the rooms one of whose entries may be past its deadline: each
    room is marked, in a heap, with the earliest deadline it may have (a bound: a keep
    pushes deadlines on without moving the mark, and the sweep that finds the room
    early marks it again with its true earliest). A sweep of every room each second
    was 40 % of the work that held up a 10,000-member gateway's other turns."""

    def __init__(self) -> None:
        self._rooms: dict[RoomId, _Room] = {}
        self._marks: list[tuple[float, RoomId]] = []  # a heap of (deadline, room)
        self._marked: dict[RoomId, float] = {}  # each room's earliest mark in the heap

    def enter(
        self, room: RoomId, identity: Identity, holder: str, deadline: float, now: float
    ) -> list[Change]:
        """``identity``'s session is in ``room``, held by ``holder`` until ``deadline``.
        Entries past their time are swept first. A session there already keeps its
        identity and takes the holder and deadline (a resume)."""
        changes = self.sweep_room(room, now)
        state = self._rooms.setdefault(room, _Room())
        self._mark(room, deadline)
        entry = state.entries.get(identity.conn)
        if entry is not None:
            entry.holder, entry.deadline = holder, deadline
            return changes
        state.entries[identity.conn] = _Entry(identity, holder, deadline)
        key = identity.key
        count = state.counts.get(key, 0) + 1
        state.counts[key] = count
        if count == 1:
            state.first[key] = identity
            changes.append(Change(room, True, identity, edge=len(state.counts) == 1))
        return changes

    def leave(self, room: RoomId, conn: ConnId) -> list[Change]:
        """``conn``'s session left ``room`` (or ended)."""
        state = self._rooms.get(room)
        if state is None:
            return []
        entry = state.entries.pop(conn, None)
        if entry is None:
            return []
        key = entry.identity.key
        count = state.counts[key] - 1
        changes = []
        if count:
            state.counts[key] = count
        else:
            del state.counts[key]
            changes.append(Change(room, False, state.first.pop(key), edge=not state.counts))
        if not state.entries:
            del self._rooms[room]
            self._marked.pop(room, None)  # its marks in the heap are stale now
        return changes

    def detach(self, conn: ConnId, holder: str, rooms: Iterable[RoomId], deadline: float) -> None:
        """The connection of ``holder`` ended: its entries (those it still holds) end
        at ``deadline`` unless it is resumed."""
        for room in rooms:
            state = self._rooms.get(room)
            entry = state.entries.get(conn) if state is not None else None
            if entry is not None and entry.holder == holder:
                entry.deadline = deadline
                self._mark(room, deadline)

    def keep(self, room: RoomId, held: Iterable[tuple[ConnId, str]], deadline: float) -> None:
        """Push the deadline of each entry its holder still holds to ``deadline``."""
        state = self._rooms.get(room)
        if state is None:
            return
        for conn, holder in held:
            entry = state.entries.get(conn)
            if entry is not None and entry.holder == holder:
                entry.deadline = max(entry.deadline, deadline)

    def sweep_room(self, room: RoomId, now: float) -> list[Change]:
        """Take out the entries of ``room`` whose deadline has passed."""
        state = self._rooms.get(room)
        if state is None:
            return []
        due = [conn for conn, entry in state.entries.items() if entry.deadline <= now]
        changes = []
        for conn in due:
            changes += self.leave(room, conn)
        return changes

    def sweep(self, now: float) -> list[Change]:
        """:meth:`sweep_room` for every room that may have an entry past its deadline
        (the rooms of marks due by ``now``), in the order of their marks."""
        changes = []
        marks, marked = self._marks, self._marked
        while marks and marks[0][0] <= now:
            when, room = heapq.heappop(marks)
            if marked.get(room) != when:
                continue  # stale: an earlier mark replaced it, or the room is gone
            del marked[room]
            changes += self.sweep_room(room, now)
            state = self._rooms.get(room)
            if state is not None:
                self._mark(room, min(entry.deadline for entry in state.entries.values()))
        return changes

    def _mark(self, room: RoomId, deadline: float) -> None:
        """An entry of ``room`` may end at ``deadline``: sweep it by then."""
        if deadline >= self._marked.get(room, NEVER):
            return  # an earlier mark (or a deadline that never comes) covers it
        self._marked[room] = deadline
        heapq.heappush(self._marks, (deadline, room))
        if len(self._marks) > 4 * len(self._marked) + 64:  # mostly stale: rebuild it
            self._marks[:] = [(when, marked) for marked, when in self._marked.items()]
            heapq.heapify(self._marks)  # in place: a sweep may be popping from it

    def roster(self, room: RoomId, now: float) -> list[Present]:
        """The users in ``room`` (entries past their time left out), in the order they
        joined."""
        state = self._rooms.get(room)
        if state is None:
            return []
        conns: dict[str, list[ConnId]] = {}
        for conn, entry in state.entries.items():
            if entry.deadline > now:
                conns.setdefault(entry.identity.key, []).append(conn)
        return [
            Present(identity.user, identity.info, tuple(conns[key]))
            for key, identity in state.first.items()
            if key in conns
        ]

    def rooms(self) -> list[RoomId]:
        return list(self._rooms)

    def __len__(self) -> int:
        """Entries, in every room."""
        return sum(len(state.entries) for state in self._rooms.values())


class PresenceStore(Protocol):
    """Where the presence of a cluster's rooms is kept, and who publishes its events.

    Each change is decided once, wherever it is asked for (several nodes may ask at
    once: a user's two sessions on two gateways entering together make one join), and
    its event is published in the room's stream in the same step, in a room the store
    ``announces`` (a presence room; rooms kept only for webhooks are not), and returned
    to the one caller that made it (for its webhooks)."""

    async def enter(self, room: RoomId, identity: Identity, holder: str) -> list[Change]:
        """``identity``'s session is in ``room``, held by ``holder`` (a connection of
        this node); the changes it made (a sweep's leaves first). Raises
        BrokerUnavailable."""
        ...

    async def roster(self, room: RoomId) -> Roster:
        """The room's users, and the position of its stream they are as of.
        Raises BrokerUnavailable."""
        ...

    async def leave(self, room: RoomId, conn: ConnId) -> list[Change]:
        """``conn``'s session is no longer in ``room``; the change it made, if any.
        Raises BrokerUnavailable."""
        ...

    async def detach(self, conn: ConnId, holder: str, rooms: list[RoomId]) -> None:
        """The connection of ``holder`` ended; its session waits for a resume (its
        entries in ``rooms`` end with the session TTL). Raises BrokerUnavailable."""
        ...

    async def keep(self, held: dict[RoomId, list[tuple[ConnId, str]]]) -> list[Change]:
        """Every ``refresh`` seconds: the entries this node's connections hold are
        alive (``held``: every ``keep_every`` seconds, else empty); entries past their
        time go (their users' leaves, which it returns). Raises BrokerUnavailable."""
        ...

    # How often keep() must be called (0: never; entries held here do not expire).
    refresh: float
    # How often it must be handed every entry held here (a multiple of ``refresh``).
    keep_every: float
