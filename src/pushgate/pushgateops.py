"""The answers of the pushgate protocol's operations (docs/protocol.md,
"Subscribing", "Publishing", "Presence"): subscribe, unsubscribe, renew, publish,
ask who is there; each an encoded reply, a refusal with its status and reason where
the room's namespace, the connection's state or the broker says no. A part of
:class:`~pushgate.pushgateproto.PushgateProtocol`, which queues the operations
(clientops.Serial) and keeps the state they read.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pushgate.clientops import Transport
from pushgate.commands import Membership
from pushgate.errors import BrokerUnavailable, InvalidField, RoomLimitExceeded, UnknownConnection
from pushgate.ids import ConnId, RoomId
from pushgate.namespaces import Granted, SubscribePolicy
from pushgate.security import Refusal
from pushgate.wireops import (
    MAX_OPERATION_ID,
    OPERATIONS,
    Operation,
    OperationError,
    encode_reply,
    encode_roster,
)

if TYPE_CHECKING:
    from pushgate.node import Node


@dataclass(frozen=True, slots=True)
class PushgateShared:
    """What the pushgate protocol of every connection of one gateway shares (one
    reference a connection, not four): its node, who may subscribe a connection to a
    room, the heartbeat a welcome announces, and the longest a welcome is held."""

    node: "Node"
    policy: SubscribePolicy
    heartbeat: float
    handshake_timeout: float


class OperationAnswers:
    """The operations' answers, over the protocol's state (pushgateproto.py)."""

    __slots__ = ()

    _shared: PushgateShared
    _conn: Transport
    _user: str | None
    _awaiting: bool
    expiring: dict[RoomId, float] | None

    if TYPE_CHECKING:  # the protocol's own (not stubs: they would come first)

        def _expires(self, room: RoomId, end: float) -> None: ...

        def _forget_expiry(self, room: RoomId) -> None: ...

    @property
    def _node(self) -> "Node":
        return self._shared.node

    @property
    def _policy(self) -> SubscribePolicy:
        return self._shared.policy

    async def _answer(self, op: Operation | OperationError) -> bytes:
        if isinstance(op, OperationError):
            return encode_reply(op.op or "unknown", op.id, None, code=op.code, reason=op.reason)
        conn_id = self._conn.conn_id
        if conn_id is None or self._awaiting:
            return self._refused(op, Refusal(409, "the connection is not open yet"))
        if op.op == "unsubscribe":
            return await self._unsubscribe(op, conn_id)
        if op.op == "publish":
            return await self._publish(op, conn_id)
        if op.op == "presence":
            return await self._presence(op, conn_id)
        if op.op == "refresh" and (self.expiring is None or op.room not in self.expiring):
            return self._refused(op, Refusal(409, f"no subscription of {op.room} to renew"))
        verdict = self._policy.check(
            conn_id, self._user, op.room, grant=op.grant, token=op.token, info=op.info
        )
        if isinstance(verdict, Refusal):
            return self._refused(op, verdict)
        return await self._subscribe(op, conn_id, verdict)

    async def _subscribe(self, op: Operation, conn_id: ConnId, granted: Granted) -> bytes:
        node = self._node
        try:
            await node.join(
                Membership(op.room, conn_id),
                by_client=True,
                until=granted.expires_at,
                info=granted.info,
            )
            position = await node.position_of(op.room) if node.broker.keeps_history else None
            roster = await node.roster(op.room)
        except RoomLimitExceeded as exc:
            return self._refused(
                op, Refusal(409, f"the connection is in {exc.limit} rooms already")
            )
        except BrokerUnavailable:
            return self._refused(op, Refusal(503, "the broker cannot be reached now; retry"))
        except UnknownConnection:
            return self._refused(op, Refusal(409, "the connection is closing"))
        if granted.expires_at is None:
            self._forget_expiry(op.room)
        else:
            self._expires(op.room, granted.expires_at)
        return encode_reply(
            op.op,
            op.id,
            op.room,
            position=(position.epoch, position.seq) if position is not None else None,
            expires=granted.expires_at,
            presence=encode_roster(roster) if roster is not None else None,
        )

    async def _unsubscribe(self, op: Operation, conn_id: ConnId) -> bytes:
        if not self._policy.may_leave(op.room):
            reason = f"only the back end may take a connection out of {op.room}"
            return self._refused(op, Refusal(403, reason))
        try:
            await self._node.leave(Membership(op.room, conn_id), by_client=True)
        except UnknownConnection:
            return self._refused(op, Refusal(409, "the connection is closing"))
        self._forget_expiry(op.room)
        return encode_reply(op.op, op.id, op.room)

    async def _publish(self, op: Operation, conn_id: ConnId) -> bytes:
        if not self._policy.may_publish(op.room):
            return self._refused(op, Refusal(403, f"members of {op.room} may not publish to it"))
        if op.room not in self._node.hub.rooms_of(conn_id):
            return self._refused(op, Refusal(403, f"only a member of {op.room} may publish to it"))
        try:
            await self._node.publish_from(
                conn_id, self._user, op.room, op.tag, op.data, echo=op.echo
            )
        except InvalidField as exc:
            return self._refused(op, Refusal(400, f'"data" {exc.message}'))
        except BrokerUnavailable:
            return self._refused(op, Refusal(503, "the broker cannot be reached now; retry"))
        return encode_reply(op.op, op.id, op.room)

    async def _presence(self, op: Operation, conn_id: ConnId) -> bytes:
        """Who is in a presence room the connection is in, and as of which position."""
        if not self._policy.has_presence(op.room):
            return self._refused(op, Refusal(404, f"{op.room} keeps no presence"))
        if op.room not in self._node.hub.rooms_of(conn_id):
            return self._refused(op, Refusal(403, f"only a member of {op.room} may ask"))
        try:
            roster = await self._node.roster(op.room)
        except BrokerUnavailable:
            return self._refused(op, Refusal(503, "the broker cannot be reached now; retry"))
        if roster is None:  # the namespace says presence, this node keeps none
            return self._refused(op, Refusal(404, f"{op.room} keeps no presence"))
        return encode_reply(op.op, op.id, op.room, presence=encode_roster(roster))

    @staticmethod
    def _refused(op: Operation, refusal: Refusal) -> bytes:
        return encode_reply(op.op, op.id, op.room, code=refusal.status, reason=refusal.reason)


def rate_refusal(data: object) -> OperationError:
    """The 429 an operation over the message rate gets (its op and id, if usable)."""
    op: str | None = None
    op_id: int | str | None = None
    if isinstance(data, dict):
        named = data.get("op")
        op = named if isinstance(named, str) and named in OPERATIONS else None
        raw = data.get("id")
        if (isinstance(raw, int) and not isinstance(raw, bool)) or (
            isinstance(raw, str) and len(raw) <= MAX_OPERATION_ID
        ):
            op_id = raw
    return OperationError("rate limit: too many messages; retry later", op, op_id, code=429)
