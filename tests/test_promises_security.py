"""The promises of docs/security.md about tokens and API keys, one test each (issue
24): an invalid token is 403 even when tokens are optional; a token naming more
rooms than a connection may be in is 403; an API key matches only whole, neither
with something after it nor cut short."""

import time
from typing import Any

import aiohttp
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.helpers import FAST_TIMERS, UNIT, open_client, post, recv_json, running_server

SECRET = "a-test-secret-of-at-least-32-bytes!!"


def hs256(**claims: Any) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def refusal_of(url: str) -> tuple[int, str]:
    """The HTTP status and reason of a refused handshake (fails if the WebSocket opens)."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=5 * UNIT):
            pass
    return refused.value.response.status_code, refused.value.response.body.decode().strip()


# Connection tokens


async def test_an_invalid_token_is_403_even_when_tokens_are_optional() -> None:
    """Without --require-token a client may come without a token, but one that
    brings an invalid token (forged, expired, malformed, of another algorithm) is
    refused with 403 all the same, and no WebSocket is opened."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET) as server:
        assert server.server.config.require_token is False
        url = server.ws_url + "?token="
        forged = jwt.encode({"sub": "u"}, "another-secret-of-at-least-32-bytes", algorithm="HS256")
        expired = hs256(sub="u", exp=int(time.time()) - 60)
        unsigned = jwt.encode({"sub": "u"}, "", algorithm="none")
        for token in (forged, expired, "not.a.token", unsigned):
            status, reason = await refusal_of(url + token)
            assert status == 403, (token, reason)
        assert await refusal_of(url + expired) == (403, "the token has expired")
        for ok in (server.ws_url, url + hs256(sub="u")):  # no token, and a valid one
            ws, _ = await open_client(ok)
            await ws.close()


async def test_a_token_naming_more_rooms_than_a_connection_may_be_in_is_403(
    http: aiohttp.ClientSession,
) -> None:
    """--max-rooms-per-conn 3: a token naming four rooms is refused with 403 saying
    so, and no WebSocket is opened; one naming three connects in all three."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET, max_rooms_per_conn=3) as server:
        url = server.ws_url + "?token="
        four = hs256(sub="u", rooms=["r1", "r2", "r3", "r4"])
        assert await refusal_of(url + four) == (
            403,
            "the token names 4 rooms; a connection may be in 3",
        )
        assert server.server.node.room_sizes() == {}
        ws, _ = await open_client(url + hs256(sub="u", rooms=["r1", "r2", "r3"]))
        assert server.server.node.room_sizes() == {"r1": 1, "r2": 1, "r3": 1}
        status, body = await post(
            http, server.api_url + "/push/room", json={"id": "r3", "val": "in", "tag": 2}
        )
        assert (status, body["delivered"]) == (200, 1)
        assert await recv_json(ws) == {"type": 2, "data": "in", "room": "r3"}
        await ws.close()


# API keys

KEY = "the-api-key-of-this-server"


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(KEY + "garbage", id="the-key-then-more"),
        pytest.param(KEY + KEY, id="the-key-twice"),
        pytest.param(KEY[:-1], id="the-key-but-its-last-byte"),
        pytest.param(KEY[:1], id="the-keys-first-byte"),
    ],
)
async def test_an_api_key_matches_only_whole(http: aiohttp.ClientSession, given: str) -> None:
    """A key with anything after it, or a prefix of the key, is 403 on every
    endpoint that needs a key; the key itself is 200."""
    async with running_server(**FAST_TIMERS, api_key=f"another-key,{KEY}") as server:
        push = server.api_url + "/push/all"
        fields = {"val": "x", "tag": "2"}
        status, body = await post(
            http, push, data=fields, headers={"Authorization": f"Bearer {given}"}
        )
        assert status == 403, body
        assert body["error"] == "the API key is not valid"
        async with http.get(
            server.api_url + "/stats", headers={"Authorization": f"Bearer {given}"}
        ) as response:
            assert response.status == 403
        status, _ = await post(http, push, data=fields, headers={"Authorization": f"Bearer {KEY}"})
        assert status == 200
