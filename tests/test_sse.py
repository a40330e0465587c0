"""Server-Sent Events on GET /events: a stream gets the pushes its token and query
name, resumes from its Last-Event-ID without loss (or says what it lost), keeps
proxies awake, and is bound by the gateway's limits like a WebSocket. Real servers
on free ports, read over real HTTP with aiohttp."""

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import jwt
import pytest

from pushgate.ids import ConnId
from tests.browser import WAIT_MS
from tests.helpers import FAST_TIMERS, LOOPBACK, UNIT, Running, post, running_server
from tests.redis_server import RedisServer
from tests.test_connect_hook import SETTINGS as HOOKED
from tests.test_connect_hook import Backend, backend

if TYPE_CHECKING:
    from playwright.async_api import Browser

SECRET = "a-token-secret-of-at-least-32-bytes!!"
NAMESPACES = "lobby=public,chat=grant"


def token(**claims: Any) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


def events_url(server: Running, **query: Any) -> str:
    url = f"http://{LOOPBACK}:{server.ws_port}/events"
    return url + "?" + urlencode(query, doseq=True) if query else url


@dataclass
class Event:
    """One event as EventSource would see it (``comment``: a comment line instead)."""

    id: str | None = None
    event: str | None = None
    data: str = ""
    comment: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class Stream:
    """A response to GET /events, read event by event as the HTML standard parses it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 5 * UNIT) -> Event | None:
        """The next event or comment; None once the server ended the stream."""
        event = Event()
        fields = False
        async with asyncio.timeout(timeout):
            async for raw in self.response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    return Event(comment=line[1:].strip())
                if not line:
                    if fields:
                        return event
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields = True
                if name == "data":
                    event.data = value if not event.data else event.data + "\n" + value
                elif name in ("id", "event"):
                    setattr(event, name, value)
        return None

    async def next_event(self, timeout: float = 5 * UNIT) -> Event:
        """The next event, past heartbeat comments."""
        while True:
            event = await self.next(timeout)
            assert event is not None, "the stream ended"
            if event.comment is None:
                return event

    async def pushes(self, count: int) -> list[Any]:
        """The data of the next ``count`` pushes (events without a name)."""
        got = []
        for _ in range(count):
            event = await self.next_event()
            assert event.event is None, event
            got.append(event.json()["data"])
        return got


@asynccontextmanager
async def open_events(
    http: aiohttp.ClientSession, url: str, **kwargs: Any
) -> AsyncIterator[tuple[Stream, dict[str, Any]]]:
    """GET /events and read its pushgate:open; yield the stream and that event's data."""
    async with http.get(url, **kwargs) as response:
        assert response.status == 200, await response.text()
        stream = Stream(response)
        opened = await stream.next_event()
        assert opened.event == "pushgate:open", opened
        yield stream, {**opened.json(), "id": opened.id}


async def status_of(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str]:
    async with http.get(url, **kwargs) as response:
        return response.status, await response.text()


async def push(http: aiohttp.ClientSession, server: Running, path: str, **fields: Any) -> None:
    status, body = await post(http, server.api_url + path, json={"tag": 2, **fields})
    assert status == 200, body


# What a stream gets


async def test_a_stream_gets_pushes_to_all_to_its_user_and_to_its_token_rooms(
    http: aiohttp.ClientSession,
) -> None:
    """A token with sub=ann and rooms=[news]: pushes to all, to room news and to user
    ann arrive, in order, each with an id; those to another room or user do not."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET) as server:
        url = events_url(server, token=token(sub="ann", rooms=["news"]))
        async with open_events(http, url) as (stream, opened):
            assert set(opened["streams"]) == {"all", "user:ann", "room:news"}
            assert (opened["resumed"], opened["recovered"]) == (False, True)
            await push(http, server, "/push/all", val=1)
            await push(http, server, "/push/room", id="news", val=2)
            await push(http, server, "/push/room", id="sport", val="not mine")
            await push(http, server, "/push/user", uid="ann", val=3)
            await push(http, server, "/push/user", uid="bob", val="not mine")
            await push(http, server, "/push/all", val=4)
            events = [await stream.next_event() for _ in range(4)]
            assert [e.json()["data"] for e in events] == [1, 2, 3, 4]
            assert events[1].json()["room"] == "news"
            assert events[2].json()["user"] == "ann"
            ids = [opened["id"], *(e.id for e in events)]
            assert None not in ids
            assert len(set(ids)) == 5


async def test_the_back_end_reaches_a_stream_by_its_wsid(http: aiohttp.ClientSession) -> None:
    """The wsId in pushgate:open takes /push/conn, /room/join and /disconnect, whose
    code the stream's pushgate:close carries before it ends."""
    async with (
        running_server(**FAST_TIMERS) as server,
        open_events(http, events_url(server)) as (stream, opened),
    ):
        ws_id = opened["wsId"]
        await push(http, server, "/push/conn", wsId=ws_id, val="just you")
        status, body = await post(
            http, server.api_url + "/room/join", json={"id": "r", "wsId": ws_id}
        )
        assert status == 200, body
        await push(http, server, "/push/room", id="r", val="joined by the back end")
        assert await stream.pushes(2) == ["just you", "joined by the back end"]
        await post(http, server.api_url + "/disconnect", json={"wsId": ws_id, "code": 4009})
        closed = await stream.next_event()
        assert (closed.event, closed.json()["code"]) == ("pushgate:close", 4009)
        assert await stream.next() is None


async def test_rooms_named_in_the_query_follow_their_namespace(
    http: aiohttp.ClientSession,
) -> None:
    """?room= opens a public room, and a grant room with a subscription token in
    ?grant=; its pushes arrive."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET, namespaces=NAMESPACES) as server:
        grant = token(subscribe=["chat:*"])
        url = events_url(server, room=["lobby:1", "chat:7"], grant=grant)
        async with open_events(http, url) as (stream, opened):
            assert set(opened["streams"]) == {"all", "room:lobby:1", "room:chat:7"}
            await push(http, server, "/push/room", id="chat:7", val="c")
            await push(http, server, "/push/room", id="lobby:1", val="l")
            assert await stream.pushes(2) == ["c", "l"]


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ({"room": "chat:7"}, 401, "needs a grant or a subscription token"),
        ({"room": "news"}, 403, "only the back end may put a connection in news"),
        ({"room": "chat:7", "grant": "ab" * 32}, 400, "give chat:7 a subscription token"),
        ({"room": "chat:7", "grant": token(subscribe=["chat:8"])}, 403, "does not open chat:7"),
        ({"room": "no room!"}, 400, "room must be 1-64 letters"),
        ({"token": "not.a.token"}, 403, "the token is not valid"),
        ({"lastEventId": "42"}, 400, "Last-Event-ID must be an id this server sent"),
    ],
)
async def test_a_request_that_cannot_be_served_gets_a_4xx_saying_why(
    http: aiohttp.ClientSession, query: dict[str, str], status: int, says: str
) -> None:
    """Refusals are plain HTTP answers with a reason a person can read (EventSource
    does not reconnect after one)."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET, namespaces=NAMESPACES) as server:
        got, body = await status_of(http, events_url(server, **query))
        assert got == status, body
        assert says in body


async def test_a_bad_last_event_id_header_is_400_and_events_is_get_only(
    http: aiohttp.ClientSession,
) -> None:
    async with running_server(**FAST_TIMERS) as server:
        url = events_url(server)
        status, body = await status_of(http, url, headers={"Last-Event-ID": "abc/def"})
        assert (status, "Last-Event-ID" in body) == (400, True), body
        async with http.post(url) as response:
            assert (response.status, response.headers["Allow"]) == (405, "GET")


# Resuming


@pytest.mark.parametrize("given_as", ["header", "query"])
async def test_last_event_id_resumes_without_loss(
    http: aiohttp.ClientSession, given_as: str
) -> None:
    """A stream in all and room lobby:1 is cut after one push of each; three of each
    are pushed meanwhile; reopened with its last id (EventSource's header, or
    ?lastEventId= for a new EventSource) it gets the six, in order per stream,
    each once, then live pushes."""
    async with running_server(**FAST_TIMERS, namespaces=NAMESPACES) as server:
        url = events_url(server, room="lobby:1")
        async with open_events(http, url) as (stream, _):
            await push(http, server, "/push/all", val="all-1")
            await push(http, server, "/push/room", id="lobby:1", val="room-1")
            assert await stream.pushes(1) == ["all-1"]
            last = await stream.next_event()
            assert last.json()["data"] == "room-1"
        await server.server.gateway.wait_empty()  # the server saw it go
        for i in (2, 3, 4):
            await push(http, server, "/push/all", val=f"all-{i}")
            await push(http, server, "/push/room", id="lobby:1", val=f"room-{i}")
        assert last.id is not None
        if given_as == "header":
            reopened = open_events(http, url, headers={"Last-Event-ID": last.id})
        else:
            reopened = open_events(http, events_url(server, room="lobby:1", lastEventId=last.id))
        async with reopened as (stream, opened):
            assert (opened["resumed"], opened["recovered"]) == (True, True)
            got = await stream.pushes(6)
            assert [g for g in got if g.startswith("all")] == ["all-2", "all-3", "all-4"]
            assert [g for g in got if g.startswith("room")] == ["room-2", "room-3", "room-4"]
            await push(http, server, "/push/all", val="live")
            assert await stream.pushes(1) == ["live"]


async def test_a_position_history_no_longer_holds_is_reported_lost(
    http: aiohttp.ClientSession,
) -> None:
    """History keeps 2 pushes; 5 are sent while the stream is away: it gets the 2
    kept, then pushgate:lost for its all stream (and an id past them), then live
    pushes; reopened with that id it resumes cleanly."""
    async with running_server(**FAST_TIMERS, history_size=2) as server:
        async with open_events(http, events_url(server)) as (_, opened):
            first_id = opened["id"]
        await server.server.gateway.wait_empty()
        for i in range(5):
            await push(http, server, "/push/all", val=i)
        async with open_events(http, events_url(server), headers={"Last-Event-ID": first_id}) as (
            stream,
            opened,
        ):
            assert (opened["resumed"], opened["recovered"]) == (True, False)
            assert await stream.pushes(2) == [3, 4]
            lost = await stream.next_event()
            assert lost.event == "pushgate:lost"
            assert lost.json()["streams"]["all"]["recovered"] is False
            await push(http, server, "/push/all", val="live")
            live = await stream.next_event()
        async with open_events(http, events_url(server), headers={"Last-Event-ID": live.id}) as (
            _,
            opened,
        ):
            assert (opened["resumed"], opened["recovered"]) == (True, True)


async def test_an_id_made_for_other_streams_resumes_nothing_and_says_so(
    http: aiohttp.ClientSession,
) -> None:
    """A Last-Event-ID of a stream with other rooms: every stream is told lost (from
    where it is now), none is replayed from a position that is not its own."""
    async with running_server(**FAST_TIMERS, namespaces=NAMESPACES) as server:
        async with open_events(http, events_url(server, room="lobby:1")) as (_, opened):
            other_id = opened["id"]
        url = events_url(server, room="lobby:2")
        async with open_events(http, url, headers={"Last-Event-ID": other_id}) as (stream, opened):
            assert (opened["resumed"], opened["recovered"]) == (True, False)
            lost = await stream.next_event()
            assert lost.event == "pushgate:lost"
            assert set(lost.json()["streams"]) == {"all", "room:lobby:2"}


# Keeping a stream open, and closing it


async def test_a_quiet_stream_gets_heartbeat_comments(http: aiohttp.ClientSession) -> None:
    """With nothing to send for half the idle timeout, a ': ping' comment goes out."""
    async with (
        running_server(**FAST_TIMERS) as server,
        open_events(http, events_url(server)) as (stream, _),
    ):
        comment = await stream.next(timeout=5 * UNIT)
        assert comment is not None
        assert comment.comment == "ping"


async def test_a_drain_closes_a_stream_with_1012(http: aiohttp.ClientSession) -> None:
    async with (
        running_server(**FAST_TIMERS) as server,
        open_events(http, events_url(server)) as (stream, _),
    ):
        await server.server.gateway.drain(0)
        closed = await stream.next_event()
        assert (closed.event, closed.json()["code"]) == ("pushgate:close", 1012)
        assert await stream.next() is None


# Limits


async def test_the_origin_policy_applies(http: aiohttp.ClientSession) -> None:
    """A page of an Origin not allowed gets 403; an allowed one may read the stream
    cross-origin (CORS)."""
    async with running_server(**FAST_TIMERS, allowed_origins="https://app.example") as server:
        status, body = await status_of(
            http, events_url(server), headers={"Origin": "https://evil.example"}
        )
        assert (status, body) == (403, "Origin https://evil.example is not allowed to connect\n")
        headers = {"Origin": "https://app.example"}
        async with http.get(events_url(server), headers=headers) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"


@pytest.mark.parametrize(
    ("limit", "status", "says"),
    [("max_connections", 503, "server full"), ("max_connections_per_ip", 429, "too many")],
)
async def test_connection_caps_count_streams_until_they_end(
    http: aiohttp.ClientSession, limit: str, status: int, says: str
) -> None:
    """With a cap of 1, a second stream is refused while the first is open, and
    admitted once it has gone."""
    capped: dict[str, Any] = {**FAST_TIMERS, limit: 1}
    async with running_server(**capped) as server:
        async with open_events(http, events_url(server)):
            got, body = await status_of(http, events_url(server))
            assert (got, says in body) == (status, True), body
        await server.server.gateway.wait_empty()
        async with open_events(http, events_url(server)):
            pass


async def test_a_stream_that_does_not_read_is_dropped_and_stalls_nobody(
    http: aiohttp.ClientSession,
) -> None:
    """A stream whose client stops reading is closed (1008, slow consumer) once too
    much waits for it; a reading stream gets every push, in order."""
    limit = 256 * 1024
    settings = {**FAST_TIMERS, "close_timeout": 10.0}
    async with (
        running_server(**settings, max_output_bytes=limit) as server,
        AsyncExitStack() as stack,
    ):
        fast, _ = await stack.enter_async_context(open_events(http, events_url(server)))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((LOOPBACK, server.ws_port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        stack.callback(writer.close)
        writer.write(f"GET /events HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"event: pushgate:open"), 5 * UNIT)
        # From here on the slow client reads nothing.
        hub = server.server.node.hub
        got: asyncio.Queue[int] = asyncio.Queue()

        async def read_fast() -> None:  # all along, as a browser does
            while True:
                got.put_nowait((await fast.next_event(timeout=30 * UNIT)).json()["data"][0])

        reading = asyncio.create_task(read_fast())
        stack.callback(reading.cancel)
        val = "x" * 64 * 1024
        sent = 0
        async with asyncio.timeout(30 * UNIT):
            while len(hub) == 2:  # until the server lets go of the slow stream
                await push(http, server, "/push/all", val=[sent, val])
                sent += 1
                assert sent < 1000, "the slow stream was never closed"
            assert [await got.get() for _ in range(sent)] == list(range(sent))
        # The slow client, reading at last, finds its backlog and then the reason.
        async with asyncio.timeout(10 * UNIT):
            rest = await reader.read()
        assert b'event: pushgate:close\ndata: {"code":1008,"reason":"slow consumer' in rest
        assert server.server.node.meters.limits["max_output_bytes"] == 1


async def test_metrics_count_streams_by_transport(http: aiohttp.ClientSession) -> None:
    async with (
        running_server(**FAST_TIMERS) as server,
        open_events(http, events_url(server)),
        http.get(server.api_url + "/metrics") as response,
    ):
        text = await response.text()
        assert 'pushgate_connections_by_transport{protocol="pushgate",transport="sse"} 1.0' in text


# A cluster


async def cut_while_pushes_go_on(http: aiohttp.ClientSession, at: Running, via: Running) -> str:
    """A stream at ``at`` in room lobby:1 gets a push made at ``via``, r-1; cut, it
    misses r-2 and r-3 to the room and a-2 and a-3 to all. Its Last-Event-ID."""
    async with open_events(http, events_url(at, room="lobby:1")) as (stream, _):
        await push(http, via, "/push/room", id="lobby:1", val="r-1")
        last = await stream.next_event()
        assert last.json()["data"] == "r-1"
    await at.server.gateway.wait_empty()
    for i in (2, 3):
        await push(http, at, "/push/room", id="lobby:1", val=f"r-{i}")
        await push(http, at, "/push/all", val=f"a-{i}")
    return last.id or ""


async def resume_and_catch_up(
    http: aiohttp.ClientSession, at: Running, last_id: str, via: Running
) -> dict[str, Any]:
    """That stream resumes at ``at``: recovered, the four pushes it missed once each,
    in order per stream, then a live one made at ``via``. What it was opened with."""
    url = events_url(at, room="lobby:1")
    async with open_events(http, url, headers={"Last-Event-ID": last_id}) as (stream, opened):
        assert (opened["resumed"], opened["recovered"]) == (True, True)
        got = await stream.pushes(4)
        assert [p for p in got if p.startswith("r-")] == ["r-2", "r-3"]  # in order
        assert [p for p in got if p.startswith("a-")] == ["a-2", "a-3"]
        await push(http, via, "/push/room", id="lobby:1", val="live")
        assert await stream.pushes(1) == ["live"]
    return opened


async def test_a_stream_resumes_on_another_gateway_of_a_redis_cluster(
    http: aiohttp.ClientSession, module_redis: RedisServer
) -> None:
    """Two gateways on one redis-server: a stream on the first gets a push made at
    the second; cut, it resumes at the second with its Last-Event-ID and gets what
    was pushed meanwhile, then live pushes."""
    settings = {
        **FAST_TIMERS,
        "broker": module_redis.url,
        "prefix": "sse:",
        "node_ttl": 2.0,
        "namespaces": NAMESPACES,
    }
    async with running_server(**settings) as first, running_server(**settings) as second:
        last_id = await cut_while_pushes_go_on(http, first, second)
        opened = await resume_and_catch_up(http, second, last_id, first)
        assert first.server.node.hub.sink(ConnId(opened["wsId"])) is None


async def test_a_stream_resumes_from_its_gateways_memory_on_a_cluster(
    http: aiohttp.ClientSession, module_redis: RedisServer
) -> None:
    """A stream cut from a gateway of a cluster and back within the seconds the
    gateway keeps following its rooms (--unfollow-after) resumes with its
    Last-Event-ID without a history read in Redis: what it missed comes from what
    the gateway fanned out itself (recent.py), each push once, then live ones."""
    settings = {
        **FAST_TIMERS,
        "broker": module_redis.url,
        "prefix": "sse-recent:",
        "namespaces": NAMESPACES,
    }
    async with running_server(**settings) as server:
        node = server.server.node
        last_id = await cut_while_pushes_go_on(http, server, server)
        await node.broker.sync()  # every push made so far has reached the gateway
        reads: list[dict[str, Any]] = []
        real = node.broker.histories

        async def counted(since: Any) -> Any:
            reads.append(dict(since))
            return await real(since)

        node.broker.histories = counted  # type: ignore[method-assign]
        await resume_and_catch_up(http, server, last_id, server)
        assert reads == []
        assert node.meters.resume_histories["node"] == 2


async def test_a_stream_without_a_token_is_decided_by_the_connect_hook(
    http: aiohttp.ClientSession,
) -> None:
    """Where a connect hook decides handshakes without a token, it decides streams
    too: its user and rooms are the stream's; its refusal is the answer."""

    async def by_cookie(asked: dict[str, Any], hooked: Backend) -> object:
        if asked["cookies"].get("user") == "alice":
            return {"allow": True, "sub": "alice", "rooms": ["news"]}
        return {"allow": False, "status": 401, "reason": "log in first"}

    async with backend(by_cookie) as hook, running_server(**HOOKED, connect_hook=hook.url) as s:
        assert await status_of(http, events_url(s)) == (401, "log in first\n")
        cookie = {"Cookie": "user=alice"}
        async with open_events(http, events_url(s), headers=cookie) as (stream, opened):
            assert set(opened["streams"]) == {"all", "user:alice", "room:news"}
            assert opened["wsId"] == hook.asked[-1]["wsId"]
            await push(http, s, "/push/room", id="news", val="n")
            assert await stream.pushes(1) == ["n"]


async def test_a_stream_ends_when_its_grant_expires(http: aiohttp.ClientSession) -> None:
    """A room opened by a subscription token lasts until the token's exp: then the
    stream is closed, saying so (reopening with the old token is refused)."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET, namespaces=NAMESPACES) as server:
        grant = token(subscribe=["chat:*"], exp=int(time.time()) + 1)
        url = events_url(server, room="chat:1", grant=grant)
        async with open_events(http, url) as (stream, _):
            closed = await stream.next_event(timeout=10 * UNIT)
            assert closed.event == "pushgate:close"
            assert "expired" in closed.json()["reason"]


# A browser


async def test_a_browsers_eventsource_resumes_by_itself_without_loss(
    browser: "Browser", http: aiohttp.ClientSession
) -> None:
    """Headless Chromium's own EventSource: pushes arrive; the back end cuts the
    stream (/disconnect); what is pushed before EventSource reconnects (by itself,
    with its Last-Event-ID) arrives once it has, then live pushes."""
    async with running_server(**FAST_TIMERS, namespaces=NAMESPACES) as server:
        page = await browser.new_page()
        await page.goto(f"http://{LOOPBACK}:{server.ws_port}/healthz", timeout=WAIT_MS)
        await page.evaluate(
            """url => {
                window.got = []; window.opens = []; window.closes = [];
                const source = new EventSource(url);
                source.onmessage = (e) => got.push(JSON.parse(e.data).data);
                source.addEventListener("pushgate:open", (e) => opens.push(JSON.parse(e.data)));
                source.addEventListener("pushgate:close", (e) => closes.push(JSON.parse(e.data)));
            }""",
            events_url(server, room="lobby:1"),
        )
        await page.wait_for_function("opens.length === 1", timeout=WAIT_MS)
        ws_id = await page.evaluate("opens[0].wsId")
        await push(http, server, "/push/room", id="lobby:1", val="before")
        await page.wait_for_function("got.length === 1", timeout=WAIT_MS)
        await post(http, server.api_url + "/disconnect", json={"wsId": ws_id})
        await page.wait_for_function("closes.length === 1", timeout=WAIT_MS)
        for i in range(3):
            await push(http, server, "/push/room", id="lobby:1", val=f"away-{i}")
        await page.wait_for_function("opens.length === 2 && got.length === 4", timeout=WAIT_MS)
        await push(http, server, "/push/all", val="after")
        await page.wait_for_function("got.length === 5", timeout=WAIT_MS)
        assert await page.evaluate("got") == ["before", "away-0", "away-1", "away-2", "after"]
        resumed = await page.evaluate("opens[1]")
        assert (resumed["resumed"], resumed["recovered"]) == (True, True)
        assert await page.evaluate("closes[0].code") == 4000


async def test_without_history_events_carry_no_id_and_a_resume_is_told_lost(
    http: aiohttp.ClientSession,
) -> None:
    """--history-size 0: pushes come without an id (nothing could resume them), and
    a Last-Event-ID (of a server that kept history) is answered with pushgate:lost."""
    async with running_server(**FAST_TIMERS, history_size=0) as server:
        old_id = "00000000/9f2c1a7e:3"
        async with open_events(http, events_url(server), headers={"Last-Event-ID": old_id}) as (
            stream,
            opened,
        ):
            assert (opened["id"], opened["resumed"], opened["recovered"]) == (None, True, False)
            lost = await stream.next_event()
            assert (lost.event, lost.id) == ("pushgate:lost", None)
            await push(http, server, "/push/all", val="no id")
            event = await stream.next_event()
            assert (event.id, event.json()["data"]) == (None, "no id")
