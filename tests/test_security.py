"""Who may push, who may connect, and the limits: each refusal, and an honest client
working beside an abusive one."""

import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.helpers import (
    FAST_TIMERS,
    UNIT,
    close_code_of,
    open_client,
    post,
    pushgate_command,
    recv_json,
    running_server,
)

SECRET = "a-test-secret-of-at-least-32-bytes!!"


def hs256(**claims: Any) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def refused_status(url: str, **kwargs: Any) -> int:
    """The HTTP status of a refused handshake (fails if the WebSocket opens)."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=5 * UNIT, **kwargs):
            pass
    return refused.value.response.status_code


# Who may push


async def test_with_api_keys_the_api_needs_one(http: aiohttp.ClientSession) -> None:
    """No key is 401, a wrong key 403, either of two rotated keys 200; health stays open."""
    async with running_server(**FAST_TIMERS, api_key="old-key,new-key") as server:
        url = server.api_url + "/push/all"
        fields = {"val": "x", "tag": "3"}
        async with http.post(url, data=fields) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "API key" in (await response.json())["error"]
        status, _ = await post(http, url, data=fields, headers={"Authorization": "Bearer nope"})
        assert status == 403
        for key in ("old-key", "new-key"):
            status, _ = await post(
                http, url, data=fields, headers={"Authorization": f"Bearer {key}"}
            )
            assert status == 200
        async with http.get(server.api_url + "/healthz") as response:
            assert response.status == 200
        async with http.get(server.api_url + "/stats") as response:
            assert response.status == 401


def test_a_public_api_without_a_key_refuses_to_start() -> None:
    """Binding the logic API beyond loopback without --api-key is refused in one line."""
    import subprocess

    result = subprocess.run(
        pushgate_command("serve", "--ws-port", "0", "--api-port", "0", "--api-host", "0.0.0.0"),
        capture_output=True,
        text=True,
        timeout=30 * UNIT,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--api-key" in lines[0]
    assert "--insecure" in lines[0]


async def test_insecure_says_the_operator_means_it(
    caplog: pytest.LogCaptureFixture, http: aiohttp.ClientSession
) -> None:
    """With --insecure a keyless public API starts on every address (0.0.0.0, reached
    here through 127.0.0.1), takes a push without a key, and logs a warning."""
    caplog.set_level(logging.WARNING, logger="pushgate")
    async with running_server(**FAST_TIMERS, api_host="0.0.0.0", insecure=True) as server:
        assert server.server._runner is not None
        assert [a[0] for a in server.server._runner.addresses] == ["0.0.0.0"]
        url = f"http://127.0.0.1:{server.server.api_port}"
        status, body = await post(http, url + "/push/all", data={"val": "x", "tag": "3"})
        assert (status, body) == (200, {"ok": True, "delivered": 0})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "the logic API on 0.0.0.0 has no API key (--insecure)" in warnings


# Who may connect


async def test_require_token_refuses_handshakes_without_a_valid_one() -> None:
    """With --require-token: no token 401, expired or forged 403, and no WebSocket."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET, require_token=True) as server:
        assert await refused_status(server.ws_url) == 401
        expired = hs256(sub="u", exp=int(time.time()) - 60)
        assert await refused_status(server.ws_url + "?token=" + expired) == 403
        forged = jwt.encode({"sub": "u"}, "another-secret-of-at-least-32-bytes", algorithm="HS256")
        assert await refused_status(server.ws_url + "?token=" + forged) == 403
        assert await refused_status(server.ws_url + "?token=not.a.token") == 403
        ws, _ = await open_client(server.ws_url + "?token=" + hs256(sub="u"))
        await ws.close()


async def test_a_browser_passes_its_token_as_a_subprotocol() -> None:
    """Browsers cannot set headers: the token rides in Sec-WebSocket-Protocol beside
    "pushgate", and the server answers "pushgate"."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET, require_token=True) as server:
        token = hs256(sub="browser")
        async with connect(server.ws_url, subprotocols=["pushgate", token]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "pushgate"
            assert (await recv_json(ws))["type"] == 0


async def test_a_token_names_the_user_and_rooms_to_join(http: aiohttp.ClientSession) -> None:
    """A token's rooms are joined on connect; /push/user reaches every connection of
    its sub, and nobody else."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET) as server:
        alice_1, _ = await open_client(
            server.ws_url + "?token=" + hs256(sub="alice", rooms=["news"])
        )
        alice_2, _ = await open_client(server.ws_url + "?token=" + hs256(sub="alice"))
        bob, _ = await open_client(server.ws_url + "?token=" + hs256(sub="bob"))
        status, body = await post(
            http, server.api_url + "/push/user", json={"uid": "alice", "val": "hi", "tag": 4}
        )
        assert (status, body["delivered"]) == (200, 2)
        for ws in (alice_1, alice_2):
            assert await recv_json(ws) == {"type": 4, "data": "hi", "user": "alice"}
        status, body = await post(
            http, server.api_url + "/push/room", json={"id": "news", "val": "n", "tag": 5}
        )
        assert (status, body["delivered"]) == (200, 1)
        assert await recv_json(alice_1) == {"type": 5, "data": "n", "room": "news"}
        await bob.send('{"type":1,"data":"PING"}')
        assert await recv_json(bob) == {"type": 1, "data": "PONG"}  # nothing for bob before it
        for ws in (alice_1, alice_2, bob):
            await ws.close()


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_tokens_signed_with_a_private_key(tmp_path: Path, algorithm: str) -> None:
    """--token-public-key verifies RS256 and ES256 tokens; another key's are 403."""
    private: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public_file = tmp_path / "public.pem"
    public_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    other: Any = ec.generate_private_key(ec.SECP256R1())
    async with running_server(
        **FAST_TIMERS, token_public_key=str(public_file), require_token=True
    ) as server:
        good = jwt.encode({"sub": "u"}, private, algorithm=algorithm)
        ws, _ = await open_client(server.ws_url + "?token=" + good)
        await ws.close()
        bad = jwt.encode({"sub": "u"}, other, algorithm="ES256")
        assert await refused_status(server.ws_url + "?token=" + bad) == 403


async def refusal_of(url: str) -> tuple[int, str]:
    """The HTTP status and reason of a refused handshake (fails if the WebSocket opens)."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=5 * UNIT):
            pass
    return refused.value.response.status_code, refused.value.response.body.decode().strip()


async def test_tokens_for_another_audience_or_issuer_are_refused() -> None:
    """With --token-audience and --token-issuer, a token must name both: another
    service's audience or another issuer, or none, is 403 saying which claim."""
    checks = {"token_audience": "pushgate", "token_issuer": "https://auth.example"}
    async with running_server(**FAST_TIMERS, token_secret=SECRET, **checks) as server:
        url = server.ws_url + "?token="
        for aud in ("pushgate", ["billing", "pushgate"]):
            ws, _ = await open_client(url + hs256(sub="u", aud=aud, iss="https://auth.example"))
            await ws.close()
        wrong_aud = hs256(sub="u", aud="billing", iss="https://auth.example")
        assert await refusal_of(url + wrong_aud) == (
            403,
            "the token's \"aud\" does not name this server's audience",
        )
        no_aud = hs256(sub="u", iss="https://auth.example")
        assert await refusal_of(url + no_aud) == (
            403,
            'the token has no "aud": this server accepts only tokens for its audience',
        )
        wrong_iss = hs256(sub="u", aud="pushgate", iss="https://evil.example")
        assert await refusal_of(url + wrong_iss) == (
            403,
            "the token's \"iss\" is not this server's issuer",
        )
        no_iss = hs256(sub="u", aud="pushgate")
        assert await refusal_of(url + no_iss) == (
            403,
            'the token has no "iss": this server accepts only tokens from its issuer',
        )


async def test_a_token_without_exp_is_refused_when_exp_is_required() -> None:
    """With --token-require-exp, a token that would never expire is 403; one with an
    exp still to come connects, one past it is still "expired"."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET, token_require_exp=True) as server:
        url = server.ws_url + "?token="
        assert await refusal_of(url + hs256(sub="u")) == (
            403,
            'the token has no "exp": this server accepts only tokens that expire',
        )
        assert await refusal_of(url + hs256(sub="u", exp=int(time.time()) - 60)) == (
            403,
            "the token has expired",
        )
        ws, _ = await open_client(url + hs256(sub="u", exp=int(time.time()) + 60))
        await ws.close()


async def test_by_default_aud_iss_and_exp_are_not_checked() -> None:
    """Without those options a token is judged by its signature (and exp, when it
    has one) only, as before they existed."""
    async with running_server(**FAST_TIMERS, token_secret=SECRET) as server:
        token = hs256(sub="u", aud="anything", iss="anyone")
        ws, _ = await open_client(server.ws_url + "?token=" + token)
        await ws.close()


async def test_origins_not_allowed_are_refused() -> None:
    """With --allowed-origins, another site's page gets 403; the allowed one and
    programs without an Origin connect."""
    async with running_server(**FAST_TIMERS, allowed_origins="https://app.example") as server:
        assert await refused_status(server.ws_url, origin="https://evil.example") == 403
        ws, _ = await open_client(server.ws_url, origin="https://app.example")
        await ws.close()
        ws, _ = await open_client(server.ws_url)
        await ws.close()


# Limits


async def test_the_connection_limits(caplog: pytest.LogCaptureFixture) -> None:
    """Past --max-connections-per-ip a second address still connects; past
    --max-connections everyone is refused; each refusal names its limit."""
    caplog.set_level(logging.INFO, logger="pushgate")
    async with running_server(**FAST_TIMERS, max_connections=2, max_connections_per_ip=1) as server:
        first, _ = await open_client(server.ws_url)
        assert await refused_status(server.ws_url) == 429
        honest, _ = await open_client(server.ws_url, local_addr=("127.0.0.2", 0))
        assert await refused_status(server.ws_url, local_addr=("127.0.0.3", 0)) == 503
        await first.close()
        await close_code_of(first)
        await honest.close()
    assert "too many connections from 127.0.0.1" in caplog.text
    assert "server full" in caplog.text


async def test_new_connections_per_second() -> None:
    """Past --max-connects-per-second a burst is refused with 429."""
    async with running_server(**FAST_TIMERS, max_connects_per_second=3) as server:
        statuses = []
        clients = []
        for _ in range(6):
            try:
                ws, _ = await open_client(server.ws_url)
                clients.append(ws)
                statuses.append(101)
            except InvalidStatus as refused:
                statuses.append(refused.response.status_code)
        assert statuses.count(101) <= 4  # a burst of one second's worth, plus a refill
        assert 429 in statuses
        for ws in clients:
            await ws.close()


async def test_a_message_flood_is_closed_and_others_are_served() -> None:
    """A client over --max-client-messages-per-second is closed with 1008; another
    client's PING is still answered."""
    async with running_server(**FAST_TIMERS, max_client_messages_per_second=10) as server:
        honest, _ = await open_client(server.ws_url)
        flooder, _ = await open_client(server.ws_url)
        for _ in range(50):
            await flooder.send('{"type":1,"data":"PING"}')
        assert await close_code_of(flooder) == 1008
        assert flooder.close_reason is not None
        assert "rate limit" in flooder.close_reason
        await honest.send('{"type":1,"data":"PING"}')
        assert await recv_json(honest) == {"type": 1, "data": "PONG"}
        await honest.close()


async def test_the_body_and_frame_limits_name_themselves(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """An oversized body is 413 and an oversized message 1009, each saying why, in the
    answer and in the log."""
    caplog.set_level(logging.INFO, logger="pushgate")
    async with running_server(**FAST_TIMERS, max_body_bytes=512, max_message_bytes=256) as server:
        status, body = await post(
            http, server.api_url + "/push/all", data={"val": "x" * 1000, "tag": "3"}
        )
        assert status == 413
        assert body["error"] == "the body is over --max-body-bytes (512 bytes)"
        ws, _ = await open_client(server.ws_url)
        await ws.send("x" * 1000)
        assert await close_code_of(ws) == 1009
        assert ws.close_reason is not None
        assert "256" in ws.close_reason
    assert "413, the body is over --max-body-bytes (512 bytes)" in caplog.text
    assert "1009" in caplog.text
