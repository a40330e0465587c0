"""Laravel Echo (the real one, its Pusher connector over pusher-js, in Node) against
pushgate, with events triggered as a Laravel back end triggers them (the `pusher`
server library: Laravel's PusherBroadcaster calls the same API): a namespaced event
on a public channel, toOthers() (socket_id), whispers on a private channel, and a
presence channel's here / joining / leaving."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.helpers import FAST_TIMERS, Running, running_server
from tests.pusher.harness import PusherJs, node_server_call, pusher_js

APP = ("1001", "key1", "s3cret-s3cret-s3cret")
ORDER_SHIPPED = "App\\Events\\OrderShipped"  # what Echo's listen("OrderShipped") hears


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    timers = {**FAST_TIMERS, "heartbeat": 1.0, "idle_timeout": 5.0}
    async with running_server(pusher_app=":".join(APP) + ":client-events", **timers) as running:
        yield running


async def called(client: PusherJs, channel: str, callback: str, n: int = 1) -> list[Any]:
    """What Echo handed the app's ``callback`` on ``channel``, once it was called n times."""

    def calls() -> list[Any]:
        return [
            line.get("data")
            for line in client.seen
            if line["kind"] == "echo"
            and line["channel"] == channel
            and line["callback"] == callback
        ]

    await client.until(lambda _: len(calls()) >= n)
    return calls()


async def test_echo_hears_a_laravel_event_and_to_others_leaves_out_the_sender(
    server: Running,
) -> None:
    ws_port, api_port = server.ws_port, server.api_port
    async with (
        pusher_js(ws_port, APP, "echo.mjs") as ann,
        pusher_js(ws_port, APP, "echo.mjs") as bob,
    ):
        await asyncio.gather(ann.connected(), bob.connected())
        for client in (ann, bob):
            client.send(op="listen", channel="orders", event="OrderShipped")
            await called(client, "orders", "subscribed")
        shipped = {"order": {"id": 1, "status": "shipped"}}
        result = await node_server_call(
            api_port, APP, op="trigger", channels=["orders"], event=ORDER_SHIPPED, data=shipped
        )
        assert result["status"] == 200, result
        for client in (ann, bob):
            assert await called(client, "orders", "listen") == [shipped]
        # toOthers(): the request names the sender's socket_id, which hears nothing.
        ann_socket = await ann.connected()
        again = {"order": {"id": 2, "status": "shipped"}}
        result = await node_server_call(
            api_port,
            APP,
            op="trigger",
            channels=["orders"],
            event=ORDER_SHIPPED,
            data=again,
            params={"socket_id": ann_socket},
        )
        assert result["status"] == 200, result
        assert await called(bob, "orders", "listen", 2) == [shipped, again]
        assert await called(ann, "orders", "listen") == [shipped]


async def test_echo_whispers_and_presence(server: Running) -> None:
    ws_port = server.ws_port
    async with (
        pusher_js(ws_port, APP, "echo.mjs") as ann,
        pusher_js(ws_port, APP, "echo.mjs") as bob,
    ):
        await asyncio.gather(ann.connected(), bob.connected())
        for client in (ann, bob):
            client.send(op="private", channel="chat", event="Message", whisper="typing")
            await called(client, "chat", "subscribed")
        ann.send(op="whisper", channel="chat", event="typing", data={"name": "Ann"})
        assert await called(bob, "chat", "whisper") == [{"name": "Ann"}]

        ann.send(op="join", channel="room.1", user_id="ann", user_info={"name": "Ann"})
        assert await called(ann, "room.1", "here") == [[{"name": "Ann"}]]
        bob.send(op="join", channel="room.1", user_id="bob", user_info={"name": "Bob"})
        here = await called(bob, "room.1", "here")
        assert sorted(here[0], key=lambda info: info["name"]) == [{"name": "Ann"}, {"name": "Bob"}]
        assert await called(ann, "room.1", "joining") == [{"name": "Bob"}]
        bob.send(op="leave", channel="room.1")
        assert await called(ann, "room.1", "leaving") == [{"name": "Bob"}]
    # Ann never heard her own whisper (client events are not echoed).
    assert [line for line in ann.seen if line.get("callback") == "whisper"] == []
