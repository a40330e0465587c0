"""The presence of one process's rooms (the Redis store is broker/redis_presence.py).

Every node of one process shares its :class:`~pushgate.presence.PresenceTable`; an
event is published in the room's stream through the broker as soon as the table
decides on it, before anything else can change the room (the memory broker assigns
its position synchronously), so the events of a room are in the order of its changes.
"""

import time
from collections.abc import Callable

from pushgate.broker.base import Broker
from pushgate.ids import ConnId, RoomId
from pushgate.presence import KEEP_SLICE_ENTRIES, Change, Identity, PresenceTable, Roster
from pushgate.slices import in_slices
from pushgate.streams import room_topic
from pushgate.wireops import encode_presence

# The longest a node goes without handing the store the entries it holds (seconds).
MAX_KEEP_EVERY = 10.0


class MemoryPresence:
    """Presence in a dict; detached entries end ``ttl`` after their detach.

    A held entry ends too, unless kept: its connection may have closed while it was
    entering (the detach came first and found nothing), and an entry nobody holds
    must not stay forever."""

    def __init__(
        self,
        broker: Broker,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        announces: Callable[[RoomId], bool] = lambda room: True,
        quiet_to_joiner: Callable[[RoomId], bool] = lambda room: False,
    ) -> None:
        self.table = PresenceTable()
        self._broker = broker
        self._announces = announces
        self._quiet_to_joiner = quiet_to_joiner  # see wireops.encode_presence
        self._ttl = ttl
        self._clock = clock
        # keep() runs this often: a session that ended leaves within it.
        self.refresh = min(1.0, max(0.05, ttl / 4))
        # ... and is handed the entries held here this often: a walk of every member
        # of the node (25 ms of CPU a second at 10,000 members, every second, was
        # what held up its subscribes' replies most). In one process nothing but the
        # rare entry whose connection closed while entering needs it.
        self.keep_every = max(self.refresh, min(MAX_KEEP_EVERY, ttl / 4))
        self._held_ttl = ttl + 2 * self.keep_every

    async def enter(self, room: RoomId, identity: Identity, holder: str) -> list[Change]:
        now = self._clock()
        return await self._publish(
            self.table.enter(room, identity, holder, now + self._held_ttl, now)
        )

    async def roster(self, room: RoomId) -> Roster:
        position = None
        if self._broker.keeps_history:  # read first: the roster is as of it, or later
            position = (await self._broker.history(room_topic(room), None)).position
        return Roster(self.table.roster(room, self._clock()), position)

    async def leave(self, room: RoomId, conn: ConnId) -> list[Change]:
        return await self._publish(self.table.leave(room, conn))

    async def detach(self, conn: ConnId, holder: str, rooms: list[RoomId]) -> None:
        self.table.detach(conn, holder, rooms, self._clock() + self._ttl)

    async def keep(self, held: dict[RoomId, list[tuple[ConnId, str]]]) -> list[Change]:
        # About KEEP_SLICE_ENTRIES per turn of the loop, the others' work going on between.
        deadline = self._clock() + self._held_ttl
        async for room, entries in in_slices(held.items(), KEEP_SLICE_ENTRIES):
            self.table.keep(room, entries, deadline)
        return await self._publish(self.table.sweep(self._clock()))

    async def _publish(self, changes: list[Change]) -> list[Change]:
        for change in changes:
            if self._announces(change.room):
                event = encode_presence(change, quiet_to_joiner=self._quiet_to_joiner(change.room))
                await self._broker.publish_push(room_topic(change.room), event)
        return changes
