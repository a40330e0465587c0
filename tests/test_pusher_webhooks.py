"""A Pusher app's webhooks (--pusher-webhook, docs/pusher.md): what pusher-js clients
do reaches a receiver in Pusher's format, each request checked with the real
`pusher` server library's own ``validate_webhook`` (key, signature, time)."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pusher
import pytest
from aiohttp import web

from tests.helpers import FAST_TIMERS, LOOPBACK, UNIT, Running, running_server
from tests.pusher.harness import node_server_call, pusher_js

APP = ("1001", "key1", "s3cret-s3cret-s3cret")
WAIT = 10 * UNIT


class PusherReceiver:
    """A Pusher app's back end: takes the events of each request its library
    validates, refuses (401) the rest."""

    def __init__(self) -> None:
        self.library = pusher.Pusher(app_id=APP[0], key=APP[1], secret=APP[2])
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[dict[str, str], str]] = []  # headers and body, as sent
        self.refused = 0
        self.url = ""
        self._arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append((dict(request.headers), body))
        valid = self.library.validate_webhook(
            request.headers.get("X-Pusher-Key", ""),
            request.headers.get("X-Pusher-Signature", ""),
            body,
        )
        if valid is None:
            self.refused += 1
            return web.Response(status=401)
        self.events += valid["events"]
        self._arrived.set()
        return web.Response(text="ok")

    async def until(self, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        async with asyncio.timeout(WAIT):
            while not done(self.events):
                self._arrived.clear()
                await self._arrived.wait()
        return self.events


@pytest.fixture
async def receiver() -> AsyncIterator[PusherReceiver]:
    hooks = PusherReceiver()
    app = web.Application()
    app.router.add_post("/pusher", hooks.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    hooks.url = f"http://{LOOPBACK}:{runner.addresses[0][1]}/pusher"
    try:
        yield hooks
    finally:
        await runner.cleanup()


@pytest.fixture
async def server(receiver: PusherReceiver) -> AsyncIterator[Running]:
    settings = {
        **FAST_TIMERS,
        "heartbeat": 1.0,
        "idle_timeout": 5.0,
        "pusher_app": ":".join(APP) + ":client-events",
        "pusher_webhook": f"{APP[0]}={receiver.url}",
    }
    async with running_server(**settings) as running:
        yield running


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [event for event in events if event["name"] == name]


async def test_channels_members_client_events_and_cache_misses_are_told(
    server: Running, receiver: PusherReceiver
) -> None:
    port = server.ws_port
    async with pusher_js(port, APP) as ann, pusher_js(port, APP) as bob:
        await asyncio.gather(ann.connected(), bob.connected())
        await ann.subscribed("presence-room", user_id="ann", user_info={"name": "Ann"})
        bob_socket = await bob.connected()
        await bob.subscribed("presence-room", user_id="bob")
        bob.send(op="trigger", channel="presence-room", event="client-typing", data={"on": 1})
        await ann.hears("presence-room", "client-typing")
        await ann.subscribed("cache-prices")
        await ann.hears("cache-prices", "pusher:cache_miss")
        await receiver.until(lambda events: bool(named(events, "cache_miss")))
        bob.send(op="unsubscribe", channel="presence-room")
        await receiver.until(lambda events: bool(named(events, "member_removed")))
    events = await receiver.until(
        lambda events: len(named(events, "channel_vacated")) == 2  # both channels emptied
    )
    assert receiver.refused == 0
    assert named(events, "channel_occupied") == [
        {"name": "channel_occupied", "channel": "presence-room"},
        {"name": "channel_occupied", "channel": "cache-prices"},
    ]
    added = named(events, "member_added")
    assert added == [
        {"name": "member_added", "channel": "presence-room", "user_id": "ann"},
        {"name": "member_added", "channel": "presence-room", "user_id": "bob"},
    ]
    assert named(events, "client_event") == [
        {
            "name": "client_event",
            "channel": "presence-room",
            "event": "client-typing",
            "data": '{"on":1}',
            "socket_id": bob_socket,
            "user_id": "bob",
        }
    ]
    assert named(events, "cache_miss") == [{"name": "cache_miss", "channel": "cache-prices"}]
    # Bob left first; Ann's leave came with her connection's end.
    removed = [event["user_id"] for event in named(events, "member_removed")]
    assert removed == ["bob", "ann"]
    # The Node library's own check (pusher.webhook(...).isValid()) takes them too;
    # it reads the headers as Node's http module gives them, lower-case.
    api_port = server.api_port
    for headers, body in receiver.requests:
        names = ("X-Pusher-Key", "X-Pusher-Signature", "Content-Type")
        node = {name.lower(): headers[name] for name in names}
        checked = await node_server_call(api_port, APP, op="webhook", headers=node, body=body)
        assert checked["body"]["valid"] is True
        assert checked["body"]["events"] == json.loads(body)["events"]
