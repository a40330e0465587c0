"""pusher-js in headless Chromium, as a web app uses it: the page and its channel
authorization endpoint come from the app's back end (here an aiohttp app whose
endpoint signs with the real `pusher` library, as Laravel's does), the WebSocket
goes to pushgate's gateway."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pusher
import pytest
from aiohttp import web

from tests.browser import WAIT_MS
from tests.helpers import FAST_TIMERS, LOOPBACK, Running, post, running_server
from tests.pusher.harness import raw_pusher

if TYPE_CHECKING:
    from playwright.async_api import Browser

APP = ("1001", "key1", "s3cret-s3cret-s3cret")
PUSHER_JS = Path(__file__).parent / "pusher" / "node_modules" / "pusher-js" / "dist" / "web"


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    timers = {**FAST_TIMERS, "heartbeat": 1.0, "idle_timeout": 5.0}
    async with running_server(pusher_app=":".join(APP), **timers) as running:
        yield running


@asynccontextmanager
async def serving(
    library: pusher.Pusher, server: Running, script: str, use: str
) -> AsyncIterator[str]:
    """An app's back end on a free port, as a web app's serves pusher-js: its page
    (loading ``script``, a pusher-js build, connecting to ``server``'s gateway and
    running ``use``), the build itself, and the channel authorization endpoint that
    signs with ``library``; yields the page's URL."""
    ws_port = server.ws_port
    page = f"""<!doctype html><script src="/{script}"></script><script>
      window.heard = []; window.states = [];
      const client = new Pusher({json.dumps(APP[1])}, {{
        wsHost: {json.dumps(LOOPBACK)}, wsPort: {ws_port}, forceTLS: false,
        enabledTransports: ["ws"], disableStats: true, cluster: "local",
        channelAuthorization: {{ endpoint: "/pusher/auth" }},
      }});
      client.connection.bind("state_change", (s) => states.push(s.current));
      {use}
    </script>"""

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def auth(request: web.Request) -> web.Response:
        form = await request.post()
        signed = library.authenticate(str(form["channel_name"]), str(form["socket_id"]))
        # An encrypted channel's shared secret comes as bytes (base64 text): JSON wants text.
        return web.json_response(
            {k: v.decode() if isinstance(v, bytes) else v for k, v in signed.items()}
        )

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/", PUSHER_JS)
    app.router.add_post("/pusher/auth", auth)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield f"http://{LOOPBACK}:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


@pytest.fixture
async def back_end(server: Running) -> AsyncIterator[str]:
    """The app's back end: its page subscribes to a public and a private channel."""
    library = pusher.Pusher(app_id=APP[0], key=APP[1], secret=APP[2])
    use = """for (const name of ["news", "private-orders"]) {
        const channel = client.subscribe(name);
        channel.bind("pusher:subscription_succeeded", () => heard.push([name, "subscribed"]));
        channel.bind("pushgate:push", (data) => heard.push([name, data]));
      }"""
    async with serving(library, server, "pusher.min.js", use) as url:
        yield url


async def test_a_pages_pusher_js_subscribes_through_its_back_end_and_hears_pushes(
    browser: "Browser", server: Running, back_end: str
) -> None:
    page = await browser.new_page()
    await page.goto(back_end, timeout=WAIT_MS)
    await page.wait_for_function("heard.length === 2", timeout=WAIT_MS)
    assert sorted(await page.evaluate("heard")) == [
        ["news", "subscribed"],
        ["private-orders", "subscribed"],
    ]
    async with aiohttp.ClientSession() as http:
        for channel in ("news", "private-orders"):
            fields = {"id": f"{APP[0]}:{channel}", "tag": 2, "val": json.dumps({"to": channel})}
            status, body = await post(http, server.api_url + "/push/room", data=fields)
            assert status == 200, body
    await page.wait_for_function("heard.length === 4", timeout=WAIT_MS)
    assert (await page.evaluate("heard"))[2:] == [
        ["news", {"to": "news"}],
        ["private-orders", {"to": "private-orders"}],
    ]
    assert await page.evaluate("states") == ["connecting", "connected"]


MASTER_KEY = base64.b64encode(b"an encryption master key of 32 b").decode()


@pytest.fixture
async def encrypted_back_end(server: Running) -> AsyncIterator[tuple[str, pusher.Pusher]]:
    """A back end with an encryption master key: its page uses pusher-js's build
    with encryption, its endpoint hands each subscriber the channel's shared secret
    (the library derives it), and it triggers encrypted events."""
    library = pusher.Pusher(
        app_id=APP[0],
        key=APP[1],
        secret=APP[2],
        host=LOOPBACK,
        port=server.api_port,
        ssl=False,
        encryption_master_key_base64=MASTER_KEY,
    )
    use = """const channel = client.subscribe("private-encrypted-orders");
      channel.bind("pusher:subscription_succeeded", () => heard.push("subscribed"));
      channel.bind("shipped", (data) => heard.push(data));"""
    async with serving(library, server, "pusher-with-encryption.min.js", use) as url:
        yield url, library


async def test_an_encrypted_channel_is_relayed_as_it_is_and_read_by_the_page(
    browser: "Browser", server: Running, encrypted_back_end: tuple[str, pusher.Pusher]
) -> None:
    """The server never holds the key: what it relays is the library's ciphertext,
    which only the page, with the channel's shared secret, turns back into data."""
    url, library = encrypted_back_end
    page = await browser.new_page()
    await page.goto(url, timeout=WAIT_MS)
    await page.wait_for_function("heard.length === 1", timeout=WAIT_MS)
    ws_port = server.ws_port
    async with raw_pusher(ws_port, APP[1]) as raw:  # a member that only sees the wire
        channel = "private-encrypted-orders"
        await raw.subscribe(channel, library.authenticate(channel, raw.socket_id)["auth"])
        await asyncio.to_thread(library.trigger, channel, "shipped", {"order": 42})
        relayed = await raw.next_event("shipped")
    assert "42" not in relayed["data"]  # ciphertext
    assert set(json.loads(relayed["data"])) == {"nonce", "ciphertext"}
    await page.wait_for_function("heard.length === 2", timeout=WAIT_MS)
    assert await page.evaluate("heard") == ["subscribed", {"order": 42}]
