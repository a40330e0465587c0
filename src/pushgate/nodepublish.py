"""A node's publishing: the logic API's pushes and a member's message to its room,
each encoded to JSON once and published on its topic through the broker (which
keeps it in history and hands it to every node that follows the topic), timed and
counted. A part of :class:`~pushgate.node.Node`, over its state.
"""

import time

from pushgate.broker.base import Broker
from pushgate.commands import PushAll, PushRoom, PushUser
from pushgate.ids import ConnId, RoomId
from pushgate.meters import Meters
from pushgate.presencerooms import Reports
from pushgate.streams import TOPIC_ALL, room_topic, user_topic
from pushgate.wire import encode_push


class Publishing:
    """Pushes in from the logic API and from members, published, over the node's state."""

    broker: Broker
    meters: Meters
    _reports: Reports | None

    async def push_all(self, request: PushAll) -> int | None:
        """Publish a push to every connection in the cluster; see Broker.publish_push."""
        payload = encode_push(request.tag, request.val, exclude=request.exclude)
        return await self._publish_push("all", TOPIC_ALL, payload)

    async def push_room(self, request: PushRoom) -> int | None:
        """Publish a push to every member of a room, wherever it is connected."""
        payload = encode_push(
            request.tag, request.val, request.room, exclude=request.exclude, event=request.event
        )
        return await self._publish_push("room", room_topic(request.room), payload)

    async def push_user(self, request: PushUser) -> int | None:
        """Publish a push to every connection of a user, wherever it is connected."""
        payload = encode_push(
            request.tag,
            request.val,
            user=request.user,
            exclude=request.exclude,
            event=request.event,
        )
        return await self._publish_push("user", user_topic(request.user), payload)

    async def publish_from(
        self,
        conn: ConnId,
        user: str | None,
        room: RoomId,
        tag: int,
        val: object,
        *,
        echo: bool,
        event: str | None = None,
    ) -> None:
        """A member's message to its room: to every other member (and to itself with
        ``echo``), with its wsId and user, through the broker like any push (ordered,
        kept in history, recovered). Raises BrokerUnavailable, InvalidField("val")."""
        sender: dict[str, object] = {"wsId": conn}
        if user is not None:
            sender["user"] = user
        payload = encode_push(
            tag, val, room, exclude=None if echo else conn, sender=sender, event=event
        )
        await self._publish_push("client", room_topic(room), payload)
        reports = self._reports
        if reports is not None and reports.messages(room):
            told = {"room": room, **sender, "tag": tag, "val": val}
            if event is not None:
                told["event"] = event
            reports.emit("client_message", told)

    async def _publish_push(self, kind: str, topic: str, payload: bytes) -> int | None:
        started = time.perf_counter()
        delivered = await self.broker.publish_push(topic, payload)
        meters = self.meters
        meters.publish_seconds.observe(time.perf_counter() - started)
        meters.pushes[kind] += 1
        return delivered
