"""Clients that subscribe themselves (docs/protocol.md, "Subscribing"): namespaces and
their policies, grants and subscription tokens, replies in order, expiry and renewal,
events for clients that read them (v=2), and subscriptions kept across a resume and a
cluster. Real servers on loopback, plain WebSocket clients reading raw JSON."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect

from pushgate.namespaces import grant_for
from pushgate.wire import CLOSE_GOING_AWAY
from tests.helpers import (
    FAST_TIMERS,
    UNIT,
    Running,
    post,
    running_server,
    without_position,
)
from tests.redis_server import RedisServer

SECRET = "a-subscription-test-secret-32-bytes!"
GRANT_SECRET = "chat-rooms-grant-secret"
NAMESPACES = f"lobby=public,chat=grant:{GRANT_SECRET},private=grant"
SETTINGS: dict[str, Any] = {**FAST_TIMERS, "namespaces": NAMESPACES, "token_secret": SECRET}


def subscription_token(*rooms: str, **claims: Any) -> str:
    return jwt.encode({"subscribe": list(rooms), **claims}, SECRET, algorithm="HS256")


class Client:
    """A WebSocket client speaking raw JSON: the welcome, then whatever comes."""

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self.ws_id: str = welcome["wsId"]
        self._next_id = 0
        self._early: list[dict[str, Any]] = []  # what came before a reply waited for

    async def next(self) -> dict[str, Any]:
        if self._early:
            return self._early.pop(0)
        return await self._read()

    async def _read(self) -> dict[str, Any]:
        text = await asyncio.wait_for(self.ws.recv(), 5 * UNIT)
        message: dict[str, Any] = json.loads(without_position(text))
        return message

    async def op(self, op: str, room: str, **fields: Any) -> dict[str, Any]:
        """Send an operation and return its reply's data; what arrives before the
        reply (a push) is kept, in order, for next()."""
        self._next_id += 1
        await self.send_op(op, room, id=self._next_id, **fields)
        while True:
            message = await self._read()
            data = message.get("data")
            if message["type"] == 0 and isinstance(data, dict) and data.get("id") == self._next_id:
                reply: dict[str, Any] = data
                return reply
            self._early.append(message)

    async def send_op(self, op: str, room: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": 0, "data": {"op": op, "room": room, **fields}}))

    async def pinged(self) -> None:
        """Nothing else is waiting: a PING is answered by the next frame."""
        await self.ws.send('{"type":1,"data":"PING"}')
        assert await self.next() == {"type": 1, "data": "PONG"}


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Client]:
    """A connected client; at the end of the block it goes away as a page does (1001),
    so its session waits for a resume (a 1000 would end it: see away())."""
    async with connect(url, open_timeout=5 * UNIT) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
        assert welcome["type"] == 0, welcome
        yield Client(ws, welcome["data"])
        await away(ws)


async def away(ws: ClientConnection) -> None:
    """Leave, keeping the session for a resume: 1001 (going away), not the 1000 of a
    client that said goodbye, whose session ends at once."""
    await ws.close(CLOSE_GOING_AWAY, "going away")


async def push_room(http: aiohttp.ClientSession, api_url: str, room: str, val: str) -> int:
    status, body = await post(http, api_url + "/push/room", json={"id": room, "val": val, "tag": 5})
    assert status == 200, body
    delivered: int = body["delivered"]
    return delivered


# Namespaces and their policies


async def test_a_public_room_is_subscribed_and_left_by_the_client(
    http: aiohttp.ClientSession,
) -> None:
    """In a public namespace the client subscribes itself: the reply says ok with the
    stream's position, the room's pushes reach it, and after it unsubscribes they do
    not."""
    async with running_server(**SETTINGS) as server, client(server.ws_url) as c:
        reply = await c.op("subscribe", "lobby:1")
        assert reply["ok"] is True
        assert reply["room"] == "lobby:1"
        assert isinstance(reply["position"], list)
        assert await push_room(http, server.api_url, "lobby:1", "hello") == 1
        assert await c.next() == {"type": 5, "data": "hello", "room": "lobby:1"}
        assert (await c.op("unsubscribe", "lobby:1"))["ok"] is True
        assert await push_room(http, server.api_url, "lobby:1", "gone") == 0
        await c.pinged()


async def test_a_server_room_is_the_back_ends_only(http: aiohttp.ClientSession) -> None:
    """The default namespace is the back end's: a client may neither subscribe nor
    unsubscribe itself (403), and a room the back end joined it to stays."""
    async with running_server(**SETTINGS) as server, client(server.ws_url) as c:
        refused = await c.op("subscribe", "news")
        assert (refused["ok"], refused["code"]) == (False, 403)
        status, _ = await post(
            http, server.api_url + "/room/join", data={"id": "news", "wsId": c.ws_id}
        )
        assert status == 200
        assert (await c.op("unsubscribe", "news"))["code"] == 403
        assert await push_room(http, server.api_url, "news", "still in") == 1


async def test_a_grant_room_needs_this_connections_grant() -> None:
    """Without a grant: 401; with a grant for another connection, or another room, or
    made with another secret: 403; with its own: ok."""
    async with running_server(**SETTINGS) as server, client(server.ws_url) as c:
        assert (await c.op("subscribe", "chat:42"))["code"] == 401
        other = grant_for(GRANT_SECRET, "00000000-0000-4000-8000-000000000000", "chat:42")
        assert (await c.op("subscribe", "chat:42", grant=other))["code"] == 403
        wrong_room = grant_for(GRANT_SECRET, c.ws_id, "chat:43")
        assert (await c.op("subscribe", "chat:42", grant=wrong_room))["code"] == 403
        forged = grant_for("another-secret-of-some-length", c.ws_id, "chat:42")
        assert (await c.op("subscribe", "chat:42", grant=forged))["code"] == 403
        good = grant_for(GRANT_SECRET, c.ws_id, "chat:42")
        assert (await c.op("subscribe", "chat:42", grant=good))["ok"] is True


async def test_a_subscription_token_opens_the_rooms_it_names() -> None:
    """A token's ``subscribe`` list, wildcards included, opens rooms of a grant
    namespace; bound to another wsId or user, expired, or signed by another key, it
    does not."""
    async with running_server(**SETTINGS) as server, client(server.ws_url) as c:
        token = subscription_token("private:team-*")
        assert (await c.op("subscribe", "private:team-7", token=token))["ok"] is True
        assert (await c.op("subscribe", "private:other", token=token))["code"] == 403
        mine = subscription_token("private:x", wsId=c.ws_id)
        assert (await c.op("subscribe", "private:x", token=mine))["ok"] is True
        theirs = subscription_token("private:y", wsId="someone-else")
        assert (await c.op("subscribe", "private:y", token=theirs))["code"] == 403
        of_bob = subscription_token("private:z", sub="bob")  # this connection has no user
        assert (await c.op("subscribe", "private:z", token=of_bob))["code"] == 403
        stale = subscription_token("private:w", exp=int(time.time()) - 60)
        assert (await c.op("subscribe", "private:w", token=stale))["code"] == 403
        forged = jwt.encode({"subscribe": ["private:v"]}, "x" * 40, algorithm="HS256")
        assert (await c.op("subscribe", "private:v", token=forged))["code"] == 403


# Replies


async def test_every_operation_gets_its_reply_in_order_and_bad_ones_a_400() -> None:
    """Operations sent at once are answered one by one, in order, each with its id;
    a malformed one gets 400 and a reason, and the connection goes on."""
    async with running_server(**SETTINGS) as server, client(server.ws_url) as c:
        rooms = [f"lobby:{n}" for n in range(8)]
        for n, room in enumerate(rooms):
            await c.send_op("subscribe", room, id=n)
        await c.ws.send('{"type":0,"data":{"op":"subscribe","room":"bad room!","id":"x"}}')
        await c.ws.send('{"type":0,"data":{"op":"dance","room":"lobby:1","id":"y"}}')
        replies = [(await c.next())["data"] for _ in range(10)]
        assert [r["id"] for r in replies] == [*range(8), "x", "y"]
        assert all(r["ok"] for r in replies[:8])
        assert [(r["ok"], r["code"]) for r in replies[8:]] == [(False, 400), (False, 400)]
        assert "room" in replies[8]["reason"]
        await c.pinged()


async def test_the_room_cap_applies_to_subscriptions() -> None:
    async with (
        running_server(**SETTINGS, max_rooms_per_conn=2) as server,
        client(server.ws_url) as c,
    ):
        assert (await c.op("subscribe", "lobby:1"))["ok"]
        assert (await c.op("subscribe", "lobby:2"))["ok"]
        assert (await c.op("subscribe", "lobby:3"))["code"] == 409
        assert (await c.op("subscribe", "lobby:1"))["ok"]  # in it already: no error


# Expiry and renewal


async def test_a_tokens_subscription_ends_at_its_exp_and_the_client_is_told(
    http: aiohttp.ClientSession,
) -> None:
    async with running_server(**SETTINGS) as server, client(server.ws_url) as c:
        end = int(time.time()) + 2
        reply = await c.op("subscribe", "private:a", token=subscription_token("private:a", exp=end))
        assert reply["expires"] == end
        assert await c.next() == {
            "type": 0,
            "data": {"op": "left", "room": "private:a", "reason": "expired"},
        }
        assert await push_room(http, server.api_url, "private:a", "after") == 0


async def test_a_refresh_before_exp_keeps_the_subscription(http: aiohttp.ClientSession) -> None:
    async with running_server(**SETTINGS) as server, client(server.ws_url) as c:
        soon = int(time.time()) + 2
        await c.op("subscribe", "private:b", token=subscription_token("private:b", exp=soon))
        later = int(time.time()) + 600
        renewed = await c.op(
            "refresh", "private:b", token=subscription_token("private:b", exp=later)
        )
        assert (renewed["ok"], renewed["expires"]) == (True, later)
        await asyncio.sleep(3 * UNIT)  # past the first token's exp: time itself is tested
        assert await push_room(http, server.api_url, "private:b", "kept") == 1
        assert await c.next() == {"type": 5, "data": "kept", "room": "private:b"}
        assert (await c.op("refresh", "private:none", token=subscription_token("private:none")))[
            "code"
        ] == 409


# Events


async def test_a_v2_client_is_told_of_its_rooms_and_of_the_back_ends_moves(
    http: aiohttp.ClientSession,
) -> None:
    """With v=2 the welcome lists the token's rooms, and a join or leave by the back
    end comes as an event; a client without v=2 gets no such frame."""
    token = jwt.encode({"sub": "ann", "rooms": ["news"]}, SECRET, algorithm="HS256")
    async with running_server(**SETTINGS) as server:
        async with client(f"{server.ws_url}?v=2&token={token}") as c:
            assert c.welcome["rooms"] == ["news"]
            status, _ = await post(
                http, server.api_url + "/room/join", data={"id": "sports", "wsId": c.ws_id}
            )
            assert status == 200
            assert await c.next() == {
                "type": 0,
                "data": {"op": "joined", "room": "sports", "reason": "server"},
            }
            await post(http, server.api_url + "/room/leave", data={"id": "sports", "wsId": c.ws_id})
            assert (await c.next())["data"] == {"op": "left", "room": "sports", "reason": "server"}
        async with client(server.ws_url) as seed:
            assert "rooms" not in seed.welcome
            await post(
                http, server.api_url + "/room/join", data={"id": "sports", "wsId": seed.ws_id}
            )
            await seed.pinged()  # the PONG comes first: no event came


# Sessions and clusters


async def resume(url: str, welcome: dict[str, Any]) -> Client:
    ws = await connect(url, open_timeout=5 * UNIT)
    resume = {"wsId": welcome["wsId"], "session": welcome["session"], "since": {}}
    await ws.send(json.dumps({"type": 0, "data": resume}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
    assert answer["data"]["resumed"] is True, answer
    return Client(ws, answer["data"])


async def test_a_subscription_and_its_exp_outlive_a_resume(http: aiohttp.ClientSession) -> None:
    """The session keeps a subscription as it keeps a join: after a resume the room
    is still the client's, and a token's subscription still ends at its exp."""
    async with running_server(**{**SETTINGS, "session_ttl": 30.0}) as server:
        async with client(f"{server.ws_url}?v=2") as first:
            await first.op("subscribe", "lobby:r")
            end = int(time.time()) + 2
            await first.op("subscribe", "private:r", token=subscription_token("private:r", exp=end))
            welcome = first.welcome
        again = await resume(f"{server.ws_url}?resume=1&v=2", welcome)
        try:
            assert sorted(again.welcome["rooms"]) == ["lobby:r", "private:r"]
            assert await push_room(http, server.api_url, "lobby:r", "kept") == 1
            assert await again.next() == {"type": 5, "data": "kept", "room": "lobby:r"}
            assert (await again.next())["data"] == {
                "op": "left",
                "room": "private:r",
                "reason": "expired",
            }
        finally:
            await again.ws.close()


async def test_in_a_cluster_a_subscription_reaches_across_gateways(
    redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    """Subscribed on one gateway, a client gets the room's pushes from the logic
    node, and keeps the room when it resumes on the other gateway."""
    settings = {**SETTINGS, "broker": redis.url, "prefix": "subs:", "session_ttl": 30.0}
    async with AsyncExitStack() as stack:
        gateways: list[Running] = [
            await stack.enter_async_context(running_server("gateway", **settings)) for _ in range(2)
        ]
        logic = await stack.enter_async_context(running_server("logic", **settings))
        async with client(gateways[0].ws_url) as c:
            assert (await c.op("subscribe", "lobby:c"))["ok"]
            assert await push_room(http, logic.api_url, "lobby:c", "one") is None
            assert await c.next() == {"type": 5, "data": "one", "room": "lobby:c"}
            welcome = c.welcome
        again = await resume(gateways[1].ws_url + "?resume=1", welcome)
        try:
            await push_room(http, logic.api_url, "lobby:c", "two")
            # From the session's start (the resume named no position): "one" again.
            got = [(await again.next())["data"] for _ in range(2)]
            assert got == ["one", "two"]
        finally:
            await again.ws.close()


@pytest.mark.parametrize(
    "spec",
    [
        "chat",
        "chat=nobody",
        "chat=public:secret-too-long-for",
        "chat=grant:short",
        "bad name=public",
    ],
)
def test_a_wrong_namespace_is_refused_at_start(spec: str) -> None:
    from pushgate.config import Config
    from pushgate.errors import ConfigError

    with pytest.raises(ConfigError, match="--namespaces"):
        Config(namespaces=spec)
