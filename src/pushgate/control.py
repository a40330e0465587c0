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
import heapq
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pushgate.commands import Disconnect, Membership, PushConn, UserMembership
from pushgate.errors import BrokerUnavailable, InvalidField, UnknownConnection
from pushgate.framing import text_frame
from pushgate.ids import NO_CONN, NO_ROOM, ConnId, RoomId
from pushgate.messages import Command, Op, Reply
from pushgate.meters import LATENCY_BUCKETS
from pushgate.wire import encode_push

if TYPE_CHECKING:
    from pushgate.node import Node

MAX_MEMBERS_PAGE = 1000


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

    def __init__(self, node: "Node") -> None:
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
        if target == self.node.node_id:  # answered here, without the broker
            command = Command(op, room, conn, "", target, args or {})
            return await self.node.answer(command)
        reply = await self.node.ask(target, op, room=room, conn=conn, args=args)
        if reply.status == "unknown":
            raise UnknownConnection(conn)
        if reply.status != "ok":
            raise BrokerUnavailable(f"node {target}: {reply.error or reply.status}")
        return reply

    async def _gather(
        self, op: Op, *, room: RoomId = NO_ROOM, args: dict[str, Any] | None = None
    ) -> list[tuple[str, Any]]:
        """Every gateway's answer, in node order; BrokerUnavailable if one fails."""
        targets = await self.gateways()
        replies = await asyncio.gather(
            *(self._on(t, op, room=room, args=args) for t in targets), return_exceptions=True
        )
        answers = []
        for target, reply in zip(targets, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply
            answers.append((target, reply.data))
        return answers

    async def _holder(self, conn: ConnId) -> str | None:
        if conn in self.node.hub:
            return self.node.node_id
        return await self.node.directory.locate(conn)

    # Presence

    async def stats(self) -> dict[str, Any]:
        """Connections, rooms and users, counted over every gateway; deliveries so far
        and the delivery-latency histogram, summed (the console graphs them)."""
        rooms: set[str] = set()
        users: set[str] = set()
        per_node = []
        connections = deliveries = 0
        latency = [0] * (len(LATENCY_BUCKETS) + 1)
        for target, census in await self._gather("census"):
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
        info = await sessions.describe(conn) if sessions is not None else None
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
        sessions = self.node.sessions
        if request.end_session and sessions is not None and await sessions.end(conn):
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


# A gateway's side: answers from its own hub.


async def answer_locally(node: "Node", command: Command) -> Any:
    """What ``command`` asks of the connections this node holds (JSON-able)."""
    hub = node.hub
    offset = time.time() - asyncio.get_running_loop().time()
    args = command.args
    if command.op == "census":
        meters = node.meters
        return {
            "connections": len(hub),
            "rooms": hub.room_sizes(),
            "users": list(hub.users()),
            "deliveries": meters.deliveries,
            "latency": [count for _, count in meters.delivery_latency.cumulative()],
        }
    if command.op == "members":
        return _members_page(node, command.room, args.get("after"), int(args["limit"]), offset)
    if command.op == "user":
        conns = hub.conns_of_user(str(args["uid"]))
        return [[c, sorted(hub.rooms_of(c)), _since(node, c, offset)] for c in sorted(conns)]
    if command.op == "conn":
        if command.conn not in hub:
            raise UnknownConnection(command.conn)
        return {
            "user": hub.user_of(command.conn),
            "rooms": sorted(hub.rooms_of(command.conn)),
            "since": _since(node, command.conn, offset),
        }
    if command.op == "send":
        sink = hub.sink(command.conn)
        if sink is None:
            raise UnknownConnection(command.conn)
        sink.send(text_frame(str(args["message"]).encode()))
        return None
    if command.op == "disconnect":
        return await _disconnect(node, command)
    if command.op in ("join_user", "leave_user"):
        return await _user_membership(node, command)
    raise ValueError(f"unexpected command {command.op!r}")


def _since(node: "Node", conn: ConnId, offset: float) -> float | None:
    """When the connection opened, in wall-clock seconds (None if unknown)."""
    opened = getattr(node.hub.sink(conn), "connected_at", None)
    return None if opened is None else round(opened + offset, 3)


def _members_page(
    node: "Node", room: RoomId, after: object, limit: int, offset: float
) -> dict[str, Any]:
    hub = node.hub
    members: Iterable[ConnId] = hub.members_of(room)
    count = hub.room_size(room)
    if isinstance(after, str) and after:
        members = [c for c in members if c > after]
        remaining = len(members)
    else:
        remaining = count
    page = heapq.nsmallest(min(limit, MAX_MEMBERS_PAGE), members) if limit > 0 else []
    return {
        "count": count,
        "remaining": remaining,
        "members": [[c, hub.user_of(c), _since(node, c, offset)] for c in page],
    }


async def _disconnect(node: "Node", command: Command) -> list[str]:
    hub = node.hub
    args = command.args
    uid = args.get("uid")
    conns = hub.conns_of_user(str(uid)) if uid is not None else [command.conn]
    if uid is None and command.conn not in hub:
        raise UnknownConnection(command.conn)
    if args.get("end") and node.sessions is not None:
        # Ended first: the close then detaches nothing, and nobody can resume it.
        await asyncio.gather(*(node.sessions.end(c) for c in conns))
    closed: list[str] = []
    for conn in conns:
        sink = hub.sink(conn)
        close = getattr(sink, "close", None)
        if sink is None:
            continue
        if callable(close):
            close(int(args["code"]), str(args["reason"]))
        else:  # a sink that cannot close (tests): just forget it
            node.connection_closed(conn, sink)
        closed.append(conn)
    return closed


async def _user_membership(node: "Node", command: Command) -> dict[str, list[str]]:
    changed: list[str] = []
    unchanged: list[str] = []
    for conn in node.hub.conns_of_user(str(command.args["uid"])):
        request = Membership(command.room, conn)
        try:
            if command.op == "join_user":
                change = await node.join(request)
            else:
                change = await node.leave(request)
        except UnknownConnection:
            continue  # closed meanwhile
        (changed if change.changed else unchanged).append(conn)
    return {"changed": changed, "unchanged": unchanged}
