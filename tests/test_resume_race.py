"""Resumes and evictions that race across gateways (issue 25, item 2): whatever the
interleaving, a session ends with exactly one live connection, every other one is
closed with 4001, and no resume leaves state behind (captures, holders).

The first tests drive two nodes over one in-process bus and one session store,
with the interleavings made by hand: an eviction that arrives late, or before the
claim it is meant for has come back. The last one races real resumes at two
gateways of a cluster on a real redis-server.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from pushgate.broker.memory import MemoryBroker, MemoryBus
from pushgate.commands import PushAll
from pushgate.errors import SessionTaken
from pushgate.hub import Hub
from pushgate.ids import ConnId
from pushgate.memorysessions import MemorySessions
from pushgate.node import Node
from pushgate.sessions import ANY_USER, AnyUser, Session
from pushgate.wshandshake import PUSHGATE_OVER_WEBSOCKET
from tests.helpers import FAST_TIMERS, UNIT, Running, running_server
from tests.redis_server import RedisServer


class Conn:
    """A connection as the node sees one: it takes frames, and closes as a real one
    does (telling the node it went)."""

    connected_at = 0.0
    encoding = PUSHGATE_OVER_WEBSOCKET

    def __init__(self, node: Node, conn: ConnId) -> None:
        self.node, self.conn = node, conn
        self.frames: list[bytes] = []
        self.closed: int | None = None
        self.moves: list[tuple[str, bool, str]] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed = code
        self.node.connection_closed(self.conn, self)

    def member(self, room: str, joined: bool, reason: str) -> None:
        self.moves.append((room, joined, reason))


class GatedSessions(MemorySessions):
    """Sessions whose claims are answered only once the test opens the gate: the
    store has changed at once, but the node hears of it later."""

    def __init__(self) -> None:
        super().__init__(ttl=60)
        self.gate = asyncio.Event()
        self.gate.set()
        self.claimed: list[str] = []  # the holders claims were made for
        self.a_claim = asyncio.Event()

    async def claim(
        self, ws_id: ConnId, token: str, holder: str, *, user: str | AnyUser | None = ANY_USER
    ) -> Session | None:
        session = await super().claim(ws_id, token, holder, user=user)
        self.claimed.append(holder)
        self.a_claim.set()
        await self.gate.wait()
        return session


@asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[Node, Node, GatedSessions]]:
    bus = MemoryBus(history_size=100, history_ttl=300)
    sessions = GatedSessions()
    nodes = [
        Node(Hub(max_rooms_per_conn=10), MemoryBroker(bus), node_id=name, sessions=sessions)
        for name in ("a", "b")
    ]
    for node in nodes:
        await node.start()
    try:
        yield nodes[0], nodes[1], sessions
    finally:
        for node in nodes:
            await node.close()


async def opened(node: Node) -> tuple[Conn, ConnId, str]:
    """A new connection on ``node`` with its session recorded."""
    conn = ConnId("w-" + node.node_id)
    sink = Conn(node, conn)
    opening = node.connection_opened(conn, sink)
    assert opening.token is not None
    if opening.ready is not None:  # None: settled at once (a broker in this process)
        await opening.ready
    assert node.core._holders[conn]  # its session is recorded
    return sink, conn, opening.token


def assert_nothing_left_behind(*nodes: Node) -> None:
    for node in nodes:
        assert node.recovery.capturing() == [], node.node_id


async def test_a_late_eviction_of_the_old_connection_meets_a_local_resume() -> None:
    """Another gateway claimed the session (its eviction of the old connection here
    is still on its way), then a resume here claims it again: the old connection is
    closed with 4001 at once, the resume succeeds, and the late eviction closes
    nothing. Before, the resume failed ('already registered', 1011) and left its
    capture behind, keeping every later push of the session's streams forever."""
    async with two_nodes() as (a, _b, sessions):
        old, conn, token = await opened(a)
        original = a.core._holders[conn]
        await sessions.claim(conn, token, "b.elsewhere")  # b's claim; its evict is late
        new = Conn(a, conn)
        resumed = await a.resume(conn, token, {}, new)
        assert resumed is not None
        assert old.closed == 4001
        assert a.hub.sink(conn) is new
        a.core._evict(conn, original)  # b's eviction of the old connection, arriving now
        assert new.closed is None
        await a.push_all(PushAll(3, "after"))
        assert len(new.frames) == 1
        assert len(old.frames) == 0
        assert_nothing_left_behind(a)


async def test_an_eviction_before_the_claim_comes_back_makes_the_resume_give_up() -> None:
    """The eviction of a resume's holder arrives before that resume has heard its own
    claim was made (a later claim, elsewhere, won): the resume gives up with
    SessionTaken, the connection it evicted is closed all the same, and nothing of
    it is left registered or captured."""
    async with two_nodes() as (a, _b, sessions):
        old, conn, token = await opened(a)
        sessions.gate.clear()
        new = Conn(a, conn)
        resuming = asyncio.create_task(a.resume(conn, token, {}, new))
        await asyncio.wait_for(sessions.a_claim.wait(), 5 * UNIT)
        ours = sessions.claimed[-1]
        sessions.gate.set()  # b's own claim below is answered at once
        later = await sessions.claim(conn, token, "b.later")
        assert later is not None
        assert later.previous_holder == ours
        a.core._evict(conn, ours)  # b's eviction of it, arriving before a's answer
        with pytest.raises(SessionTaken):
            await resuming
        assert old.closed == 4001  # its holder was evicted by the losing claim
        assert new.closed is None  # never registered, never opened
        assert a.hub.sink(conn) is None
        assert a.core._holders == {}
        assert_nothing_left_behind(a)


async def test_an_eviction_during_the_resume_closes_it_and_leaves_nothing() -> None:
    """The eviction arrives after the resume registered, while it reads history: the
    resuming connection is closed with 4001 and the resume ends with SessionTaken."""
    async with two_nodes() as (a, _b, sessions):
        _old, conn, token = await opened(a)
        new = Conn(a, conn)
        broker = a.broker
        real_sync = broker.sync
        evicted = asyncio.Event()

        async def sync_then_evicted(topics: Iterable[str] | None = None) -> None:
            await real_sync(topics)
            later = await sessions.claim(conn, token, "b.later")
            assert later is not None
            a.core._evict(conn, later.previous_holder)
            evicted.set()

        broker.sync = sync_then_evicted  # type: ignore[method-assign]
        with pytest.raises(SessionTaken):
            await a.resume(conn, token, {}, new)
        assert evicted.is_set()
        assert new.closed == 4001
        assert a.hub.sink(conn) is None
        assert a.core._holders == {}
        assert_nothing_left_behind(a)


async def test_two_resumes_on_two_nodes_leave_one_connection() -> None:
    """Both nodes resume the session of a connection of node a at once, in both
    orders: one resume wins, the loser's connection and the old one are closed
    with 4001, and nothing is left captured on either node."""
    for first in (0, 1):
        async with two_nodes() as (a, b, _sessions):
            old, conn, token = await opened(a)
            sinks = [Conn(a, conn), Conn(b, conn)]
            nodes = [a, b]
            order = [first, 1 - first]
            results = await asyncio.gather(
                *(nodes[i].resume(conn, token, {}, sinks[i]) for i in order),
                return_exceptions=True,
            )
            for _ in range(5):  # let the evictions' commands be delivered and served
                await asyncio.sleep(0)
            live = [s for s in (old, *sinks) if s.closed is None and s.node.hub.sink(conn) is s]
            assert len(live) == 1, results
            assert old.closed == 4001
            losers = [s for s in sinks if s is not live[0]]
            assert all(s.closed in (None, 4001) for s in losers)
            assert all(s.node.hub.sink(conn) is not s for s in losers)
            assert_nothing_left_behind(a, b)


# The same race on a real cluster


async def open_raw(url: str) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await ws_connect(url, open_timeout=5 * UNIT)
    return ws, json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))["data"]


async def resume_at(url: str, welcome: dict[str, Any]) -> ClientConnection:
    ws = await ws_connect(url + "?resume=1", open_timeout=5 * UNIT)
    resume = {"wsId": welcome["wsId"], "session": welcome["session"], "since": {}}
    await ws.send(json.dumps({"type": 0, "data": resume}))
    return ws


async def outcome(ws: ClientConnection) -> str:
    """'resumed', or the close code the server ended it with."""
    try:
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
    except Exception:
        await asyncio.wait_for(ws.wait_closed(), 5 * UNIT)
        return str(ws.close_code)
    data = answer["data"]
    return "resumed" if answer["type"] == 0 and data.get("resumed") else f"other: {answer}"


async def test_two_resumes_at_two_gateways_at_once_leave_one_live_connection(
    redis: RedisServer,
) -> None:
    """A client's session resumed at two gateways at the same moment, ten times: each
    time one resume wins; the old connection and the other resume end with 4001
    (never 1011); no gateway keeps a capture or a holder it should not. (In one
    event loop the timing seldom makes the bad interleavings; the tests above make
    them by hand. This one checks the whole path end to end.)"""
    settings = {**FAST_TIMERS, "broker": redis.url, "prefix": "race:", "node_ttl": 2.0}
    async with AsyncExitStack() as stack:
        gateways: list[Running] = [
            await stack.enter_async_context(running_server("gateway", **settings)) for _ in range(2)
        ]
        for _ in range(10):
            old, welcome = await open_raw(gateways[0].ws_url)
            racers = await asyncio.gather(*(resume_at(g.ws_url, welcome) for g in gateways))
            outcomes = await asyncio.gather(*(outcome(ws) for ws in racers))
            await asyncio.wait_for(old.wait_closed(), 5 * UNIT)
            assert old.close_code == 4001
            assert sorted(outcomes) == ["4001", "resumed"], outcomes
            winner = racers[outcomes.index("resumed")]
            await winner.send('{"type":1,"data":"PING"}')
            assert json.loads(await asyncio.wait_for(winner.recv(), 5 * UNIT))["data"] == "PONG"
            await winner.close()
            for ws in racers:
                await ws.close()
        for gateway in gateways:
            node = gateway.server.node
            assert node.recovery.capturing() == []
            await asyncio.wait_for(gateway.server.gateway.wait_empty(), 5 * UNIT)
            assert node.core._holders == {}
