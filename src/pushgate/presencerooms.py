"""A node's side of presence (presence.py): which rooms keep it, who each local
connection is, and telling the store of every entry, leave, close and resume, so that
the room's members hear of each user's join and leave exactly once.

The session core and the node call it where membership changes; it decides nothing
about events (the store does, atomically, wherever it is asked). Every
``PresenceStore.refresh`` seconds it lets the store sweep (a session that ended
unresumed leaves then), and every ``PresenceStore.keep_every`` seconds (as often with
Redis, where they are the node's liveness) it tells the store that the entries its
connections hold are alive.

The webhooks hear from it too (:class:`Reports`): each change the store returns to
this node is reported once, cluster-wide, as member_joined and member_left (with
room_occupied and room_vacated at a room's first and last user). A room is kept in
the store when it keeps presence or when the webhooks want its events (then nothing
is published in its stream). Sessions are kept the same way, for session_started
and session_ended: each session is an entry of its own in one of SESSION_SHARDS
pseudo-rooms ``@sessions:<n>`` (``@`` is in no room id a client or the API can
name), entered when the session starts or resumes, detached when its connection
ends, and swept when its TTL passes unresumed, or on a node that died, by whichever
node keeps that shard next. The change is reported by the node the store returned
it to; were that node to die between the store's step and its webhook's queueing,
that one event would be lost (docs/webhooks.md says so).
"""

import asyncio
import contextlib
import json
import logging
import zlib
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

from pushgate.errors import BrokerUnavailable
from pushgate.hub import Hub
from pushgate.ids import ConnId, RoomId
from pushgate.presence import (
    KEEP_SLICE,
    KEEP_SLICE_ENTRIES,
    Change,
    Identity,
    PresenceStore,
    Roster,
)
from pushgate.slices import in_slices

log = logging.getLogger("pushgate.presence")

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]

# Pseudo-rooms the sessions are kept in (a Redis Cluster spreads them over its slots).
SESSION_SHARDS = 64
SESSIONS = "@sessions:"


def session_room(conn: ConnId) -> RoomId:
    """The pseudo-room ``conn``'s session is kept in."""
    return RoomId(f"{SESSIONS}{zlib.crc32(conn.encode()) % SESSION_SHARDS}")


class Emit(Protocol):
    def __call__(self, name: str, data: Mapping[str, object]) -> None: ...


@dataclass(frozen=True, slots=True)
class Reports:
    """What the webhooks want told: ``emit`` takes an event; ``rooms`` says whether a
    room's occupancy and members are wanted, ``sessions`` whether sessions are,
    ``messages`` whether members' messages to a room are."""

    emit: Emit
    rooms: Callable[[RoomId], bool]
    sessions: bool
    messages: Callable[[RoomId], bool]


class PresenceRooms:
    """Keeps a node's connections' presence in the store."""

    def __init__(
        self,
        store: PresenceStore,
        has_presence: Callable[[RoomId], bool],
        hub: Hub,
        spawn: Spawn,
        *,
        holder_of: Callable[[ConnId], str],
        sessions_kept: bool,
        reports: Reports | None = None,
    ) -> None:
        self.store = store
        self.announces = has_presence
        self._reports = reports
        self._hub = hub
        self._spawn = spawn
        self._holder_of = holder_of
        # Without sessions a connection's end is its session's: its leaves are at once.
        self._sessions_kept = sessions_kept
        self._info: dict[ConnId, str] = {}  # the connection token's info, where it had one
        self._rooms: set[RoomId] = set()  # rooms this node has had members in
        # This node's sessions (held here), by their pseudo-room, when they are reported.
        self._sessions: dict[RoomId, set[ConnId]] | None = (
            {} if reports is not None and reports.sessions else None
        )
        self._keeper: asyncio.Task[None] | None = None

    def tracks(self, room: RoomId) -> bool:
        """``room``'s members are kept in the store (it keeps presence, or the
        webhooks want its events)."""
        reports = self._reports
        return self.announces(room) or (reports is not None and reports.rooms(room))

    def wanted(self, rooms: Iterable[RoomId]) -> bool:
        """A session in ``rooms`` is kept in the store (its own, or in some room)."""
        return self._sessions is not None or any(map(self.tracks, rooms))

    def start(self) -> None:
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep(), name="pushgate-presence"
        )

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper

    def identify(self, conn: ConnId, info: str | None) -> None:
        """``conn``'s token gave it ``info`` (told with its joins)."""
        if info is not None:
            self._info[conn] = info

    async def enter(
        self, room: RoomId, conn: ConnId, info: str | None = None, user: str | None = None
    ) -> None:
        """The session of ``conn`` (held here) is in ``room``; ``info`` from its grant
        or token for this room, else its connection token's; as ``user``, where its
        protocol names the member per room, else as its connection's user. Raises
        BrokerUnavailable."""
        if not self.tracks(room):
            return
        user = user if user is not None else self._hub.user_of(conn)
        identity = Identity(conn, user, info or self._info.get(conn))
        self._rooms.add(room)
        self._report(await self.store.enter(room, identity, self._holder_of(conn)), "left")

    async def enter_all(self, rooms: Iterable[RoomId], conn: ConnId) -> None:
        """:meth:`enter` for each of a new or resumed session's rooms, and its session
        (session_started, unless it is a resume). Raises BrokerUnavailable."""
        calls = [self.enter(room, conn) for room in rooms if self.tracks(room)]
        if self._sessions is not None:
            calls.append(self._enter_session(conn))
        await asyncio.gather(*calls)

    async def _enter_session(self, conn: ConnId) -> None:
        assert self._sessions is not None
        room = session_room(conn)
        self._sessions.setdefault(room, set()).add(conn)
        # Each session an entry of its own (anonymous), its user in its info.
        info = json.dumps({"user": self._hub.user_of(conn)})
        identity = Identity(conn, None, info)
        self._report(await self.store.enter(room, identity, self._holder_of(conn)), "expired")

    async def enter_again(self, conns: Iterable[ConnId]) -> None:
        """The store lost every entry (a Redis restarted empty): enter each of
        ``conns`` (held here) again in its rooms and as a session, as a resume
        does; the store then tells of their joins again. Raises BrokerUnavailable."""
        hub = self._hub
        conns = iter(conns)
        while chunk := list(islice(conns, KEEP_SLICE)):
            held = [conn for conn in chunk if conn in hub]
            await asyncio.gather(*(self.enter_all(hub.rooms_of(conn), conn) for conn in held))

    async def leave(self, room: RoomId, conn: ConnId) -> None:
        """``conn``'s session left ``room``. Raises BrokerUnavailable."""
        if self.tracks(room):
            self._report(await self.store.leave(room, conn), "left")

    async def roster(self, room: RoomId) -> Roster | None:
        """Who is in ``room``, when it keeps presence. Raises BrokerUnavailable."""
        return await self.store.roster(room) if self.announces(room) else None

    def closed(
        self, conn: ConnId, holder: str, rooms: Iterable[RoomId], *, ended: bool = False
    ) -> None:
        """The connection of ``holder`` ended, in ``rooms``: its session waits for a
        resume (its entries end with it), or, without sessions or ``ended`` with its
        connection, has ended."""
        self._info.pop(conn, None)
        tracked = [room for room in rooms if self.tracks(room)]
        if self._sessions is not None:
            room = session_room(conn)
            local = self._sessions.get(room)
            if local is not None:
                local.discard(conn)
                if not local:
                    del self._sessions[room]
            tracked.append(room)
        if not tracked:
            return
        if self._sessions_kept and not ended:
            self._spawn(self._quietly(self.store.detach(conn, holder, tracked), conn))
        else:
            self._spawn(self._end(conn, tracked, "closed"))

    async def ended(self, conn: ConnId, rooms: Iterable[RoomId]) -> None:
        """``conn``'s session ended (it will not be resumed; the back end ended it):
        it leaves ``rooms``."""
        tracked = [room for room in rooms if self.tracks(room)]
        if self._sessions is not None:
            tracked.append(session_room(conn))
        await self._end(conn, tracked, "ended")

    async def _end(self, conn: ConnId, rooms: list[RoomId], reason: str) -> None:
        """``conn`` leaves ``rooms``; each leave the store could not make is logged (the
        entry then ends at its deadline: its leave comes late, not never)."""
        results = await asyncio.gather(
            *(self.store.leave(room, conn) for room in rooms), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, BrokerUnavailable):
                    raise result
                log.warning("presence of %s: %s", conn, result)
            else:
                self._report(result, reason)

    @staticmethod
    async def _quietly(call: Coroutine[Any, Any, None], conn: ConnId) -> None:
        # The entry then ends at its deadline: its leave comes late, not never.
        try:
            await call
        except BrokerUnavailable as exc:
            log.warning("presence of %s: %s", conn, exc)

    async def _keep(self) -> None:
        failing = False
        loop = asyncio.get_running_loop()
        held_at = float("-inf")
        while True:
            store = self.store
            await asyncio.sleep(store.refresh)
            held: dict[RoomId, list[tuple[ConnId, str]]] = {}
            # Half a refresh early: a timer's late wake-up must not skip a keep.
            if loop.time() - held_at >= store.keep_every - store.refresh / 2:
                held_at = loop.time()
                held = await self.held()
            try:
                self._report(await store.keep(held), "expired")
            except BrokerUnavailable as exc:
                if not failing:
                    log.warning("cannot keep this node's presence entries alive: %s", exc)
                failing = True
            else:
                failing = False

    async def held(self) -> dict[RoomId, list[tuple[ConnId, str]]]:
        """The entries this node's connections hold, by room (rooms it has no member
        in any more are forgotten), about KEEP_SLICE_ENTRIES per turn of the loop."""
        hub, holder_of = self._hub, self._holder_of
        held: dict[RoomId, list[tuple[ConnId, str]]] = {}
        rooms = [(room, list(hub.members_of(room))) for room in self._rooms]
        self._rooms.difference_update(room for room, conns in rooms if not conns)
        if self._sessions is not None:
            rooms += [(room, list(conns)) for room, conns in self._sessions.items()]
        async for room, conns in in_slices(rooms, KEEP_SLICE_ENTRIES):
            held.setdefault(room, []).extend((conn, holder_of(conn)) for conn in conns)
        return held

    # Webhooks

    def _report(self, changes: list[Change], reason: str) -> None:
        """Tell the webhooks of the changes the store made for this node; ``reason``:
        why a leave happened (a member's or a session's)."""
        reports = self._reports
        if reports is None:
            return
        for change in changes:
            if change.room.startswith(SESSIONS):
                _report_session(reports, change, reason)
            elif reports.rooms(change.room):
                _report_member(reports, change, reason)


def _report_session(reports: Reports, change: Change, reason: str) -> None:
    if not reports.sessions:
        return
    identity = change.identity
    user = json.loads(identity.info)["user"] if identity.info else None
    data: dict[str, object] = {"wsId": identity.conn, "user": user}
    if change.joined:
        reports.emit("session_started", data)
    else:
        reports.emit("session_ended", {**data, "reason": reason})


def _report_member(reports: Reports, change: Change, reason: str) -> None:
    room, identity = change.room, change.identity
    member: dict[str, object] = {"room": room, "user": identity.user}
    if identity.user is None:
        member["wsId"] = identity.conn
    if identity.info is not None:
        member["info"] = json.loads(identity.info)
    if change.joined:
        if change.edge:
            reports.emit("room_occupied", {"room": room})
        reports.emit("member_joined", member)
    else:
        # "left": it left the room; else its session ended ("expired", "closed", "ended").
        reports.emit(
            "member_left", {**member, "reason": "left" if reason == "left" else "session_ended"}
        )
        if change.edge:
            reports.emit("room_vacated", {"room": room})
