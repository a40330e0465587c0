"""What the back end hears from a cluster (docs/webhooks.md, "Events"): two gateways
and a logic node on a real redis-server, and on a three-master Redis Cluster, all
sending to one real receiver. A user's sessions on both gateways make one member; a
resume on the other gateway is no event; the sessions of a gateway killed with
SIGKILL end once, reported by a node that lived."""

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.helpers import FAST_TIMERS, UNIT, Running, post, running_server, server_process
from tests.test_subscriptions import client, resume
from tests.test_webhook_events import (
    TOKEN_SECRET,
    WEBHOOK_SECRET,
    Receiver,
    named,
    receiver,
    url,
)

__all__ = ["receiver"]  # the fixture, used by name

NAMESPACES = "chat=public+publish+webhook"


@dataclass
class Cluster:
    gateways: list[Running]
    logic: Running
    settings: dict[str, Any]


@pytest.fixture(params=["redis", "redis-cluster"])
async def cluster(request: pytest.FixtureRequest, receiver: Receiver) -> AsyncIterator[Cluster]:
    if request.param == "redis":
        broker = request.getfixturevalue("module_redis").url
    else:
        broker = request.getfixturevalue("redis_cluster").url
    settings: dict[str, Any] = {
        **FAST_TIMERS,
        "broker": broker,
        "prefix": f"hooks{request.node.name.__hash__() & 0xFFFFFF:x}:",
        "node_ttl": 2.0,
        "session_ttl": 1.0,
        "namespaces": NAMESPACES,
        "token_secret": TOKEN_SECRET,
        "webhook": receiver.url,
        "webhook_secret": WEBHOOK_SECRET,
    }
    async with AsyncExitStack() as stack:
        gateways = [
            await stack.enter_async_context(running_server("gateway", **settings)) for _ in range(2)
        ]
        logic = await stack.enter_async_context(running_server("logic", **settings))
        yield Cluster(gateways, logic, settings)


async def test_a_users_sessions_on_two_gateways_make_one_member(
    cluster: Cluster, receiver: Receiver
) -> None:
    """Ann on both gateways and Bob, subscribing at once, then unsubscribing at once:
    one room_occupied, one member_joined per user, one member_left per user, one
    room_vacated; three sessions started."""
    first, second = cluster.gateways
    async with (
        client(url(first.ws_url, "ann")) as ann1,
        client(url(second.ws_url, "ann")) as ann2,
        client(url(second.ws_url, "bob")) as bob,
    ):
        everyone = (ann1, ann2, bob)
        await asyncio.gather(*(who.op("subscribe", "chat:1") for who in everyone))
        await asyncio.gather(*(who.op("unsubscribe", "chat:1") for who in everyone))
        events = await receiver.count("room_vacated", 1)
    assert len(named(events, "session_started")) == 3
    rooms = named(events, "room_occupied", "room_vacated", "member_joined", "member_left")
    # Each is queued by the node that decided it: the two nodes' events of one moment
    # may come in either order, but the room's occupation comes with its first
    # member's join, and its vacating with its last member's leave.
    names = [event["name"] for event in rooms]
    assert names.count("room_occupied") == names.count("room_vacated") == 1
    assert names[names.index("room_occupied") + 1] == "member_joined"
    assert names[names.index("room_vacated") - 1] == "member_left"
    joins = sorted(e["user"] for e in named(rooms, "member_joined"))
    leaves = sorted((e["user"], e["reason"]) for e in named(rooms, "member_left"))
    assert joins == ["ann", "bob"]
    assert leaves == [("ann", "left"), ("bob", "left")]


async def test_a_resume_on_the_other_gateway_is_no_event(
    cluster: Cluster, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    first, second = cluster.gateways
    async with client(url(first.ws_url, "ann")) as ann:
        await ann.op("subscribe", "chat:1")
        welcome = ann.welcome
        await receiver.count("member_joined", 1)
    back = await resume(url(second.ws_url, "ann") + "&resume=1", welcome)
    try:
        # A fence: its events come after any the drop and the resume made.
        status, body = await post(
            http, cluster.logic.api_url + "/room/join", json={"id": "news", "wsId": back.ws_id}
        )
        assert status == 200, body
        events = await receiver.count("member_joined", 2)
    finally:
        await back.ws.close()
    assert [(e["name"], e.get("room")) for e in events] == [
        ("session_started", None),
        ("room_occupied", "chat:1"),
        ("member_joined", "chat:1"),
        ("room_occupied", "news"),
        ("member_joined", "news"),
    ]


async def test_a_killed_gateways_sessions_end_once(cluster: Cluster, receiver: Receiver) -> None:
    """Ann's gateway is SIGKILLed while she is in chat:1 (Bob, on a live gateway, is
    there too): once her session's TTL and the dead node's margin pass, a live node
    reports her leave and her session's end, once each."""
    settings = cluster.settings
    args = [
        "--broker",
        settings["broker"],
        "--prefix",
        settings["prefix"],
        "--node-ttl",
        "2",
        "--session-ttl",
        "1",
        "--namespaces",
        NAMESPACES,
        "--webhook",
        receiver.url,
    ]
    env = {"PUSHGATE_TOKEN_SECRET": TOKEN_SECRET, "PUSHGATE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    async with (
        server_process(*args, env=env, role="gateway") as doomed,
        client(url(cluster.gateways[0].ws_url, "bob")) as bob,
        client(url(doomed.ws_url, "ann")) as ann,
    ):
        await bob.op("subscribe", "chat:1")
        await ann.op("subscribe", "chat:1")
        await receiver.count("member_joined", 2)
        os.kill(doomed.process.pid, signal.SIGKILL)
        await doomed.process.wait()
        # Her session's TTL, the dead node's margin, and a lease of its sender.
        events = await receiver.count("session_ended", 1, wait=30 * UNIT)
    ended = named(events, "session_ended", "member_left")
    mine = [
        {"name": "member_left", "room": "chat:1", "user": "ann", "reason": "session_ended"},
        {"name": "session_ended", "wsId": ann.ws_id, "user": "ann", "reason": "expired"},
    ]
    assert ended in (mine, mine[::-1])
    assert named(events, "room_vacated") == []  # Bob is still there
