"""Pusher's HTTP API on the logic API's port (docs/pusher.md), called by the real
server libraries, the `pusher` package for Python and for Node, and heard by real
pusher-js clients: triggering, batches, exclusion by socket_id, channel queries,
terminating a user's connections, and what a wrong signature or a request over
Pusher's limits gets. The last test runs two gateways and a logic node on Redis."""

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pusher.errors
import pytest
from pusher.http import POST, Request

from tests.helpers import FAST_TIMERS, UNIT, Running, post, running_server, server_process
from tests.pusher.harness import PusherJs, node_server_call, pusher_js
from tests.redis_server import RedisServer
from tests.test_openapi import CHECKS

# The Python library takes numeric app ids only.
APP = ("4242", "key4242", "secret-of-app-4242")
OTHER = ("77", "key77", "secret-of-app-77-77")
SPEC = ",".join(":".join(app) for app in (APP, OTHER))
TIMERS = {**FAST_TIMERS, "heartbeat": 1.0, "idle_timeout": 5.0}


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    async with running_server(pusher_app=SPEC, **TIMERS) as running:
        yield running


class PythonLib:
    """The `pusher` Python library (blocking, on requests) run in a thread, so that
    the server in this test's event loop answers it."""

    def __init__(self, api_port: int, app: tuple[str, str, str] = APP) -> None:
        app_id, key, secret = app
        self.client = pusher.Pusher(
            app_id=app_id, key=key, secret=secret, ssl=False, host="127.0.0.1", port=api_port
        )

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.client, method), *args, **kwargs)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """A POST the library signs but does not check (to test the server's limits)."""
        inner = self.client._pusher_client
        request = Request(inner, POST, f"/apps/{inner.app_id}{path}", body)
        return await asyncio.to_thread(inner.http.send_request, request)

    def close(self) -> None:
        self.client._pusher_client.http.session.close()


@contextmanager
def python_lib(api_port: int, app: tuple[str, str, str] = APP) -> Iterator[PythonLib]:
    lib = PythonLib(api_port, app)
    try:
        yield lib
    finally:
        lib.close()


async def subscribed(client: PusherJs, *channels: str, **member: Any) -> str:
    """Connect, subscribe to ``channels``; the client's socket_id."""
    socket_id = await client.connected()
    for channel in channels:
        await client.subscribed(channel, **member)
    return socket_id


def data_of(lines: list[dict[str, Any]]) -> list[Any]:
    return [line["data"] for line in lines]


# Triggering, with the Python library


async def test_an_event_reaches_its_channel(server: Running) -> None:
    ws_port, api_port = server.ws_port, server.api_port
    async with pusher_js(ws_port, APP) as client:
        await subscribed(client, "news")
        with python_lib(api_port) as lib:
            assert await lib("trigger", "news", "headline", {"text": "hi"}) == {}
        heard = await client.hears("news", "headline")
    assert data_of(heard) == [{"text": "hi"}]


async def test_an_event_to_several_channels_reaches_each(server: Running) -> None:
    ws_port, api_port = server.ws_port, server.api_port
    async with pusher_js(ws_port, APP) as ann, pusher_js(ws_port, APP) as bob:
        await asyncio.gather(subscribed(ann, "a", "b"), subscribed(bob, "b", "private-c"))
        with python_lib(api_port) as lib:
            await lib("trigger", ["a", "b", "private-c"], "tick", "one")
        assert data_of(await ann.hears("a", "tick")) == ["one"]
        assert data_of(await ann.hears("b", "tick")) == ["one"]
        assert data_of(await bob.hears("b", "tick")) == ["one"]
        assert data_of(await bob.hears("private-c", "tick")) == ["one"]


async def test_socket_id_leaves_out_that_connection(server: Running) -> None:
    """The sender's own socket_id (a back end relaying its action) does not hear it;
    the others do."""
    ws_port, api_port = server.ws_port, server.api_port
    async with pusher_js(ws_port, APP) as sender, pusher_js(ws_port, APP) as other:
        sender_id, _ = await asyncio.gather(subscribed(sender, "room"), subscribed(other, "room"))
        with python_lib(api_port) as lib:
            await lib("trigger", "room", "said", "hello", socket_id=sender_id)
            await lib("trigger", "room", "said", "after")  # to everyone: a fence
        assert data_of(await other.hears("room", "said", 2)) == ["hello", "after"]
        # Pushes to a channel arrive in order: once "after" is in, "hello" never comes.
        assert data_of(await sender.hears("room", "said")) == ["after"]


async def test_a_batch_arrives_in_order(server: Running) -> None:
    ws_port, api_port = server.ws_port, server.api_port
    async with pusher_js(ws_port, APP) as client:
        await subscribed(client, "feed", "other")
        batch = [{"channel": "feed", "name": "item", "data": {"n": n}} for n in range(5)]
        batch.append({"channel": "other", "name": "item", "data": "last"})
        with python_lib(api_port) as lib:
            assert await lib("trigger_batch", batch) == {}
        assert data_of(await client.hears("feed", "item", 5)) == [{"n": n} for n in range(5)]
        assert data_of(await client.hears("other", "item")) == ["last"]


# Queries, with the Python library


async def test_channels_and_their_counts(server: Running) -> None:
    ws_port, api_port = server.ws_port, server.api_port
    async with (
        pusher_js(ws_port, APP) as ann,
        pusher_js(ws_port, APP) as bob,
        pusher_js(ws_port, APP) as ann_again,
    ):
        await asyncio.gather(
            subscribed(ann, "presence-chat", user_id="ann"),
            subscribed(bob, "presence-chat", "news", user_id="bob"),
            subscribed(ann_again, "presence-chat", user_id="ann"),
        )
        with python_lib(api_port) as lib:
            everything = await lib("channels_info")
            presence = await lib("channels_info", "presence-", ["user_count"])
            chat = await lib("channel_info", "presence-chat", ["user_count", "subscription_count"])
            empty = await lib("channel_info", "nobody-here")
            users = await lib("users_info", "presence-chat")
    assert everything == {"channels": {"news": {}, "presence-chat": {}}}
    assert presence == {"channels": {"presence-chat": {"user_count": 2}}}
    # Two users, three subscriptions (Ann is there twice).
    assert chat == {"occupied": True, "user_count": 2, "subscription_count": 3}
    assert empty == {"occupied": False}
    assert sorted(user["id"] for user in users["users"]) == ["ann", "bob"]


async def test_an_apps_channels_are_its_own(server: Running) -> None:
    """Another app's channel of the same name is another room: listed and triggered
    on its own."""
    ws_port, api_port = server.ws_port, server.api_port
    async with pusher_js(ws_port, APP) as mine, pusher_js(ws_port, OTHER) as other:
        await asyncio.gather(subscribed(mine, "news", "sport"), subscribed(other, "news"))
        with python_lib(api_port) as lib, python_lib(api_port, OTHER) as other_lib:
            assert await lib("channels_info") == {"channels": {"news": {}, "sport": {}}}
            assert await other_lib("channels_info") == {"channels": {"news": {}}}
            await lib("trigger", "news", "for-4242", "x")
            await other_lib("trigger", "news", "for-77", "y")
        assert data_of(await mine.hears("news", "for-4242")) == ["x"]
        assert data_of(await other.hears("news", "for-77")) == ["y"]
        assert mine.heard("news", "for-77") == other.heard("news", "for-4242") == []


async def test_user_count_is_for_presence_channels_only(server: Running) -> None:
    with python_lib(server.api_port) as lib:
        with pytest.raises(pusher.errors.PusherBadRequest, match="only for presence"):
            await lib("channel_info", "news", ["user_count"])
        with pytest.raises(pusher.errors.PusherBadRequest, match="presence-"):
            await lib("channels_info", "private-", ["user_count"])
        with pytest.raises(pusher.errors.PusherBadRequest, match="only for presence"):
            await lib("users_info", "news")


async def test_terminating_a_user_closes_its_connections_only(server: Running) -> None:
    """The Python library's terminate_user_connections (its path has no /apps/ID):
    every connection in the app's presence channels as that user is closed with
    4009, which pusher-js does not reconnect after; the others stay."""
    ws_port, api_port = server.ws_port, server.api_port
    async with (
        pusher_js(ws_port, APP) as ann,
        pusher_js(ws_port, APP) as ann_again,
        pusher_js(ws_port, APP) as bob,
    ):
        await asyncio.gather(
            subscribed(ann, "presence-chat", user_id="ann"),
            subscribed(ann_again, "presence-lobby", user_id="ann"),
            subscribed(bob, "presence-chat", user_id="bob"),
        )
        with python_lib(api_port) as lib:
            assert await lib("terminate_user_connections", "ann") == {}
            await asyncio.gather(ann.state("disconnected"), ann_again.state("disconnected"))
            await bob.hears("presence-chat", "pusher:member_removed")
            assert (await lib("users_info", "presence-chat")) == {"users": [{"id": "bob"}]}
        assert not bob.reached("disconnected")


# Refusals


async def test_a_wrong_secret_is_refused_and_sends_nothing(server: Running) -> None:
    ws_port, api_port = server.ws_port, server.api_port
    async with pusher_js(ws_port, APP) as client:
        await subscribed(client, "news")
        wrong = (APP[0], APP[1], "not-the-secret-of-4242")
        with python_lib(api_port, wrong) as lib:
            with pytest.raises(pusher.errors.PusherBadAuth, match="Invalid signature"):
                await lib("trigger", "news", "forged", "x")
            with pytest.raises(pusher.errors.PusherBadAuth, match="Invalid signature"):
                await lib("channels_info")
        with python_lib(api_port) as lib:
            await lib("trigger", "news", "real", "y")
        await client.hears("news", "real")
        assert client.heard("news", "forged") == []


async def test_pushers_limits(server: Running) -> None:
    """10 KB of data, 10 events a batch, 100 channels an event: each refusal says
    which, and nothing of a refused batch is sent."""
    with python_lib(server.api_port) as lib:
        big = {"name": "e", "channels": ["news"], "data": "x" * (10 * 1024 + 1)}
        with pytest.raises(pusher.errors.PusherBadStatus, match=r"413.*over this app's limit"):
            await lib.post("/events", big)
        batch = [{"channel": "news", "name": "e", "data": "x"}] * 11
        with pytest.raises(pusher.errors.PusherBadRequest, match="Batch too large"):
            await lib.post("/batch_events", {"batch": batch})
        many = {"name": "e", "channels": [f"c{n}" for n in range(101)], "data": "x"}
        with pytest.raises(pusher.errors.PusherBadRequest, match="at most 100"):
            await lib.post("/events", many)
        bad_socket = {"name": "e", "channel": "news", "data": "x", "socket_id": "1.2.3"}
        with pytest.raises(pusher.errors.PusherBadRequest, match="socket_id"):
            await lib.post("/events", bad_socket)
        no_data = {"name": "e", "channel": "news", "data": {"not": "a string"}}
        with pytest.raises(pusher.errors.PusherBadRequest, match="data must be a string"):
            await lib.post("/events", no_data)


async def test_unsigned_expired_and_unknown_app_requests(
    server: Running, http: aiohttp.ClientSession
) -> None:
    base = server.api_url
    async with http.post(base + "/apps/4242/events", json={"name": "e"}) as response:
        assert response.status == 401
        assert "Missing auth_key" in await response.text()
    async with http.get(base + "/apps/9999/channels") as response:
        assert response.status == 404
        assert "Unknown app id '9999'" in await response.text()
    stale = "auth_key=key4242&auth_timestamp=1000000000&auth_version=1.0&auth_signature=00"
    async with http.get(f"{base}/apps/4242/channels?{stale}") as response:
        assert response.status == 401
        assert "Timestamp expired" in await response.text()


# The Node library


async def test_the_node_library_triggers_and_asks_counts_back(server: Running) -> None:
    ws_port, api_port = server.ws_port, server.api_port
    async with pusher_js(ws_port, APP) as ann, pusher_js(ws_port, APP) as bob:
        await asyncio.gather(subscribed(ann, "news"), subscribed(bob, "news"))
        result = await node_server_call(
            api_port,
            APP,
            op="trigger",
            channels=["news", "empty"],
            event="headline",
            data={"text": "from node"},
            params={"info": "subscription_count"},
        )
        assert result == {
            "status": 200,
            "body": {
                "channels": {"news": {"subscription_count": 2}, "empty": {"subscription_count": 0}}
            },
        }
        for client in (ann, bob):
            assert data_of(await client.hears("news", "headline")) == [{"text": "from node"}]


async def test_the_node_library_terminates_a_user(server: Running) -> None:
    """terminateUserConnections closes the connections signed in as the user (and
    those in a presence channel as it), wherever they are; others stay."""
    ws_port, api_port = server.ws_port, server.api_port
    async with pusher_js(ws_port, APP) as ann, pusher_js(ws_port, APP) as ann_too:
        await subscribed(ann, "presence-chat", user_id="ann")
        await ann_too.connected()
        ann_too.send(op="signin", user={"id": "ann"})
        await ann_too.until(lambda line: line["kind"] == "signed_in")
        async with pusher_js(ws_port, APP) as bob:
            await subscribed(bob, "presence-chat", user_id="bob")
            result = await node_server_call(
                api_port, APP, op="terminateUserConnections", user="ann"
            )
            assert result == {"status": 200, "body": {}}
            await ann.state("disconnected")
            await ann_too.state("disconnected")
            assert not bob.reached("disconnected")


async def test_the_node_library_sends_to_a_signed_in_user(server: Running) -> None:
    """sendToUser reaches every connection signed in as that user of the app, as
    the event it names on the user's own channel; not another user."""
    ws_port, api_port = server.ws_port, server.api_port
    async with pusher_js(ws_port, APP) as ann, pusher_js(ws_port, APP) as bob:
        for client, user in ((ann, "ann"), (bob, "bob")):
            await client.connected()
            client.send(op="signin", user={"id": user})
            await client.until(lambda line: line["kind"] == "signed_in")
        result = await node_server_call(
            api_port, APP, op="sendToUser", user="ann", event="hi", data={"for": "ann"}
        )
        assert result == {"status": 200, "body": {}}
        heard = await ann.until(lambda line: line["kind"] == "user")
        assert heard == {"kind": "user", "event": "hi", "data": {"for": "ann"}}
        assert [line for line in bob.seen if line["kind"] == "user"] == []


# The API's own guards


async def test_with_api_keys_pushers_routes_need_their_signature_not_a_key(
    http: aiohttp.ClientSession,
) -> None:
    """--api-key guards the native routes still; Pusher's are signed instead, and an
    unsigned one is refused, not let through."""
    async with running_server(pusher_app=SPEC, api_key="the-api-key", **TIMERS) as server:
        ws_port, api_port = server.ws_port, server.api_port
        async with pusher_js(ws_port, APP) as client:
            await subscribed(client, "news")
            with python_lib(api_port) as lib:
                await lib("trigger", "news", "signed", "ok")
            await client.hears("news", "signed")
        status, body = await post(http, server.api_url + "/push/room", data={"id": "x"})
        assert status == 401, body
        async with http.post(server.api_url + "/apps/4242/events", json={}) as response:
            assert response.status == 401
            assert "Missing auth_key" in await response.text()


async def test_the_host_and_cross_site_checks_still_apply(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """Without API keys, a Host name DNS could rebind and a page of another site are
    refused on Pusher's routes as on the others, before the signature is looked at."""
    url = server.api_url + "/apps/4242/channels"
    async with http.get(url, headers={"Host": "pushgate.example"}) as response:
        assert response.status == 403
        assert "DNS rebinding" in (await response.json())["error"]
    events = server.api_url + "/apps/4242/events"
    async with http.post(events, json={}, headers={"Origin": "http://evil.example"}) as response:
        assert response.status == 403
        assert "another site" in (await response.json())["error"]


async def test_the_openapi_document_has_pushers_routes_where_served(
    server: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.api_url + "/openapi.json") as response:
        spec = await response.json()
    events = spec["paths"]["/apps/{app_id}/events"]["post"]
    assert events["parameters"][0]["schema"]["enum"] == ["4242", "77"]
    async with (
        running_server(**TIMERS) as plain,
        http.get(plain.api_url + "/apps/4242/channels") as response,
        http.get(plain.api_url + "/openapi.json") as described,
    ):
        assert response.status == 404
        assert not [path for path in (await described.json())["paths"] if "apps" in path]


# A cluster


async def test_a_cluster_triggers_and_counts_across_gateways(module_redis: RedisServer) -> None:
    """Two gateways and a logic node on one Redis: an event triggered on the logic
    node reaches the clients of both gateways, and the counts span both."""
    settings: dict[str, Any] = {
        **TIMERS,
        "broker": module_redis.url,
        "prefix": "pusherapi:",
        "node_ttl": 2.0,
        "pusher_app": SPEC,
    }
    async with AsyncExitStack() as stack:
        first, second = [
            await stack.enter_async_context(running_server("gateway", **settings)) for _ in range(2)
        ]
        logic = await stack.enter_async_context(running_server("logic", **settings))
        ann = await stack.enter_async_context(pusher_js(first.server.ws_port, APP))
        bob = await stack.enter_async_context(pusher_js(second.server.ws_port, APP))
        await asyncio.gather(
            subscribed(ann, "presence-chat", user_id="ann"),
            subscribed(bob, "presence-chat", user_id="bob"),
        )
        lib = stack.enter_context(python_lib(logic.server.api_port))
        await lib("trigger", "presence-chat", "hello", {"to": "all"})
        for client in (ann, bob):
            assert data_of(await client.hears("presence-chat", "hello")) == [{"to": "all"}]
        chat = await lib("channel_info", "presence-chat", ["user_count", "subscription_count"])
        assert chat == {"occupied": True, "user_count": 2, "subscription_count": 2}
        listed = await lib("channels_info", "presence-", ["user_count"])
        assert listed == {"channels": {"presence-chat": {"user_count": 2}}}
        users = await lib("users_info", "presence-chat")
        assert sorted(user["id"] for user in users["users"]) == ["ann", "bob"]


async def test_schemathesis_finds_no_server_error_on_pushers_routes() -> None:
    """Generated requests to Pusher's routes (unsigned, so refused) get the statuses
    and bodies the OpenAPI document says, and never a 5xx."""
    st = Path(sys.executable).with_name("st")
    async with server_process("--pusher-app", SPEC) as server:
        process = await asyncio.create_subprocess_exec(
            str(st),
            "run",
            f"http://127.0.0.1:{server.api_port}/openapi.json",
            "--include-path-regex",
            "terminate_connections|^/apps/",
            "--checks",
            CHECKS,
            "--max-time",
            "5",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60 * UNIT)
    report = out.decode()
    assert process.returncode == 0, report
    assert " passed" in report
