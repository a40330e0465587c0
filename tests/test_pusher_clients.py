"""pusher-js (the real one, in Node) against pushgate's Pusher protocol
(docs/pusher.md): connecting, public, private and presence channels, client events,
cache channels, and what a wrong key or signature gets."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pusher
import pytest

from tests.helpers import FAST_TIMERS, Running, open_client, post, running_server
from tests.pusher.harness import pusher_js, raw_pusher
from tests.test_metrics import scrape

APP = ("1001", "key1", "s3cret-s3cret-s3cret")
SPEC = ":".join(APP) + ":client-events"
MASTER_KEY = base64.b64encode(b"an encryption master key of 32 b").decode()


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    timers = {**FAST_TIMERS, "heartbeat": 1.0, "idle_timeout": 5.0}
    async with running_server(pusher_app=SPEC, **timers) as running:
        yield running


async def test_a_client_connects_with_a_socket_id_of_pushers_form(server: Running) -> None:
    async with pusher_js(server.ws_port, APP) as client:
        socket_id = await client.connected()
        left, dot, right = socket_id.partition(".")
        assert dot
        assert left.isdigit()
        assert right.isdigit()


async def test_a_public_channel_hears_a_push_to_its_room(server: Running) -> None:
    async with pusher_js(server.ws_port, APP) as client, aiohttp.ClientSession() as http:
        await client.connected()
        await client.subscribed("news")
        fields: dict[str, Any] = {"id": "1001:news", "tag": 2, "val": '{"headline":"hi"}'}
        status, body = await post(http, server.api_url + "/push/room", data=fields)
        assert status == 200, body
        heard = await client.hears("news", "pushgate:push")
        assert heard[0]["data"] == {"headline": "hi"}


async def test_a_wrong_signature_is_a_subscription_error(server: Running) -> None:
    async with pusher_js(server.ws_port, APP) as client:
        await client.connected()
        client.send(op="subscribe", channel="private-room", bad_auth=True)
        errors = await client.hears("private-room", "pusher:subscription_error")
        assert errors[0]["data"]["status"] == 401
        assert "Invalid signature" in errors[0]["data"]["error"]


async def test_presence_members_and_client_events(server: Running) -> None:
    port = server.ws_port
    async with pusher_js(port, APP) as ann, pusher_js(port, APP) as bob:
        await asyncio.gather(ann.connected(), bob.connected())
        joined = await ann.subscribed("presence-room", user_id="ann", user_info={"name": "Ann"})
        assert joined["data"]["count"] == 1
        assert joined["data"]["members"] == [{"id": "ann", "info": {"name": "Ann"}}]
        joined = await bob.subscribed("presence-room", user_id="bob", user_info={"name": "Bob"})
        assert joined["data"]["count"] == 2
        added = await ann.hears("presence-room", "pusher:member_added")
        assert added[0]["data"] == {"id": "bob", "info": {"name": "Bob"}}
        # Bob is not told of himself (he knows himself from his subscription).
        assert bob.heard("presence-room", "pusher:member_added") == []

        bob.send(op="trigger", channel="presence-room", event="client-typing", data={"on": 1})
        typing = await ann.hears("presence-room", "client-typing")
        assert typing[0]["data"] == {"on": 1}
        message = await ann.message("client-typing")
        assert message["user_id"] == "bob"
        assert bob.heard("presence-room", "client-typing") == []  # never echoed

        bob.send(op="unsubscribe", channel="presence-room")
        removed = await ann.hears("presence-room", "pusher:member_removed")
        assert removed[0]["data"] == {"id": "bob", "info": {"name": "Bob"}}


async def test_an_unknown_key_is_closed_with_4001(server: Running) -> None:
    async with pusher_js(server.ws_port, (APP[0], "nokey", APP[2])) as client:
        error = await client.until(lambda line: line["kind"] == "error")
        assert error["error"]["code"] == 4001
        # 4000-4099: pusher-js gives up ("refused") rather than reconnecting.
        await client.state("disconnected")
        assert not client.reached("connected")


async def test_metrics_count_connections_by_protocol(server: Running) -> None:
    """Connections and deliveries, by transport and protocol: a pusher-js client and
    a pushgate one, each handed one push to all."""
    async with pusher_js(server.ws_port, APP) as client, aiohttp.ClientSession() as http:
        await client.connected()
        ws, _ = await open_client(server.ws_url)
        status, body = await post(http, server.api_url + "/push/all", data={"val": 1, "tag": 2})
        assert (status, body["delivered"]) == (200, 2)
        samples = await scrape(http, server.api_url + "/metrics")
        await ws.close()

    def by_protocol(metric: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: value for (name, labels), value in samples.items() if name == metric}

    pusher = (("protocol", "pusher"), ("transport", "websocket"))
    pushgate = (("protocol", "pushgate"), ("transport", "websocket"))
    assert by_protocol("pushgate_connections_by_transport") == {pusher: 1, pushgate: 1}
    assert by_protocol("pushgate_deliveries_by_transport_total") == {pusher: 1, pushgate: 1}


async def test_a_signed_in_user_hears_pushes_to_it(server: Running) -> None:
    """pusher-js signs in (user authentication by the `pusher` library), subscribes
    its #server-to-user channel by itself, and hears what is pushed to its user,
    which is the app's user: another app's user of the same id hears nothing."""
    async with pusher_js(server.ws_port, APP) as client, aiohttp.ClientSession() as http:
        await client.connected()
        client.send(op="signin", user={"id": "alice", "name": "Alice"})
        signed_in = await client.until(lambda line: line["kind"] == "signed_in")
        assert signed_in["user"] == {"id": "alice", "name": "Alice"}
        await client.message("pusher_internal:subscription_succeeded")
        fields = {"uid": f"{APP[0]}:alice", "tag": 2, "val": "for alice"}
        status, body = await post(http, server.api_url + "/push/user", data=fields)
        assert status == 200, body
        assert body["delivered"] == 1
        heard = await client.until(lambda line: line["kind"] == "user")
        assert heard == {"kind": "user", "event": "pushgate:push", "data": "for alice"}


async def test_a_sign_in_the_app_did_not_sign_is_closed_with_4009(server: Running) -> None:
    async with pusher_js(server.ws_port, APP) as client:
        await client.connected()
        client.send(op="signin", user={"id": "mallory", "bad_auth": True})
        error = await client.until(lambda line: line["kind"] == "error")
        assert error["error"]["code"] == 4009
        await client.state("disconnected")


async def test_a_cache_channel_gives_a_new_subscriber_its_last_event(server: Running) -> None:
    """The room's history holds the channel's events: a subscriber that comes after
    the last one gets it at once; one of a channel with none gets pusher:cache_miss."""
    async with pusher_js(server.ws_port, APP) as client, aiohttp.ClientSession() as http:
        await client.connected()
        for val in ("first", "last"):
            fields = {"id": f"{APP[0]}:cache-prices", "tag": 2, "val": val}
            status, body = await post(http, server.api_url + "/push/room", data=fields)
            assert status == 200, body
        await client.subscribed("cache-prices")
        heard = await client.hears("cache-prices", "pushgate:push")
        assert [line["data"] for line in heard] == ["last"]
        await client.subscribed("cache-empty")
        await client.hears("cache-empty", "pusher:cache_miss")
        assert client.heard("cache-prices", "pusher:cache_miss") == []


async def test_client_events_are_refused_where_pusher_refuses_them(server: Running) -> None:
    """On a public channel, and on an encrypted one (whose payloads the server
    cannot read): pusher:error, and nothing reaches the channel's other member."""
    library = pusher.Pusher(
        app_id=APP[0], key=APP[1], secret=APP[2], encryption_master_key_base64=MASTER_KEY
    )
    port = server.ws_port
    async with raw_pusher(port, APP[1]) as sender, raw_pusher(port, APP[1]) as other:
        for member in (sender, other):
            await member.subscribe("news")
            channel = "private-encrypted-room"
            await member.subscribe(channel, library.authenticate(channel, member.socket_id)["auth"])
        for channel in ("news", "private-encrypted-room"):
            await sender.send("client-hello", {"hi": 1}, channel=channel)
            refused = await sender.next_event("pusher:error")
            assert "only for private and presence channels" in refused["data"]["message"]
        # A push after them is the first thing the other member gets.
        async with aiohttp.ClientSession() as http:
            fields = {"id": f"{APP[0]}:news", "tag": 2, "val": "after"}
            await post(http, server.api_url + "/push/room", data=fields)
        first = json.loads(await other.ws.recv())
        assert first["event"] == "pushgate:push"
        assert first["data"] == "after"


async def test_an_apps_connection_quota_is_kept_on_each_gateway() -> None:
    """max-connections=1: a second client is told 4004 and closed with it (pusher-js
    then does not retry); once the first has gone, a client gets in again."""
    app = ("1002", "capped", APP[2])
    async with running_server(pusher_app=":".join(app) + ":max-connections=1") as server:
        port = server.ws_port
        async with pusher_js(port, app) as first:
            await first.connected()
            async with pusher_js(port, app) as second:
                error = await second.until(lambda line: line["kind"] == "error")
                assert error["error"]["code"] == 4004
                await second.state("disconnected")
        # The server saw the first one go (it has no event to await: its hub empties).
        async with asyncio.timeout(5):
            while True:
                if not len(server.server.node.hub):
                    break
                await asyncio.sleep(0.01)
        async with pusher_js(port, app) as third:
            await third.connected()
