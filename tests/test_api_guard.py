"""The logic API's guards (issue 25): the header timeout, the keep-alive timeout and
the connection cap (apisite.py), and the refusal of cross-site requests and of Host
names that DNS rebinding could point at a keyless API (apiguard.py)."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection

from pushgate.apiguard import (
    RequestFacts,
    cannot_be_rebound,
    check_request,
    cross_site,
    host_name,
    origin_host_name,
    rebound_host,
)
from pushgate.apisite import REFUSALS_LINGERING, refusal_response
from pushgate.broker.redis import MAX_CONNECTIONS
from pushgate.client import PushAPI, SyncPushAPI
from pushgate.config import Config
from pushgate.openfiles import FD_RESERVE, METRICS_CONNECTIONS, fd_reserve
from tests.browser import WAIT_MS
from tests.helpers import (
    FAST_TIMERS,
    LOOPBACK,
    UNIT,
    Running,
    open_client,
    post,
    recv_json,
    running_server,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser

FORM = {"val": "pwned", "tag": "3"}
HEADER_TIMEOUT = 0.3 * UNIT
CLOCK = 0.005  # uvloop's clock counts whole milliseconds
# Long enough that aiohttp's own keep-alive timer never closes a test connection first.
LONG = 30.0


# Raw sockets


@asynccontextmanager
async def raw_connection(
    port: int, sock: socket.socket | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A plain TCP connection to ``port`` on loopback (or over ``sock``), closed after."""
    if sock is None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
    else:
        reader, writer = await asyncio.open_connection(sock=sock)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
    """One HTTP response with a Content-Length: its status, header block and body."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5 * UNIT)).decode()
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(length), 5 * UNIT)
    return int(head.split(" ", 2)[1]), head, body


async def seconds_until_closed(reader: asyncio.StreamReader, since: float) -> float:
    """Wait until the server closes the connection; the seconds since ``since``. A
    reset counts as closed: a server that closes on a client still sending (a
    trickled header) leaves unread bytes, and the kernel then resets."""
    with suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), 5 * UNIT) == b""
    return asyncio.get_running_loop().time() - since


def request(path: str, *, host: str = LOOPBACK, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


# The header timeout


async def test_a_header_trickled_a_byte_at_a_time_is_closed_after_the_header_timeout() -> None:
    """Slowloris: a header sent one byte every 20 ms never completes; the connection
    is closed once --api-header-timeout has passed since it connected."""
    async with running_server(
        api_header_timeout=HEADER_TIMEOUT, api_keepalive_timeout=LONG
    ) as server:
        loop = asyncio.get_running_loop()
        header = request("/stats", extra="X-Slow: " + "a" * 200)
        started = loop.time()
        async with raw_connection(server.server.api_port) as (reader, writer):

            async def trickle() -> None:
                for byte in header:
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.02 * UNIT)  # the attack's pace, not a wait

            trickling = asyncio.create_task(trickle())
            elapsed = await seconds_until_closed(reader, started)
            assert not trickling.done()  # closed while the header was still coming
            trickling.cancel()
        assert HEADER_TIMEOUT - CLOCK <= elapsed < HEADER_TIMEOUT + 2 * UNIT
        assert server.server.node.meters.limits["api_header_timeout"] == 1


async def test_a_later_request_on_a_kept_alive_connection_has_the_same_header_timeout() -> None:
    """After a response, the next request's header is timed from its first byte: one
    that stops half-way is closed long before the keep-alive timeout."""
    async with running_server(
        api_header_timeout=HEADER_TIMEOUT, api_keepalive_timeout=LONG
    ) as server:
        async with raw_connection(server.server.api_port) as (reader, writer):
            writer.write(request("/healthz"))
            assert (await read_response(reader))[0] == 200
            started = asyncio.get_running_loop().time()
            writer.write(b"GET /stats HTTP/1.1\r\nHost: 12")
            elapsed = await seconds_until_closed(reader, started)
        assert HEADER_TIMEOUT - CLOCK <= elapsed < HEADER_TIMEOUT + 2 * UNIT


async def test_a_slow_body_after_a_whole_header_is_not_cut_by_the_header_timeout() -> None:
    """The header timeout times headers only: a body that takes longer than it to
    arrive, behind a whole header, is answered."""
    async with running_server(
        api_header_timeout=HEADER_TIMEOUT, api_keepalive_timeout=LONG
    ) as server:
        body = b"val=slow&tag=3"
        async with raw_connection(server.server.api_port) as (reader, writer):
            writer.write(
                b"POST /push/all HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            for byte in body:  # 14 bytes over about 0.56 s, past the header timeout
                await asyncio.sleep(0.04 * UNIT)  # the client's pace, not a wait
                writer.write(bytes([byte]))
            status, _, answer = await read_response(reader)
        assert (status, json.loads(answer)) == (200, {"ok": True, "delivered": 0})


# The keep-alive timeout


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() -> None:
    """Between requests the keep-alive timeout applies (not the shorter header timeout,
    and not aiohttp's hour)."""
    keepalive = 3 * HEADER_TIMEOUT
    async with running_server(
        api_header_timeout=HEADER_TIMEOUT, api_keepalive_timeout=keepalive
    ) as server:
        async with raw_connection(server.server.api_port) as (reader, writer):
            writer.write(request("/healthz"))
            status, head, _ = await read_response(reader)
            started = asyncio.get_running_loop().time()
            assert status == 200
            assert "connection: close" not in head.lower()
            elapsed = await seconds_until_closed(reader, started)
        assert 2 * HEADER_TIMEOUT < elapsed < keepalive + 2 * UNIT


async def test_the_metrics_address_has_the_same_timeouts() -> None:
    """--metrics-address: a connection that sends nothing is closed after the header
    timeout (well before aiohttp's keep-alive timer, which runs from connecting too);
    one kept alive after a scrape, after the keep-alive timeout."""
    keepalive = 4 * HEADER_TIMEOUT
    async with running_server(
        api_header_timeout=HEADER_TIMEOUT,
        api_keepalive_timeout=keepalive,
        metrics_address=f"{LOOPBACK}:0",
    ) as server:
        port = server.server.metrics_port
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with raw_connection(port) as (reader, _):
            silent = await seconds_until_closed(reader, started)
        async with raw_connection(port) as (reader, writer):
            writer.write(request("/metrics"))
            assert (await read_response(reader))[0] == 200
            started = loop.time()
            idle = await seconds_until_closed(reader, started)
    assert HEADER_TIMEOUT - CLOCK <= silent < keepalive
    assert 2 * HEADER_TIMEOUT < idle < keepalive + 2 * UNIT


# The connection cap


async def test_connections_over_the_cap_get_503_and_clients_keep_working(
    http: aiohttp.ClientSession,
) -> None:
    """With the API full of idle connections, one more gets a 503 it can read (an
    aiohttp client sending a body, and a raw socket, which reads it to an orderly
    end); the gateway keeps accepting, and once the idle ones have timed out an
    honest call succeeds."""
    cap = 3
    async with running_server(
        max_api_connections=cap,
        api_header_timeout=1.0 * UNIT,
        api_keepalive_timeout=LONG,
    ) as server:
        idle = [await asyncio.open_connection(LOOPBACK, server.server.api_port) for _ in range(cap)]

        async with http.post(
            server.api_url + "/push/all", data={"val": "x" * 256 * 1024, "tag": "3"}
        ) as response:
            assert response.status == 503
            body = await response.json()
        assert body["ok"] is False
        assert "API connection limit" in body["error"]

        async with raw_connection(server.server.api_port) as (reader, writer):
            writer.write(request("/stats"))
            answer = await asyncio.wait_for(reader.read(), 5 * UNIT)  # to the end: no reset
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["ok"] is False

        ws, _ = await open_client(server.ws_url)
        for reader, _ in idle:
            assert await asyncio.wait_for(reader.read(), 5 * UNIT) == b""
        status, pushed = await post(
            http, server.api_url + "/push/all", data={"val": "hi", "tag": "3"}
        )
        assert (status, pushed) == (200, {"ok": True, "delivered": 1})
        assert await recv_json(ws) == {"type": 3, "data": "hi"}
        await ws.close()
        for _, writer in idle:
            writer.close()
        limits = server.server.node.meters.limits
        assert limits["max_api_connections"] == 2
        assert limits["api_header_timeout"] == cap


async def test_a_refused_client_that_sent_its_request_first_reads_the_503_to_its_end() -> None:
    """Under load a client has often sent its request before the server accepts it.
    Closing a socket with that request unread would make the kernel send a reset
    (which can destroy the 503 on its way); the request is read and dropped, and
    the client reads the 503 and then an orderly end of stream."""
    async with running_server(
        max_api_connections=1, api_header_timeout=2 * UNIT, api_keepalive_timeout=LONG
    ) as server:
        port = server.server.api_port
        async with raw_connection(port):  # the one connection allowed
            # Blocking calls: the event loop, and so the server, does not run between
            # them, so the request waits in the kernel when the server accepts.
            sock = socket.create_connection((LOOPBACK, port), timeout=5 * UNIT)
            sock.sendall(
                b"POST /push/all HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
            )
            sock.sendall(b"x" * 1000)
            sock.setblocking(False)
            async with raw_connection(port, sock=sock) as (reader, _):
                answer = await asyncio.wait_for(reader.read(), 5 * UNIT)  # raises on a reset
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert "API connection limit" in json.loads(body)["error"]


def test_the_503_is_a_whole_http_answer_with_a_json_body() -> None:
    """The refusal says which limit, closes the connection, and its length is right."""
    head, _, body = refusal_response("API", 64).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    answer = json.loads(body)
    assert answer["ok"] is False
    assert "API connection limit (64) was reached" in answer["error"]


def test_the_api_connections_fit_in_the_open_file_reserve() -> None:
    """The WebSocket clients leave room for every API and metrics connection, the
    broker's pool and the process's own files: 100 by default, more with Redis or a
    larger --max-api-connections."""
    config = Config()
    assert fd_reserve(config) == FD_RESERVE
    assert fd_reserve(config) >= 64 + REFUSALS_LINGERING + METRICS_CONNECTIONS
    redis = fd_reserve(replace(config, broker="redis://127.0.0.1:6379"))
    assert redis >= 64 + REFUSALS_LINGERING + METRICS_CONNECTIONS + MAX_CONNECTIONS
    assert fd_reserve(replace(config, max_api_connections=500)) > 500 + METRICS_CONNECTIONS


# Cross-site requests


CROSS_SITE = [
    pytest.param({"Origin": "https://attacker.example"}, id="origin"),
    pytest.param({"Origin": "null"}, id="origin-null"),
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="sec-fetch-site"),
    pytest.param(
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, id="form-navigation"
    ),
]


async def nothing_arrived(ws: ClientConnection) -> None:
    """Nothing was pushed to ``ws``: its next message is the answer to a PING."""
    await ws.send('{"type":1,"data":"PING"}')
    assert await recv_json(ws) == {"type": 1, "data": "PONG"}


@pytest.mark.parametrize("headers", CROSS_SITE)
async def test_a_cross_site_form_post_is_refused_and_changes_nothing(
    server: Running, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """A form posted from another site's page is 403 on /push/all, /room/join and
    /disconnect, and no push, join or disconnect happens."""
    ws, ws_id = await open_client(server.ws_url)
    for path, fields in [
        ("/push/all", FORM),
        ("/room/join", {"id": "r", "wsId": ws_id}),
        ("/disconnect", {"wsId": ws_id}),
    ]:
        status, body = await post(http, server.api_url + path, data=fields, headers=headers)
        assert status == 403, (path, body)
        assert body["ok"] is False
        assert "another site" in body["error"]
    await nothing_arrived(ws)
    assert server.server.node.room_sizes() == {}
    await ws.close()


async def test_a_link_to_the_console_from_another_site_still_opens_it(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """A top-level GET navigation to the console page passes; the same navigation to
    an API path does not."""
    navigation = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    async with http.get(server.api_url + "/", headers=navigation) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
    async with http.get(server.api_url + "/stats", headers=navigation) as response:
        assert response.status == 403


async def test_same_origin_pages_and_programs_pass(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """The console's own fetches (Origin of the API itself, same-origin), requests
    without Origin (curl, the SDKs, asyncio and blocking) all push."""
    ws, _ = await open_client(server.ws_url)
    port = server.server.api_port
    for headers in [
        {"Origin": f"http://{LOOPBACK}:{port}", "Sec-Fetch-Site": "same-origin"},
        {"Origin": f"http://{LOOPBACK}:{port}"},
        {},
    ]:
        status, body = await post(http, server.api_url + "/push/all", data=FORM, headers=headers)
        assert (status, body) == (200, {"ok": True, "delivered": 1}), headers
        assert (await recv_json(ws))["data"] == "pwned"
    async with PushAPI(server.api_url) as api:
        assert (await api.push_all("async", 3)).delivered == 1
    assert (await recv_json(ws))["data"] == "async"

    def blocking_push() -> int | None:
        with SyncPushAPI(server.api_url) as api:
            return api.push_all("blocking", 3).delivered

    assert await asyncio.to_thread(blocking_push) == 1
    assert (await recv_json(ws))["data"] == "blocking"
    await ws.close()


async def test_a_page_on_another_site_cannot_push_from_a_real_browser(
    server: Running, browser: "Browser"
) -> None:
    """Chromium on a page of http://localhost:<port> submits a form to the API on
    127.0.0.1 (another site): it is 403, and the client gets nothing."""
    from playwright.async_api import expect

    ws, _ = await open_client(server.ws_url)
    async with attacker_page(server.api_url + "/push/all") as page_url:
        page = await browser.new_page()
        await page.goto(page_url, timeout=WAIT_MS)
        await expect(page.locator("body")).to_contain_text("another site", timeout=WAIT_MS)
    await nothing_arrived(ws)
    await ws.close()


@asynccontextmanager
async def attacker_page(action: str) -> AsyncIterator[str]:
    """A page that posts a form to ``action`` as soon as it loads, served on a free
    port under the name localhost; yields its URL."""
    html = (
        f'<form method="post" action="{action}">'
        '<input name="val" value="pwned"><input name="tag" value="3"></form>'
        "<script>document.forms[0].submit()</script>"
    )

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield f"http://localhost:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


# DNS rebinding


@pytest.mark.parametrize("path", ["/stats", "/connections/x", "/rooms", "/metrics", "/"])
async def test_a_rebinding_host_is_refused_without_a_key(
    server: Running, http: aiohttp.ClientSession, path: str
) -> None:
    """A Host name an attacker's DNS could point at 127.0.0.1 is 403, whatever the path."""
    async with http.get(
        server.api_url + path, headers={"Host": "attacker.example:9999"}
    ) as response:
        assert response.status == 403
        body = await response.json()
    assert body["ok"] is False
    assert "attacker.example" in body["error"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost:1", "console.localhost", "[::1]:8081", "LOCALHOST."]
)
async def test_hosts_that_cannot_be_rebound_pass(
    server: Running, http: aiohttp.ClientSession, host: str
) -> None:
    """IP literals and localhost names are answered."""
    async with http.get(server.api_url + "/stats", headers={"Host": host}) as response:
        assert response.status == 200


async def test_the_health_probes_answer_any_host(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """Probes name the host as they please; /healthz reveals nothing."""
    async with http.get(
        server.api_url + "/healthz", headers={"Host": "pushgate.internal"}
    ) as response:
        assert response.status == 200


async def test_with_an_api_key_a_foreign_host_passes_but_still_needs_the_key(
    http: aiohttp.ClientSession,
) -> None:
    """With keys the key protects: any Host is let through to the key check (401
    without it, 200 with it), and a cross-site request is still 403 with the key."""
    async with running_server(**FAST_TIMERS, api_key="the-key") as server:
        url = server.api_url + "/stats"
        foreign = {"Host": "api.example:443"}
        async with http.get(url, headers=foreign) as response:
            assert response.status == 401
        keyed = {**foreign, "Authorization": "Bearer the-key"}
        async with http.get(url, headers=keyed) as response:
            assert response.status == 200
        status, _ = await post(
            http,
            server.api_url + "/push/all",
            data=FORM,
            headers={**keyed, "Origin": "https://attacker.example"},
        )
        assert status == 403


# The decisions, without sockets


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:8081", "127.0.0.1"),
        ("[::1]:8081", "[::1]"),
        ("LocalHost.:80", "localhost"),
        ("api.example", "api.example"),
        ("", None),
        ("a b", None),
        ("user@127.0.0.1", None),
        ("127.0.0.1:80:80", None),
        ("127.0.0.1:port", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    """A Host header's name, normalized; anything but name[:port] is no name."""
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("origin", "name"),
    [
        ("http://127.0.0.1:8081", "127.0.0.1"),
        ("https://App.Example", "app.example"),
        ("http://[::1]:3000", "[::1]"),
        ("null", None),
        ("http://a.example/path", None),
        ("127.0.0.1", None),
        ("http://user@127.0.0.1", None),
    ],
)
def test_origin_host_name(origin: str, name: str | None) -> None:
    """An Origin's host name; "null", paths and user info are no name."""
    assert origin_host_name(origin) == name


@pytest.mark.parametrize(
    ("name", "api_host", "expected"),
    [
        ("127.0.0.1", "", True),
        ("10.1.2.3", "", True),
        ("[::1]", "", True),
        ("[2001:db8::1]", "", True),
        ("localhost", "", True),
        ("console.localhost", "", True),
        ("pushgate.internal", "pushgate.internal", True),
        ("pushgate.internal", "Pushgate.Internal.", True),
        ("pushgate.internal", "", False),
        ("localhost.attacker.example", "", False),
        ("127.1", "", False),
        ("2130706433", "", False),
    ],
)
def test_cannot_be_rebound(name: str, api_host: str, expected: bool) -> None:
    """IP literals (as the standard writes them), localhost names and --api-host only."""
    assert cannot_be_rebound(name, api_host) is expected


def test_rebound_host_without_a_host_header_passes() -> None:
    """Browsers always send Host; a request without one is a program's."""
    assert rebound_host(None) is None
    refusal = rebound_host("attacker.example:80")
    assert refusal is not None
    assert refusal.status == 403
    assert refusal.kind == "host"


@pytest.mark.parametrize(
    ("facts", "refused"),
    [
        (RequestFacts("POST", "/push/all"), False),
        (RequestFacts("POST", "/push/all", host="127.0.0.1:1", origin="http://127.0.0.1:1"), False),
        (RequestFacts("POST", "/push/all", host="127.0.0.1:1", origin="http://127.0.0.1:2"), False),
        (RequestFacts("POST", "/push/all", host="127.0.0.1:1", origin="http://localhost:1"), True),
        (RequestFacts("POST", "/push/all", host="127.0.0.1", origin="null"), True),
        (RequestFacts("POST", "/push/all", origin="http://127.0.0.1"), True),
        (RequestFacts("POST", "/push/all", host="127.0.0.1", fetch_site="same-origin"), False),
        (RequestFacts("POST", "/push/all", host="127.0.0.1", fetch_site="Cross-Site"), True),
        (RequestFacts("GET", "/", fetch_site="cross-site", fetch_mode="navigate"), False),
        (RequestFacts("HEAD", "/", fetch_site="cross-site", fetch_mode="navigate"), False),
        (RequestFacts("POST", "/", fetch_site="cross-site", fetch_mode="navigate"), True),
        (RequestFacts("GET", "/stats", fetch_site="cross-site", fetch_mode="navigate"), True),
        (RequestFacts("GET", "/", fetch_site="cross-site", fetch_mode="cors"), True),
    ],
)
def test_cross_site(facts: RequestFacts, refused: bool) -> None:
    """Origin of another host name, null, or Sec-Fetch-Site: cross-site is refused,
    except a GET navigation to the console page."""
    refusal = cross_site(facts)
    assert (refusal is not None) is refused
    if refusal is not None:
        assert (refusal.status, refusal.kind) == (403, "cross_site")


def test_check_request_skips_the_host_check_with_keys_but_never_the_origin_check() -> None:
    """Keys make the Host check moot; the cross-site check stays."""
    rebinding = RequestFacts("GET", "/stats", host="attacker.example")
    assert check_request(rebinding, keyed=False) is not None
    assert check_request(rebinding, keyed=False, api_host="attacker.example") is None
    assert check_request(rebinding, keyed=True) is None
    cross = RequestFacts("POST", "/push/all", host="api.example", origin="https://x.example")
    assert check_request(cross, keyed=True) is not None


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/static/pushgate.js"])
def test_check_request_leaves_the_open_paths_open(path: str) -> None:
    """Probes and the console's public files are answered to anyone."""
    facts = RequestFacts("GET", path, host="attacker.example", origin="https://x.example")
    assert check_request(facts, keyed=False) is None
