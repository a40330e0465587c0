"""Pure tests of security.py's decisions, without a server: API keys, connection
tokens (what is accepted, what is refused and the 403's reason), where a token is
found, the Origin policy. (tests/test_security.py checks the same through a running
gateway and API; these pin every decision mutation testing found unpinned.)"""

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pushgate.ids import RoomId
from pushgate.security import (
    ApiKeys,
    Claims,
    OriginPolicy,
    Refusal,
    TokenChecks,
    TokenError,
    TokenVerifier,
    is_loopback,
    token_from,
)

SECRET = "s3cret-for-tests-only-0123456789abcdef"


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def token(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def refusal(verifier: TokenVerifier, jwt_text: str, max_rooms: int = 10) -> Refusal:
    with pytest.raises(TokenError) as caught:
        verifier.verify(jwt_text, max_rooms=max_rooms)
    assert caught.value.refusal.status == 403
    assert caught.value.refusal.kind == "token_invalid"
    assert str(caught.value) == caught.value.refusal.reason
    return caught.value.refusal


# API keys


def test_without_keys_the_api_is_open() -> None:
    """No key configured (or only empty ones): every request passes, whatever it sends."""
    for keys in (ApiKeys([]), ApiKeys(["", ""])):
        assert not keys
        assert keys.check(None) is None
        assert keys.check("Bearer anything") is None


def test_a_request_without_a_bearer_key_is_401_and_a_wrong_key_403() -> None:
    """401 says a key is needed (no header, another scheme, an empty key); 403 says
    the key given is not one of ours."""
    keys = ApiKeys(["k1"])
    assert keys
    for header in (None, "", "k1", "Basic k1", "Bearer", "Bearer ", "Bearer    "):
        answer = keys.check(header)
        assert answer is not None
        assert answer == Refusal(
            401, "an API key is required: send Authorization: Bearer <key>", "api_key"
        )
    for header in ("Bearer k2", "Bearer k1k1", "Bearer k"):
        assert keys.check(header) == Refusal(403, "the API key is not valid", "api_key")


def test_every_configured_key_is_accepted_so_keys_can_be_rotated() -> None:
    """The old and the new key both pass while both are configured; the scheme's case
    and the spaces around the key do not matter."""
    keys = ApiKeys(["old", "", "new"])
    for header in ("Bearer old", "Bearer new", "bearer new", "BEARER old", "Bearer  new  "):
        assert keys.check(header) is None, header


# Where the server listens


def test_loopback_hosts_are_those_of_this_machine_only() -> None:
    """localhost and every loopback address keep a server private; anything else
    (a wildcard, a LAN address, a name) does not."""
    for host in ("localhost", "127.0.0.1", "127.10.0.3", "::1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.2", "pushgate-api", "", "localhost.example"):
        assert not is_loopback(host), host


# Connection tokens: which keys


def test_a_verifier_needs_exactly_one_key() -> None:
    """Neither or both of a secret and a public key is a mistake said at start-up."""
    with pytest.raises(ValueError, match=r"^give exactly one of secret and public_key$"):
        TokenVerifier()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ValueError, match=r"^give exactly one of secret and public_key$"):
        TokenVerifier(secret=SECRET, public_key=public_pem(rsa_key))


def test_the_public_keys_type_decides_the_one_algorithm_accepted() -> None:
    """An RSA key verifies RS256 only, a P-256 key ES256 only; a token signed any other
    way (HS256 with the public key as its secret included) is refused."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    by_rsa = TokenVerifier(public_key=public_pem(rsa_key))
    by_ec = TokenVerifier(public_key=public_pem(ec_key))
    claims = {"sub": "alice"}
    assert by_rsa.verify(token(claims, rsa_key, "RS256"), max_rooms=1) == Claims("alice", ())
    assert by_ec.verify(token(claims, ec_key, "ES256"), max_rooms=1) == Claims("alice", ())
    refusal(by_rsa, token(claims, ec_key, "ES256"))
    refusal(by_ec, token(claims, rsa_key, "RS256"))
    refusal(by_rsa, token(claims, rsa_key, "RS384"))
    refusal(by_ec, token(claims, SECRET, "HS256"))


def test_a_public_key_of_another_kind_is_refused_at_start_up() -> None:
    """An Ed25519 key is neither RSA nor P-256: the operator is told which keys work
    (after the option's name, in the start-up error)."""
    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ValueError, match=r"^the public key must be an RSA or an EC \(P-256\) key$"):
        TokenVerifier(public_key=pem)


# Connection tokens: what they must say


def test_a_good_token_names_its_user_and_its_rooms_once_each_in_order() -> None:
    """``sub`` is the user (none without it); ``rooms`` are joined in the order
    given, a repeated one once."""
    verifier = TokenVerifier(secret=SECRET)
    claims = verifier.verify(token({"sub": "alice", "rooms": ["b", "a", "b"]}), max_rooms=3)
    assert claims == Claims("alice", (RoomId("b"), RoomId("a")))
    assert verifier.verify(token({}), max_rooms=0) == Claims(None, ())


def test_a_forged_or_malformed_token_is_refused_with_its_reason() -> None:
    """Another secret is a bad signature; text that is no JWT is "not valid"."""
    verifier = TokenVerifier(secret=SECRET)
    forged = refusal(verifier, token({"sub": "alice"}, "another-secret-for-tests-0123456789abcdef"))
    assert forged.reason == "the token's signature is not valid"
    assert refusal(verifier, "not.a.jwt").reason.startswith("the token is not valid: ")
    assert refusal(verifier, "").reason.startswith("the token is not valid: ")


def early_in_a_second() -> int:
    """The current second, with more than half of it to come: a JWT's times are
    whole seconds, and the checks below must not straddle two of them."""
    if time.time() % 1 > 0.5:
        time.sleep(1 - time.time() % 1)
    return int(time.time())


def test_exp_is_honoured_with_five_seconds_of_leeway() -> None:
    """A token that expired 4 s ago still passes (clocks drift); 5 s ago it is
    refused as expired; one without ``exp`` never expires unless ``exp`` is required."""
    verifier = TokenVerifier(secret=SECRET)
    now = early_in_a_second()
    assert verifier.verify(token({"exp": now - 4}), max_rooms=0) == Claims(None, ())
    assert refusal(verifier, token({"exp": now - 5})).reason == "the token has expired"
    assert verifier.verify(token({}), max_rooms=0) == Claims(None, ())


def test_require_exp_refuses_a_token_that_never_expires() -> None:
    verifier = TokenVerifier(secret=SECRET, checks=TokenChecks(require_exp=True))
    assert refusal(verifier, token({"sub": "alice"})).reason == (
        'the token has no "exp": this server accepts only tokens that expire'
    )
    good = token({"sub": "alice", "exp": time.time() + 60})
    assert verifier.verify(good, max_rooms=0) == Claims("alice", ())


def test_an_audience_is_checked_only_when_one_is_configured() -> None:
    """Without ``--token-audience`` a token's ``aud`` is not read; with it, ``aud``
    must name it (a string or a list) and a token without one is refused."""
    assert TokenVerifier(secret=SECRET).verify(token({"aud": "other"}), max_rooms=0)
    verifier = TokenVerifier(secret=SECRET, checks=TokenChecks(audience="push"))
    assert verifier.verify(token({"aud": "push"}), max_rooms=0) == Claims(None, ())
    assert verifier.verify(token({"aud": ["x", "push"]}), max_rooms=0) == Claims(None, ())
    assert refusal(verifier, token({"aud": "other"})).reason == (
        "the token's \"aud\" does not name this server's audience"
    )
    assert refusal(verifier, token({})).reason == (
        'the token has no "aud": this server accepts only tokens for its audience'
    )


def test_an_issuer_is_checked_only_when_one_is_configured() -> None:
    assert TokenVerifier(secret=SECRET).verify(token({"iss": "other"}), max_rooms=0)
    verifier = TokenVerifier(secret=SECRET, checks=TokenChecks(issuer="idp"))
    assert verifier.verify(token({"iss": "idp"}), max_rooms=0) == Claims(None, ())
    assert refusal(verifier, token({"iss": "other"})).reason == (
        "the token's \"iss\" is not this server's issuer"
    )
    assert refusal(verifier, token({})).reason == (
        'the token has no "iss": this server accepts only tokens from its issuer'
    )


def test_the_refusal_never_says_what_the_server_expected() -> None:
    """A client learns which claim is wrong, not the audience or issuer to ask for."""
    checks = TokenChecks(audience="secret-audience", issuer="secret-issuer")
    verifier = TokenVerifier(secret=SECRET, checks=checks)
    for claims in ({"aud": "x", "iss": "secret-issuer"}, {"aud": "secret-audience", "iss": "x"}):
        reason = refusal(verifier, token(claims)).reason
        assert "secret-audience" not in reason
        assert "secret-issuer" not in reason


@pytest.mark.parametrize("sub", ["", "x" * 129, "a\nb", "tab\there"])
def test_a_sub_that_is_no_user_id_is_refused(sub: str) -> None:
    """A user id is 1-128 printable characters, as /push/user's ``uid``."""
    reason = refusal(TokenVerifier(secret=SECRET), token({"sub": sub})).reason
    assert reason == 'the token\'s "sub" must be 1-128 characters'


@pytest.mark.parametrize("sub", [42, ["alice"], True])
def test_a_sub_that_is_no_string_is_refused(sub: object) -> None:
    refusal(TokenVerifier(secret=SECRET), token({"sub": sub}))


def test_the_shortest_and_the_longest_user_ids_pass() -> None:
    for user in ("a", "é" * 128):
        assert TokenVerifier(secret=SECRET).verify(token({"sub": user}), max_rooms=0).user == user


@pytest.mark.parametrize("rooms", ["news", {"news": 1}, [1], ["bad room"], ["news", None], [""]])
def test_rooms_that_are_not_a_list_of_room_ids_are_refused(rooms: object) -> None:
    reason = refusal(TokenVerifier(secret=SECRET), token({"rooms": rooms})).reason
    assert reason == 'the token\'s "rooms" must be a list of room ids'


def test_a_token_may_name_as_many_rooms_as_a_connection_may_be_in_and_no_more() -> None:
    verifier = TokenVerifier(secret=SECRET)
    two = token({"rooms": ["a", "b"]})
    assert verifier.verify(two, max_rooms=2).rooms == ("a", "b")
    assert refusal(verifier, two, max_rooms=1).reason == (
        "the token names 2 rooms; a connection may be in 1"
    )


# Where a token is found


def test_a_token_comes_from_the_query_or_else_from_a_subprotocol() -> None:
    """``?token=`` first (its first value); else the offered subprotocol shaped as a
    JWT (two dots), not ``pushgate``; else none."""
    jwt_like = "aaa.bbb.ccc"
    assert token_from("token=t1&token=t2", [jwt_like]) == "t1"
    assert token_from("v=2&token=t1", []) == "t1"
    assert token_from("", ["pushgate", jwt_like]) == jwt_like
    assert token_from("token=", ["pushgate", jwt_like]) == jwt_like
    assert token_from("", ["pushgate", "a.b", "a.b.c.d"]) is None
    assert token_from("other=1", []) is None


# Origins


def test_without_a_list_every_origin_may_connect() -> None:
    policy = OriginPolicy(["*"])
    assert policy.check("https://evil.example") is None
    assert policy.check(None) is None


def test_only_listed_origins_may_connect_whatever_their_case_or_trailing_slash() -> None:
    """Programs send no Origin and always pass; a page's Origin must be listed."""
    policy = OriginPolicy([" https://App.example/ ", "", "  ", "https://shop.example.BOX"])
    allowed = ["https://app.example", "HTTPS://APP.EXAMPLE/", "https://shop.example.box"]
    for origin in [None, *allowed, "HTTPS://SHOP.EXAMPLE.BOX//"]:
        assert policy.check(origin) is None, origin
    for origin in ("https://evil.example", "https://app.example.evil", "http://app.example"):
        assert policy.check(origin) == Refusal(
            403, f"Origin {origin} is not allowed to connect", "origin"
        )


def test_a_star_among_other_origins_allows_every_origin() -> None:
    assert OriginPolicy(["https://app.example", " * "]).check("https://x.example") is None
