"""What the back end hears (docs/webhooks.md, "Events"): sessions started and ended
(never for a resume), rooms occupied and vacated, members joined and left (per user,
as presence counts them), members' messages where the namespace asks. One process
here; tests/test_webhook_cluster.py has two gateways on Redis. A real aiohttp
receiver checks each request's signature as docs/webhooks.md tells receivers to."""

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from tests.helpers import FAST_TIMERS, LOOPBACK, UNIT, post, running_server
from tests.test_subscriptions import client, resume

TOKEN_SECRET = "a-webhook-test-token-secret-of-32-bytes"
WEBHOOK_SECRET = "a-webhook-signing-secret-of-32-bytes!!"
WAIT = 10 * UNIT

Event = dict[str, Any]


class Receiver:
    """A back end that records the events it is sent, once each (by id), after
    checking the request's signature; ``down`` makes it answer 503."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.ids: set[str] = set()
        self.requests = 0
        self.url = ""
        self._arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("X-Pushgate-Signature", "")
        fields = dict(part.split("=", 1) for part in header.split(","))
        signed = f"{fields['t']}.".encode() + body
        expected = hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(fields["v1"], expected), "a forged or broken signature"
        assert abs(int(fields["t"]) - time.time()) < 300
        self.requests += 1
        for event in json.loads(body)["events"]:
            if event["id"] not in self.ids:
                self.ids.add(event["id"])
                self.events.append(event)
        self._arrived.set()
        return web.Response(text="ok")

    async def until(self, done: Callable[[list[Event]], bool], wait: float = WAIT) -> list[Event]:
        """The events received (name and data), once ``done`` holds for them."""
        async with asyncio.timeout(wait):
            while not done(self.events):
                self._arrived.clear()
                await self._arrived.wait()
        return [{"name": e["name"], **e["data"]} for e in self.events]

    async def count(self, name: str, n: int, wait: float = WAIT) -> list[Event]:
        """Once ``n`` events named ``name`` came: every event received."""
        return await self.until(lambda events: sum(e["name"] == name for e in events) >= n, wait)


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    app = web.Application()
    hooks = Receiver()
    app.router.add_post("/hooks", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = runner.addresses[0][1]
    hooks.url = f"http://{LOOPBACK}:{port}/hooks"
    try:
        yield hooks
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as hooks:
        yield hooks


def settings(receiver: Receiver, **more: Any) -> dict[str, Any]:
    return {
        **FAST_TIMERS,
        "token_secret": TOKEN_SECRET,
        "namespaces": "chat=public+publish+webhook,quiet=public+publish",
        "webhook": receiver.url,
        "webhook_secret": WEBHOOK_SECRET,
        **more,
    }


def url(server_url: str, user: str) -> str:
    token = jwt.encode({"sub": user}, TOKEN_SECRET, algorithm="HS256")
    return f"{server_url}?v=2&token={token}"


def named(events: list[Event], *names: str) -> list[Event]:
    return [event for event in events if event["name"] in names]


async def test_a_session_starts_and_ends_when_its_ttl_passes_unresumed(
    receiver: Receiver,
) -> None:
    async with running_server(**settings(receiver)) as server:
        async with client(url(server.ws_url, "ann")) as ann:
            ws_id = ann.ws_id
            events = await receiver.count("session_started", 1)
            assert events == [{"name": "session_started", "wsId": ws_id, "user": "ann"}]
        # Its connection ended: it waits session_ttl for a resume, then ends.
        events = await receiver.count("session_ended", 1)
        assert events[1:] == [
            {"name": "session_ended", "wsId": ws_id, "user": "ann", "reason": "expired"}
        ]


async def test_a_resume_is_neither_an_end_nor_a_start(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with running_server(**settings(receiver, session_ttl=30.0)) as server:
        async with client(url(server.ws_url, "ann")) as ann:
            welcome = ann.welcome
        back = await resume(url(server.ws_url, "ann") + "&resume=1", welcome)
        try:
            # A fence: the join's events come after any the drop and resume made.
            status, body = await post(
                http, server.api_url + "/room/join", json={"id": "news", "wsId": back.ws_id}
            )
            assert status == 200, body
            events = await receiver.count("member_joined", 1)
        finally:
            await back.ws.close()
        assert [event["name"] for event in events] == [
            "session_started",
            "room_occupied",
            "member_joined",
        ]


async def test_rooms_are_occupied_and_vacated_and_members_counted_by_user(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    """Ann's two tabs make one member, joined with the first and left with the
    last; the room is occupied with its first member and vacated with its last."""
    async with running_server(**settings(receiver, session_ttl=30.0)) as server:
        join, leave = server.api_url + "/room/join", server.api_url + "/room/leave"
        async with (
            client(url(server.ws_url, "ann")) as tab1,
            client(url(server.ws_url, "ann")) as tab2,
            client(url(server.ws_url, "bob")) as bob,
        ):
            for who in (tab1, tab2, bob):
                status, body = await post(http, join, json={"id": "news", "wsId": who.ws_id})
                assert status == 200, body
            for who in (tab1, tab2, bob):
                status, body = await post(http, leave, json={"id": "news", "wsId": who.ws_id})
                assert status == 200, body
            events = await receiver.count("room_vacated", 1)
        assert named(events, "room_occupied", "room_vacated", "member_joined", "member_left") == [
            {"name": "room_occupied", "room": "news"},
            {"name": "member_joined", "room": "news", "user": "ann"},
            {"name": "member_joined", "room": "news", "user": "bob"},
            {"name": "member_left", "room": "news", "user": "ann", "reason": "left"},
            {"name": "member_left", "room": "news", "user": "bob", "reason": "left"},
            {"name": "room_vacated", "room": "news"},
        ]


async def test_a_session_the_back_end_ends_leaves_its_rooms(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with running_server(**settings(receiver, session_ttl=30.0)) as server:
        async with client(url(server.ws_url, "ann")) as ann:
            ws_id = ann.ws_id
            await ann.op("subscribe", "chat:1")
            await receiver.count("member_joined", 1)
            status, body = await post(
                http,
                server.api_url + "/disconnect",
                json={"wsId": ws_id, "endSession": True},
            )
            assert status == 200, body
            events = await receiver.count("session_ended", 1)
        assert events[-3:] == [
            {"name": "member_left", "room": "chat:1", "user": "ann", "reason": "session_ended"},
            {"name": "room_vacated", "room": "chat:1"},
            {"name": "session_ended", "wsId": ws_id, "user": "ann", "reason": "ended"},
        ] or events[-3:] == [
            {"name": "session_ended", "wsId": ws_id, "user": "ann", "reason": "ended"},
            {"name": "member_left", "room": "chat:1", "user": "ann", "reason": "session_ended"},
            {"name": "room_vacated", "room": "chat:1"},
        ]


async def test_without_sessions_a_closed_connection_ends_its_session_at_once(
    receiver: Receiver,
) -> None:
    async with running_server(**settings(receiver, session_ttl=0.0)) as server:
        async with client(url(server.ws_url, "ann")) as ann:
            ws_id = ann.ws_id
            await ann.op("subscribe", "chat:1")
            await receiver.count("member_joined", 1)
        events = await receiver.count("session_ended", 1)
        assert named(events, "session_ended") == [
            {"name": "session_ended", "wsId": ws_id, "user": "ann", "reason": "closed"}
        ]
        assert named(events, "member_left") == [
            {"name": "member_left", "room": "chat:1", "user": "ann", "reason": "session_ended"}
        ]


async def test_members_messages_are_sent_where_the_namespace_asks(receiver: Receiver) -> None:
    async with running_server(**settings(receiver, session_ttl=30.0)) as server:
        async with client(url(server.ws_url, "ann")) as ann:
            for room in ("quiet:1", "chat:1"):
                await ann.op("subscribe", room)
            quiet = await ann.op("publish", "quiet:1", data="not told", tag=3)
            told = await ann.op("publish", "chat:1", data={"text": "hello"}, tag=3)
            assert quiet["ok"]
            assert told["ok"]
            events = await receiver.count("client_message", 1)
            ws_id = ann.ws_id
        assert named(events, "client_message") == [
            {
                "name": "client_message",
                "room": "chat:1",
                "wsId": ws_id,
                "user": "ann",
                "tag": 3,
                "val": {"text": "hello"},
            }
        ]


async def test_each_event_has_an_id_and_a_time(receiver: Receiver) -> None:
    async with running_server(**settings(receiver)) as server:
        before = int(time.time() * 1000)
        async with client(url(server.ws_url, "ann")):
            await receiver.count("session_started", 1)
        (event,) = receiver.events
        assert isinstance(event["id"], str)
        assert event["id"]
        assert before - 1000 <= event["time_ms"] <= int(time.time() * 1000) + 1000


async def test_a_namespaces_own_receiver_hears_only_its_rooms(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    """--namespace-webhooks chat=URL: that receiver gets the events of chat:* rooms
    and their members' messages, nothing of other rooms, no session events; the
    --webhook receiver gets everything."""
    async with receiving() as chat_only:
        more = {"session_ttl": 30.0, "namespace_webhooks": f"chat={chat_only.url}"}
        async with (
            running_server(**settings(receiver, **more)) as server,
            client(url(server.ws_url, "ann")) as ann,
        ):
            status, body = await post(
                http, server.api_url + "/room/join", json={"id": "news", "wsId": ann.ws_id}
            )
            assert status == 200, body
            await ann.op("subscribe", "chat:1")
            said = await ann.op("publish", "chat:1", data="hi", tag=3)
            assert said["ok"]
            everything = await receiver.count("client_message", 1)
            mine = await chat_only.count("client_message", 1)
        assert [(e["name"], e.get("room")) for e in mine] == [
            ("room_occupied", "chat:1"),
            ("member_joined", "chat:1"),
            ("client_message", "chat:1"),
        ]
        assert [(e["name"], e.get("room")) for e in everything] == [
            ("session_started", None),
            ("room_occupied", "news"),
            ("member_joined", "news"),
            ("room_occupied", "chat:1"),
            ("member_joined", "chat:1"),
            ("client_message", "chat:1"),
        ]
