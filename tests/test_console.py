"""The console page and pushgate.js, in a real headless Chromium against a real server.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the Python package ``playwright``,
which scripts/test installs; ``playwright install`` is never run. Set
``PUSHGATE_SCREENSHOT=1`` to rewrite docs/console.png (it is written when missing).
"""

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import jwt
from aiohttp import web

from pushgate.api import build_api
from pushgate.client import Push, PushAPI, Sender, connect
from pushgate.console import add_console_routes
from pushgate.namespaces import grant_for
from tests.browser import WAIT_MS
from tests.dropping_proxy import DroppingProxy
from tests.helpers import (
    FAST_TIMERS,
    LOOPBACK,
    UNIT,
    Running,
    free_port,
    open_client,
    running_server,
    until_gone,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Dialog, Page

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "console.png"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@asynccontextmanager
async def console_for(server: Running) -> AsyncIterator[str]:
    """The logic API of ``server``'s node with the console routes, on a free port;
    yields the page's URL, pointed at the server's gateway."""
    app = build_api(server.server.node, max_body_bytes=server.server.config.max_body_bytes)
    add_console_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield f"http://{LOOPBACK}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def screenshot_wanted() -> bool:
    """Write docs/console.png when it is missing, or when PUSHGATE_SCREENSHOT=1."""
    if os.environ.get("PUSHGATE_SCREENSHOT") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        return True
    return False


async def open_console(
    browser: "Browser", page_url: str, ws_url: str, *, init_script: str | None = None
) -> tuple["Page", str]:
    """A new tab on the console (``init_script`` run before the page's), connected;
    returns it and its wsId."""
    from playwright.async_api import expect

    page = await browser.new_page(viewport={"width": 1280, "height": 600})
    if init_script is not None:
        await page.add_init_script(init_script)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{page_url}/?ws={ws_url}", timeout=WAIT_MS)
    await expect(page.locator("#state")).to_have_text("open", timeout=WAIT_MS)
    ws_id = await page.locator("#ws-id").inner_text()
    assert UUID.match(ws_id), ws_id
    assert not errors, errors
    return page, ws_id


async def join(page: "Page", room: str) -> None:
    from playwright.async_api import expect

    await page.fill("#room-input", room)
    await page.click("#join")
    await expect(page.locator(f'#my-rooms li[data-room="{room}"]')).to_be_visible(timeout=WAIT_MS)


async def push(page: "Page", value: str, *, room: str | None = None, tag: int = 3) -> None:
    from playwright.async_api import expect

    if room is None:
        await page.check('input[name="target"][value="all"]')
    else:
        await page.check('input[name="target"][value="room"]')
        await page.fill("#push-room", room)
    await page.fill("#push-tag", str(tag))
    await page.fill("#push-val", value)
    await page.click("#push")
    await expect(page.locator("#push-result")).to_contain_text("delivered to", timeout=WAIT_MS)


async def test_the_page_connects_joins_pushes_and_shows_the_message(browser: "Browser") -> None:
    """Open the console: wsId shown; join a room, push to it, the message appears live."""
    from playwright.async_api import expect

    async with running_server(**FAST_TIMERS) as server, console_for(server) as page_url:
        page, ws_id = await open_console(browser, page_url, server.ws_url)
        await join(page, "news")
        assert server.server.node.room_sizes() == {"news": 1}

        await push(page, "hello from the console", room="news", tag=5)
        await expect(page.locator("#push-result")).to_have_text(
            "delivered to 1 connection in room news"
        )
        newest = page.locator("#messages li").first
        await expect(newest.locator(".data")).to_have_text(
            "hello from the console", timeout=WAIT_MS
        )
        await expect(newest.locator(".room")).to_have_text("news")
        await expect(newest.locator(".type")).to_have_text("type 5")
        await expect(newest.locator(".time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))

        # A push from outside the page (the Python client) arrives too, to "all".
        async with PushAPI(server.api_url) as api:
            await api.push_all({"headline": "pushgate works", "n": 42}, 3)
        await expect(newest.locator(".data")).to_have_text(
            '{"headline":"pushgate works","n":42}', timeout=WAIT_MS
        )
        await expect(newest.locator(".room")).to_have_text("all")
        await expect(page.locator("#stat-connections")).to_have_text("1", timeout=WAIT_MS)
        await expect(page.locator("#stat-rooms")).to_have_text("1", timeout=WAIT_MS)

        await page.click('#my-rooms li[data-room="news"] button')
        await expect(page.locator("#my-rooms li")).to_have_count(0, timeout=WAIT_MS)
        assert server.server.node.room_sizes() == {}

        await join(page, "news")  # for the picture
        await expect(page.locator("#stat-rooms")).to_have_text("1", timeout=WAIT_MS)
        if screenshot_wanted():
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert ws_id == await page.locator("#ws-id").inner_text()


async def test_a_push_without_a_tag_is_type_2_as_in_every_client(browser: "Browser") -> None:
    """pushgate.js's PushAPI sends type 2 when no tag is given, as the Python clients
    and `pushgate push` do; the console's push box starts at 2 too."""
    from playwright.async_api import expect

    async with running_server(**FAST_TIMERS) as server, console_for(server) as page_url:
        page, _ = await open_console(browser, page_url, server.ws_url)
        await expect(page.locator("#push-tag")).to_have_value("2")
        delivered = await page.evaluate(
            """async () => {
              const { PushAPI } = await import("/static/pushgate.js");
              return (await new PushAPI().pushAll("no tag given")).delivered;
            }"""
        )
        assert delivered == 1
        newest = page.locator("#messages li").first
        await expect(newest.locator(".data")).to_have_text("no tag given", timeout=WAIT_MS)
        await expect(newest.locator(".type")).to_have_text("type 2")


async def test_a_second_tab_sees_the_first_tabs_pushes(browser: "Browser") -> None:
    """Two tabs: one pushes to all and to a room, the other (a member) shows both."""
    from playwright.async_api import expect

    async with running_server(**FAST_TIMERS) as server, console_for(server) as page_url:
        watcher, watcher_id = await open_console(browser, page_url, server.ws_url)
        pusher, pusher_id = await open_console(browser, page_url, server.ws_url)
        assert watcher_id != pusher_id
        await join(watcher, "lobby")
        await expect(watcher.locator("#stat-connections")).to_have_text("2", timeout=WAIT_MS)

        await push(pusher, "from the other tab")
        await expect(watcher.locator("#messages li .data").first).to_have_text(
            "from the other tab", timeout=WAIT_MS
        )
        await push(pusher, "to the lobby", room="lobby")
        first = watcher.locator("#messages li").first
        await expect(first.locator(".data")).to_have_text("to the lobby", timeout=WAIT_MS)
        await expect(first.locator(".room")).to_have_text("lobby")
        await expect(watcher.locator("#message-count")).to_have_text("2")
        # The pusher is in no room: it got the push to all only.
        await expect(pusher.locator("#messages li .data")).to_have_text(["from the other tab"])


async def test_the_page_reconnects_with_a_new_ws_id_and_rejoins_its_rooms(
    browser: "Browser",
) -> None:
    """Sessions off (--session-ttl 0), the connection is cut: pushgate.js reconnects,
    shows the new wsId, rejoins. (With sessions on it resumes the same wsId:
    test_console_resume.py.)"""
    from playwright.async_api import expect

    settings = {**FAST_TIMERS, "session_ttl": 0}
    async with running_server(**settings) as server, console_for(server) as page_url:
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            page, first_id = await open_console(
                browser, page_url, f"ws://{LOOPBACK}:{proxy.port}/connect"
            )
            await join(page, "news")
            await proxy.drop()
            await expect(page.locator("#ws-id")).not_to_have_text(first_id, timeout=WAIT_MS)
            await expect(page.locator("#state")).to_have_text("open", timeout=WAIT_MS)
            await expect(page.locator("#ws-id")).to_have_text(UUID)
            assert server.server.node.room_sizes() == {"news": 1}
            async with PushAPI(server.api_url) as api:
                assert (await api.push_room("news", "after the cut", 3)).delivered == 1
            await expect(page.locator("#messages li .data").first).to_have_text(
                "after the cut", timeout=WAIT_MS
            )
        finally:
            await proxy.close()


async def test_a_gateway_that_requires_tokens_is_reached_with_the_token_field(
    browser: "Browser",
) -> None:
    """No token: the page keeps retrying and says the gateway refused it, asking for a
    token; with one pasted, it connects (Reconnect), and the stale notice goes."""
    from playwright.async_api import expect

    secret = "a-test-secret-of-at-least-32-bytes!!"
    token = jwt.encode({"sub": "browser-user"}, secret, algorithm="HS256")
    async with (
        running_server(**FAST_TIMERS, token_secret=secret, require_token=True) as server,
        console_for(server) as page_url,
    ):
        page = await browser.new_page()
        await page.goto(f"{page_url}/?ws={server.ws_url}", timeout=WAIT_MS)
        await expect(page.locator("#notice")).to_contain_text(
            "the gateway refused it: does it need a connection token?", timeout=WAIT_MS
        )
        await expect(page.locator("#state")).to_have_text("connecting")

        await page.fill("#token", token)
        await page.click("#connect")
        await expect(page.locator("#state")).to_have_text("open", timeout=WAIT_MS)
        # At once, not when its 6 s are up: the refusal was about the last connection.
        assert await page.locator("#notice").is_hidden()
        async with PushAPI(server.api_url) as api:
            assert (await api.push_user("browser-user", "for you", 6)).delivered == 1
        await expect(page.locator("#messages li .data")).to_have_text(["for you"], timeout=WAIT_MS)


async def test_the_page_served_by_serve_connects_to_its_own_gateway(browser: "Browser") -> None:
    """`serve --ws-port` other than 8888: the console page its API serves connects to
    that port without a ?ws= (the page is told its gateway's address)."""
    from playwright.async_api import expect

    async with running_server(**FAST_TIMERS) as server:
        assert server.ws_port != 8888
        page = await browser.new_page()
        await page.goto(server.api_url + "/", timeout=WAIT_MS)
        await expect(page.locator("#state")).to_have_text("open", timeout=WAIT_MS)
        await expect(page.locator("#gateway-url")).to_have_value(server.ws_url)
        assert len(list(server.server.node.hub.conn_ids())) == 1


async def test_a_gateway_nobody_listens_on_is_said_so_without_talk_of_tokens(
    browser: "Browser",
) -> None:
    """Nothing answers at the gateway's address: the notice says so (is it running,
    on that port?), and does not suggest a token, which would not help."""
    from playwright.async_api import expect

    async with running_server(**FAST_TIMERS) as server, console_for(server) as page_url:
        nobody = f"ws://{LOOPBACK}:{free_port()}/connect"
        page = await browser.new_page()
        await page.goto(f"{page_url}/?ws={nobody}", timeout=WAIT_MS)
        notice = page.locator("#notice")
        await expect(notice).to_contain_text("nothing answers there", timeout=WAIT_MS)
        await expect(notice).to_contain_text(f"cannot connect to {nobody}")
        await expect(notice).not_to_contain_text("token")


async def test_rooms_and_their_members_are_listed_page_by_page(browser: "Browser") -> None:
    """The page lists each room with its member count (GET /rooms); a click on a room
    lists its members 50 at a time (GET /rooms/{id}), this page's own among them."""
    from playwright.async_api import expect

    async with running_server(**FAST_TIMERS) as server, console_for(server) as page_url:
        page, ws_id = await open_console(browser, page_url, server.ws_url)
        await join(page, "crowd")
        others = [await open_client(server.ws_url) for _ in range(55)]
        async with PushAPI(server.api_url) as api:
            for _, other_id in others:
                await api.join("crowd", other_id)
            await api.join("small", others[0][1])
        rows = page.locator("#room-table tbody tr")
        await expect(rows).to_have_text(["crowd56", "small1"], timeout=WAIT_MS)
        await expect(page.locator("#stat-users")).to_have_text("0")

        await page.click('#room-table button:text-is("crowd")')
        await expect(page.locator("#members-count")).to_have_text("56", timeout=WAIT_MS)
        members = page.locator("#members-table tbody tr")
        await expect(members).to_have_count(50)
        await expect(page.locator("#members-note")).to_have_text("page 1: 1-50 of 56")
        listed = await page.locator("#members-table tbody tr td:first-child").all_inner_texts()
        await page.click("#members-next")
        await expect(page.locator("#members-note")).to_have_text("page 2: 51-56 of 56")
        await expect(page.locator("#members-next")).to_be_disabled()
        listed += await page.locator("#members-table tbody tr td:first-child").all_inner_texts()
        assert sorted(listed) == sorted([ws_id, *(other_id for _, other_id in others)])
        assert len(set(listed)) == 56
        for ws, _ in others:
            await ws.close()


async def test_the_live_charts_draw_connections_deliveries_and_latency(browser: "Browser") -> None:
    """The Live panel graphs connections, deliveries per second and delivery latency
    p50/p99 from GET /stats, and shows each latest value beside its name."""
    from playwright.async_api import expect

    async with running_server(**FAST_TIMERS) as server, console_for(server) as page_url:
        page, _ = await open_console(browser, page_url, server.ws_url)
        others = [await open_client(server.ws_url) for _ in range(4)]
        connections = page.locator('#legend-connections b[data-series="connections"]')
        await expect(connections).to_have_text("5", timeout=WAIT_MS)
        async with PushAPI(server.api_url) as api:
            for i in range(20):
                await api.push_all(i, 3)
        deliveries = page.locator('#legend-deliveries b[data-series="deliveries/s"]')
        await expect(deliveries).to_have_text(re.compile(r"^[1-9][0-9]*$"), timeout=WAIT_MS)
        for name in ("p50", "p99"):
            latency = page.locator(f'#legend-latency b[data-series="{name}"]')
            await expect(latency).to_have_text(re.compile(r"^[0-9]+\.[0-9] ms$"), timeout=WAIT_MS)
        points = await page.locator("#chart-connections").get_attribute("data-points")
        assert points is not None
        assert int(points) >= 1
        for ws, _ in others:
            await ws.close()


async def test_the_api_key_typed_in_the_page_is_sent_as_a_bearer_header(
    browser: "Browser",
) -> None:
    """The key the person pastes goes in Authorization; the served page holds none."""
    async with running_server(**FAST_TIMERS) as server, console_for(server) as page_url:
        page, _ = await open_console(browser, page_url, server.ws_url)
        await page.fill("#api-key", "k-123")
        await page.dispatch_event("#api-key", "change")
        async with page.expect_request(
            lambda request: (
                request.url.endswith("/stats")
                and request.headers.get("authorization") == "Bearer k-123"
            ),
            timeout=WAIT_MS,
        ):
            pass
        async with aiohttp.ClientSession() as http, http.get(page_url + "/") as response:
            html = await response.text()
        assert "Bearer" not in html
        assert 'id="api-key" type="password"' in html


async def test_the_console_files_are_served_with_their_types_and_etags() -> None:
    """/ is the page, /static/pushgate.js is text/javascript; 304 on a known ETag."""
    async with (
        running_server(**FAST_TIMERS) as server,
        console_for(server) as page_url,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(page_url + "/") as page:
            assert page.status == 200
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        async with http.get(page_url + "/static/pushgate.js") as script:
            assert script.status == 200
            assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert script.headers["Access-Control-Allow-Origin"] == "*"
            assert "export class PushgateClient" in await script.text()
            etag = script.headers["ETag"]
        headers = {"If-None-Match": etag}
        async with http.get(page_url + "/static/pushgate.js", headers=headers) as again:
            assert again.status == 304
        async with http.get(page_url + "/static/../api.py") as outside:
            assert outside.status == 404
        async with http.get(page_url + "/static/nope.js") as unknown:
            assert unknown.status == 404


# Links that point the page elsewhere

STRANGER_HOST = "127.0.0.2"  # loopback, but another host than the page's 127.0.0.1


@dataclass
class Stranger:
    """A server on another host, set up to collect keys: it lets any page call it
    (CORS, Authorization included) and records each request's method, path and
    Authorization header."""

    port: int
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def saw(self, method: str, path: str, authorization: str | None) -> None:
        """Wait until such a request has reached this server."""
        async with asyncio.timeout(10 * UNIT):
            while (method, path, authorization) not in self.seen:
                self.arrived.clear()
                await self.arrived.wait()

    def link(self, page_url: str) -> str:
        """A console link pointing both the API and the gateway at this server."""
        here = f"{STRANGER_HOST}:{self.port}"
        return f"{page_url}/?api=http://{here}&ws=ws://{here}/connect"


@asynccontextmanager
async def stranger() -> AsyncIterator[Stranger]:
    stranger = Stranger(0)
    cors = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Headers": "authorization, content-type",
        "Access-Control-Allow-Methods": "GET, POST",
    }

    async def record(request: web.Request) -> web.Response:
        stranger.seen.append((request.method, request.path, request.headers.get("Authorization")))
        stranger.arrived.set()
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=cors)
        return web.json_response({"connections": 0, "rooms": 0}, headers=cors)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, STRANGER_HOST, 0)
    await site.start()
    stranger.port = runner.addresses[0][1]
    try:
        yield stranger
    finally:
        await runner.cleanup()


def answer_dialogs(page: "Page", accept: list[bool]) -> list[str]:
    """Answer every dialog with ``accept[0]`` (change it to change the answer);
    returns the list their messages are added to."""
    asked: list[str] = []

    async def answer(dialog: "Dialog") -> None:
        asked.append(dialog.message)
        await (dialog.accept() if accept[0] else dialog.dismiss())

    page.on("dialog", answer)
    return asked


def hosts_of(page: "Page") -> list[str]:
    """The host of every request and WebSocket the page makes from now on."""
    hosts: list[str] = []
    page.on("request", lambda request: hosts.append(urlsplit(request.url).hostname or ""))
    page.on("websocket", lambda ws: hosts.append(urlsplit(ws.url).hostname or ""))
    return hosts


async def type_api_key(page: "Page", key: str) -> None:
    await page.fill("#api-key", key)
    await page.dispatch_event("#api-key", "change")


async def test_a_link_to_another_host_is_used_only_once_confirmed(browser: "Browser") -> None:
    """A link's ?api= and ?ws= on another host each ask, naming it; dismissed, the page
    keeps its own server, and the key typed later reaches only that. A URL typed into
    the API field asks again; accepted, the key goes there."""
    from playwright.async_api import expect

    async with (
        running_server(**FAST_TIMERS) as server,
        console_for(server) as page_url,
        stranger() as elsewhere,
    ):
        page = await browser.new_page()
        accept = [False]
        asked = answer_dialogs(page, accept)
        hosts = hosts_of(page)
        await page.goto(elsewhere.link(page_url), timeout=WAIT_MS)
        assert len(asked) == 2
        assert all(STRANGER_HOST in question for question in asked)
        await expect(page.locator("#api-url")).to_have_value("")
        await expect(page.locator("#gateway-url")).to_have_value(f"ws://{LOOPBACK}:8888/connect")
        await expect(page.locator("#log")).to_contain_text("not confirmed")

        await type_api_key(page, "k-123")
        async with page.expect_request(
            lambda request: (
                request.url == page_url + "/stats"
                and request.headers.get("authorization") == "Bearer k-123"
            ),
            timeout=WAIT_MS,
        ):
            pass
        assert STRANGER_HOST not in hosts
        assert elsewhere.seen == []

        accept[0] = True
        await page.fill("#api-url", f"http://{STRANGER_HOST}:{elsewhere.port}")
        await page.dispatch_event("#api-url", "change")
        await elsewhere.saw("GET", "/stats", "Bearer k-123")
        assert len(asked) == 3


async def test_a_link_to_another_host_is_used_once_the_person_accepts(
    browser: "Browser",
) -> None:
    """Accepted (once for the host, though both the API and the gateway are on it),
    the link's API and gateway are used, and so is the key typed later."""
    async with (
        running_server(**FAST_TIMERS) as server,
        console_for(server) as page_url,
        stranger() as elsewhere,
    ):
        page = await browser.new_page()
        asked = answer_dialogs(page, [True])
        await page.goto(elsewhere.link(page_url), timeout=WAIT_MS)
        assert len(asked) == 1
        assert STRANGER_HOST in asked[0]
        await elsewhere.saw("GET", "/connect", None)  # the WebSocket handshake
        await type_api_key(page, "k-123")
        await elsewhere.saw("GET", "/stats", "Bearer k-123")


# Subscribing from the page (pushgate.js: subscribe, unsubscribe, refresh, rooms)

SUB_SECRET = "a-console-subscription-secret-32-bytes"
GRANT_SECRET = "chat-grant-secret-of-the-back-end"
SUBSCRIBING = {
    **FAST_TIMERS,
    "namespaces": f"lobby=public,chat=grant:{GRANT_SECRET},private=grant",
    "token_secret": SUB_SECRET,
}
# What the page's WebSockets send, kept in window.sent (before any page script runs).
RECORD_SENT = """
const send = WebSocket.prototype.send;
window.sent = [];
WebSocket.prototype.send = function (data) {
  window.sent.push(String(data));
  return send.call(this, data);
};
"""


def subscription_token(*rooms: str, **claims: object) -> str:
    return jwt.encode({"subscribe": list(rooms), **claims}, SUB_SECRET, algorithm="HS256")


async def subscribe_in(page: "Page", room: str, kind: str = "", credential: str = "") -> None:
    """Fill the subscribe box and press Subscribe."""
    await page.fill("#sub-room", room)
    await page.select_option("#sub-kind", kind)
    await page.fill("#sub-credential", credential)
    await page.click("#subscribe")


async def sent_subscribes(page: "Page") -> list[dict[str, object]]:
    """The subscribe operations the page's connections have sent (RECORD_SENT)."""
    sent: list[str] = await page.evaluate("window.sent")
    messages = [json.loads(text) for text in sent]
    return [m["data"] for m in messages if m["type"] == 0 and m["data"].get("op") == "subscribe"]


async def test_the_subscribe_box_subscribes_and_unsubscribes_a_public_room(
    browser: "Browser",
) -> None:
    """Subscribe: the answer and the room's chip (its button unsubscribes); the room's
    pushes arrive; unsubscribed, the chip goes, and the server has the room no more."""
    from playwright.async_api import expect

    async with (
        running_server(**SUBSCRIBING) as server,
        console_for(server) as page_url,
        PushAPI(server.api_url) as api,
    ):
        page, _ = await open_console(browser, page_url, server.ws_url)
        await subscribe_in(page, "lobby:1")
        result = page.locator("#sub-result")
        await expect(result).to_have_text(
            re.compile(r"^subscribed to lobby:1 at #0 of epoch [0-9a-f]+$"), timeout=WAIT_MS
        )
        await expect(result).not_to_have_class(re.compile("error"))
        chip = page.locator('#my-rooms li[data-room="lobby:1"]')
        await expect(chip).to_have_attribute("data-how", "subscribed")
        assert server.server.node.room_sizes() == {"lobby:1": 1}

        assert (await api.push_room("lobby:1", "to the lobby", 4)).delivered == 1
        await expect(page.locator("#messages li .data").first).to_have_text(
            "to the lobby", timeout=WAIT_MS
        )
        await chip.locator("button").click()
        await expect(page.locator("#my-rooms li")).to_have_count(0, timeout=WAIT_MS)
        assert server.server.node.room_sizes() == {}
        await page.click("#unsubscribe")  # from a room it is not in: no error
        await expect(result).to_have_text("unsubscribed from lobby:1", timeout=WAIT_MS)


async def test_a_refusal_shows_its_code_and_reason_and_a_grant_or_token_opens_the_room(
    browser: "Browser",
) -> None:
    """A server room: 403 and why; a grant room without a grant: 401, with another
    connection's: 403, with the page's own (the back end's): subscribed. A token's
    subscription shows until when; a refresh renews it."""
    from playwright.async_api import expect

    async with running_server(**SUBSCRIBING) as server, console_for(server) as page_url:
        page, ws_id = await open_console(browser, page_url, server.ws_url)
        result = page.locator("#sub-result")
        await subscribe_in(page, "news")
        await expect(result).to_have_text(
            "subscribe news refused: 403 only the back end may put a connection in news",
            timeout=WAIT_MS,
        )
        await expect(result).to_have_class(re.compile("error"))
        await expect(result).to_have_attribute("data-code", "403")
        await subscribe_in(page, "chat:42")
        await expect(result).to_have_text(
            "subscribe chat:42 refused: 401 chat:42 needs a grant or a subscription token",
            timeout=WAIT_MS,
        )
        foreign = grant_for(GRANT_SECRET, "00000000-0000-4000-8000-000000000000", "chat:42")
        await subscribe_in(page, "chat:42", "grant", foreign)
        await expect(result).to_have_attribute("data-code", "403", timeout=WAIT_MS)
        await expect(page.locator("#my-rooms li")).to_have_count(0)

        await subscribe_in(page, "chat:42", "grant", grant_for(GRANT_SECRET, ws_id, "chat:42"))
        await expect(result).to_have_text(
            re.compile("^subscribed to chat:42 at #0"), timeout=WAIT_MS
        )
        await expect(page.locator('#my-rooms li[data-room="chat:42"]')).to_be_visible()

        end = int(time.time()) + 600
        await subscribe_in(page, "private:a", "token", subscription_token("private:a", exp=end))
        until = time.strftime("%H:%M:%S", time.localtime(end))
        await expect(result).to_contain_text(f", until {until}", timeout=WAIT_MS)
        later = end + 600
        await page.fill("#sub-credential", subscription_token("private:a", exp=later))
        await page.click("#refresh-subscription")
        until = time.strftime("%H:%M:%S", time.localtime(later))
        await expect(result).to_have_text(
            re.compile(f"^renewed private:a at #0 of epoch [0-9a-f]+, until {until}$"),
            timeout=WAIT_MS,
        )
        assert server.server.node.room_sizes() == {"chat:42": 1, "private:a": 1}


async def test_the_rooms_follow_the_back_end_and_a_tokens_expiry(browser: "Browser") -> None:
    """The back end joins the page to a room and takes it out: the chip comes and
    goes, and the log says so; a token's subscription ends at its exp, said too."""
    from playwright.async_api import expect

    async with (
        running_server(**SUBSCRIBING) as server,
        console_for(server) as page_url,
        PushAPI(server.api_url) as api,
    ):
        page, ws_id = await open_console(browser, page_url, server.ws_url)
        await api.join("sports", ws_id)
        chip = page.locator('#my-rooms li[data-room="sports"]')
        await expect(chip).to_have_attribute("data-how", "server", timeout=WAIT_MS)
        await expect(chip.locator("button")).to_have_text("leave")
        await expect(page.locator("#log li .text").first).to_have_text(
            "joined sports (through the logic API)"
        )
        await api.leave("sports", ws_id)
        await expect(page.locator("#my-rooms li")).to_have_count(0, timeout=WAIT_MS)

        end = int(time.time()) + 2  # waiting for a token's exp is waiting for time
        await subscribe_in(page, "private:e", "token", subscription_token("private:e", exp=end))
        await expect(page.locator('#my-rooms li[data-room="private:e"]')).to_be_visible(
            timeout=WAIT_MS
        )
        await expect(page.locator("#my-rooms li")).to_have_count(0, timeout=WAIT_MS)
        await expect(page.locator("#notice")).to_have_text(
            "left private:e: its subscription token expired"
        )
        assert await page.evaluate("window.pushgateConsole.client.ownRooms") == []


async def test_a_resume_keeps_the_pages_subscriptions_without_subscribing_again(
    browser: "Browser",
) -> None:
    """Cut and resumed (sessions on): the same wsId, the same chips, and not one more
    subscribe sent; the rooms' pushes still arrive."""
    from playwright.async_api import expect

    async with (
        running_server(**{**SUBSCRIBING, "session_ttl": 30.0}) as server,
        console_for(server) as page_url,
        PushAPI(server.api_url) as api,
    ):
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            page, ws_id = await open_console(
                browser, page_url, f"ws://{LOOPBACK}:{proxy.port}/connect", init_script=RECORD_SENT
            )
            await subscribe_in(page, "lobby:1")
            await subscribe_in(page, "chat:42", "grant", grant_for(GRANT_SECRET, ws_id, "chat:42"))
            await subscribe_in(page, "private:t", "token", subscription_token("private:t"))
            await expect(page.locator("#my-rooms li")).to_have_count(3, timeout=WAIT_MS)
            assert len(await sent_subscribes(page)) == 3

            await proxy.drop()
            await expect(page.locator("#log li .text").first).to_have_text(
                f"resumed as {ws_id}: recovered everything", timeout=WAIT_MS
            )
            await expect(page.locator("#state")).to_have_text("open")
            await expect(page.locator("#my-rooms li")).to_have_count(3)
            assert len(await sent_subscribes(page)) == 3
            for room in ("lobby:1", "chat:42", "private:t"):
                assert (await api.push_room(room, f"in {room}", 3)).delivered == 1
            await expect(page.locator("#message-count")).to_have_text("3", timeout=WAIT_MS)
        finally:
            await proxy.close()


async def test_a_new_session_subscribes_again_and_gives_up_a_grant_room(
    browser: "Browser",
) -> None:
    """The session expired while the page was cut off: with the new wsId it subscribes
    to the public room again and shows the token again; a grant was for the old wsId
    and the console has no grantFor: it says it gave that room up."""
    from playwright.async_api import expect

    async with (
        running_server(**SUBSCRIBING) as server,
        console_for(server) as page_url,
        aiohttp.ClientSession() as http,
    ):
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            page, ws_id = await open_console(
                browser, page_url, f"ws://{LOOPBACK}:{proxy.port}/connect", init_script=RECORD_SENT
            )
            token = subscription_token("private:t")
            await subscribe_in(page, "lobby:1")
            await subscribe_in(page, "chat:42", "grant", grant_for(GRANT_SECRET, ws_id, "chat:42"))
            await subscribe_in(page, "private:t", "token", token)
            await expect(page.locator("#my-rooms li")).to_have_count(3, timeout=WAIT_MS)

            proxy.freeze()
            await proxy.drop()
            await until_gone(http, server.api_url, ws_id)
            proxy.thaw()
            await expect(page.locator("#ws-id")).not_to_have_text(ws_id, timeout=WAIT_MS)
            await expect(page.locator("#state")).to_have_text("open", timeout=WAIT_MS)
            new_id = await page.locator("#ws-id").inner_text()
            await expect(page.locator("#my-rooms li")).to_have_text(
                ["lobby:1unsubscribe", "private:tunsubscribe"], timeout=WAIT_MS
            )
            await expect(page.locator('#log li[data-kind="given-up"] .text')).to_have_text(
                "not subscribed to chat:42 again: it was subscribed with a grant, "
                "and there is no grantFor"
            )
            again = (await sent_subscribes(page))[3:]
            assert again == [
                {"op": "subscribe", "room": "lobby:1", "id": 4},
                {"op": "subscribe", "room": "private:t", "id": 5, "token": token},
            ]
            assert server.server.node.room_sizes() == {"lobby:1": 1, "private:t": 1}
            assert UUID.match(new_id)
        finally:
            await proxy.close()


async def test_the_js_client_asks_grant_for_for_a_new_sessions_grant_room(
    browser: "Browser",
) -> None:
    """A PushgateClient given grantFor (here the page asks the test, as it would ask
    its back end): after a new session it subscribes to its grant room again with a
    grant made for the new wsId, and client.rooms has it."""
    async with (
        running_server(**SUBSCRIBING) as server,
        console_for(server) as page_url,
        aiohttp.ClientSession() as http,
    ):
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            page, _ = await open_console(browser, page_url, server.ws_url)
            asked: list[list[str]] = []

            def back_end_grant(room: str, ws_id: str) -> str:
                asked.append([room, ws_id])
                return grant_for(GRANT_SECRET, ws_id, room)

            await page.expose_function("backEndGrant", back_end_grant)
            first_id = await page.evaluate(
                """async (url) => {
                  const { PushgateClient } = await import("/static/pushgate.js");
                  const grantFor = window.backEndGrant;
                  const c = new PushgateClient(url, { grantFor, backoffInitial: 50 });
                  window.own = c;
                  const wsId = await c.connect();
                  await c.subscribe("chat:42", { grant: await grantFor("chat:42", wsId) });
                  return wsId;
                }""",
                f"ws://{LOOPBACK}:{proxy.port}/connect",
            )
            assert await page.evaluate("window.own.rooms") == ["chat:42"]
            proxy.freeze()
            await proxy.drop()
            await until_gone(http, server.api_url, first_id)
            proxy.thaw()
            # Open again, as a new session: put back in its rooms before it counts as open.
            await page.wait_for_function(
                "(first) => window.own.state === 'open' && window.own.wsId !== first",
                arg=first_id,
                timeout=WAIT_MS,
            )
            new_id = await page.evaluate("window.own.wsId")
            assert await page.evaluate("window.own.rooms") == ["chat:42"]
            assert asked == [["chat:42", first_id], ["chat:42", new_id]]
            assert server.server.node.room_sizes() == {"chat:42": 1}
            await page.evaluate("window.own.close()")
        finally:
            await proxy.close()


async def test_the_js_clients_join_resolves_once_its_rooms_say_so_and_it_paces_itself(
    browser: "Browser",
) -> None:
    """join() (through the API) resolves only once the server's event has been read:
    with the WebSocket held in a frozen proxy it waits. 60 subscribes at once stay
    under the server's 50 messages a second: none is refused."""
    async with (
        running_server(**{**SUBSCRIBING, "idle_timeout": 10.0}) as server,
        console_for(server) as page_url,
    ):
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            page, _ = await open_console(browser, page_url, server.ws_url)
            await page.evaluate(
                """async (url) => {
                  const { PushAPI, PushgateClient } = await import("/static/pushgate.js");
                  window.own = new PushgateClient(url, { api: new PushAPI() }); // the page's
                  await window.own.connect();
                }""",
                f"ws://{LOOPBACK}:{proxy.port}/connect",
            )
            proxy.freeze()
            await page.evaluate(
                """() => {
                  window.joined = null;
                  window.own.join("news").then(() => (window.joined = window.own.rooms));
                }"""
            )
            # The API answers at once; the event is held: join must still wait.
            await asyncio.sleep(0.5 * UNIT)
            assert server.server.node.room_sizes() == {"news": 1}
            assert await page.evaluate("window.joined") is None
            proxy.thaw()
            await page.wait_for_function("window.joined !== null", timeout=WAIT_MS)
            assert await page.evaluate("window.joined") == ["news"]

            rooms = [f"lobby:{n}" for n in range(60)]
            refused = await page.evaluate(
                """async (rooms) => {
                  const c = window.own;
                  const done = rooms.map((room) => c.subscribe(room).then(() => null, String));
                  return (await Promise.all(done)).filter(Boolean);
                }""",
                rooms,
            )
            assert refused == []
            assert sorted(await page.evaluate("window.own.rooms")) == sorted(["news", *rooms])
            await page.evaluate("window.own.close()")
        finally:
            proxy.thaw()
            await proxy.close()


# Presence (pushgate.js: client.presence, the "presence" event; the console's list)

PRESENCE_SECRET = "a-console-presence-secret-of-32-bytes"
TEAM_SECRET = "team-grant-secret-of-the-back-end"
PRESENCE = {
    **FAST_TIMERS,
    "namespaces": f"chat=public+presence,team=grant+presence:{TEAM_SECRET},desk=server+presence",
    "token_secret": PRESENCE_SECRET,
    "no_compression": True,  # the test proxy reads the server's frames
}


def user_token(user: str, **claims: object) -> str:
    return jwt.encode({"sub": user, **claims}, PRESENCE_SECRET, algorithm="HS256")


async def test_the_console_lists_who_is_in_each_presence_room(browser: "Browser") -> None:
    """The page subscribes to a presence room: Bob (with his info) and the page itself
    are listed; Cay comes and Bob goes, live; unsubscribed, the room's list goes. A
    grant room's subscribe sends the info the grant signs, and the list shows it."""
    from playwright.async_api import expect

    async with (
        running_server(**PRESENCE) as server,
        console_for(server) as page_url,
        connect(server.ws_url, token=user_token("bob", info={"name": "Bob"})) as bob,
    ):
        await bob.subscribe("chat:1")
        page, ws_id = await open_console(browser, page_url, server.ws_url)
        await subscribe_in(page, "chat:1")
        room = page.locator('#presence .presence-room[data-room="chat:1"]')
        await expect(room.locator("li")).to_have_text(
            ['bob{"name":"Bob"}', f"anonymous {ws_id[:8]}"], timeout=WAIT_MS
        )
        await expect(room.locator("li.me")).to_have_attribute("data-user", ws_id)
        await expect(page.locator("#no-presence")).to_be_hidden()
        async with connect(server.ws_url, token=user_token("cay")) as cay:
            await cay.subscribe("chat:1")
            await expect(room.locator(".count")).to_have_text("3", timeout=WAIT_MS)
            await bob.unsubscribe("chat:1")
            await expect(room.locator("li")).to_have_text(
                [f"anonymous {ws_id[:8]}", "cay"], timeout=WAIT_MS
            )
        await page.click('#my-rooms li[data-room="chat:1"] button')
        await expect(page.locator("#presence .presence-room")).to_have_count(0, timeout=WAIT_MS)
        await expect(page.locator("#no-presence")).to_be_visible()

        info = '{"role":"agent"}'
        await page.fill("#sub-info", info)
        await subscribe_in(page, "team:7", "grant", grant_for(TEAM_SECRET, ws_id, "team:7", info))
        await expect(page.locator('#presence .presence-room[data-room="team:7"] li')).to_have_text(
            [f"anonymous {ws_id[:8]}{info}"], timeout=WAIT_MS
        )


async def test_the_js_client_counts_events_around_the_reply_and_keeps_presence_across_a_resume(
    browser: "Browser",
) -> None:
    """pushgate.js, as the Python client (tests/test_client_presence.py): the back end
    puts it in a room while its frames are held, Bob joins, leaves and joins meanwhile;
    the answer to its presence operation is held while Cay's join goes past it. Told:
    Ann, Bob, Cay, once each. Cut off, it misses Bob's leave: the resume replays it,
    and it asks nothing again."""
    from playwright.async_api import expect

    from tests.test_client_presence import HoldingProxy, is_event, is_presence_reply, presence_ops

    async with (
        running_server(**{**PRESENCE, "session_ttl": 30.0}) as server,
        console_for(server) as page_url,
        PushAPI(server.api_url) as api,
        connect(server.ws_url, token=user_token("bob")) as bob,
        connect(server.ws_url, token=user_token("cay")) as cay,
    ):
        proxy = HoldingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            page, _ = await open_console(browser, page_url, server.ws_url)
            ann_id = await page.evaluate(
                """async ({ url, token }) => {
                  const { PushgateClient } = await import("/static/pushgate.js");
                  const c = new PushgateClient(url, { token, backoffInitial: 50 });
                  window.own = c;
                  window.told = [];
                  c.on("presence", ({ room, joined, member }) =>
                    window.told.push([room, joined, member.user]));
                  return await c.connect();
                }""",
                {"url": f"ws://{LOOPBACK}:{proxy.port}/connect", "token": user_token("ann")},
            )
            proxy.hold = lambda message: message.get("type") == 0  # not the PONGs
            await api.join("desk:1", ann_id)
            await api.join("desk:1", bob.ws_id)
            await api.leave("desk:1", bob.ws_id)
            await api.join("desk:1", bob.ws_id)
            await proxy.until(lambda: len(proxy.held) == 5)
            proxy.release(hold=is_presence_reply)
            await proxy.until(lambda: len(proxy.held) == 1)
            await api.join("desk:1", cay.ws_id)
            await proxy.until(lambda: any(is_event(m, "join", "cay") for m in proxy.passed))
            proxy.release()
            await page.wait_for_function("() => window.told.length >= 3", timeout=WAIT_MS)
            joins = [["desk:1", True, user] for user in ("ann", "bob", "cay")]
            assert await page.evaluate("window.told") == joins
            keys = "[...window.own.presence('desk:1').keys()]"
            assert await page.evaluate(keys) == ["ann", "bob", "cay"]
            # The events count as the room's position, as pushes do: a resume goes on
            # after them.
            position = await page.evaluate("window.own.positions['room:desk:1']")
            assert position[1] == 5

            proxy.freeze()
            await proxy.drop()
            await api.leave("desk:1", bob.ws_id)
            proxy.thaw()
            await page.wait_for_function("() => window.told.length >= 4", timeout=WAIT_MS)
            await expect(page.locator("#state")).to_have_text("open")
            assert await page.evaluate("[window.own.resumed, window.own.wsId]") == [True, ann_id]
            assert await page.evaluate("window.told") == [*joins, ["desk:1", False, "bob"]]
            assert await page.evaluate(keys) == ["ann", "cay"]
            assert presence_ops(proxy) == ["desk:1"]
            await page.evaluate("window.own.close()")
        finally:
            await proxy.close()


# Publishing from the page (pushgate.js: publish, a message's "from"; the console's box)

PUBLISHING = {
    **FAST_TIMERS,
    "namespaces": "chat=public+publish,lobby=public",
    "token_secret": PRESENCE_SECRET,
}


async def publish_in(page: "Page", room: str, text: str, tag: int = 2) -> None:
    """Fill the publish box and press Publish."""
    await page.fill("#pub-room", room)
    await page.fill("#pub-tag", str(tag))
    await page.fill("#pub-text", text)
    await page.click("#publish")


async def test_the_publish_box_talks_to_the_room_and_shows_who_said_what(
    browser: "Browser",
) -> None:
    """The page publishes to a room it subscribed: Bob (another client of the room)
    gets it from the page's wsId; Bob's answer shows in the page under his name. A
    room whose namespace has no +publish: the refusal's code and reason."""
    from playwright.async_api import expect

    async with (
        running_server(**PUBLISHING) as server,
        console_for(server) as page_url,
        connect(server.ws_url, token=user_token("bob")) as bob,
    ):
        await bob.subscribe("chat:1")
        page, ws_id = await open_console(browser, page_url, server.ws_url)
        await subscribe_in(page, "chat:1")
        await expect(page.locator('#my-rooms li[data-room="chat:1"]')).to_be_visible(
            timeout=WAIT_MS
        )
        result = page.locator("#pub-result")
        await publish_in(page, "chat:1", "hi from the page", tag=7)
        await expect(result).to_have_text("published to chat:1", timeout=WAIT_MS)
        await expect(result).not_to_have_class(re.compile("error"))
        said = await asyncio.wait_for(bob.recv(), WAIT_MS / 1000)
        assert said == Push(7, "hi from the page", "chat:1", sender=Sender(ws_id))

        await bob.publish("chat:1", "hi page", tag=5)
        newest = page.locator("#messages li").first
        await expect(newest.locator(".data")).to_have_text("hi page", timeout=WAIT_MS)
        await expect(newest.locator(".from")).to_have_text("bob")
        await expect(newest).to_have_attribute("data-from", bob.ws_id)
        await expect(page.locator("#message-count")).to_have_text("1")  # no echo of its own

        await subscribe_in(page, "lobby:1")
        await expect(page.locator('#my-rooms li[data-room="lobby:1"]')).to_be_visible(
            timeout=WAIT_MS
        )
        await publish_in(page, "lobby:1", "anyone?")
        await expect(result).to_have_text(
            "publish lobby:1 refused: 403 members of lobby:1 may not publish to it",
            timeout=WAIT_MS,
        )
        await expect(result).to_have_class(re.compile("error"))
        await expect(result).to_have_attribute("data-code", "403")


async def test_the_js_clients_publish_reaches_the_others_with_from_and_rejects_a_refusal(
    browser: "Browser",
) -> None:
    """pushgate.js, as the Python client (tests/test_client_publish.py): Ann's message
    reaches Bob from her wsId and user, not her; Bob's reaches her as a "message" with
    `from`, and himself with echo. Not a member, or no +publish: SubscribeError 403;
    undefined data: a TypeError, nothing sent; closed: code 0."""
    async with (
        running_server(**PUBLISHING) as server,
        console_for(server) as page_url,
        connect(server.ws_url, token=user_token("bob")) as bob,
    ):
        await bob.subscribe("chat:1")
        page, _ = await open_console(browser, page_url, server.ws_url)
        ann_id = await page.evaluate(
            """async ({ url, token }) => {
              const { PushgateClient } = await import("/static/pushgate.js");
              const c = new PushgateClient(url, { token });
              window.own = c;
              window.got = [];
              c.on("message", ({ type, data, room, from }) =>
                window.got.push({ type, data, room, from }));
              const wsId = await c.connect();
              await c.subscribe("chat:1");
              await c.subscribe("lobby:1");
              return wsId;
            }""",
            {"url": server.ws_url, "token": user_token("ann")},
        )
        await page.evaluate("window.own.publish('chat:1', { text: 'hi bob' }, { tag: 7 })")
        said = await asyncio.wait_for(bob.recv(), WAIT_MS / 1000)
        assert said == Push(7, {"text": "hi bob"}, "chat:1", sender=Sender(ann_id, "ann"))

        await bob.publish("chat:1", "hi ann", tag=5, echo=True)
        await page.wait_for_function("window.got.length >= 1", timeout=WAIT_MS)
        bob_said = {"wsId": bob.ws_id, "user": "bob"}
        assert await page.evaluate("window.got") == [
            {"type": 5, "data": "hi ann", "room": "chat:1", "from": bob_said}
        ]  # her own message did not come back to her
        assert await asyncio.wait_for(bob.recv(), WAIT_MS / 1000) == Push(
            5, "hi ann", "chat:1", sender=Sender(bob.ws_id, "bob")
        )
        refusals = await page.evaluate(
            """async () => {
              const { SubscribeError } = await import("/static/pushgate.js");
              const c = window.own;
              const why = (call) =>
                call.then(
                  () => "published",
                  (e) => [e instanceof SubscribeError, e.name, e.op, e.room, e.code, e.retryable],
                );
              const said = [];
              for (const room of ["chat:2", "lobby:1"]) said.push(await why(c.publish(room, "x")));
              said.push(await why(c.publish("chat:1")));
              c.close();
              said.push(await why(c.publish("chat:1", "x")));
              return said;
            }"""
        )
        assert refusals == [
            [True, "SubscribeError", "publish", "chat:2", 403, False],
            [True, "SubscribeError", "publish", "lobby:1", 403, False],
            [False, "TypeError", None, None, None, None],
            [True, "SubscribeError", "publish", "chat:1", 0, True],
        ]
