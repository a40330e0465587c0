"""Joins and leaves of the connections a node holds: the hub's rooms, the room's
topic followed, the session's streams and the room's presence kept in step, and
the connection told when the back end moved it. A wsId held elsewhere, or detached,
goes to nodeelsewhere.py. A part of :class:`~pushgate.node.Node`, over its state.
"""

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from pushgate.commands import Membership
from pushgate.errors import BrokerUnavailable, UnknownConnection
from pushgate.follow import Following
from pushgate.hub import Hub, MembershipChange
from pushgate.messages import Op
from pushgate.presencerooms import PresenceRooms
from pushgate.sessions import Sessions
from pushgate.streams import Position, room_topic


class Joins:
    """Joins and leaves of the connections held here, over the node's state."""

    hub: Hub
    following: Following
    sessions: Sessions
    presence: PresenceRooms | None

    if TYPE_CHECKING:  # the node's own (not stubs: they would come first)

        def _in_background(self, coro: Coroutine[Any, Any, None]) -> "asyncio.Task[None]": ...

        async def _position(self, topic: str) -> Position: ...

        async def _elsewhere(self, op: Op, request: Membership) -> MembershipChange: ...

    async def join(
        self,
        request: Membership,
        *,
        by_client: bool = False,
        until: float | None = None,
        info: str | None = None,
        user: str | None = None,
    ) -> MembershipChange:
        """Put a connection, wherever it is held, in a room, or a detached session in
        it; returns once pushes to the room reach it (or wait in history for it), and
        in a presence room once its join is published (if it is its user's first).

        ``by_client``: the connection subscribed itself (held here), until ``until``
        (Unix seconds; None: for as long as its session lasts), which its session
        then keeps even when it was in the room already, with ``info`` from its grant
        and, in a presence room, as ``user`` where its protocol names the member per
        room (Pusher's ``channel_data``; None: the connection's own user); otherwise
        the back end joined it, and it is told so (``Sink.member``).
        Raises UnknownConnection, RoomLimitExceeded, BrokerUnavailable."""
        if request.conn not in self.hub:
            return await self._elsewhere("join", request)
        change = self.hub.join(request.room, request.conn)
        topic = room_topic(request.room)
        try:
            await self.following.sync(topic)
            if (change.changed or by_client) and self.sessions.enabled:
                position = await self._position(topic)
                await self.sessions.add_stream(
                    request.conn,
                    topic,
                    position,
                    max_rooms=self.hub.max_rooms_per_conn,
                    expires_at=until,
                )
            if (change.changed or by_client) and self.presence is not None:
                await self.presence.enter(request.room, request.conn, info, user)
        except BrokerUnavailable:
            if change.changed:  # undo: the caller is told it failed
                with contextlib.suppress(UnknownConnection):  # it may have gone meanwhile
                    self.hub.leave(request.room, request.conn)
                self._in_background(self.following.sync(topic, now=True))  # and let go of the topic
            raise
        if change.changed and not by_client:
            self._tell_member(request, joined=True)
        return change

    async def leave(
        self, request: Membership, *, by_client: bool = False, reason: str = "server"
    ) -> MembershipChange:
        """Take a connection, wherever it is held, or a detached session, out of a
        room; unless ``by_client``, the connection is told why (``reason``)."""
        if request.conn not in self.hub:
            return await self._elsewhere("leave", request)
        change = self.hub.leave(request.room, request.conn)
        if change.room_boundary:
            await self.following.sync(room_topic(request.room))
        if change.changed:
            await self.sessions.remove_stream(request.conn, room_topic(request.room))
            if self.presence is not None:
                await self.presence.leave(request.room, request.conn)
            if not by_client:
                self._tell_member(request, joined=False, reason=reason)
        return change

    def _tell_member(self, request: Membership, *, joined: bool, reason: str = "server") -> None:
        sink = self.hub.sink(request.conn)
        if sink is not None:
            sink.member(request.room, joined, reason)
