"""A cluster in one event loop: two gateway nodes and one logic node sharing a real
redis-server. (test_cluster_processes.py runs the same roles as processes and kills
things.)"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from pushgate.client import PushAPI
from tests.helpers import (
    FAST_TIMERS,
    UNIT,
    Running,
    open_client,
    post,
    recv_json,
    running_server,
    until_gone,
)
from tests.redis_server import RedisServer


@dataclass
class Cluster:
    redis: RedisServer
    gateways: list[Running]
    logic: Running
    prefix: str

    @property
    def api(self) -> str:
        return self.logic.api_url


async def start_cluster(
    stack: AsyncExitStack, redis: RedisServer, prefix: str, **more: Any
) -> Cluster:
    settings = {**FAST_TIMERS, "broker": redis.url, "prefix": prefix, "node_ttl": 2.0, **more}
    gateways = [
        await stack.enter_async_context(running_server("gateway", **settings)) for _ in range(2)
    ]
    logic = await stack.enter_async_context(running_server("logic", **settings))
    return Cluster(redis, gateways, logic, prefix)


@pytest.fixture
async def cluster(redis: RedisServer) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield await start_cluster(stack, redis, "c1:")


async def test_push_all_reaches_every_connection_on_every_gateway_once(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """push/all on the logic node reaches each connection of both gateways exactly once."""
    clients = [await open_client(g.ws_url) for g in cluster.gateways for _ in range(3)]
    for i in range(3):
        status, body = await post(http, cluster.api + "/push/all", json={"val": i, "tag": 2})
        assert (status, body) == (200, {"ok": True, "delivered": None})
    for ws, _ in clients:
        assert [(await recv_json(ws))["data"] for _ in range(3)] == [0, 1, 2]
        await ws.send('{"type":1,"data":"PING"}')
        assert await recv_json(ws) == {"type": 1, "data": "PONG"}  # and no extra copy before it
        await ws.close()


async def test_rooms_span_gateways_and_joins_route_to_the_holder(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Join and leave from the logic node work for wsIds on either gateway, and a
    room push reaches each member once, wherever it is connected."""
    a, a_id = await open_client(cluster.gateways[0].ws_url)
    b, b_id = await open_client(cluster.gateways[1].ws_url)
    outsider, _ = await open_client(cluster.gateways[1].ws_url)
    for ws_id in (a_id, b_id):
        status, body = await post(http, cluster.api + "/room/join", data={"id": "r", "wsId": ws_id})
        assert (status, body["alreadyMember"]) == (200, False)
    status, body = await post(http, cluster.api + "/room/join", data={"id": "r", "wsId": b_id})
    assert (status, body["alreadyMember"]) == (200, True)

    status, _ = await post(
        http, cluster.api + "/push/room", json={"id": "r", "val": "hi", "tag": 3}
    )
    assert status == 200
    for ws in (a, b):
        assert await recv_json(ws) == {"type": 3, "data": "hi", "room": "r"}

    status, body = await post(http, cluster.api + "/room/leave", data={"id": "r", "wsId": b_id})
    assert (status, body["wasMember"]) == (200, True)
    await post(http, cluster.api + "/push/room", json={"id": "r", "val": "again", "tag": 3})
    assert await recv_json(a) == {"type": 3, "data": "again", "room": "r"}
    for ws in (b, outsider):  # neither got anything: their next frame is the PONG
        await ws.send('{"type":1,"data":"PING"}')
        assert await recv_json(ws) == {"type": 1, "data": "PONG"}
    for ws in (a, b, outsider):
        await ws.close()


async def test_an_unknown_wsid_is_404_cluster_wide(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """A wsId no gateway holds is 404 from the logic node; a closed one too, once its
    session has ended."""
    ws, ws_id = await open_client(cluster.gateways[0].ws_url)
    await ws.close()
    await asyncio.wait_for(cluster.gateways[0].server.gateway.wait_empty(), 5 * UNIT)
    status, body = await post(
        http,
        cluster.api + "/room/join",
        data={"id": "r", "wsId": "3cc97117-aa4d-45bb-86db-a1d77e51283b"},
    )
    assert (status, body["field"]) == (404, "wsId")
    assert (await until_gone(http, cluster.api, ws_id))["field"] == "wsId"


async def test_room_order_from_one_logic_node_is_kept(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Pushes one logic node accepts one after another reach a member in that order."""
    ws, ws_id = await open_client(cluster.gateways[1].ws_url)
    await post(http, cluster.api + "/room/join", data={"id": "ordered", "wsId": ws_id})
    for i in range(100):
        status, _ = await post(
            http, cluster.api + "/push/room", json={"id": "ordered", "val": i, "tag": 2}
        )
        assert status == 200
    assert [(await recv_json(ws))["data"] for _ in range(100)] == list(range(100))
    await ws.close()


@pytest.mark.parametrize("unfollow_after", [0.0, 0.5])
async def test_a_gateway_subscribes_to_a_room_only_while_it_has_members_there(
    redis: RedisServer, http: aiohttp.ClientSession, unfollow_after: float
) -> None:
    """Redis sends a gateway a room's pushes only while a local member is in the room,
    and --unfollow-after seconds more: a member back within them finds the room
    still followed (and leaving again starts the grace over)."""
    async with AsyncExitStack() as stack:
        cluster = await start_cluster(stack, redis, "watch:", unfollow_after=unfollow_after)
        client = Redis.from_url(cluster.redis.url)
        stack.push_async_callback(client.aclose)
        channel = cluster.prefix + "room:watched"
        gateway = cluster.gateways[0].server.node.following

        async def subscribers() -> int:
            counts = await client.pubsub_numsub(channel)
            return int(counts[0][1])

        async def room(action: str) -> None:
            status, _ = await post(
                http, cluster.api + f"/room/{action}", data={"id": "watched", "wsId": ws_id}
            )
            assert status == 200

        broker = cluster.gateways[0].server.node.broker
        subscribes: list[str] = []
        real_subscribe = broker.subscribe

        async def counted_subscribe(topic: str) -> None:
            subscribes.append(topic)
            await real_subscribe(topic)

        broker.subscribe = counted_subscribe  # type: ignore[method-assign]
        ws, ws_id = await open_client(cluster.gateways[0].ws_url)
        assert await subscribers() == 0
        await room("join")
        assert await subscribers() == 1  # the join answered only once it was subscribed
        await room("leave")
        if unfollow_after:
            assert gateway.follows("room:watched")
            await room("join")  # back within the grace: nothing to subscribe again
            await room("leave")
            assert gateway.follows("room:watched")
            assert subscribes == ["room:watched"]
        # Redis confirms an unsubscribe to the gateway, not to us: ask until it is done.
        async with asyncio.timeout(5 * UNIT + unfollow_after):
            while await subscribers():  # noqa: ASYNC110 - no event to await in another process
                await asyncio.sleep(0.01)
        assert not gateway.follows("room:watched")
        await ws.close()


async def test_two_clusters_share_one_redis_by_prefix(
    redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    """Clusters with different prefixes on one Redis do not see each other's pushes."""
    async with AsyncExitStack() as stack:
        first = await start_cluster(stack, redis, "first:")
        second = await start_cluster(stack, redis, "second:")
        ws, _ = await open_client(second.gateways[0].ws_url)
        await post(http, first.api + "/push/all", json={"val": "for first", "tag": 2})
        await post(http, second.api + "/push/all", json={"val": "for second", "tag": 2})
        assert (await recv_json(ws))["data"] == "for second"
        await ws.close()


async def test_readiness_on_both_roles(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """/readyz is 200 on the logic API and on each gateway's port once subscribed."""
    urls = [cluster.api + "/readyz"]
    urls += [
        g.ws_url.replace("ws://", "http://").replace("/connect", "/readyz")
        for g in cluster.gateways
    ]
    for url in urls:
        async with http.get(url) as response:
            assert response.status == 200, url
            assert (await response.json())["ok"] is True


async def test_garbage_on_the_nodes_channels_harms_nothing(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Malformed commands and replies published on Redis are dropped and logged; the
    nodes stay ready and pushes keep flowing."""
    redis = Redis.from_url(cluster.redis.url)
    gateway_id = cluster.gateways[0].server.node.node_id
    logic_id = cluster.logic.server.node.node_id
    for channel, payload in [
        (f"node:{gateway_id}", b"not json"),
        (f"node:{gateway_id}", b'{"op":"join","room":"r"}'),
        (f"reply:{logic_id}", b'{"request_id":"x","status":"ok","limit":1e999}'),
        (f"reply:{logic_id}", b"[]"),
    ]:
        await redis.publish(cluster.prefix + channel, payload)
    ws, ws_id = await open_client(cluster.gateways[0].ws_url)
    status, _ = await post(http, cluster.api + "/room/join", data={"id": "r", "wsId": ws_id})
    assert status == 200
    await post(http, cluster.api + "/push/room", json={"id": "r", "val": "fine", "tag": 2})
    assert (await recv_json(ws))["data"] == "fine"
    for node in [*cluster.gateways, cluster.logic]:
        assert node.server.node.ready
    await ws.close()
    await redis.aclose()


async def test_a_burst_of_connections_gets_welcomes_at_once(cluster: Cluster) -> None:
    """In a cluster the welcome waits until the wsId is findable; a burst of new
    connections is announced together, not one refresh period at a time."""
    # One refresh period (0.67 s here) per connection would take over two minutes: the
    # deadline catches that, or a hang, and no latency. How long a burst of connections
    # takes is measured by `scripts/bench-cluster resume` (connect s, docs/benchmarks.md).
    async with asyncio.timeout(20 * UNIT):
        clients = await asyncio.gather(
            *(open_client(cluster.gateways[0].ws_url) for _ in range(200))
        )
    await asyncio.gather(*(ws.close() for ws, _ in clients))


async def test_a_join_that_failed_leaves_no_subscription_behind(
    redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    """A join answered 503 (Redis did not confirm the subscription in time) is undone,
    and once Redis answers again the node is not left subscribed to the room."""
    settings = {**FAST_TIMERS, "broker": redis.url, "prefix": "p:", "node_ttl": 30.0}
    async with running_server(**settings) as node:
        client = Redis.from_url(redis.url)
        ws, ws_id = await open_client(node.ws_url)
        await client.execute_command("CLIENT", "PAUSE", "2500", "ALL")  # type: ignore[no-untyped-call]
        status, body = await post(
            http, node.api_url + "/room/join", data={"id": "leaky", "wsId": ws_id}
        )
        assert status == 503, body
        assert "did not confirm" in body["error"]
        assert node.server.node.room_sizes() == {}
        async with asyncio.timeout(10 * UNIT):
            while b"p:room:leaky" in await client.pubsub_channels():  # noqa: ASYNC110 - in Redis
                await asyncio.sleep(0.05)
        await ws.close()
        await client.aclose()


async def test_the_python_client_speaks_to_a_cluster(cluster: Cluster) -> None:
    """PushAPI against a cluster: pushes answer delivered=None (Redis cannot count
    connections), and arrive."""
    async with PushAPI(cluster.api) as api:
        ws, ws_id = await open_client(cluster.gateways[1].ws_url)
        await api.join("c", ws_id)
        result = await api.push_room("c", "hello", tag=3)
        assert result.delivered is None
        assert (await recv_json(ws))["data"] == "hello"
        await ws.close()
