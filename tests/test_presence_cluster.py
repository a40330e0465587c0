"""Presence events across a cluster (docs/presence.md, "Join and leave events"): two
gateways and a logic node on a real redis-server, and on a three-master Redis
Cluster. A user's sessions on both gateways, racing, join once and leave once; a
resume on the other gateway makes no event; an unresumed session leaves once, however
many gateways sweep the room."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.helpers import FAST_TIMERS, Running, running_server
from tests.test_presence_events import NAMESPACES, SECRET, join, leave, marker, token, until
from tests.test_subscriptions import Client, away, client, resume


@dataclass
class Cluster:
    gateways: list[Running]
    logic: Running


@pytest.fixture(params=["redis", "redis-cluster"])
async def cluster(
    request: pytest.FixtureRequest, http: aiohttp.ClientSession
) -> AsyncIterator[Cluster]:
    if request.param == "redis":
        url = request.getfixturevalue("module_redis").url
    else:
        url = request.getfixturevalue("redis_cluster").url
    prefix = f"pres{request.node.name.__hash__() & 0xFFFFFF:x}:"
    settings: dict[str, Any] = {
        **FAST_TIMERS,
        "broker": url,
        "prefix": prefix,
        "node_ttl": 2.0,
        "namespaces": NAMESPACES,
        "token_secret": SECRET,
    }
    async with AsyncExitStack() as stack:
        gateways = [
            await stack.enter_async_context(running_server("gateway", **settings)) for _ in range(2)
        ]
        logic = await stack.enter_async_context(running_server("logic", **settings))
        yield Cluster(gateways, logic)


def url_of(gateway: Running, user: str) -> str:
    return f"{gateway.ws_url}?token={token(user)}"


async def test_a_users_sessions_on_two_gateways_join_once_and_leave_once(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Ten users, each with a tab on each gateway, all subscribing at once: an
    observer hears exactly one join per user; all unsubscribing at once, exactly one
    leave per user."""
    users = [f"u{n}" for n in range(10)]
    gw0, gw1 = cluster.gateways
    async with AsyncExitStack() as stack:
        observer = await stack.enter_async_context(client(url_of(gw0, "watcher")))
        await observer.op("subscribe", "chat:1")
        tabs: list[Client] = []
        for user in users:
            for gateway in (gw0, gw1):
                tabs.append(await stack.enter_async_context(client(url_of(gateway, user))))
        replies = await asyncio.gather(*(tab.op("subscribe", "chat:1") for tab in tabs))
        assert all(reply["ok"] for reply in replies)
        mark = await marker(http, cluster.logic.api_url, "chat:1", "all in")
        events = await until(observer, mark)
        joins = [e["data"]["user"] for e in events if e["data"]["event"] == "join"]
        assert sorted(joins) == sorted([*users, "watcher"])

        await asyncio.gather(*(tab.op("unsubscribe", "chat:1") for tab in tabs))
        mark = await marker(http, cluster.logic.api_url, "chat:1", "all out")
        events = await until(observer, mark)
        assert sorted(e["data"]["user"] for e in events) == users
        assert {e["data"]["event"] for e in events} == {"leave"}


async def test_a_resume_on_the_other_gateway_is_no_event_and_an_end_leaves_once(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Ann drops on one gateway and resumes on the other: nobody hears of it. She then
    drops for good: once her session's TTL is over, each observer (one on each
    gateway, so both sweep the room) hears her leave exactly once."""
    gw0, gw1 = cluster.gateways
    api = cluster.logic.api_url
    async with client(url_of(gw0, "obs0")) as obs0, client(url_of(gw1, "obs1")) as obs1:
        for observer in (obs0, obs1):
            await observer.op("subscribe", "chat:2")
        async with client(url_of(gw0, "ann")) as ann:
            await ann.op("subscribe", "chat:2")
            welcome = ann.welcome
        for observer in (obs0, obs1):
            await until(observer, join("chat:2", "ann"))
        again = await resume(f"{gw1.ws_url}?resume=1&token={token('ann')}", welcome)
        mark = await marker(http, api, "chat:2", "after the resume")
        for observer in (obs0, obs1):
            assert await until(observer, mark) == []
        await away(again.ws)
        for observer in (obs0, obs1):
            assert await observer.next() == leave("chat:2", "ann")
        # No event says "the room was swept": wait out two more sweeps of each gateway.
        presence = gw0.server.node.presence
        assert presence is not None
        await asyncio.sleep(2 * presence.store.refresh)
        mark = await marker(http, api, "chat:2", "once")
        for observer in (obs0, obs1):
            assert await until(observer, mark) == []


async def test_the_logic_node_lists_the_users(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    gw0, gw1 = cluster.gateways
    async with client(url_of(gw0, "ann")) as ann, client(url_of(gw1, "ann")) as tab:
        for c in (ann, tab):
            await c.op("subscribe", "chat:3")
        async with http.get(cluster.logic.api_url + "/rooms/chat:3") as response:
            body = await response.json()
        assert body["count"] == 2
        [ann_user] = body["presence"]["users"]
        assert ann_user["user"] == "ann"
        assert sorted(ann_user["wsIds"]) == sorted([ann.ws_id, tab.ws_id])


async def test_members_still_connected_on_two_gateways_stay_however_long(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Each gateway renews, in Redis, the entries its live connections hold: Ann on
    one gateway and Bob on the other, connected past the deadline an unrenewed entry
    has (the session TTL and two refreshes) and a sweep more, are still listed, and
    nobody heard a leave."""
    gw0, gw1 = cluster.gateways
    async with client(url_of(gw0, "ann")) as ann, client(url_of(gw1, "bob")) as bob:
        await ann.op("subscribe", "chat:4")
        await bob.op("subscribe", "chat:4")
        await until(ann, join("chat:4", "bob"))
        presence = gw0.server.node.presence
        assert presence is not None
        refresh = presence.store.refresh
        await asyncio.sleep(FAST_TIMERS["session_ttl"] + 3 * refresh)  # nothing to await
        mark = await marker(http, cluster.logic.api_url, "chat:4", "still here")
        assert await until(ann, mark) == []
        listed = (await bob.op("presence", "chat:4"))["presence"]["members"]
        assert sorted(member["user"] for member in listed) == ["ann", "bob"]
