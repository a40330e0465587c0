"""Pusher clients on a cluster (docs/pusher.md): pusher-js clients on two gateways
sharing a real redis-server, and a three-master Redis Cluster, are in one channel:
its presence members, client events and pushes from the logic node span both."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.helpers import FAST_TIMERS, Running, post, running_server
from tests.pusher.harness import pusher_js

APP = ("1001", "key1", "s3cret-s3cret-s3cret")


@dataclass
class Cluster:
    gateways: list[Running]
    logic: Running


@pytest.fixture(params=["redis", "redis-cluster"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    fixture = "module_redis" if request.param == "redis" else "redis_cluster"
    settings: dict[str, Any] = {
        **FAST_TIMERS,
        "heartbeat": 1.0,
        "idle_timeout": 5.0,
        "broker": request.getfixturevalue(fixture).url,
        "prefix": f"pusher{request.node.name.__hash__() & 0xFFFFFF:x}:",
        "node_ttl": 2.0,
        "pusher_app": ":".join(APP) + ":client-events",
    }
    async with AsyncExitStack() as stack:
        gateways = [
            await stack.enter_async_context(running_server("gateway", **settings)) for _ in range(2)
        ]
        logic = await stack.enter_async_context(running_server("logic", **settings))
        yield Cluster(gateways, logic)


async def test_a_presence_channel_spans_two_gateways(cluster: Cluster) -> None:
    first, second = (gateway.ws_port for gateway in cluster.gateways)
    async with (
        pusher_js(first, APP) as ann,
        pusher_js(second, APP) as bob,
        aiohttp.ClientSession() as http,
    ):
        await asyncio.gather(ann.connected(), bob.connected())
        await ann.subscribed("presence-room", user_id="ann", user_info={"name": "Ann"})
        joined = await bob.subscribed("presence-room", user_id="bob")
        assert joined["data"]["members"] == [
            {"id": "ann", "info": {"name": "Ann"}},
            {"id": "bob", "info": None},
        ]
        added = await ann.hears("presence-room", "pusher:member_added")
        assert added[0]["data"]["id"] == "bob"

        ann.send(op="trigger", channel="presence-room", event="client-wave", data={"hi": 1})
        waves = await bob.hears("presence-room", "client-wave")
        assert waves[0]["data"] == {"hi": 1}

        fields = {"id": f"{APP[0]}:presence-room", "tag": 2, "val": "to both"}
        status, body = await post(http, cluster.logic.api_url + "/push/room", data=fields)
        assert status == 200, body
        for client in (ann, bob):
            heard = await client.hears("presence-room", "pushgate:push")
            assert heard[0]["data"] == "to both"

        bob.send(op="unsubscribe", channel="presence-room")
        removed = await ann.hears("presence-room", "pusher:member_removed")
        assert removed[0]["data"]["id"] == "bob"
