"""A node: this process's hub of connections, joined to the others by a broker.

The node turns the logic API's requests into broker traffic and broker traffic into
fan-out. A push is encoded to JSON once by the node that accepts it, published on a
topic (``all`` or ``room:<id>``), framed once by each node that receives it, and the
same frame bytes are handed to every local recipient.

A node subscribes to a room's topic while it has at least one local member in that
room, and only then; :meth:`Node._sync_room` keeps the subscription in step with
membership even when joins, leaves and disconnects interleave.
"""

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any

from pushgate.broker.base import Broker
from pushgate.commands import Membership, PushAll, PushRoom
from pushgate.framing import text_frame
from pushgate.hub import Hub, MembershipChange, Sink
from pushgate.ids import ConnId, RoomId
from pushgate.wire import encode_push

log = logging.getLogger(__name__)

TOPIC_ALL = "all"
ROOM_TOPIC_PREFIX = "room:"


def room_topic(room: RoomId) -> str:
    return ROOM_TOPIC_PREFIX + room


class Node:
    """Owns the hub and the broker; the logic API and the gateway both talk to it."""

    def __init__(self, hub: Hub, broker: Broker) -> None:
        self.hub = hub
        self.broker = broker
        self._subscribed: set[str] = set()
        self._room_locks: dict[RoomId, tuple[asyncio.Lock, int]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.broker.start(self)
        await self.broker.subscribe(TOPIC_ALL)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.broker.close()

    # The logic API's side

    async def push_all(self, request: PushAll) -> int | None:
        """Publish a push to every connection in the cluster; see Broker.publish."""
        return await self.broker.publish(TOPIC_ALL, encode_push(request.tag, request.val))

    async def push_room(self, request: PushRoom) -> int | None:
        """Publish a push to every member of a room, wherever it is connected."""
        payload = encode_push(request.tag, request.val, request.room)
        return await self.broker.publish(room_topic(request.room), payload)

    async def join(self, request: Membership) -> MembershipChange:
        """Put a connection in a room; returns once pushes to the room reach it."""
        change = self.hub.join(request.room, request.conn)
        await self._sync_room(request.room)
        return change

    async def leave(self, request: Membership) -> MembershipChange:
        change = self.hub.leave(request.room, request.conn)
        if change.room_boundary:
            await self._sync_room(request.room)
        return change

    def connection_count(self) -> int:
        return len(self.hub)

    def room_sizes(self) -> dict[RoomId, int]:
        return self.hub.room_sizes()

    # The gateway's side

    def connection_opened(self, conn: ConnId, sink: Sink) -> None:
        self.hub.register(conn, sink)

    def connection_closed(self, conn: ConnId) -> None:
        """Forget a connection and every room membership it had, at once."""
        for room in self.hub.unregister(conn):
            self._in_background(self._sync_room(room))

    def conn_ids(self) -> Iterator[ConnId]:
        return self.hub.conn_ids()

    # The broker's side (BrokerHandler)

    def on_message(self, topic: str, payload: bytes) -> int:
        frame = text_frame(payload)
        if topic == TOPIC_ALL:
            return self.hub.broadcast(frame)
        if topic.startswith(ROOM_TOPIC_PREFIX):
            return self.hub.send_room(RoomId(topic[len(ROOM_TOPIC_PREFIX) :]), frame)
        log.warning("dropped a message on unexpected topic %r", topic)
        return 0

    # Subscriptions follow membership

    async def _sync_room(self, room: RoomId) -> None:
        """Subscribe to a room's topic if it has local members, else unsubscribe.

        Each call reads the wanted state under the room's lock, so whatever order
        concurrent calls run in, the last one leaves the subscription matching the
        membership.
        """
        topic = room_topic(room)
        lock, users = self._room_locks.get(room, (asyncio.Lock(), 0))
        self._room_locks[room] = (lock, users + 1)
        try:
            async with lock:
                wanted = self.hub.room_size(room) > 0
                if wanted and topic not in self._subscribed:
                    await self.broker.subscribe(topic)
                    self._subscribed.add(topic)
                elif not wanted and topic in self._subscribed:
                    await self.broker.unsubscribe(topic)
                    self._subscribed.discard(topic)
        finally:
            lock, users = self._room_locks[room]
            if users == 1:
                del self._room_locks[room]
            else:
                self._room_locks[room] = (lock, users - 1)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: "asyncio.Task[None]") -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("room subscription update failed", exc_info=task.exception())
