"""Making connection tokens: ``make_token`` and ``pushgate token``."""

import re

import jwt
import pytest

from pushgate.cli import main
from pushgate.client import PushAPI, connect, make_token
from pushgate.security import TokenChecks, TokenVerifier
from tests.helpers import FAST_TIMERS, running_server

SECRET = "a-test-secret-of-at-least-32-bytes!!"


async def test_a_token_from_pushgate_token_is_accepted_and_puts_the_client_in_its_rooms(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pushgate token --sub alice --room news --ttl 1h`: a gateway with the same
    secret, requiring tokens, lets the client in as alice, in news."""
    monkeypatch.setenv("PUSHGATE_TOKEN_SECRET", SECRET)
    status = main(["token", "--sub", "alice", "--room", "news", "--ttl", "1h"])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    token = out.removesuffix("\n")
    assert "\n" not in token
    async with (
        running_server(**FAST_TIMERS, token_secret=SECRET, require_token=True) as server,
        connect(server.ws_url, token=token) as conn,
        PushAPI(server.api_url) as api,
    ):
        assert conn.rooms == ("news",)
        assert (await api.push_room("news", "to the room", 3)).delivered == 1
        assert (await api.push_user("alice", "to alice", 4)).delivered == 1


async def test_make_token_makes_what_the_gateway_reads() -> None:
    """sub, rooms, info, an exp ttl seconds on, and the aud and iss a gateway with
    --token-audience and --token-issuer asks for."""
    token = make_token(
        SECRET, "bob", ["a", "b"], ttl=90, info={"name": "Bob"}, audience="app", issuer="me"
    )
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], audience="app", issuer="me")
    assert payload["exp"] - payload["iat"] == 90
    checks = TokenChecks(audience="app", issuer="me", require_exp=True)
    claims = TokenVerifier(secret=SECRET, checks=checks).verify(token, max_rooms=2)
    assert (claims.user, claims.rooms, claims.info) == ("bob", ("a", "b"), '{"name":"Bob"}')

    forever = jwt.decode(make_token(SECRET, None, ttl=None), SECRET, algorithms=["HS256"])
    assert "exp" not in forever
    assert "sub" not in forever


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secret": "x" * 31}, "the secret must be at least 32 bytes, got 31"),
        ({"rooms": ["news", "no spaces"]}, "not a room id: 'no spaces'"),
        ({"rooms": "news"}, "rooms must be a list of room ids, not one string"),
        ({"sub": "x" * 129}, 'the token\'s "sub" must be 1-128 characters'),
        ({"info": ["not", "an", "object"]}, '"info" must be a JSON object'),
        ({"ttl": 0}, "ttl must be a number of seconds above 0"),
    ],
)
def test_make_token_refuses_what_the_gateway_would(change: dict[str, object], message: str) -> None:
    """A short secret, a bad room id, a long sub, an info that is not an object,
    a ttl that is over at once: ValueError saying which, not a token refused later."""
    arguments: dict[str, object] = {"secret": SECRET, "sub": "alice", "rooms": ["news"]}
    arguments.update(change)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        make_token(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (
            ["--sub", "alice"],
            {"PUSHGATE_TOKEN_SECRET": "short-secret"},
            "pushgate: $PUSHGATE_TOKEN_SECRET must be at least 32 bytes, got 12",
        ),
        (
            ["--sub", "alice", "--secret", SECRET],
            {"PUSHGATE_TOKEN_SECRET": SECRET},
            "pushgate: a secret on the command line can be read by any user",
        ),
        (
            ["--sub", "alice", "--secret-env", "MY_SECRET"],
            {"PUSHGATE_TOKEN_SECRET": SECRET},
            "pushgate: $MY_SECRET is not set: it must hold the gateway's --token-secret",
        ),
        (
            ["--info", "[1]"],
            {"PUSHGATE_TOKEN_SECRET": SECRET},
            "pushgate: --info must be a JSON object, got [1]",
        ),
    ],
)
def test_pushgate_token_refuses_with_one_line_and_status_2(
    argv: list[str],
    env: dict[str, str],
    line: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A short secret, one on the command line, none, a bad --info: one line, no token."""
    monkeypatch.delenv("PUSHGATE_TOKEN_SECRET", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = main(["token", *argv])
    out, err = capsys.readouterr()
    assert (status, out, err.count("\n")) == (2, "", 1)
    assert err.startswith(line)


def test_pushgate_token_reads_the_variable_secret_env_names(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--secret-env MY_SECRET signs with $MY_SECRET; --ttl 15m is 900 seconds."""
    monkeypatch.setenv("MY_SECRET", SECRET)
    assert main(["token", "--sub", "carol", "--secret-env", "MY_SECRET", "--ttl", "15m"]) == 0
    payload = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert (payload["sub"], payload["exp"] - payload["iat"]) == ("carol", 900)
