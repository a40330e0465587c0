"""A join or leave for a wsId this node does not hold: asked of the node that holds
it (through node-to-node calls), or applied to its detached session; and the other
nodes' joins and leaves of the connections held here, answered. A part of
:class:`~pushgate.node.Node`, over its state.
"""

from typing import TYPE_CHECKING

from pushgate.commands import Membership
from pushgate.directory import Directory
from pushgate.errors import RoomLimitExceeded, UnknownConnection
from pushgate.hub import Hub, MembershipChange
from pushgate.messages import Command, Op
from pushgate.nodecalls import Answer, NodeCalls
from pushgate.presencerooms import PresenceRooms
from pushgate.sessions import Sessions
from pushgate.streams import Position, room_topic


class Elsewhere:
    """Joins and leaves across nodes, over the node's state."""

    hub: Hub
    directory: Directory
    sessions: Sessions
    calls: NodeCalls
    node_id: str
    presence: PresenceRooms | None

    if TYPE_CHECKING:  # the node's own (not stubs: they would come first)

        async def join(self, request: Membership) -> MembershipChange: ...

        async def leave(self, request: Membership) -> MembershipChange: ...

        async def _position(self, topic: str) -> Position: ...

    async def _elsewhere(self, op: Op, request: Membership) -> MembershipChange:
        """A join or leave for a wsId not held here: its holder's, or its session's."""
        holder = await self.directory.locate(request.conn)
        if holder is not None and holder != self.node_id:
            return await self._ask(op, request, holder)
        if not self.sessions.enabled:
            raise UnknownConnection(request.conn)
        topic = room_topic(request.room)
        if op == "join":
            position = await self._position(topic)
            # No live node holds the connection: the session is detached, or its holder
            # died (its entry then outlives it by up to the session TTL), or it is being
            # resumed right now and not yet findable (the one case a join can miss).
            added = await self.sessions.add_stream(
                request.conn,
                topic,
                position,
                max_rooms=self.hub.max_rooms_per_conn,
            )
            if added == "limit":
                raise RoomLimitExceeded(request.conn, self.hub.max_rooms_per_conn)
            result: str = added
        else:
            result = await self.sessions.remove_stream(request.conn, topic)
            if result == "removed" and self.presence is not None:
                await self.presence.leave(request.room, request.conn)
        if result == "unknown":
            raise UnknownConnection(request.conn)
        return MembershipChange(result in ("added", "removed"), False)

    async def _ask(self, op: Op, request: Membership, holder: str) -> MembershipChange:
        reply = await self.calls.call(
            holder,
            op,
            room=request.room,
            conn=request.conn,
            about=f", which holds wsId {request.conn},",
        )
        return MembershipChange(reply.changed, False)

    async def _answer_membership(self, command: Command) -> Answer:
        """Another node's join or leave of a connection held here."""
        if command.conn not in self.hub:
            raise UnknownConnection(command.conn)
        request = Membership(command.room, command.conn)
        change = await (self.join(request) if command.op == "join" else self.leave(request))
        return Answer(changed=change.changed)
