"""The connect hook (docs/connect-hook.md): a real aiohttp back end on a free
loopback port decides on the handshakes of a real gateway. What it is asked, its
allow and deny, its failures and the policy for them, resumes bound to its user,
and the cap on calls in flight."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from pushgate.config import Config
from pushgate.errors import ConfigError
from pushgate.hookverdict import MalformedAnswer, parse_answer, parse_cookies
from pushgate.ids import RoomId
from pushgate.security import Claims, Refusal
from tests.helpers import FAST_TIMERS, LOOPBACK, UNIT, free_port, post, running_server
from tests.test_subscriptions import Client

# The handshake timeout is long here, so that a loaded machine is no hook failure.
SETTINGS: dict[str, Any] = {
    **FAST_TIMERS,
    "handshake_timeout": 5 * UNIT,
    "connect_hook_timeout": 2 * UNIT,
    "session_ttl": 5 * UNIT,
}


@dataclass
class Backend:
    """A back end answering POST /hook; it keeps what it was asked."""

    url: str
    asked: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a call came
    release: asyncio.Event = field(default_factory=asyncio.Event)  # for answers that wait
    dropped: asyncio.Event = field(default_factory=asyncio.Event)  # a call was dropped


# What the back end answers what it is asked: a verdict (sent as JSON) or a response.
Answer = Callable[[dict[str, Any], Backend], Awaitable[Any]]


@asynccontextmanager
async def backend(answer: Answer) -> AsyncIterator[Backend]:
    """Serve ``answer`` (a verdict to send as JSON, or a response) on a free port.
    A handler whose caller hangs up is cancelled, and says so (``dropped``)."""
    app = web.Application()

    async def hook(request: web.Request) -> web.StreamResponse:
        asked = await request.json()
        hooked.asked.append(asked)
        hooked.arrived.set()
        try:
            answered = await answer(asked, hooked)
        except asyncio.CancelledError:
            hooked.dropped.set()
            raise
        if isinstance(answered, web.StreamResponse):
            return answered
        return web.json_response(answered)

    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    hooked = Backend(f"http://{LOOPBACK}:{runner.addresses[0][1]}/hook")
    try:
        yield hooked
    finally:
        hooked.release.set()  # no handler waits past the test
        await runner.cleanup()


def always(answer: object) -> Answer:
    async def answering(asked: dict[str, Any], hooked: Backend) -> object:
        return answer

    return answering


async def by_cookie(asked: dict[str, Any], hooked: Backend) -> object:
    """Alice and Bob by their "user" cookie; nobody else."""
    user = asked["cookies"].get("user")
    if user in ("alice", "bob"):
        return {"allow": True, "sub": user}
    return {"allow": False, "status": 401, "reason": "log in first"}


async def refused(url: str, **kwargs: Any) -> tuple[int, str]:
    """The status and body of a refused handshake (fails if the WebSocket opens)."""
    with pytest.raises(InvalidStatus) as refusal:
        async with connect(url, open_timeout=5 * UNIT, **kwargs):
            pass
    response = refusal.value.response
    return response.status_code, response.body.decode()


@asynccontextmanager
async def client(url: str, cookie: str | None = None) -> AsyncIterator[Client]:
    headers = {"Cookie": cookie} if cookie else {}
    async with connect(url, open_timeout=5 * UNIT, additional_headers=headers) as ws:
        yield Client(ws, await welcome_of(ws))


async def welcome_of(ws: ClientConnection) -> dict[str, Any]:
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
    assert welcome["type"] == 0, welcome
    data: dict[str, Any] = welcome["data"]
    return data


# Allow and deny


async def test_an_allowed_client_is_the_hooks_user_in_its_rooms(
    http: aiohttp.ClientSession,
) -> None:
    """The hook's sub, rooms and info are the connection's, as a token's would be: it
    is told the wsId the client gets; the client is in its rooms from the welcome
    on, pushes to them and to its user arrive, and presence shows its info."""
    allow = {"allow": True, "sub": "alice", "rooms": ["news", "chat:1"], "info": {"name": "A"}}
    async with (
        backend(always(allow)) as hook,
        running_server(**SETTINGS, connect_hook=hook.url, namespaces="chat=public+presence") as s,
        client(s.ws_url + "?v=2") as alice,
    ):
        assert alice.ws_id == hook.asked[0]["wsId"]
        assert alice.welcome["rooms"] == ["news", "chat:1"]
        reply = await alice.op("presence", "chat:1")
        assert reply["presence"]["members"] == [{"user": "alice", "info": {"name": "A"}}]
        status, body = await post(
            http, s.api_url + "/push/room", json={"id": "news", "val": "n", "tag": 5}
        )
        assert (status, body["delivered"]) == (200, 1)
        status, body = await post(
            http, s.api_url + "/push/user", json={"uid": "alice", "val": "u", "tag": 6}
        )
        assert (status, body["delivered"]) == (200, 1)
        pushes = [await alice.next() for _ in range(3)]
        assert {"type": 5, "data": "n", "room": "news"} in pushes
        assert {"type": 6, "data": "u", "user": "alice"} in pushes
        async with http.get(f"{s.api_url}/connections/{alice.ws_id}") as response:
            described = await response.json()
        assert (described["user"], sorted(described["rooms"])) == ("alice", ["chat:1", "news"])
        async with http.get(s.api_url + "/metrics") as response:
            metrics = await response.text()
        assert 'pushgate_connect_hook_calls_total{outcome="allow"} 1.0' in metrics
        assert "pushgate_connect_hook_duration_seconds_count 1.0" in metrics


async def test_a_denied_client_gets_the_hooks_status_and_reason() -> None:
    """A deny is answered with its 4xx and its reason (403 and a default reason
    when it names none), and no WebSocket is opened; counted as a refusal."""

    async def deny(asked: dict[str, Any], hooked: Backend) -> object:
        if "why" in asked["query"]:
            return {"allow": False, "status": 401, "reason": "log in first"}
        return {"allow": False}

    async with (
        backend(deny) as hook,
        running_server(**SETTINGS, connect_hook=hook.url) as server,
    ):
        assert await refused(server.ws_url + "?why=1") == (401, "log in first\n")
        assert await refused(server.ws_url) == (403, "refused by the connect hook\n")
        meters = server.server.node.meters
        assert meters.hook_calls["deny"] == 2
        assert meters.refused["connect_hook_denied"] == 2


async def test_the_hook_is_told_the_headers_cookies_query_and_address() -> None:
    """Every header (lower-cased; Cookie and Authorization too), the cookies parsed,
    the query as lists, the method, path and client address, and the wsId."""
    async with (
        backend(always({"allow": True})) as hook,
        running_server(**SETTINGS, connect_hook=hook.url) as server,
    ):
        url = server.ws_url + "?x=1&x=2&empty="
        headers = {
            "Cookie": 'session=abc123; theme="dark"',
            "Authorization": "Bearer app-token",
            "X-Forwarded-For": "203.0.113.7",
        }
        async with connect(url, open_timeout=5 * UNIT, additional_headers=headers) as ws:
            welcome = await welcome_of(ws)
        host = f"{LOOPBACK}:{server.ws_port}"
    (asked,) = hook.asked
    assert asked["method"] == "GET"
    assert asked["path"] == "/connect"
    assert asked["query"] == {"x": ["1", "2"], "empty": [""]}
    assert asked["cookies"] == {"session": "abc123", "theme": "dark"}
    assert asked["headers"]["cookie"] == headers["Cookie"]
    assert asked["headers"]["authorization"] == "Bearer app-token"
    assert asked["headers"]["x-forwarded-for"] == "203.0.113.7"
    assert asked["headers"]["host"] == host
    assert all(name == name.lower() for name in asked["headers"])
    assert asked["remote"]["ip"] == LOOPBACK
    assert isinstance(asked["remote"]["port"], int)
    assert (asked["wsId"], asked["resume"]) == (welcome["wsId"], False)


async def test_a_token_decides_alone_where_tokens_are_verified() -> None:
    """A handshake with a valid token is not asked about; one without is."""
    secret = "a-connect-hook-test-secret-32-bytes!"
    async with (
        backend(always({"allow": True, "sub": "from-hook"})) as hook,
        running_server(**SETTINGS, connect_hook=hook.url, token_secret=secret) as server,
    ):
        token = jwt.encode({"sub": "from-token"}, secret, algorithm="HS256")
        async with client(f"{server.ws_url}?token={token}"):
            pass
        assert hook.asked == []
        async with client(server.ws_url):
            pass
        assert len(hook.asked) == 1


async def test_frames_sent_before_the_answer_wait_for_the_verdict() -> None:
    """A client that sends a PING with its handshake, in one write, has it answered
    once it is let in, after its welcome."""
    async with (
        backend(always({"allow": True})) as hook,
        running_server(**SETTINGS, connect_hook=hook.url) as server,
    ):
        proto = ClientProtocol(parse_uri(server.ws_url))
        proto.send_request(proto.connect())
        ping = Frame(Opcode.TEXT, b'{"type":1,"data":"PING"}').serialize(mask=True)
        reader, writer = await asyncio.open_connection(LOOPBACK, server.ws_port)
        writer.write(b"".join(proto.data_to_send()) + ping)
        events: list[Any] = []
        async with asyncio.timeout(5 * UNIT):
            while len(events) < 3:
                proto.receive_data(await reader.read(65536))
                events += proto.events_received()
        writer.close()
        assert isinstance(events[0], Response)
        assert events[0].status_code == 101
        assert json.loads(events[1].data)["type"] == 0
        assert json.loads(events[2].data) == {"type": 1, "data": "PONG"}


# Failures


async def test_a_hook_that_is_down_refuses_with_503_or_allows_by_the_policy(
    caplog: pytest.LogCaptureFixture, http: aiohttp.ClientSession
) -> None:
    """Nothing listens at the hook's URL: 503 by default, logged with the cause and
    counted; with --connect-hook-failure allow, the client is let in without a user."""
    caplog.set_level(logging.WARNING, logger="pushgate.connecthook")
    down = f"http://{LOOPBACK}:{free_port()}/hook"
    async with running_server(**SETTINGS, connect_hook=down) as server:
        status, body = await refused(server.ws_url)
        assert status == 503
        assert "authenticated" in body
        meters = server.server.node.meters
        assert (meters.hook_calls["failure"], meters.hook_failures["unreachable"]) == (1, 1)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pushgate.connecthook"]
    assert line.startswith(f"connect hook {down} failed for the handshake from {LOOPBACK}:")
    assert "cannot be reached" in line
    assert "refused it with 503 (--connect-hook-failure deny)" in line
    async with (
        running_server(**SETTINGS, connect_hook=down, connect_hook_failure="allow") as server,
        client(server.ws_url) as anonymous,
        http.get(f"{server.api_url}/connections/{anonymous.ws_id}") as response,
    ):
        assert (await response.json())["user"] is None


@pytest.mark.parametrize(("policy", "opens"), [("deny", False), ("allow", True)])
async def test_a_slow_hook_times_out_into_the_policy(policy: str, opens: bool) -> None:
    """A hook that does not answer within --connect-hook-timeout fails: its call is
    dropped, and the policy decides."""

    async def never(asked: dict[str, Any], hooked: Backend) -> object:
        await hooked.release.wait()
        return {"allow": True}

    async with (
        backend(never) as hook,
        running_server(
            **{**SETTINGS, "connect_hook_timeout": 0.2},
            connect_hook=hook.url,
            connect_hook_failure=policy,
        ) as server,
    ):
        if opens:
            async with client(server.ws_url):
                pass
        else:
            assert (await refused(server.ws_url))[0] == 503
        await asyncio.wait_for(hook.dropped.wait(), 5 * UNIT)
        assert server.server.node.meters.hook_failures["timeout"] == 1


async def test_a_malformed_answer_is_a_failure_that_says_what_was_wrong(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Answers that are no verdict fail (503): the first is logged at once with what
    was wrong, the rest of the interval counted into one line (at the stop here)."""
    caplog.set_level(logging.WARNING, logger="pushgate.connecthook")
    answers: list[Any] = [
        web.Response(text="<html>login</html>"),
        {"allow": True, "rooms": "news"},
        web.Response(status=500),
        {"allow": False, "status": 500},
    ]

    async def malformed(asked: dict[str, Any], hooked: Backend) -> object:
        return answers[len(hooked.asked) - 1]

    async with (
        backend(malformed) as hook,
        running_server(**SETTINGS, connect_hook=hook.url) as server,
    ):
        for _ in answers:
            assert (await refused(server.ws_url))[0] == 503
        failures = server.server.node.meters.hook_failures
        assert (failures["malformed"], failures["status"]) == (3, 1)
    first, counted = [r.getMessage() for r in caplog.records if r.name == "pushgate.connecthook"]
    assert "answered no verdict: the answer is not JSON: '<html>login</html>'" in first
    assert counted.startswith("3 more connect hook failures in the last 10 s; the last: ")
    assert '"status" must be an HTTP status from 400 to 499, got 500' in counted


# Resumes and load


async def test_a_resume_is_bound_to_the_hooks_user() -> None:
    """Alice's session, resumed with its session token by a client the hook says is
    Bob, is not resumed (a new wsId); by Alice it is, and her old connection ends."""
    async with (
        backend(by_cookie) as hook,
        running_server(**SETTINGS, connect_hook=hook.url) as server,
        client(server.ws_url, "user=alice") as alice,
    ):
        resume = {"wsId": alice.ws_id, "session": alice.welcome["session"], "since": {}}
        async with connect(
            server.ws_url + "?resume=1", additional_headers={"Cookie": "user=bob"}
        ) as bob:
            await bob.send(json.dumps({"type": 0, "data": resume}))
            answer = await welcome_of(bob)
        assert (answer["resumed"], answer["wsId"] != alice.ws_id) == (False, True)
        assert hook.asked[-1]["resume"] is True
        assert answer["wsId"] == hook.asked[-1]["wsId"]  # the new session's, as told
        async with connect(
            server.ws_url + "?resume=1", additional_headers={"Cookie": "user=alice"}
        ) as again:
            await again.send(json.dumps({"type": 0, "data": resume}))
            answer = await welcome_of(again)
            assert (answer["resumed"], answer["wsId"]) == (True, alice.ws_id)
            await asyncio.wait_for(alice.ws.wait_closed(), 5 * UNIT)
            assert alice.ws.close_code == 4001


async def test_over_the_calls_in_flight_a_handshake_is_503_at_once() -> None:
    """With one call in flight allowed and the hook holding it, the next handshake
    is 503 at once (counted as the limit); the first is let in once answered."""

    async def held(asked: dict[str, Any], hooked: Backend) -> object:
        await hooked.release.wait()
        return {"allow": True}

    async with (
        backend(held) as hook,
        running_server(**SETTINGS, connect_hook=hook.url, connect_hook_max_calls=1) as server,
    ):
        first = asyncio.ensure_future(connect(server.ws_url, open_timeout=5 * UNIT))
        await asyncio.wait_for(hook.arrived.wait(), 5 * UNIT)
        status, body = await refused(server.ws_url)
        assert (status, "too many handshakes" in body) == (503, True)
        assert server.server.node.meters.limits["connect_hook_max_calls"] == 1
        hook.release.set()
        ws = await first
        assert (await welcome_of(ws))["wsId"] == hook.asked[0]["wsId"]
        await ws.close()
        assert len(hook.asked) == 1


async def test_a_client_that_goes_while_the_hook_decides_costs_nothing_after() -> None:
    """The hook's call for a client that hung up is dropped, its place freed."""

    async def held(asked: dict[str, Any], hooked: Backend) -> object:
        await hooked.release.wait()
        return {"allow": True}

    async with (
        backend(held) as hook,
        running_server(**SETTINGS, connect_hook=hook.url, connect_hook_max_calls=1) as server,
    ):
        proto = ClientProtocol(parse_uri(server.ws_url))
        proto.send_request(proto.connect())
        _, writer = await asyncio.open_connection(LOOPBACK, server.ws_port)
        writer.write(b"".join(proto.data_to_send()))
        await asyncio.wait_for(hook.arrived.wait(), 5 * UNIT)
        writer.close()
        await asyncio.wait_for(hook.dropped.wait(), 5 * UNIT)
        await asyncio.wait_for(server.server.gateway.wait_empty(), 5 * UNIT)
        assert server.server.node.meters.hook_calls == {"allow": 0, "deny": 0, "failure": 0}


# The answer, and the options


@pytest.mark.parametrize(
    ("answer", "wrong"),
    [
        (b"[]", "must be a JSON object"),
        (b"{}", '"allow" must be true or false, got None'),
        (b'{"allow": 1}', '"allow" must be true or false'),
        (b'{"allow": true, "room": ["a"]}', "an allow may not say 'room'"),
        (b'{"allow": false, "sub": "a"}', "a deny may not say 'sub'"),
        (b'{"allow": true, "sub": ""}', '"sub" must be 1-'),
        (b'{"allow": true, "sub": 7}', '"sub" must be 1-'),
        (b'{"allow": true, "rooms": ["a b"]}', '"rooms" must be a list of room ids'),
        (b'{"allow": true, "rooms": ["a", "b", "c"]}', '"rooms" names 3 rooms'),
        (b'{"allow": true, "info": [1]}', '"info" must be a JSON object'),
        (b'{"allow": true, "info": {"x": "' + b"y" * 2000 + b'"}}', '"info" is over'),
        (b'{"allow": false, "status": 302}', '"status" must be an HTTP status'),
        (b'{"allow": false, "status": true}', '"status" must be an HTTP status'),
        (b'{"allow": false, "reason": "a\\nb"}', '"reason" must be 1-256 printable'),
    ],
)
def test_answers_that_are_no_verdict(answer: bytes, wrong: str) -> None:
    with pytest.raises(MalformedAnswer) as malformed:
        parse_answer(answer, max_rooms=2)
    assert wrong in str(malformed.value)


def test_verdicts() -> None:
    assert parse_answer(b'{"allow": true}', max_rooms=2) == Claims(None, ())
    assert parse_answer(
        b'{"allow": true, "sub": "u", "rooms": ["a", "a", "b"], "info": {"n": 1}}', max_rooms=2
    ) == Claims("u", (RoomId("a"), RoomId("b")), '{"n":1}')
    assert parse_answer(b'{"allow": false, "status": 429, "reason": "later"}', max_rooms=2) == (
        Refusal(429, "later", "connect_hook_denied")
    )


def test_cookies_are_parsed_as_web_frameworks_do() -> None:
    assert parse_cookies('a=1; b="two"; a=3; junk; =x; c=') == {"a": "1", "b": "two", "c": ""}


@pytest.mark.parametrize(
    ("settings", "wrong"),
    [
        ({"connect_hook": "ftp://hooks.example/x"}, "--connect-hook must be an http://"),
        ({"connect_hook": "http://[::1/x"}, "--connect-hook must be an http://"),
        ({"connect_hook_failure": "maybe"}, "--connect-hook-failure must be deny or allow"),
        ({"connect_hook_max_calls": 0}, "--connect-hook-max-calls must be at least 1"),
        (
            {"connect_hook": "http://h/x", "require_token": True, "token_secret": "s" * 32},
            "give one or the other",
        ),
        (
            {"connect_hook": "http://h/x", "connect_hook_timeout": 10.0},
            "--connect-hook-timeout (10 s) must be shorter than --handshake-timeout (10 s)",
        ),
    ],
)
def test_options_that_cannot_work_are_refused(settings: dict[str, Any], wrong: str) -> None:
    with pytest.raises(ConfigError) as refusal:
        Config(**settings)
    assert wrong in str(refusal.value)
