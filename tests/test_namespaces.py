"""Namespaces, grants and subscription tokens, without sockets (namespaces.py)."""

import time

import jwt
import pytest

from pushgate.ids import ConnId, RoomId
from pushgate.namespaces import (
    Granted,
    Namespace,
    Namespaces,
    Policy,
    check_subscription,
    grant_for,
    parse_namespace,
    room_matches,
)
from pushgate.security import Refusal, TokenChecks, TokenVerifier

SECRET = "a-token-secret-of-at-least-32-bytes!"
W = ConnId("3cc97117-aa4d-45bb-86db-a1d77e51283b")
TOKENS = TokenVerifier(secret=SECRET)


def token(**claims: object) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_a_rooms_namespace_is_before_its_first_colon() -> None:
    spaces = Namespaces([Namespace("chat", Policy.PUBLIC), Namespace("", Policy.GRANT, "x" * 16)])
    assert spaces.of(RoomId("chat:42")).name == "chat"
    assert spaces.of(RoomId("chat:a:b")).name == "chat"
    assert spaces.of(RoomId("news")).name == ""  # no colon: the default namespace
    assert spaces.of(RoomId("other:1")).name == ""  # an unknown namespace: the default
    assert Namespaces().of(RoomId("x")).policy is Policy.SERVER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lobby=public", Namespace("lobby", Policy.PUBLIC)),
        ("chat=grant:0123456789abcdef", Namespace("chat", Policy.GRANT, "0123456789abcdef")),
        ("private=grant", Namespace("private", Policy.GRANT)),
        ("=server", Namespace("", Policy.SERVER)),
        (" news = PUBLIC", Namespace("news", Policy.PUBLIC)),
    ],
)
def test_namespaces_as_the_option_writes_them(text: str, expected: Namespace) -> None:
    assert parse_namespace(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("chat", "NAME=POLICY"),
        ("chat=nobody", "must be one of"),
        ("chat=public:0123456789abcdef", "only a grant namespace"),
        ("chat=grant:short", "under 16"),
        ("bad name=public", "letters, digits"),
    ],
)
def test_a_wrong_namespace_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_namespace(text)


def check(namespace: Namespace, **credentials: str | None) -> Granted | Refusal:
    return check_subscription(
        namespace,
        W,
        "ann",
        RoomId("chat:1"),
        grant=credentials.get("grant"),
        token=credentials.get("token"),
        tokens=TOKENS,
    )


def test_public_server_and_a_missing_grant() -> None:
    assert check(Namespace("chat", Policy.PUBLIC)) == Granted()
    server = check(Namespace("chat", Policy.SERVER))
    assert isinstance(server, Refusal)
    assert server.status == 403
    missing = check(Namespace("chat", Policy.GRANT, "s" * 16))
    assert isinstance(missing, Refusal)
    assert missing.status == 401


def test_an_hmac_grant_is_of_this_connection_and_room() -> None:
    chat = Namespace("chat", Policy.GRANT, "s" * 16)
    assert check(chat, grant=grant_for("s" * 16, W, "chat:1")) == Granted()
    for bad in (
        grant_for("s" * 16, "another-ws-id", "chat:1"),
        grant_for("s" * 16, W, "chat:2"),
        grant_for("t" * 16, W, "chat:1"),
        "",
    ):
        refused = check(chat, grant=bad)
        assert isinstance(refused, Refusal)
        assert refused.status == 403
    no_secret = check(Namespace("chat", Policy.GRANT), grant=grant_for("s" * 16, W, "chat:1"))
    assert isinstance(no_secret, Refusal)


def test_the_grant_is_hmac_sha256_of_wsid_colon_room_in_hex() -> None:
    """What a back end in any language computes: a known value, pinned."""
    assert grant_for("key", "w", "r") == (
        "74d5bff72ee06e7099e60a0f6fd206a41484d007d5424524fb61b5e88e54cbff"
    )


def test_a_subscription_token_opens_the_rooms_it_names_for_whom_it_names() -> None:
    chat = Namespace("chat", Policy.GRANT)
    end = int(time.time()) + 60
    assert check(chat, token=token(subscribe=["chat:*"], exp=end)) == Granted(float(end))
    assert check(chat, token=token(subscribe=["chat:1"])) == Granted()
    assert check(chat, token=token(subscribe=["chat:1"], wsId=W, sub="ann")) == Granted()
    for bad in (
        token(subscribe=["chat:2", "news"]),
        token(subscribe="chat:1"),
        token(rooms=["chat:1"]),  # a connection token's claim opens nothing here
        token(subscribe=["chat:1"], wsId="other"),
        token(subscribe=["chat:1"], sub="bob"),
        token(subscribe=["chat:1"], exp=int(time.time()) - 60),
        jwt.encode({"subscribe": ["chat:1"]}, "another-key-of-at-least-32-bytes!!", "HS256"),
    ):
        refused = check(chat, token=bad)
        assert isinstance(refused, Refusal)
        assert refused.status == 403


def test_subscription_tokens_honour_the_servers_token_checks() -> None:
    strict = TokenVerifier(secret=SECRET, checks=TokenChecks(audience="push", require_exp=True))
    chat = Namespace("chat", Policy.GRANT)
    end = int(time.time()) + 60
    ok = token(subscribe=["chat:1"], aud="push", exp=end)
    without_aud = token(subscribe=["chat:1"], exp=end)
    without_exp = token(subscribe=["chat:1"], aud="push")

    def verdict(jwt_text: str) -> Granted | Refusal:
        return check_subscription(
            chat, W, None, RoomId("chat:1"), grant=None, token=jwt_text, tokens=strict
        )

    assert isinstance(verdict(ok), Granted)
    assert isinstance(verdict(without_aud), Refusal)
    assert isinstance(verdict(without_exp), Refusal)
    no_tokens = check_subscription(
        chat, W, None, RoomId("chat:1"), grant=None, token=ok, tokens=None
    )
    assert isinstance(no_tokens, Refusal)


@pytest.mark.parametrize(
    ("pattern", "room", "matches"),
    [
        ("chat:*", "chat:42", True),
        ("chat:*", "chat:", True),
        ("chat:*", "chatter:1", False),
        ("*", "anything", True),
        ("a*b", "a:x:b", True),
        ("chat:1", "chat:1", True),
        ("chat:1", "chat:12", False),
        ("chat:[1]", "chat:1", False),  # only * is special
        ("chat:?", "chat:1", False),
    ],
)
def test_room_patterns(pattern: str, room: str, matches: bool) -> None:
    assert room_matches(pattern, room) is matches
