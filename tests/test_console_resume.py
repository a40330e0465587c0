"""Resuming sessions in the browser: pushgate.js and the console page in a real headless
Chromium against a real server (docs/recovery.md).

The page's connection is cut (through a loopback proxy, as a network failure looks to
both ends) while pushes are sent; after the resume the page must show the same wsId,
each push once and in order per stream, and say whether it got everything. The setup
(Debian's chromium, playwright) is tests/test_console.py's.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
from websockets.asyncio.client import connect

from pushgate.broker.memory import MemoryBroker
from pushgate.client import PushAPI
from tests.browser import WAIT_MS
from tests.dropping_proxy import DroppingProxy
from tests.helpers import (
    FAST_TIMERS,
    LOOPBACK,
    UNIT,
    Running,
    free_port,
    recv_json,
    running_server,
)
from tests.redis_server import RedisServer
from tests.test_console import (
    UUID,
    console_for,
    join,
    open_console,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

# Held handshakes, and sessions, must outlive a cut: the proxy keeps the page's reconnect
# waiting while pushes are sent, and the server must not give up on it meanwhile.
TIMERS: dict[str, Any] = {**FAST_TIMERS, "handshake_timeout": 5.0, "session_ttl": 30.0}


@asynccontextmanager
async def proxy_to(server: Running) -> AsyncIterator[DroppingProxy]:
    proxy = DroppingProxy(LOOPBACK, server.ws_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def ws_url_of(proxy: DroppingProxy) -> str:
    return f"ws://{LOOPBACK}:{proxy.port}/connect"


async def cut(page: "Page", proxy: DroppingProxy) -> None:
    """Cut the page's connection and hold its reconnects (they wait in the proxy, not a
    byte passing) until ``proxy.thaw()``; returns once the page has seen the drop."""
    from playwright.async_api import expect

    proxy.freeze()
    await proxy.drop()
    await expect(page.locator("#state")).to_have_text("reconnecting", timeout=WAIT_MS)


def data_of(page: "Page", stream: str) -> Any:
    """The pushes the page shows for ``stream``, newest first."""
    return page.locator(f'#messages li[data-stream="{stream}"] .data')


async def client_value(page: "Page", expression: str) -> Any:
    """``expression`` evaluated on the page's PushgateClient (``c``)."""
    return await page.evaluate(
        f"(() => {{ const c = window.pushgateConsole.client; return {expression}; }})()"
    )


async def test_a_cut_connection_resumes_the_same_session_and_every_push_arrives_once_in_order(
    browser: "Browser",
) -> None:
    """Pushes sent while the page is cut off arrive after the resume, each once, in
    order per stream; the wsId stays, the room is not joined again, the page says it
    recovered everything."""
    from playwright.async_api import Request, expect

    async with (
        running_server(**TIMERS) as server,
        console_for(server) as page_url,
        proxy_to(server) as proxy,
        PushAPI(server.api_url) as api,
    ):
        page, ws_id = await open_console(browser, page_url, ws_url_of(proxy))
        joins: list[str] = []

        def count_join(request: Request) -> None:
            if request.url.endswith("/room/join"):
                joins.append(request.url)

        page.on("request", count_join)
        await join(page, "news")
        await api.push_room("news", "news 0", 3)
        await api.push_all("all 0", 3)
        await expect(page.locator("#message-count")).to_have_text("2", timeout=WAIT_MS)

        await cut(page, proxy)
        for i in range(1, 4):
            await api.push_room("news", f"news {i}", 3)
            await api.push_all(f"all {i}", 3)
        proxy.thaw()

        await expect(page.locator("#state")).to_have_text("open", timeout=WAIT_MS)
        await expect(page.locator("#ws-id")).to_have_text(ws_id)
        await expect(page.locator("#log li .text").first).to_have_text(
            f"resumed as {ws_id}: recovered everything", timeout=WAIT_MS
        )
        await expect(page.locator("#log li").first).to_have_attribute("data-kind", "recovered")
        await expect(data_of(page, "room:news")).to_have_text(
            ["news 3", "news 2", "news 1", "news 0"], timeout=WAIT_MS
        )
        await expect(data_of(page, "all")).to_have_text(["all 3", "all 2", "all 1", "all 0"])
        assert await client_value(page, "c.recovered") is True

        # Live pushes follow, once each, with no rejoin: the session kept the room.
        await api.push_room("news", "news 4", 3)
        await expect(data_of(page, "room:news").first).to_have_text("news 4", timeout=WAIT_MS)
        await expect(page.locator("#message-count")).to_have_text("9")
        assert len(joins) == 1, joins
        assert server.server.node.room_sizes() == {"news": 1}
        await expect(page.locator("#my-rooms li")).to_have_count(1)


async def test_pushes_trimmed_from_history_are_reported_and_the_rest_still_arrive(
    browser: "Browser",
) -> None:
    """History keeps 2 pushes; 5 are sent while the page is away: it says the room's
    stream was NOT recovered, and shows the 2 the server still had, then live ones."""
    from playwright.async_api import expect

    async with (
        running_server(**{**TIMERS, "history_size": 2}) as server,
        console_for(server) as page_url,
        proxy_to(server) as proxy,
        PushAPI(server.api_url) as api,
    ):
        page, ws_id = await open_console(browser, page_url, ws_url_of(proxy))
        await join(page, "news")
        await api.push_room("news", "news 0", 3)
        await expect(data_of(page, "room:news")).to_have_text(["news 0"], timeout=WAIT_MS)

        await cut(page, proxy)
        for i in range(1, 6):
            await api.push_room("news", f"news {i}", 3)
        proxy.thaw()

        newest_log = page.locator("#log li").first
        await expect(newest_log).to_have_attribute("data-kind", "not-recovered", timeout=WAIT_MS)
        await expect(newest_log.locator(".text")).to_have_text(
            f"resumed as {ws_id}: NOT recovered (streams room:news)"
        )
        await expect(page.locator("#notice")).to_have_text(
            f"resumed as {ws_id}: NOT recovered (streams room:news)"
        )
        await expect(page.locator("#ws-id")).to_have_text(ws_id)
        await expect(data_of(page, "room:news")).to_have_text(
            ["news 5", "news 4", "news 0"], timeout=WAIT_MS
        )
        assert await client_value(page, "c.recovered") is False

        await api.push_room("news", "news 6", 3)
        await expect(data_of(page, "room:news")).to_have_text(
            ["news 6", "news 5", "news 4", "news 0"], timeout=WAIT_MS
        )


async def session_ended(api_url: str, ws_id: str) -> None:
    """Wait until the server has ended ``ws_id``'s session (its wsId answers 404)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(10 * UNIT):
        while True:
            fields = {"id": "probe", "wsId": ws_id}
            async with http.post(api_url + "/room/leave", json=fields) as response:
                if response.status == 404:
                    return
                assert response.status == 200, await response.text()
            await asyncio.sleep(0.05)  # a TTL running out sends no event to await


async def test_an_expired_session_gives_a_new_ws_id_and_the_page_joins_its_rooms_again(
    browser: "Browser",
) -> None:
    """Away for longer than --session-ttl: the page gets a new wsId, says why it could
    not resume, joins its room again, and pushes to the room reach it."""
    from playwright.async_api import expect

    async with (
        running_server(**{**TIMERS, "session_ttl": 0.3}) as server,
        console_for(server) as page_url,
        proxy_to(server) as proxy,
        PushAPI(server.api_url) as api,
    ):
        page, ws_id = await open_console(browser, page_url, ws_url_of(proxy))
        await join(page, "news")
        await cut(page, proxy)
        await session_ended(server.api_url, ws_id)
        proxy.thaw()

        newest_log = page.locator("#log li").first
        await expect(newest_log).to_have_attribute("data-kind", "new-session", timeout=WAIT_MS)
        await expect(page.locator("#state")).to_have_text("open")
        new_id = await page.locator("#ws-id").inner_text()
        assert UUID.match(new_id), new_id
        assert new_id != ws_id
        text = await newest_log.locator(".text").inner_text()
        assert text.startswith(f"new session {new_id} (could not resume: "), text
        assert text.endswith("); rooms rejoined"), text
        assert server.server.node.room_sizes() == {"news": 1}
        assert await client_value(page, "c.recovered") is False

        assert (await api.push_room("news", "to the new session", 3)).delivered == 1
        await expect(data_of(page, "room:news")).to_have_text(
            ["to the new session"], timeout=WAIT_MS
        )


async def test_a_page_whose_session_another_connection_resumed_stops_for_good(
    browser: "Browser",
) -> None:
    """Another connection resumes the page's session with its token: the server closes
    the page's connection with 4001; the page says so and does not come back."""
    from playwright.async_api import expect

    async with (
        running_server(**TIMERS) as server,
        console_for(server) as page_url,
        PushAPI(server.api_url) as api,
    ):
        page, ws_id = await open_console(browser, page_url, server.ws_url)
        await join(page, "news")
        session = await client_value(page, "c.session")
        assert isinstance(session, str)
        assert session

        resume = {"type": 0, "data": {"wsId": ws_id, "session": session, "since": {}}}
        async with connect(server.ws_url + "?resume=1", open_timeout=5 * UNIT) as other:
            await other.send(json.dumps(resume))
            welcome = await recv_json(other)
            assert welcome["type"] == 0
            assert (welcome["data"]["wsId"], welcome["data"]["resumed"]) == (ws_id, True)

            await expect(page.locator("#state")).to_have_text("closed", timeout=WAIT_MS)
            newest_log = page.locator("#log li").first
            await expect(newest_log).to_have_attribute("data-kind", "stopped")
            await expect(newest_log.locator(".text")).to_contain_text(
                "another connection resumed this session (code 4001"
            )
            # Nothing is scheduled: no reconnect will come to take the session back.
            assert await client_value(page, "c._timers.size") == 0
            assert await client_value(page, "c.closeCode") == 4001

            # The session, and its room, are the other connection's now.
            assert (await api.push_room("news", "for the taker", 3)).delivered == 1
            assert (await recv_json(other))["data"] == "for the taker"
            await expect(page.locator("#message-count")).to_have_text("0")
            await expect(page.locator("#state")).to_have_text("closed")


async def test_a_page_whose_session_an_operator_ended_stays_away(browser: "Browser") -> None:
    """An operator ends the page's session (disconnect with endSession): the server
    closes with 4410, and pushgate.js stops there instead of coming straight back
    with a new wsId; the page says so."""
    from playwright.async_api import expect

    async with (
        running_server(**TIMERS) as server,
        console_for(server) as page_url,
        PushAPI(server.api_url) as api,
    ):
        page, ws_id = await open_console(browser, page_url, server.ws_url)
        done = await api.disconnect(ws_id=ws_id, end_session=True)
        assert (done.disconnected, done.session_ended) == ([ws_id], True)

        await expect(page.locator("#state")).to_have_text("closed", timeout=WAIT_MS)
        newest_log = page.locator("#log li").first
        await expect(newest_log).to_have_attribute("data-kind", "stopped")
        await expect(newest_log.locator(".text")).to_contain_text(
            "the server closed this connection for good (code 4410"
        )
        assert await client_value(page, "c.closeCode") == 4410
        assert await client_value(page, "c._timers.size") == 0  # no reconnect scheduled
        assert (await api.stats()).connections == 0


async def test_an_unreachable_gateway_is_skipped_for_the_next_one(browser: "Browser") -> None:
    """Given two gateways, the first of which nobody listens on, the page connects to
    the second."""
    from playwright.async_api import expect

    async with running_server(**TIMERS) as server, console_for(server) as page_url:
        dead = f"ws://{LOOPBACK}:{free_port()}/connect"
        page, _ = await open_console(browser, page_url, f"{dead},{server.ws_url}")
        assert await client_value(page, "c.url") == server.ws_url
        await expect(page.locator("#log li").first).to_have_attribute("data-kind", "open")


async def test_a_draining_gateway_hands_the_page_to_the_next_one_with_its_session(
    browser: "Browser", redis: RedisServer
) -> None:
    """Two gateways of a cluster: the one the page is on drains (1012). The page
    resumes at once on the other with the same wsId and room, and the pushes sent in
    between arrive once each, in order."""
    from playwright.async_api import expect

    settings = {**TIMERS, "broker": redis.url, "prefix": "resume:", "node_ttl": 2.0}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(running_server("gateway", **settings))
        second = await stack.enter_async_context(running_server("gateway", **settings))
        logic = await stack.enter_async_context(running_server("logic", **settings))
        page_url = await stack.enter_async_context(console_for(logic))
        api = await stack.enter_async_context(PushAPI(logic.api_url))
        # The second gateway is behind a proxy that holds the page's resume while the
        # pushes are sent.
        proxy = await stack.enter_async_context(proxy_to(second))
        page, ws_id = await open_console(browser, page_url, f"{first.ws_url},{ws_url_of(proxy)}")
        await join(page, "news")
        await api.push_room("news", "news 0", 3)
        await expect(data_of(page, "room:news")).to_have_text(["news 0"], timeout=WAIT_MS)

        proxy.freeze()
        await first.server.stop(drain=True)
        await expect(page.locator("#log li").first).to_contain_text(
            "connection lost (code 1012", timeout=WAIT_MS
        )
        for i in range(1, 4):
            await api.push_room("news", f"news {i}", 3)
        proxy.thaw()

        await expect(page.locator("#log li .text").first).to_have_text(
            f"resumed as {ws_id}: recovered everything", timeout=WAIT_MS
        )
        await expect(page.locator("#ws-id")).to_have_text(ws_id)
        assert await client_value(page, "c.url") == ws_url_of(proxy)
        await expect(data_of(page, "room:news")).to_have_text(
            ["news 3", "news 2", "news 1", "news 0"], timeout=WAIT_MS
        )
        await api.push_room("news", "news 4", 3)
        await expect(data_of(page, "room:news").first).to_have_text("news 4", timeout=WAIT_MS)
        await expect(page.locator("#message-count")).to_have_text("5")


async def test_a_push_the_path_delivers_twice_is_shown_once_and_a_1012_resumes_from_it(
    browser: "Browser",
) -> None:
    """Every push is delivered twice by the path (a Playwright WebSocket route): the page
    shows each once. Then the path closes with 1012: the page resumes on its own, asking
    for what came after the last push it has, and shows nothing twice."""
    from playwright.async_api import WebSocketRoute, expect

    connections: list[tuple[str, list[str]]] = []  # (URL, what the page sent) per connection
    routes: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        upstream = ws.connect_to_server()
        sent: list[str] = []
        connections.append((ws.url, sent))
        routes.append(ws)

        def up(message: str | bytes) -> None:
            if isinstance(message, str):
                sent.append(message)
            upstream.send(message)

        def down(message: str | bytes) -> None:
            ws.send(message)
            if isinstance(message, str) and json.loads(message)["type"] > 1:
                ws.send(message)  # a push, twice

        ws.on_message(up)
        upstream.on_message(down)

    async with (
        running_server(**TIMERS) as server,
        console_for(server) as page_url,
        PushAPI(server.api_url) as api,
    ):
        page = await browser.new_page()
        await page.route_web_socket("**/connect*", route)
        await page.goto(f"{page_url}/?ws={server.ws_url}", timeout=WAIT_MS)
        await expect(page.locator("#state")).to_have_text("open", timeout=WAIT_MS)
        ws_id = await page.locator("#ws-id").inner_text()
        for i in range(3):
            await api.push_all(f"all {i}", 3)
        await expect(data_of(page, "all")).to_have_text(
            ["all 2", "all 1", "all 0"], timeout=WAIT_MS
        )
        await expect(page.locator("#message-count")).to_have_text("3")
        epoch = await client_value(page, "c.positions.all[0]")
        session = await client_value(page, "c.session")

        await routes[0].close(code=1012, reason="service restart")
        await expect(page.locator("#log li .text").first).to_have_text(
            f"resumed as {ws_id}: recovered everything", timeout=WAIT_MS
        )
        assert len(connections) == 2
        url, sent = connections[1]
        assert url == server.ws_url + "?resume=1&v=2"
        assert json.loads(sent[0]) == {
            "type": 0,
            "data": {"wsId": ws_id, "session": session, "since": {"all": [epoch, 3]}},
        }
        await api.push_all("all 3", 3)
        await expect(data_of(page, "all")).to_have_text(
            ["all 3", "all 2", "all 1", "all 0"], timeout=WAIT_MS
        )
        await expect(page.locator("#message-count")).to_have_text("4")


async def test_a_stream_whose_history_was_lost_is_reported_and_its_next_push_still_shown(
    browser: "Browser",
) -> None:
    """The broker forgets the "all" stream (idle past its metadata's lifetime: its
    epoch changes) while the page is connected. The next push tells the page, which
    says pushes may be lost on that stream, and shows the push itself."""
    from playwright.async_api import expect

    async with (
        running_server(**TIMERS) as server,
        console_for(server) as page_url,
        PushAPI(server.api_url) as api,
    ):
        page, _ = await open_console(browser, page_url, server.ws_url)
        await api.push_all("all 0", 3)
        await expect(data_of(page, "all")).to_have_text(["all 0"], timeout=WAIT_MS)
        epoch = await client_value(page, "c.positions.all[0]")

        broker = server.server.node.broker
        assert isinstance(broker, MemoryBroker)
        history = broker._bus.history
        assert history.expire(time.monotonic() + 2 * history.position_ttl) >= 1
        await api.push_all("all 1", 3)

        newest_log = page.locator("#log li").first
        await expect(newest_log).to_have_attribute("data-kind", "gap", timeout=WAIT_MS)
        await expect(newest_log.locator(".text")).to_have_text(
            "pushes lost: NOT recovered (streams all)"
        )
        await expect(data_of(page, "all")).to_have_text(["all 1", "all 0"], timeout=WAIT_MS)
        assert await client_value(page, "c.recovered") is False
        assert await client_value(page, "c.positions.all[0]") != epoch
        await api.push_all("all 2", 3)
        await expect(data_of(page, "all")).to_have_text(
            ["all 2", "all 1", "all 0"], timeout=WAIT_MS
        )
