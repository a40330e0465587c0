"""A gateway's answers to the other nodes' calls about the connections it holds:
presence (census, a room's members, a user's or one connection's state) and the
operator's actions (send to one, disconnect, a user's joins and leaves), each
computed from this node's own hub (docs/presence.md). The asking side, which
gathers and merges the answers of every gateway, is control.py.

Registered on the node's :class:`~pushgate.nodecalls.NodeCalls` by
:func:`answer_calls`; typed against :class:`LocalNode`, not the node itself, so
that the node may import this module and this module nothing of the node.
"""

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from pushgate.commands import Membership
from pushgate.errors import UnknownConnection
from pushgate.hub import Hub, MembershipChange, Outgoing
from pushgate.ids import ConnId
from pushgate.messages import Command, Op
from pushgate.meters import Meters
from pushgate.nodecalls import Answer, NodeCalls
from pushgate.sessions import Sessions

MAX_MEMBERS_PAGE = 1000


class LocalNode(Protocol):
    """What the answers need of the node that holds the connections."""

    hub: Hub
    meters: Meters
    sessions: Sessions

    async def join(self, request: Membership) -> MembershipChange: ...

    async def leave(self, request: Membership) -> MembershipChange: ...

    async def end_session(self, conn: ConnId) -> bool: ...


def answer_calls(calls: NodeCalls, node: LocalNode) -> None:
    """Answer presence queries and the operator's actions from ``node``'s hub."""
    handlers: dict[Op, Callable[[LocalNode, Command], Awaitable[Any]]] = {
        "census": _census,
        "members": _members,
        "user": _user,
        "conn": _conn,
        "send": _send,
        "disconnect": _disconnect,
        "join_user": _user_membership,
        "leave_user": _user_membership,
    }
    for op, handler in handlers.items():
        calls.handle(op, _answering(node, handler))


def _answering(
    node: LocalNode, handler: Callable[[LocalNode, Command], Awaitable[Any]]
) -> Callable[[Command], Awaitable[Answer]]:
    async def answer(command: Command) -> Answer:
        return Answer(data=await handler(node, command))

    return answer


def _offset() -> float:
    """Wall clock minus loop clock: turns a connection's loop-time opening into a date."""
    return time.time() - asyncio.get_running_loop().time()


async def _census(node: LocalNode, command: Command) -> dict[str, Any]:
    hub, meters = node.hub, node.meters
    return {
        "connections": len(hub),
        "rooms": hub.room_sizes(),
        "users": list(hub.users()),
        "deliveries": meters.deliveries,
        "latency": [count for _, count in meters.delivery_latency.cumulative()],
    }


async def _user(node: LocalNode, command: Command) -> list[list[Any]]:
    hub, offset = node.hub, _offset()
    conns = hub.conns_of_user(str(command.args["uid"]))
    return [[c, sorted(hub.rooms_of(c)), _since(hub, c, offset)] for c in sorted(conns)]


async def _conn(node: LocalNode, command: Command) -> dict[str, Any]:
    hub = node.hub
    if command.conn not in hub:
        raise UnknownConnection(command.conn)
    return {
        "user": hub.user_of(command.conn),
        "rooms": sorted(hub.rooms_of(command.conn)),
        "since": _since(hub, command.conn, _offset()),
    }


async def _send(node: LocalNode, command: Command) -> None:
    sink = node.hub.sink(command.conn)
    if sink is None:
        raise UnknownConnection(command.conn)
    sink.send(Outgoing(str(command.args["message"]).encode()).bytes_for(sink.encoding))


def _since(hub: Hub, conn: ConnId, offset: float) -> float | None:
    """When the connection opened, in wall-clock seconds (None if unknown)."""
    sink = hub.sink(conn)
    return None if sink is None else round(sink.connected_at + offset, 3)


async def _members(node: LocalNode, command: Command) -> dict[str, Any]:
    hub, room = node.hub, command.room
    after, limit = command.args.get("after"), int(command.args["limit"])
    members: Iterable[ConnId] = hub.members_of(room)
    count = hub.room_size(room)
    if isinstance(after, str) and after:
        members = [c for c in members if c > after]
        remaining = len(members)
    else:
        remaining = count
    page = heapq.nsmallest(min(limit, MAX_MEMBERS_PAGE), members) if limit > 0 else []
    offset = _offset()
    return {
        "count": count,
        "remaining": remaining,
        "members": [[c, hub.user_of(c), _since(hub, c, offset)] for c in page],
    }


async def _disconnect(node: LocalNode, command: Command) -> list[str]:
    hub = node.hub
    args = command.args
    uid = args.get("uid")
    conns = hub.conns_of_user(str(uid)) if uid is not None else [command.conn]
    if uid is None and command.conn not in hub:
        raise UnknownConnection(command.conn)
    if args.get("end"):
        # Ended first: the close then detaches nothing, and nobody can resume it.
        await asyncio.gather(*(node.end_session(c) for c in conns))
    closed: list[str] = []
    for conn in conns:
        sink = hub.sink(conn)
        if sink is None:
            continue
        sink.close(int(args["code"]), str(args["reason"]))
        closed.append(conn)
    return closed


async def _user_membership(node: LocalNode, command: Command) -> dict[str, list[str]]:
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
