"""A Python Pusher client nobody here wrote (Pysher, on websocket-client, in its own
thread) against pushgate's Pusher protocol: it connects, subscribes to a private
and a presence channel with the signatures it makes from the app's secret, and
hears a push to the channel's room."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pysher
import pytest

from tests.helpers import FAST_TIMERS, UNIT, Running, post, running_server

APP = ("1001", "key1", "s3cret-s3cret-s3cret")
WAIT = 10 * UNIT


class Heard:
    """What Pysher's callbacks (on its own thread) hand to the test's loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def callback(self, name: str) -> Any:
        def called(data: Any = None, *_: Any) -> None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (name, data))

        return called

    async def next(self) -> tuple[str, Any]:
        async with asyncio.timeout(WAIT):
            return await self._queue.get()


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    timers = {**FAST_TIMERS, "heartbeat": 1.0, "idle_timeout": 5.0}
    async with running_server(pusher_app=":".join(APP), **timers) as running:
        yield running


async def test_pysher_subscribes_with_its_own_signatures_and_hears_a_push(
    server: Running,
) -> None:
    port = server.ws_port
    heard = Heard()
    client = pysher.Pusher(
        APP[1],
        secure=False,
        custom_host="127.0.0.1",
        port=port,
        secret=APP[2],
        user_data={"user_id": "py", "user_info": {"name": "Py"}},
        reconnect_interval=1,
    )
    client.connection.bind("pusher:connection_established", heard.callback("connected"))
    client.connect()
    try:
        assert (await heard.next())[0] == "connected"
        feed = client.subscribe("private-feed")
        feed.bind("pusher_internal:subscription_succeeded", heard.callback("feed"))
        feed.bind("pushgate:push", heard.callback("push"))
        assert (await heard.next())[0] == "feed"
        lobby = client.subscribe("presence-lobby")
        lobby.bind("pusher_internal:subscription_succeeded", heard.callback("lobby"))
        name, data = await heard.next()
        assert name == "lobby"
        assert '"hash":{"py":{"name":"Py"}}' in data

        async with aiohttp.ClientSession() as http:
            fields = {"id": f"{APP[0]}:private-feed", "tag": 2, "val": "hello"}
            status, body = await post(http, server.api_url + "/push/room", data=fields)
        assert status == 200, body
        assert body["delivered"] == 1
        assert await heard.next() == ("push", "hello")
    finally:
        # Bounded: Pysher joins its thread, whose websocket-client loop once took
        # 100 s to notice its own close on a loaded machine. A thread still there
        # ends when the server stops (a daemon thread, never reconnecting now).
        await asyncio.to_thread(client.disconnect, WAIT)
