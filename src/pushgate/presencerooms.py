"""A node's side of presence (presence.py): which rooms keep it, who each local
connection is, and telling the store of every entry, leave, close and resume, so that
the room's members hear of each user's join and leave exactly once.

The session core and the node call it where membership changes; it decides nothing
about events (the store does, atomically, wherever it is asked). Every
``PresenceStore.refresh`` seconds it tells the store that the entries its connections
hold are alive, and lets it sweep the rooms it has members in (a session that ended
unresumed leaves then).
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from pushgate.errors import BrokerUnavailable
from pushgate.hub import Hub
from pushgate.ids import ConnId, RoomId
from pushgate.presence import KEEP_SLICE, Identity, PresenceStore, Roster

log = logging.getLogger("pushgate.presence")

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


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
    ) -> None:
        self.store = store
        self.tracks = has_presence
        self._hub = hub
        self._spawn = spawn
        self._holder_of = holder_of
        # Without sessions a connection's end is its session's: its leaves are at once.
        self._sessions_kept = sessions_kept
        self._info: dict[ConnId, str] = {}  # the connection token's info, where it had one
        self._rooms: set[RoomId] = set()  # presence rooms this node has had members in
        self._keeper: asyncio.Task[None] | None = None

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

    async def enter(self, room: RoomId, conn: ConnId, info: str | None = None) -> None:
        """The session of ``conn`` (held here) is in ``room``; ``info`` from its grant
        or token for this room, else its connection token's. Raises BrokerUnavailable."""
        if not self.tracks(room):
            return
        identity = Identity(conn, self._hub.user_of(conn), info or self._info.get(conn))
        self._rooms.add(room)
        await self.store.enter(room, identity, self._holder_of(conn))

    async def enter_all(self, rooms: Iterable[RoomId], conn: ConnId) -> None:
        """:meth:`enter` for each of a new or resumed session's rooms. Raises
        BrokerUnavailable."""
        await asyncio.gather(*(self.enter(room, conn) for room in rooms if self.tracks(room)))

    async def leave(self, room: RoomId, conn: ConnId) -> None:
        """``conn``'s session left ``room``. Raises BrokerUnavailable."""
        if self.tracks(room):
            await self.store.leave(room, conn)

    async def roster(self, room: RoomId) -> Roster | None:
        """Who is in ``room``, when it keeps presence. Raises BrokerUnavailable."""
        return await self.store.roster(room) if self.tracks(room) else None

    def closed(self, conn: ConnId, holder: str, rooms: Iterable[RoomId]) -> None:
        """The connection of ``holder`` ended, in ``rooms``: its session waits for a
        resume (its entries end with it), or, without sessions, has ended."""
        self._info.pop(conn, None)
        tracked = [room for room in rooms if self.tracks(room)]
        if not tracked:
            return
        if self._sessions_kept:
            self._spawn(self._quietly(self.store.detach(conn, holder, tracked), conn))
        else:
            self._spawn(self.ended(conn, tracked))

    async def ended(self, conn: ConnId, rooms: Iterable[RoomId]) -> None:
        """``conn``'s session ended (it will not be resumed): it leaves ``rooms``."""
        tracked = [room for room in rooms if self.tracks(room)]
        await asyncio.gather(*(self._quietly(self.store.leave(r, conn), conn) for r in tracked))

    @staticmethod
    async def _quietly(call: Coroutine[Any, Any, None], conn: ConnId) -> None:
        # The entry then ends at its deadline: its leave comes late, not never.
        try:
            await call
        except BrokerUnavailable as exc:
            log.warning("presence of %s: %s", conn, exc)

    async def _keep(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.store.refresh)
            held = await self.held()
            try:
                await self.store.keep(held)
            except BrokerUnavailable as exc:
                if not failing:
                    log.warning("cannot keep this node's presence entries alive: %s", exc)
                failing = True
            else:
                failing = False

    async def held(self) -> dict[RoomId, list[tuple[ConnId, str]]]:
        """The entries this node's connections hold, by room (rooms it has no member
        in any more are forgotten), KEEP_SLICE rooms per turn of the loop."""
        hub, holder_of = self._hub, self._holder_of
        held = {}
        for count, room in enumerate(list(self._rooms), 1):
            if count % KEEP_SLICE == 0:
                await asyncio.sleep(0)
            if not hub.room_size(room):
                self._rooms.discard(room)
                continue
            held[room] = [(conn, holder_of(conn)) for conn in hub.members_of(room)]
        return held
