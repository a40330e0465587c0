"""The cluster as it runs in production: a real redis-server, two `pushgate gateway`
processes and one `pushgate logic` process, and the failures a cluster must survive:
Redis killed and restarted, a gateway killed with SIGKILL."""

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.helpers import UNIT, ServerProcess, open_client, post, recv_json, server_process
from tests.redis_server import RedisServer

NODE_TTL = 2.0
CONTROL_TIMEOUT = 0.5


@dataclass
class ProcessCluster:
    redis: RedisServer
    gateways: list[ServerProcess]
    logic: ServerProcess

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.logic.api_port}"

    def readyz_urls(self) -> list[str]:
        return [self.api + "/readyz"] + [
            f"http://127.0.0.1:{g.ws_port}/readyz" for g in self.gateways
        ]


@pytest.fixture
async def cluster() -> AsyncIterator[ProcessCluster]:
    redis = RedisServer()
    await redis.start()
    args = (
        "--broker",
        redis.url,
        "--node-ttl",
        str(NODE_TTL),
        "--control-timeout",
        str(CONTROL_TIMEOUT),
    )
    try:
        async with AsyncExitStack() as stack:
            started = await asyncio.gather(
                stack.enter_async_context(server_process(*args, role="gateway")),
                stack.enter_async_context(server_process(*args, role="gateway")),
                stack.enter_async_context(server_process(*args, role="logic")),
            )
            yield ProcessCluster(redis, list(started[:2]), started[2])
    finally:
        redis.kill()


async def get_status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as response:
        return response.status


async def wait_for_status(http: aiohttp.ClientSession, urls: list[str], status: int) -> None:
    """Ask each URL until it answers ``status`` (bounded); another process decides."""
    async with asyncio.timeout(10 * UNIT):
        for url in urls:
            while await get_status(http, url) != status:  # noqa: ASYNC110 - polls another process
                await asyncio.sleep(0.05)


async def ping(ws: Any) -> None:
    await ws.send('{"type":1,"data":"PING"}')
    assert await recv_json(ws) == {"type": 1, "data": "PONG"}


async def test_cross_node_pushes_and_joins(
    cluster: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    """Across processes: push/all reaches both gateways' clients once; a join routed
    to the holding gateway puts a client in a room that a room push then reaches."""
    a, _ = await open_client(cluster.gateways[0].ws_url)
    b, b_id = await open_client(cluster.gateways[1].ws_url)
    status, _ = await post(http, cluster.api + "/push/all", json={"val": "all", "tag": 2})
    assert status == 200
    for ws in (a, b):
        assert (await recv_json(ws))["data"] == "all"
    status, _ = await post(http, cluster.api + "/room/join", data={"id": "r", "wsId": b_id})
    assert status == 200
    await post(http, cluster.api + "/push/room", json={"val": "room", "tag": 2, "id": "r"})
    assert await recv_json(b) == {"type": 2, "data": "room", "room": "r"}
    await ping(a)  # a got nothing before its PONG
    await a.close()
    await b.close()


async def test_redis_outage_answers_503_and_pushes_flow_again_after_restart(
    cluster: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    """With Redis down: pushes and joins are 503 with a JSON error, /readyz is 503,
    clients stay connected with working heartbeats. Once Redis is back, with no
    restart of any node, pushes flow again within 2 seconds, rooms included."""
    a, a_id = await open_client(cluster.gateways[0].ws_url)
    b, b_id = await open_client(cluster.gateways[1].ws_url)
    for ws_id in (a_id, b_id):
        await post(http, cluster.api + "/room/join", data={"id": "r", "wsId": ws_id})

    cluster.redis.kill()
    status, body = await post(http, cluster.api + "/push/all", json={"val": "lost", "tag": 2})
    assert status == 503
    assert body["ok"] is False
    assert "Redis" in body["error"]
    status, body = await post(http, cluster.api + "/room/join", data={"id": "r2", "wsId": a_id})
    assert status == 503
    await wait_for_status(http, cluster.readyz_urls(), 503)
    for ws in (a, b):
        await ping(ws)  # connections and heartbeats survive the outage

    loop = asyncio.get_running_loop()
    await cluster.redis.start()  # same port, empty: no persistence
    restarted = loop.time()
    await wait_for_status(http, cluster.readyz_urls(), 200)
    status, _ = await post(
        http, cluster.api + "/push/room", json={"val": "back", "tag": 2, "id": "r"}
    )
    assert status == 200
    for ws in (a, b):
        assert await recv_json(ws) == {"type": 2, "data": "back", "room": "r"}
    assert loop.time() - restarted <= 2.0 * UNIT
    async with asyncio.timeout(5 * UNIT):  # the gateways announce their wsIds again
        while True:
            status, _ = await post(
                http, cluster.api + "/room/join", data={"id": "r2", "wsId": b_id}
            )
            if status == 200:
                break
            await asyncio.sleep(0.05)
    await a.close()
    await b.close()


async def test_a_killed_gateways_wsids_stop_resolving(
    cluster: ProcessCluster, http: aiohttp.ClientSession
) -> None:
    """SIGKILL one gateway: within the node TTL its wsIds stop routing to it, and a
    join applies to their sessions (which wait for a resume); the other gateway's
    clients are not disturbed."""
    a, a_id = await open_client(cluster.gateways[0].ws_url)
    b, b_id = await open_client(cluster.gateways[1].ws_url)
    cluster.gateways[1].process.send_signal(signal.SIGKILL)
    loop = asyncio.get_running_loop()
    killed = loop.time()
    async with asyncio.timeout(NODE_TTL + 5 * UNIT):
        while True:
            status, body = await post(
                http, cluster.api + "/room/join", data={"id": "r", "wsId": b_id}
            )
            if status == 200:
                break
            assert status == 503, body  # the holder is silent until its entries expire
    assert loop.time() - killed <= NODE_TTL + CONTROL_TIMEOUT + 1.0 * UNIT
    status, _ = await post(http, cluster.api + "/room/join", data={"id": "r", "wsId": a_id})
    assert status == 200
    await post(http, cluster.api + "/push/room", json={"val": "still here", "tag": 2, "id": "r"})
    assert (await recv_json(a))["data"] == "still here"
    await a.close()
    await b.close()
