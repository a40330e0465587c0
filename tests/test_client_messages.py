"""Members who talk to their room (docs/protocol.md, "Publishing"), and pushes that
leave one connection out: to every other member, with the sender's wsId and user,
through the broker (ordered, in history, recovered), and within the message rate.
Real servers, plain WebSocket clients reading raw JSON."""

import asyncio
import json
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import jwt
from websockets.asyncio.client import connect

from tests.helpers import FAST_TIMERS, UNIT, Running, post, running_server
from tests.redis_server import RedisServer
from tests.test_subscriptions import Client, client, push_room
from tests.test_subscriptions import away as leave

SECRET = "a-client-message-test-secret-32-bytes"
SETTINGS: dict[str, Any] = {
    **FAST_TIMERS,
    "namespaces": "chat=public+publish,lobby=public",
    "token_secret": SECRET,
    "session_ttl": 30.0,
}


async def publish(c: Client, room: str, data: object, **fields: Any) -> dict[str, Any]:
    return await c.op("publish", room, tag=7, data=data, **fields)


async def members(url: str, room: str, count: int, stack: AsyncExitStack) -> list[Client]:
    joined = []
    for _ in range(count):
        c = await stack.enter_async_context(client(url))
        assert (await c.op("subscribe", room))["ok"]
        joined.append(c)
    return joined


async def test_a_member_talks_to_every_other_member() -> None:
    """The message reaches the others with the sender's wsId (and user, when it has
    one), and not the sender, unless it asks for an echo."""
    token = jwt.encode({"sub": "ann"}, SECRET, algorithm="HS256")
    async with running_server(**SETTINGS) as server, AsyncExitStack() as stack:
        ann = await stack.enter_async_context(client(f"{server.ws_url}?token={token}"))
        assert (await ann.op("subscribe", "chat:1"))["ok"]
        bob, cat = await members(server.ws_url, "chat:1", 2, stack)
        assert (await publish(ann, "chat:1", {"text": "hi"}))["ok"] is True
        expected = {
            "type": 7,
            "data": {"text": "hi"},
            "room": "chat:1",
            "from": {"wsId": ann.ws_id, "user": "ann"},
        }
        for other in (bob, cat):
            message = await other.next()
            assert message.pop("exclude") == ann.ws_id
            assert message == expected
        await ann.pinged()  # nothing came back to the sender
        assert (await publish(bob, "chat:1", "echo", echo=True))["ok"] is True
        assert await bob.next() == {
            "type": 7,
            "data": "echo",
            "room": "chat:1",
            "from": {"wsId": bob.ws_id},
        }


async def test_publishing_is_for_members_of_rooms_that_allow_it() -> None:
    async with running_server(**SETTINGS) as server, client(server.ws_url) as c:
        assert (await publish(c, "chat:2", "x"))["code"] == 403  # not a member
        assert (await c.op("subscribe", "lobby:1"))["ok"]
        assert (await publish(c, "lobby:1", "x"))["code"] == 403  # lobby: no +publish
        assert (await c.op("subscribe", "chat:2"))["ok"]
        bad = await c.op("publish", "chat:2", tag=1, data="x")
        assert (bad["code"], "tag" in bad["reason"]) == (400, True)
        assert (await c.op("publish", "chat:2", tag=5))["code"] == 400  # no data
        assert (await publish(c, "chat:2", None))["ok"]  # null is data


async def test_client_messages_are_ordered_kept_and_recovered_once(
    http: aiohttp.ClientSession,
) -> None:
    """A member that was away resumes and gets the messages it missed, each once, in
    the order they were published, API pushes among them; the sender, resuming,
    is not handed its own messages back."""
    async with running_server(**SETTINGS) as server, AsyncExitStack() as stack:
        sender, stays = await members(server.ws_url, "chat:3", 2, stack)
        away = await stack.enter_async_context(client(server.ws_url))
        assert (await away.op("subscribe", "chat:3"))["ok"]
        welcome = away.welcome
        await leave(away.ws)
        for n in range(3):
            assert (await publish(sender, "chat:3", n))["ok"]
            await push_room(http, server.api_url, "chat:3", f"api {n}")
        seen = [(await stays.next())["data"] for _ in range(6)]
        assert seen == [0, "api 0", 1, "api 1", 2, "api 2"]
        back = await resumed(server.ws_url, welcome)
        got = [(await back.next())["data"] for _ in range(6)]
        assert got == seen
        await back.pinged()
        await leave(back.ws)
        sender_welcome = sender.welcome
        await leave(sender.ws)
        again = await resumed(server.ws_url, sender_welcome)
        assert [(await again.next())["data"] for _ in range(3)] == ["api 0", "api 1", "api 2"]
        await again.pinged()
        await leave(again.ws)


async def resumed(url: str, welcome: dict[str, Any]) -> Client:
    ws = await connect(url + "?resume=1", open_timeout=5 * UNIT)
    resume = {"wsId": welcome["wsId"], "session": welcome["session"], "since": {}}
    await ws.send(json.dumps({"type": 0, "data": resume}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
    assert answer["data"]["resumed"] is True, answer
    return Client(ws, answer["data"])


async def test_over_the_message_rate_a_publish_is_refused_then_the_client_closed() -> None:
    """Between once and twice the rate, each message is refused (an operation with
    429); past twice, the connection is closed with 1008."""
    async with (
        running_server(**SETTINGS, max_client_messages_per_second=5) as server,
        client(server.ws_url) as c,
    ):
        assert (await c.op("subscribe", "chat:4"))["ok"]  # message 1
        for n in range(8):  # messages 2-9
            await c.send_op("publish", "chat:4", tag=7, data=n, id=n)
        replies = [(await c.next())["data"] for _ in range(8)]
        assert [r.get("code") for r in replies] == [None] * 4 + [429] * 4
        for n in range(5):  # messages 10-14: past twice the rate
            await c.send_op("publish", "chat:4", tag=7, data=n, id=100 + n)
        await asyncio.wait_for(c.ws.wait_closed(), 5 * UNIT)
        assert c.ws.close_code == 1008


async def test_an_api_push_may_leave_one_connection_out(http: aiohttp.ClientSession) -> None:
    """exclude=wsId: a back end relaying one user's action leaves that user's own
    connection out; the others get it, and the answer counts them."""
    async with running_server(**SETTINGS) as server, AsyncExitStack() as stack:
        one, two = await members(server.ws_url, "lobby:9", 2, stack)
        status, body = await post(
            http,
            server.api_url + "/push/room",
            json={"id": "lobby:9", "val": "x", "tag": 3, "exclude": one.ws_id},
        )
        assert (status, body["delivered"]) == (200, 1)
        assert (await two.next())["data"] == "x"
        await one.pinged()
        status, body = await post(
            http, server.api_url + "/push/all", json={"val": "y", "tag": 3, "exclude": "nope"}
        )
        assert (status, body["field"]) == (400, "exclude")


async def test_in_a_cluster_a_message_reaches_members_on_other_gateways(
    redis: RedisServer,
) -> None:
    settings = {**SETTINGS, "broker": redis.url, "prefix": "talk:"}
    async with AsyncExitStack() as stack:
        gateways: list[Running] = [
            await stack.enter_async_context(running_server("gateway", **settings)) for _ in range(2)
        ]
        speaker = (await members(gateways[0].ws_url, "chat:c", 1, stack))[0]
        hearer = (await members(gateways[1].ws_url, "chat:c", 1, stack))[0]
        assert (await publish(speaker, "chat:c", "across"))["ok"]
        assert (await hearer.next())["data"] == "across"
        await speaker.pinged()
