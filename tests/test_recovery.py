"""Sessions that resume and recover what they missed (docs/recovery.md), in one
process, over real sockets: a test TCP proxy cuts the client's connection."""

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import jwt
import pytest
from websockets.asyncio.client import connect as ws_connect

from pushgate.broker.memory import MemoryBroker, MemoryBus
from pushgate.client import Connection, PushAPI, State, connect
from pushgate.hub import Hub
from pushgate.ids import ConnId
from pushgate.memorysessions import MemorySessions
from pushgate.node import Node
from pushgate.streams import TOPIC_ALL
from pushgate.wshandshake import PUSHGATE_OVER_WEBSOCKET
from tests.dropping_proxy import DroppingProxy
from tests.helpers import (
    FAST_TIMERS,
    LOOPBACK,
    UNIT,
    Running,
    free_port,
    open_client,
    post,
    running_server,
)

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


@asynccontextmanager
async def proxied(server: Running) -> AsyncIterator[tuple[DroppingProxy, str]]:
    """A proxy in front of the gateway, and the gateway URL through it."""
    proxy = DroppingProxy(LOOPBACK, server.ws_port)
    await proxy.start()
    try:
        yield proxy, f"ws://{LOOPBACK}:{proxy.port}/connect"
    finally:
        await proxy.close()


async def next_pushes(conn: Connection, count: int) -> list[tuple[str, object]]:
    """The next ``count`` pushes, as (stream, data)."""
    async with asyncio.timeout(10 * UNIT):
        return [((push := await conn.recv()).stream, push.data) for _ in range(count)]


async def test_a_cut_connection_resumes_with_every_push_once_in_order() -> None:
    """A client in rooms a and b, with a user, loses its TCP connection; 50 pushes to
    a, b, its user and all are sent meanwhile; it resumes with the same wsId and gets
    all 50, in order per stream, once each, then live pushes."""
    async with (
        running_server(**FAST_TIMERS, token_secret=SECRET) as server,
        proxied(server) as (proxy, url),
        PushAPI(server.api_url) as api,
    ):
        token = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
        async with connect(url, api=api, token=token, backoff_initial=0.05) as conn:
            ws_id = conn.ws_id
            await conn.join("a")
            await conn.join("b")
            await api.push_all("before", tag=2)
            assert [p.data for p in [await conn.recv()]] == ["before"]

            proxy.freeze()  # the reconnect will hang until thawed
            await proxy.drop()
            sent: dict[str, list[object]] = defaultdict(list)
            for i in range(50):
                kind = ("room:a", "room:b", "user:alice", "all")[i % 4]
                if kind == "all":
                    await api.push_all(i, tag=3)
                elif kind == "user:alice":
                    await api.push_user("alice", i, tag=3)
                else:
                    await api.push_room(kind[5:], i, tag=3)
                sent[kind].append(i)
            proxy.thaw()

            got = await next_pushes(conn, 50)
            assert conn.ws_id == ws_id
            assert conn.resumed is True
            assert conn.recovered is True
            by_stream: dict[str, list[object]] = defaultdict(list)
            for stream, data in got:
                by_stream[stream].append(data)
            assert by_stream == sent  # all 50, in order per stream, once each
            await api.push_room("a", "live", tag=4)
            assert (await conn.recv()).data == "live"
            assert server.server.node.room_sizes() == {"a": 1, "b": 1}  # kept by the server


async def test_a_stolen_wsid_without_its_token_cannot_resume() -> None:
    """Knowing a wsId is not enough: a resume with the wrong token gets a new wsId,
    and the session's own connection is left alone."""
    async with running_server(**FAST_TIMERS) as server:
        owner, owner_id = await open_client(server.ws_url)
        async with ws_connect(server.ws_url + "?resume=1") as thief:
            resume = {"wsId": owner_id, "session": "guessed", "since": {}}
            await thief.send(json.dumps({"type": 0, "data": resume}))
            welcome = json.loads(await asyncio.wait_for(thief.recv(), 5 * UNIT))
        assert welcome["type"] == 0
        assert welcome["data"]["wsId"] != owner_id
        assert welcome["data"]["resumed"] is False
        assert "reason" in welcome["data"]
        await owner.send('{"type":1,"data":"PING"}')
        assert json.loads(await asyncio.wait_for(owner.recv(), 5 * UNIT))["data"] == "PONG"
        await owner.close()


async def test_a_resume_after_the_session_ttl_reports_not_recovered() -> None:
    """Away longer than --session-ttl: the client gets a new wsId, is told nothing was
    recovered (conn.recovered False, on_recovery called), and new pushes flow."""
    async with (
        running_server(**{**FAST_TIMERS, "session_ttl": 0.2}) as server,
        proxied(server) as (proxy, url),
        PushAPI(server.api_url) as api,
    ):
        reports: list[dict[str, bool]] = []
        reopened = asyncio.Event()

        def on_state(conn: Connection, state: State) -> None:
            if state is State.OPEN and conn.connects == 2:
                reopened.set()

        async with connect(
            url,
            api=api,
            backoff_initial=0.05,
            on_recovery=lambda _, r: reports.append(r),
            on_state_change=on_state,
        ) as conn:
            old_id = conn.ws_id
            await conn.join("a")
            proxy.freeze()
            await proxy.drop()
            await api.push_room("a", "missed", tag=2)
            await asyncio.sleep(0.5)  # longer than the session TTL: the point of the test
            proxy.thaw()
            await asyncio.wait_for(reopened.wait(), 5 * UNIT)
            assert conn.ws_id != old_id
            assert conn.recovered is False
            assert conn.resumed is False
            assert reports == [{}]
            await api.push_room("a", "after", tag=2)  # rejoined as a new session
            assert (await asyncio.wait_for(conn.recv(), 5 * UNIT)).data == "after"


async def test_resuming_closes_a_half_open_old_connection_with_4001() -> None:
    """The session's old connection still looks open (half-open TCP): the resume takes
    the session, and the old connection is closed with 4001."""
    async with running_server(**FAST_TIMERS) as server:
        old = await ws_connect(server.ws_url)
        welcome = json.loads(await asyncio.wait_for(old.recv(), 5 * UNIT))["data"]
        async with ws_connect(server.ws_url + "?resume=1") as new:
            resume = {"wsId": welcome["wsId"], "session": welcome["session"], "since": {}}
            await new.send(json.dumps({"type": 0, "data": resume}))
            answer = json.loads(await asyncio.wait_for(new.recv(), 5 * UNIT))["data"]
            assert (answer["wsId"], answer["resumed"]) == (welcome["wsId"], True)
            await asyncio.wait_for(old.wait_closed(), 5 * UNIT)
            assert old.close_code == 4001


async def test_a_join_while_disconnected_applies_to_the_session(
    http: aiohttp.ClientSession,
) -> None:
    """Between connections a join is 200 and applies to the session: after the resume
    the client is in the room, and a push sent to it meanwhile waited in history."""
    async with (
        running_server(**{**FAST_TIMERS, "session_ttl": 5.0}) as server,
        proxied(server) as (proxy, url),
        PushAPI(server.api_url) as api,
        connect(url, backoff_initial=0.05) as conn,
    ):
        proxy.freeze()
        await proxy.drop()
        await asyncio.wait_for(server.server.gateway.wait_empty(), 5 * UNIT)
        status, _ = await post(
            http, server.api_url + "/room/join", data={"id": "late", "wsId": conn.ws_id}
        )
        assert status == 200
        await api.push_room("late", "waited", tag=2)
        proxy.thaw()
        push = await asyncio.wait_for(conn.recv(), 5 * UNIT)
        assert (push.room, push.data) == ("late", "waited")
        assert conn.recovered is True


async def test_history_size_0_turns_positions_and_recovery_off() -> None:
    """--history-size 0: frames are exactly the original protocol's."""
    async with running_server(**{**FAST_TIMERS, "history_size": 0}) as server:
        ws, _ = await open_client(server.ws_url)
        async with PushAPI(server.api_url) as api:
            await api.push_all("plain", tag=3)
        assert await asyncio.wait_for(ws.recv(), 5 * UNIT) == '{"type":3,"data":"plain"}\n'
        await ws.close()


class Collector:
    """A sink that keeps the frames it is handed."""

    connected_at = 0.0
    encoding = PUSHGATE_OVER_WEBSOCKET

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self._arrived = asyncio.Event()
        self.closed: int | None = None
        self.moves: list[tuple[str, bool, str]] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)
        self._arrived.set()

    def close(self, code: int, reason: str) -> None:
        self.closed = code

    def member(self, room: str, joined: bool, reason: str) -> None:
        self.moves.append((room, joined, reason))

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(5 * UNIT):
            while len(self.frames) < count:
                self._arrived.clear()
                await self._arrived.wait()


async def test_a_gap_in_a_stream_is_filled_from_history_before_later_pushes() -> None:
    """A node that receives seq 1, then 4 (2 and 3 lost on the way) delivers 2 and 3
    from history before 4, each once; a gap history cannot fill is told to clients."""
    bus = MemoryBus(history_size=100, history_ttl=60)
    node = Node(Hub(max_rooms_per_conn=10), MemoryBroker(bus))
    await node.start()
    sink = Collector()
    node.connection_opened(ConnId("c"), sink)
    pubs = [bus.publish(TOPIC_ALL, b'{"type":2,"data":%d}\n' % i)[0] for i in range(1, 5)]
    node.on_publication(TOPIC_ALL, pubs[0])
    node.on_publication(TOPIC_ALL, pubs[3])  # 2 and 3 never arrived
    node.on_publication(TOPIC_ALL, pubs[3])  # and a duplicate
    await sink.wait_for(4)
    data = [json.loads(frame[2:])["data"] for frame in sink.frames]
    assert data == [1, 2, 3, 4]
    assert node.gaps_filled == 1

    lost = bus.publish(TOPIC_ALL, b'{"type":2,"data":5}\n')[0]
    kept = bus.history._streams[TOPIC_ALL].kept
    assert kept is not None
    kept.clear()  # trimmed before the node could read it
    late = bus.publish(TOPIC_ALL, b'{"type":2,"data":6}\n')[0]
    assert lost.seq == 5
    node.on_publication(TOPIC_ALL, late)
    await sink.wait_for(6)
    notice = json.loads(sink.frames[4][2:])
    assert notice["data"]["recovered"] is False
    assert json.loads(sink.frames[5][2:])["data"] == 6
    await node.close()


async def test_a_resume_on_a_node_that_missed_pushes_gets_each_once() -> None:
    """The node itself missed pushes 2 and 3 of a stream (lost on their way to it)
    when a session resumes there from 1: the session gets 2 and 3 once, from the
    repair that also gives them to the node's other members, and then 4 and 5."""
    bus = MemoryBus(history_size=100, history_ttl=60)
    node = Node(Hub(max_rooms_per_conn=10), MemoryBroker(bus), sessions=MemorySessions(60))
    await node.start()
    first = Collector()
    opened = node.connection_opened(ConnId("c"), first)
    assert opened.token is not None
    if opened.ready is not None:  # None: settled at once
        await opened.ready
    one, two, three, four, five = (
        bus.publish(TOPIC_ALL, b'{"type":2,"data":%d}\n' % i)[0] for i in range(1, 6)
    )
    node.on_publication(TOPIC_ALL, one)  # 2 and 3 never reach the node
    again = Collector()
    resumed = await node.resume(ConnId("c"), opened.token, {"all": one.position}, again, None)
    assert resumed is not None
    node.on_publication(TOPIC_ALL, four)  # waits behind the repair
    await again.wait_for(3)
    node.on_publication(TOPIC_ALL, five)
    await again.wait_for(4)
    frames = [json.loads(f)["data"] for f in resumed.frames]
    frames += [json.loads(f[2:])["data"] for f in again.frames]
    assert frames == [2, 3, 4, 5]
    assert resumed.streams["all"].recovered is True
    assert first.closed == 4001  # the session's old connection
    assert (two.seq, three.seq) == (2, 3)
    await node.close()


async def test_a_resume_with_another_users_token_is_refused_and_harms_nothing() -> None:
    """The session's token, but a connection token of another user: no resume (a new
    wsId), and the owner's connection keeps its session and its pushes."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET) as server:
        alice = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
        bob = jwt.encode({"sub": "bob"}, SECRET, algorithm="HS256")
        owner = await ws_connect(f"{server.ws_url}?token={alice}")
        welcome = json.loads(await asyncio.wait_for(owner.recv(), 5 * UNIT))["data"]
        async with ws_connect(f"{server.ws_url}?token={bob}&resume=1") as other:
            resume = {"wsId": welcome["wsId"], "session": welcome["session"], "since": {}}
            await other.send(json.dumps({"type": 0, "data": resume}))
            answer = json.loads(await asyncio.wait_for(other.recv(), 5 * UNIT))["data"]
        assert answer["wsId"] != welcome["wsId"]
        assert answer["resumed"] is False
        async with PushAPI(server.api_url) as api:
            await api.push_user("alice", "still yours", tag=2)
        push = json.loads(await asyncio.wait_for(owner.recv(), 5 * UNIT))
        assert push["data"] == "still yours"
        assert owner.close_code is None
        await owner.close()


@pytest.mark.parametrize(
    ("require_token", "owner_claims", "resumer_claims"),
    [
        pytest.param(True, {"sub": "alice"}, {}, id="require-token,resumer-without-sub"),
        pytest.param(False, {"sub": "alice"}, None, id="optional-token,resumer-without-token"),
        pytest.param(False, {}, {"sub": "mallory"}, id="session-of-no-user,resumer-with-one"),
    ],
)
async def test_where_tokens_are_verified_a_resume_is_bound_to_its_user(
    require_token: bool, owner_claims: dict[str, str], resumer_claims: dict[str, str] | None
) -> None:
    """Whenever the server verifies tokens, the resuming connection's user must be
    the session's, "no user" included: a token without "sub", or no token at all,
    cannot resume a user's session even with its session token, and a user cannot
    take over a session that has none (docs/security.md)."""
    async with running_server(
        **FAST_TIMERS, token_secret=SECRET, require_token=require_token
    ) as server:
        owner_token = jwt.encode(owner_claims, SECRET, algorithm="HS256")
        owner = await ws_connect(f"{server.ws_url}?token={owner_token}")
        welcome = json.loads(await asyncio.wait_for(owner.recv(), 5 * UNIT))["data"]
        url = f"{server.ws_url}?resume=1"
        if resumer_claims is not None:
            url += "&token=" + jwt.encode(resumer_claims, SECRET, algorithm="HS256")
        async with ws_connect(url) as other:
            resume = {"wsId": welcome["wsId"], "session": welcome["session"], "since": {}}
            await other.send(json.dumps({"type": 0, "data": resume}))
            answer = json.loads(await asyncio.wait_for(other.recv(), 5 * UNIT))["data"]
        assert answer["wsId"] != welcome["wsId"]
        assert answer["resumed"] is False
        await owner.send('{"type":1,"data":"PING"}')
        assert json.loads(await asyncio.wait_for(owner.recv(), 5 * UNIT))["data"] == "PONG"
        await owner.close()


async def test_the_sessions_own_user_resumes_it() -> None:
    """The same user, on a new token, resumes; with no tokens verified at all, a
    session of no user resumes with no token (the check binds nothing then)."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET) as server:
        alice = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
        owner = await ws_connect(f"{server.ws_url}?token={alice}")
        welcome = json.loads(await asyncio.wait_for(owner.recv(), 5 * UNIT))["data"]
        again = jwt.encode({"sub": "alice", "v": 2}, SECRET, algorithm="HS256")
        async with ws_connect(f"{server.ws_url}?resume=1&token={again}") as other:
            resume = {"wsId": welcome["wsId"], "session": welcome["session"], "since": {}}
            await other.send(json.dumps({"type": 0, "data": resume}))
            answer = json.loads(await asyncio.wait_for(other.recv(), 5 * UNIT))["data"]
        assert (answer["wsId"], answer["resumed"]) == (welcome["wsId"], True)
        await asyncio.wait_for(owner.wait_closed(), 5 * UNIT)
        assert owner.close_code == 4001


async def test_the_first_connect_moves_past_a_gateway_that_is_down() -> None:
    """connect() with several gateway URLs: one that refuses is passed over."""
    async with running_server(**FAST_TIMERS) as server:
        down = f"ws://{LOOPBACK}:{free_port()}/connect"
        async with connect([down, server.ws_url]) as conn:
            assert conn.url == server.ws_url
            assert conn.ws_id
