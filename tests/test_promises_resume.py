"""The promises of docs/recovery.md, checked on the wire without the SDKs (issue 24).

Both SDKs drop a push whose position they have seen already, so a server that
replayed a push twice passed every SDK test. These tests read raw frames with
:class:`~tests.helpers.RawClient`, parse the JSON themselves, and check each
stream's positions: every missed push once and in order, across the boundary
between the replay and live pushes, a push that arrives while history is being
read included. Then: the half-open old connection of a session resumed on another
gateway is closed with 4001, and a resume the broker cannot serve with 1013.
"""

import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest
from websockets.frames import Close, Opcode

from pushgate.broker.base import Broker
from pushgate.ids import ConnId, RoomId
from pushgate.streams import History, Position
from tests.helpers import FAST_TIMERS, UNIT, RawClient, Running, post, running_server
from tests.redis_server import RedisServer

PING = b'{"type":1,"data":"PING"}'
PONG = {"type": 1, "data": "PONG"}
# These clients stay silent for a while on purpose: no heartbeat closes them meanwhile,
# and a close frame waits for them to read it.
TIMERS = {
    **FAST_TIMERS,
    "heartbeat": 10.0,
    "idle_timeout": 30.0,
    "session_ttl": 30.0,
    "close_timeout": 10.0,
}


# A client that speaks raw frames


async def next_json(client: RawClient) -> Any:
    """The next text message, as the server sent it (positions kept), as JSON."""
    while True:
        frame = await client.next_frame(5 * UNIT)
        assert frame is not None, "the connection ended"
        assert frame.opcode is not Opcode.CLOSE, Close.parse(frame.data)
        if frame.opcode is Opcode.TEXT:
            return json.loads(bytes(frame.data))


@asynccontextmanager
async def raw_clients() -> AsyncIterator[list[RawClient]]:
    """A list for the raw clients a block opens, closed when it ends however it
    ends (inside the servers' block: a server stops at once when they are gone)."""
    clients: list[RawClient] = []
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def open_raw(url: str, clients: list[RawClient]) -> tuple[RawClient, dict[str, Any]]:
    """A new connection, and its welcome's data."""
    client = RawClient(url)
    clients.append(client)
    assert (await client.connect()).status_code == 101
    welcome = await next_json(client)
    assert welcome["type"] == 0, welcome
    assert welcome["data"]["resumed"] is False, welcome
    return client, welcome["data"]


async def resume_raw(
    url: str, welcome: Mapping[str, Any], since: Mapping[str, list[Any]], clients: list[RawClient]
) -> RawClient:
    """A ?resume=1 connection that has sent its resume message (nothing read yet)."""
    client = RawClient(url + "?resume=1")
    clients.append(client)
    assert (await client.connect()).status_code == 101
    resume = {"wsId": welcome["wsId"], "session": welcome["session"], "since": since}
    client.send_text(json.dumps({"type": 0, "data": resume}).encode())
    return client


def stream_of(push: Mapping[str, Any]) -> str:
    """A push frame's stream, from its keys (docs/recovery.md)."""
    if "room" in push:
        return f"room:{push['room']}"
    if "user" in push:
        return f"user:{push['user']}"
    return "all"


Pushes = dict[str, list[tuple[str, int, Any]]]


async def read_pushes(client: RawClient, count: int) -> Pushes:
    """The next ``count`` messages, each of which must be a push: (epoch, seq, data)
    per stream, in the order they came. Then a PING, whose PONG must be the next
    message: nothing more was queued before it."""
    got: Pushes = {}
    for _ in range(count):
        push = await next_json(client)
        assert push["type"] == 2, push
        got.setdefault(stream_of(push), []).append((push["epoch"], push["seq"], push["data"]))
    client.send_text(PING)
    after = await next_json(client)
    assert after == PONG, f"after {count} pushes {got}, one more: {after}"
    return got


# Where a client connects first, and where it resumes


@asynccontextmanager
async def two_places(broker: str, redis: RedisServer) -> AsyncIterator[tuple[Running, Running]]:
    """One server with the memory broker (connect and resume there); or two servers
    on one redis-server (connect at the first, resume at the second), under a key
    prefix of their own."""
    if broker == "memory":
        async with running_server(**TIMERS) as server:
            yield server, server
        return
    settings = {**TIMERS, "broker": redis.url, "prefix": os.urandom(4).hex() + ":", "node_ttl": 2.0}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(running_server(**settings))
        second = await stack.enter_async_context(running_server(**settings))
        yield first, second


class Pusher:
    """Pushes through a server's logic API, val ``<stream>-<n>``, numbered per stream."""

    def __init__(self, http: aiohttp.ClientSession, api_url: str) -> None:
        self.http, self.api_url = http, api_url
        self.sent: dict[str, list[str]] = {"room:a": [], "all": []}

    async def push(self, stream: str) -> None:
        val = f"{stream}-{len(self.sent[stream]) + 1}"
        if stream == "all":
            path, body = "/push/all", {"val": val, "tag": 2}
        else:
            path, body = "/push/room", {"id": stream[5:], "val": val, "tag": 2}
        status, answer = await post(self.http, self.api_url + path, json=body)
        assert status == 200, answer
        self.sent[stream].append(val)

    async def push_both(self) -> None:
        await self.push("room:a")
        await self.push("all")


def is_a_resume(since: Mapping[str, Position | None]) -> bool:
    """Whether a history read is a resume's (from a position in each stream), not
    a stream's position asked for (``Broker.history(topic, None)`` reads through
    ``histories`` too)."""
    return all(start is not None for start in since.values())


async def cut_after_one_push_of_each(
    http: aiohttp.ClientSession, server: Running, pusher: Pusher, clients: list[RawClient]
) -> tuple[dict[str, Any], Pushes]:
    """A client at ``server``, in room a, receives one push of each stream, then loses
    its TCP connection (its session waits): its welcome and what it received."""
    client, welcome = await open_raw(server.ws_url, clients)
    status, _ = await post(
        http, server.api_url + "/room/join", data={"id": "a", "wsId": welcome["wsId"]}
    )
    assert status == 200
    await pusher.push_both()
    before = await read_pushes(client, 2)
    await client.aclose()
    await server.server.gateway.wait_empty()
    return welcome, before


def assert_every_push_after(before: Pushes, got: Pushes, pusher: Pusher) -> None:
    """``got`` holds, on each stream of ``before`` and no other, every push sent after
    the one ``before`` ended with, once each, in order, with consecutive seqs."""
    for stream, [(epoch, seq, _)] in before.items():
        expected = [(epoch, seq + n, val) for n, val in enumerate(pusher.sent[stream][1:], start=1)]
        assert got[stream] == expected, stream
    assert set(got) == set(before)


def wrap_history_reads(broker: Broker, pusher: Pusher, when: str) -> list[int]:
    """Make the next resume's history read meet a live push to each stream: sent
    just before the read (so it is in history and arrives live too), or just
    after it (so it arrives live only). Returns the list it counts those reads in."""
    real = broker.histories
    reads: list[int] = []

    async def histories_meeting_a_push(since: Mapping[str, Position | None]) -> dict[str, History]:
        if not is_a_resume(since):
            return await real(since)
        reads.append(1)
        if when == "before":
            await pusher.push_both()
        read = await real(since)
        if when == "after":
            await pusher.push_both()
        return read

    broker.histories = histories_meeting_a_push  # type: ignore[method-assign]
    return reads


# Exactly once on resume


@pytest.mark.parametrize("when", ["before", "after"], ids=lambda w: f"live-push-{w}-the-read")
@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_a_resume_gives_each_missed_push_once_in_order_then_live_ones(
    http: aiohttp.ClientSession, module_redis: RedisServer, broker: str, when: str
) -> None:
    """A client in room a and all, cut after one push of each, misses three of
    each; while its resume reads history, one more of each is pushed (just before
    the read: it is both in history and live; or just after it: live only); after
    the welcome one more of each. On the wire, after the welcome: every push of
    each stream from the one after its last received, each once, in order, with
    consecutive seqs in its epoch, and nothing else."""
    async with two_places(broker, module_redis) as (first, second), raw_clients() as raw:
        pusher = Pusher(http, first.api_url)
        welcome, before = await cut_after_one_push_of_each(http, first, pusher, raw)
        since = {stream: [epoch, seq] for stream, [(epoch, seq, _)] in before.items()}
        for _ in range(3):
            await pusher.push_both()
        reads = wrap_history_reads(second.server.node.broker, pusher, when)

        new = await resume_raw(second.ws_url, welcome, since, raw)
        answer = await next_json(new)
        assert answer["type"] == 0, answer
        assert (answer["data"]["wsId"], answer["data"]["resumed"]) == (welcome["wsId"], True)
        assert reads == [1]
        await pusher.push_both()  # live, after the welcome
        assert_every_push_after(before, await read_pushes(new, 2 * 5), pusher)
        assert answer["data"]["recovered"] is True, answer


@pytest.mark.parametrize("when", ["before", "after"], ids=lambda w: f"live-push-{w}-the-sync")
async def test_a_resume_where_the_rooms_are_still_followed_reads_no_history(
    http: aiohttp.ClientSession, module_redis: RedisServer, when: str
) -> None:
    """A client cut from a gateway of a cluster resumes there within the seconds the
    gateway keeps following its rooms (--unfollow-after): what it missed comes from
    the pushes the gateway fanned out itself (recent.py), with no history read; a
    push made while the resume waits on Redis (before its sync: it is captured; or
    after it: live) is given once too. On the wire, the same as after a read:
    every missed push of each stream once, in order, then live ones."""
    settings = {**TIMERS, "broker": module_redis.url, "prefix": os.urandom(4).hex() + ":"}
    async with running_server(**settings) as server, raw_clients() as raw:
        node = server.server.node
        pusher = Pusher(http, server.api_url)
        welcome, before = await cut_after_one_push_of_each(http, server, pusher, raw)
        since = {stream: [epoch, seq] for stream, [(epoch, seq, _)] in before.items()}
        assert node.hub.room_size(RoomId("a")) == 0
        for _ in range(3):
            await pusher.push_both()
        # Every push made so far has reached the gateway: it is in what it keeps.
        await node.broker.sync()
        reads = wrap_history_reads(node.broker, pusher, "before")
        real_sync = node.broker.sync

        async def sync_meeting_a_push(topics: Any = None) -> None:
            if when == "before":
                await pusher.push_both()
            await real_sync(topics)
            if when == "after":
                await pusher.push_both()

        node.broker.sync = sync_meeting_a_push  # type: ignore[method-assign]
        counted = dict(node.meters.resume_histories)
        new = await resume_raw(server.ws_url, welcome, since, raw)
        answer = await next_json(new)
        node.broker.sync = real_sync  # type: ignore[method-assign]
        assert (answer["data"]["wsId"], answer["data"]["resumed"]) == (welcome["wsId"], True)
        assert answer["data"]["recovered"] is True, answer
        assert reads == []
        assert node.meters.resume_histories["node"] - counted["node"] == 2
        assert node.meters.resume_histories["broker"] == counted["broker"]
        await pusher.push_both()  # live, after the welcome
        assert_every_push_after(before, await read_pushes(new, 2 * 5), pusher)


# 4001 to a half-open old connection on another gateway


async def test_a_resume_at_another_gateway_closes_the_half_open_old_connection_with_4001(
    module_redis: RedisServer,
) -> None:
    """A client on gateway A stops reading and never closes (half-open); its session
    is resumed at gateway B: the old connection is sent a close frame with 4001,
    and the new one is the session's."""
    settings = {
        **TIMERS,
        "broker": module_redis.url,
        "prefix": os.urandom(4).hex() + ":",
        "node_ttl": 2.0,
    }
    async with (
        running_server("gateway", **settings) as a,
        running_server("gateway", **settings) as b,
        raw_clients() as raw,
    ):
        old, welcome = await open_raw(a.ws_url, raw)  # from now on it neither reads nor closes
        new = await resume_raw(b.ws_url, welcome, {}, raw)
        answer = (await next_json(new))["data"]
        assert (answer["wsId"], answer["resumed"]) == (welcome["wsId"], True)
        close = await old.close_frame(5 * UNIT)
        assert (close.code, close.reason) == (4001, "session resumed by another connection")
        new.send_text(PING)
        assert await next_json(new) == PONG
        assert a.server.node.hub.sink(ConnId(welcome["wsId"])) is None


# 1013 when a resume cannot complete


def assert_nothing_left_of_the_resume(server: Running, ws_id: str) -> None:
    node = server.server.node
    assert node.recovery.capturing() == []
    assert node.hub.sink(ConnId(ws_id)) is None
    assert ConnId(ws_id) not in node.core._holders


async def test_a_resume_while_redis_is_down_is_closed_with_1013(redis: RedisServer) -> None:
    """The session's store cannot be read (its redis-server is gone) when a client
    resumes: the resume is closed with 1013 (try again later), not given a new
    session, and leaves nothing behind."""
    async with (
        running_server(**TIMERS, broker=redis.url, prefix="away:") as server,
        raw_clients() as raw,
    ):
        client, welcome = await open_raw(server.ws_url, raw)
        await client.aclose()
        await server.server.gateway.wait_empty()
        redis.kill()
        new = await resume_raw(server.ws_url, welcome, {}, raw)
        close = await new.close_frame(5 * UNIT)
        assert (close.code, close.reason) == (1013, "cannot resume now; retry")
        assert_nothing_left_of_the_resume(server, welcome["wsId"])


async def test_a_resume_whose_history_cannot_be_read_is_closed_with_1013(
    redis: RedisServer,
) -> None:
    """The session is claimed, then its redis-server goes just before the history
    read: the resume is closed with 1013 and leaves nothing behind (no capture, no
    registered connection, no holder). (The client names a position of an epoch the
    gateway never saw: it cannot be caught up from the gateway's memory, and
    history must be read.)"""
    async with (
        running_server(**TIMERS, broker=redis.url, prefix="gone:") as server,
        raw_clients() as raw,
    ):
        client, welcome = await open_raw(server.ws_url, raw)
        await client.aclose()
        await server.server.gateway.wait_empty()
        broker = server.server.node.broker
        real = broker.histories
        reads: list[int] = []

        async def histories_after_redis_went(
            since: Mapping[str, Position | None],
        ) -> dict[str, History]:
            if is_a_resume(since):
                reads.append(1)
                redis.kill()
            return await real(since)

        broker.histories = histories_after_redis_went  # type: ignore[method-assign]
        new = await resume_raw(server.ws_url, welcome, {"all": ["0badcafe", 1]}, raw)
        close = await new.close_frame(5 * UNIT)
        assert (close.code, close.reason) == (1013, "cannot resume now; retry")
        assert reads == [1]
        assert_nothing_left_of_the_resume(server, welcome["wsId"])
