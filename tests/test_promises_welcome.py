"""The welcome held for the cluster, on the wire (issue 24): it goes out after
``--handshake-timeout`` when Redis cannot be written, and not never; and while it
is held, pushes to the connection count against ``--max-output-bytes``, so a
client over it is closed with 1008 instead of the server holding without bound.
"""

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from websockets.frames import Close, Opcode

from pushgate.ids import ConnId
from tests.helpers import FAST_TIMERS, UNIT, RawClient, post, running_server
from tests.redis_server import RedisServer
from tests.test_promises_resume import PING, PONG, next_json, open_raw, raw_clients

# A welcome may be held for longer than a heartbeat here: no ping or idle timeout
# may close the connection meanwhile (a held connection's pings are held too).
TIMERS = {**FAST_TIMERS, "heartbeat": 10.0, "idle_timeout": 30.0, "close_timeout": 10.0}


@asynccontextmanager
async def unreachable(redis: RedisServer, how: str) -> AsyncIterator[None]:
    """The redis-server killed, or paused (SIGSTOP: connections stay open and
    nothing is answered) until the block ends."""
    process = redis.process
    assert process is not None
    if how == "killed":
        redis.kill()
        yield
        return
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


@pytest.mark.parametrize("how", ["killed", "paused"])
async def test_the_welcome_goes_out_after_the_handshake_timeout_when_redis_cannot_be_written(
    redis: RedisServer, how: str
) -> None:
    """A gateway whose Redis went away (killed, or paused) cannot announce a new
    wsId: the welcome waits for it, but only for --handshake-timeout; then it is
    sent, and the connection answers PING."""
    handshake_timeout = 0.5 * UNIT
    async with (
        running_server(
            "gateway",
            **{**TIMERS, "handshake_timeout": handshake_timeout},
            broker=redis.url,
            prefix="held:",
        ) as gateway,
        unreachable(redis, how),
        raw_clients() as raw,
    ):
        loop = asyncio.get_running_loop()
        began = loop.time()  # before the connection exists: the server's timer starts later
        client, welcome = await open_raw(gateway.ws_url, raw)
        waited = loop.time() - began
        assert waited >= handshake_timeout - 0.01, waited  # held: the wsId is not announced
        assert gateway.server.node.hub.sink(ConnId(welcome["wsId"])) is not None
        client.send_text(PING)
        assert await next_json(client) == PONG


@pytest.mark.usefixtures("fanout")  # on both fan-out paths (conftest.py)
async def test_pushes_to_a_held_welcome_count_against_max_output_bytes(
    http: aiohttp.ClientSession,
) -> None:
    """A new connection whose wsId is never announced (its directory entry is never
    confirmed, as when Redis cannot be written) holds its welcome, and everything
    behind it, up to --handshake-timeout (long here). Pushes to it meanwhile count
    against --max-output-bytes: past it the client is closed with 1008 at once,
    still unannounced, and finds its welcome, the pushes held for it, then the
    close frame saying why."""
    limit = 4096
    async with (
        running_server(**{**TIMERS, "handshake_timeout": 60.0}, max_output_bytes=limit) as server,
        raw_clients() as raw,
    ):
        directory = server.server.node.core.directory
        real_add = directory.add
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        added: list[ConnId] = []

        def add_never_confirmed(conn: ConnId) -> "asyncio.Future[None] | None":
            real_add(conn)
            added.append(conn)
            return never

        directory.add = add_never_confirmed  # type: ignore[method-assign]
        client = RawClient(server.ws_url)
        raw.append(client)
        assert (await client.connect()).status_code == 101
        # The upgrade and the opening are one step on the server: it is in the hub.
        assert len(added) == 1
        assert server.server.node.hub.sink(added[0]) is not None
        val = "x" * 1024
        pushes = 2 * limit // len(val)
        for i in range(pushes):
            status, _ = await post(
                http, server.api_url + "/push/all", json={"val": [i, val], "tag": 2}
            )
            assert status == 200

        messages: list[Any] = []
        while True:
            frame = await client.next_frame(5 * UNIT)
            assert frame is not None, f"ended without a close frame after {messages}"
            if frame.opcode is Opcode.CLOSE:
                close = Close.parse(frame.data)
                break
            if frame.opcode is Opcode.TEXT:
                messages.append(json.loads(bytes(frame.data)))
        assert (close.code, close.reason) == (1008, f"slow consumer: over {limit} bytes unsent")
        assert not never.done()  # closed while its welcome was still held
        assert messages[0]["type"] == 0, messages[0]
        assert messages[0]["data"]["wsId"] == added[0]
        held = [m["data"][0] for m in messages[1:]]
        assert held == list(range(len(held)))  # in order, and fewer than all
        assert 0 < len(held) < pushes
        assert server.server.node.meters.limits["max_output_bytes"] == 1
