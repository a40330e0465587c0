"""Presence and the operator's actions, cluster-wide.

A logic node answers "who is connected, in which room, as which user" and acts on
one connection or one user's connections wherever they are held. It asks every live
gateway (the :class:`~pushgate.directory.Directory` lists them; in one process that
is the node itself) with a :class:`~pushgate.messages.Command` and merges the
replies: scatter and gather over the broker, each answer computed from the gateway's
own hub by :func:`answer_locally`, so nothing has to be kept in step in Redis.

Members of a room page by a cursor: the members are ordered by (node id, wsId),
and the cursor is the last member given, ``<node id>.<wsId>``. Each page asks every
node for its members after the cursor (and its count), so a page costs one round
trip to each gateway however large the room, and no member is listed twice while
the room stays unchanged.
"""

import asyncio
from datetime import UTC, datetime
from typing import Any

from pushgate.commands import Disconnect, PushConn, UserMembership
from pushgate.errors import BrokerUnavailable, InvalidField, UnknownConnection
from pushgate.ids import NO_CONN, NO_ROOM, ConnId, RoomId
from pushgate.localanswers import MAX_MEMBERS_PAGE
from pushgate.messages import Op, Reply
from pushgate.meters import LATENCY_BUCKETS
from pushgate.node import Node
from pushgate.wire import encode_push

__all__ = ["MAX_MEMBERS_PAGE", "Control", "parse_cursor", "timestamp"]


def timestamp(seconds: float | None) -> str | None:
    """Wall-clock seconds as ISO 8601 UTC with milliseconds, as the API shows them."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_cursor(text: str) -> tuple[str, ConnId]:
    """``<node id>.<wsId>`` as a page of members ends with; InvalidField otherwise."""
    node, dot, conn = text.partition(".")
    if not dot or not node or len(text) > 200:
        raise InvalidField("cursor", f"is not a cursor this API gave: {text[:40]!r}")
    return node, ConnId(conn)


class Control:
    """The logic API's view of the whole cluster, and its actions on connections."""

    def __init__(self, node: Node) -> None:
        self.node = node

    # Asking the gateways

    async def gateways(self) -> list[str]:
        """Every live node that holds connections, sorted by id."""
        nodes = set(await self.node.directory.nodes())
        if self.node.has_gateway:
            nodes.add(self.node.node_id)
        return sorted(nodes)

    async def _on(
        self,
        target: str,
        op: Op,
        *,
        room: RoomId = NO_ROOM,
        conn: ConnId = NO_CONN,
        args: dict[str, Any] | None = None,
    ) -> Reply:
        return await self.node.calls.call(target, op, room=room, conn=conn, args=args)

    async def _gather(
        self, op: Op, *, room: RoomId = NO_ROOM, args: dict[str, Any] | None = None
    ) -> list[tuple[str, Any]]:
        """Every gateway's answer, in node order; BrokerUnavailable if one fails."""
        answers, failures = await self._ask_all(op, room=room, args=args)
        if failures:
            raise failures[0][1]
        return answers

    async def _ask_all(
        self, op: Op, *, room: RoomId = NO_ROOM, args: dict[str, Any] | None = None
    ) -> tuple[list[tuple[str, Any]], list[tuple[str, BaseException]]]:
        """Every gateway's answer and every gateway's failure, in node order."""
        targets = await self.gateways()
        replies = await asyncio.gather(
            *(self._on(t, op, room=room, args=args) for t in targets), return_exceptions=True
        )
        answers: list[tuple[str, Any]] = []
        failures: list[tuple[str, BaseException]] = []
        for target, reply in zip(targets, replies, strict=True):
            if isinstance(reply, BaseException):
                failures.append((target, reply))
            else:
                answers.append((target, reply.data))
        return answers, failures

    async def _holder(self, conn: ConnId) -> str | None:
        if conn in self.node.hub:
            return self.node.node_id
        return await self.node.directory.locate(conn)

    # Presence

    async def stats(self) -> dict[str, Any]:
        """Connections, rooms and users, counted over every gateway; deliveries so far
        and the delivery-latency histogram, summed (the console graphs them).

        A gateway that does not answer (killed, and listed until --node-ttl forgets
        it) is named in ``missing`` and the others' counts are given: an operator
        looking at the cluster then should see it, not a 503. Only when none answers
        (the broker is away) is it BrokerUnavailable."""
        answers, failures = await self._ask_all("census")
        missing = [target for target, error in failures if isinstance(error, BrokerUnavailable)]
        if len(missing) < len(failures) or (failures and not answers):
            raise failures[0][1]
        rooms: set[str] = set()
        users: set[str] = set()
        per_node = []
        connections = deliveries = 0
        latency = [0] * (len(LATENCY_BUCKETS) + 1)
        for target, census in answers:
            connections += census["connections"]
            rooms.update(census["rooms"])
            users.update(census["users"])
            deliveries += census.get("deliveries", 0)
            for i, count in enumerate(census.get("latency", [])[: len(latency)]):
                latency[i] += count
            per_node.append(
                {
                    "node": target,
                    "connections": census["connections"],
                    "rooms": len(census["rooms"]),
                    "users": len(census["users"]),
                }
            )
        return {
            "connections": connections,
            "rooms": len(rooms),
            "users": len(users),
            "nodes": per_node,
            "missing": missing,
            "deliveries": deliveries,
            "deliveryLatency": {
                "le": [*LATENCY_BUCKETS, None],  # seconds; null: +Inf
                "cumulative": latency,
            },
        }

    async def room_sizes(self) -> dict[str, int]:
        """Every room of the cluster with its member count."""
        sizes: dict[str, int] = {}
        for _, census in await self._gather("census"):
            for room, size in census["rooms"].items():
                sizes[room] = sizes.get(room, 0) + size
        return sizes

    async def members(self, room: RoomId, limit: int, cursor: str | None) -> dict[str, Any]:
        """One page of a room's members, ordered by node and wsId, after ``cursor``."""
        after_node, after_conn = parse_cursor(cursor) if cursor else ("", ConnId(""))
        targets = await self.gateways()

        def args_for(target: str) -> dict[str, Any]:
            if target < after_node:  # already listed: only its count is wanted
                return {"after": None, "limit": 0}
            return {"after": after_conn if target == after_node else None, "limit": limit}

        replies = await asyncio.gather(
            *(self._on(t, "members", room=room, args=args_for(t)) for t in targets)
        )
        count = remaining = 0
        members: list[dict[str, Any]] = []
        last = ""
        for target, reply in zip(targets, replies, strict=True):
            page = reply.data
            count += page["count"]
            if target < after_node:
                continue
            remaining += page["remaining"]
            for conn, user, since in page["members"]:
                if len(members) == limit:
                    break
                members.append(
                    {
                        "wsId": conn,
                        "user": user,
                        "node": target,
                        "connectedSince": timestamp(since),
                    }
                )
                last = f"{target}.{conn}"
        more = remaining > len(members)
        return {"count": count, "members": members, "nextCursor": last if more else None}

    async def connection(self, conn: ConnId) -> dict[str, Any]:
        """Where a wsId is: connected (its node, rooms, user, since) or detached (a
        session waiting for a resume). Raises UnknownConnection for neither."""
        holder = await self._holder(conn)
        if holder is not None:
            try:
                found = (await self._on(holder, "conn", conn=conn)).data
            except UnknownConnection:
                found = None  # it went while we asked: perhaps detached now
            if found is not None:
                return {
                    "wsId": conn,
                    "state": "connected",
                    "node": holder,
                    "user": found["user"],
                    "rooms": found["rooms"],
                    "connectedSince": timestamp(found["since"]),
                }
        sessions = self.node.sessions
        info = await sessions.describe(conn)
        if info is None:
            raise UnknownConnection(conn)
        return {
            "wsId": conn,
            "state": "detached",
            "node": None,
            "user": info.user,
            "rooms": info.rooms,
            "connectedSince": None,
        }

    async def user(self, user: str) -> list[dict[str, Any]]:
        """Every connection of ``user``, wherever it is held."""
        connections = []
        for target, found in await self._gather("user", args={"uid": user}):
            for conn, rooms, since in found:
                connections.append(
                    {
                        "wsId": conn,
                        "node": target,
                        "rooms": rooms,
                        "connectedSince": timestamp(since),
                    }
                )
        return connections

    # Actions

    async def push_conn(self, request: PushConn) -> int:
        """Push to one connection, wherever it is held; at most once (not kept in
        history, so a detached session does not get it). UnknownConnection when no
        connection has the wsId now."""
        holder = await self._holder(request.conn)
        if holder is None:
            raise UnknownConnection(request.conn)
        message = encode_push(request.tag, request.val).decode()
        await self._on(holder, "send", conn=request.conn, args={"message": message})
        self.node.meters.pushes["conn"] += 1
        return 1

    async def disconnect(self, request: Disconnect) -> dict[str, Any]:
        """Close a connection or all of a user's, with the operator's code and reason;
        with ``end_session``, their sessions end too, so that they cannot resume."""
        args = {
            "code": request.code,
            "reason": request.reason,
            "end": request.end_session,
            "uid": request.user,
        }
        if request.user is not None:
            closed: list[str] = []
            for _, found in await self._gather("disconnect", args=args):
                closed.extend(found)
            return {"disconnected": closed, "sessionEnded": request.end_session and bool(closed)}
        conn = request.conn
        assert conn is not None  # Disconnect.from_fields: wsId or uid
        holder = await self._holder(conn)
        if holder is not None:
            try:
                found = (await self._on(holder, "disconnect", conn=conn, args=args)).data
                return {"disconnected": found, "sessionEnded": request.end_session}
            except UnknownConnection:
                pass  # gone meanwhile: its session may remain
        if request.end_session and await self.node.end_session(conn):
            return {"disconnected": [], "sessionEnded": True}
        raise UnknownConnection(conn)

    async def user_membership(self, request: UserMembership, op: Op) -> dict[str, Any]:
        """Every current connection of a user in (``join_user``) or out of
        (``leave_user``) a room; returns the wsIds changed and those already so."""
        changed: list[str] = []
        unchanged: list[str] = []
        for _, found in await self._gather(op, room=request.room, args={"uid": request.user}):
            changed.extend(found["changed"])
            unchanged.extend(found["unchanged"])
        return {"changed": changed, "unchanged": unchanged}
