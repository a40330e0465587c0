"""Pure tests of the gateway's door (gatekeeper.py), without a socket: the order of
its checks, where a token is read from, the subprotocol answered, the limits it
counts, and how refusals are logged. (test_security.py and test_connection.py go
through a running gateway; these pin what mutation testing found unpinned.)"""

import logging

import jwt
import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from pushgate.gatekeeper import Admitted, Gatekeeper, RefusalLog
from pushgate.ids import RoomId
from pushgate.limits import ConnectionLimits
from pushgate.security import Claims, OriginPolicy, Refusal, TokenVerifier

SECRET = "s3cret-for-tests-only-0123456789abcdef"
ALICE = jwt.encode({"sub": "alice", "rooms": ["news"]}, SECRET, algorithm="HS256")
ALICE_CLAIMS = Claims("alice", (RoomId("news"),))
FORGED = jwt.encode({"sub": "alice"}, "another-secret-for-tests-0123456789", algorithm="HS256")


def handshake(path: str = "/connect", *protocols: str, origin: str | None = None) -> Request:
    headers = Headers()
    for value in protocols:
        headers["Sec-WebSocket-Protocol"] = value
    if origin is not None:
        headers["Origin"] = origin
    return Request(path, headers)


def with_tokens(*, required: bool = False, max_rooms: int = 100) -> Gatekeeper:
    return Gatekeeper(
        tokens=TokenVerifier(secret=SECRET), require_token=required, max_rooms_per_conn=max_rooms
    )


def test_without_tokens_every_handshake_is_let_in_unverified() -> None:
    """No verifier: no claims, nothing verified (a resume need not match a user), and
    a token in the query is not read."""
    door = Gatekeeper()
    assert door.check(handshake(f"/connect?token={ALICE}")) == Admitted(None, None, False)
    assert door.check(handshake(origin="https://any.example")) == Admitted(None, None, False)


def test_the_origin_is_checked_before_the_token() -> None:
    """A page from another origin is refused for its origin, even without a token."""
    door = Gatekeeper(
        origins=OriginPolicy(["https://app.example"]),
        tokens=TokenVerifier(secret=SECRET),
        require_token=True,
    )
    answer = door.check(handshake(origin="https://evil.example"))
    assert isinstance(answer, Refusal)
    assert (answer.status, answer.kind) == (403, "origin")
    assert isinstance(door.check(handshake(f"/connect?token={ALICE}", origin=None)), Admitted)


def test_a_required_token_that_is_missing_is_401() -> None:
    answer = with_tokens(required=True).check(handshake("/connect?v=2"))
    assert answer == Refusal(
        401, "a connection token is required (?token=… or subprotocol)", "token_required"
    )


def test_an_optional_token_may_be_missing_but_not_invalid() -> None:
    """Without --require-token a handshake without a token gets in (verified, with no
    claims: its resume must be of no user), and a bad token is still 403."""
    door = with_tokens()
    assert door.check(handshake()) == Admitted(None, None, True)
    answer = door.check(handshake(f"/connect?token={FORGED}"))
    assert isinstance(answer, Refusal)
    assert (answer.status, answer.kind) == (403, "token_invalid")


def test_a_token_in_the_query_gives_its_claims() -> None:
    """The token is read from the whole query, which may hold a ``?`` of its own."""
    door = with_tokens(required=True)
    for path in (f"/connect?token={ALICE}", f"/connect?token={ALICE}&back=/page?x=1"):
        assert door.check(handshake(path)) == Admitted(ALICE_CLAIMS, None, True), path


def test_a_browser_offering_only_its_token_gets_it_back_as_the_subprotocol() -> None:
    """A browser must be answered one of its offers: offered the token alone, it gets
    the token; offered ``pushgate`` too, in any header or order, it gets ``pushgate``."""
    door = with_tokens(required=True)
    assert door.check(handshake("/connect", ALICE)) == Admitted(ALICE_CLAIMS, ALICE, True)
    for offers in ([f"pushgate, {ALICE}"], [f" {ALICE} ,pushgate"], [ALICE, "pushgate"]):
        assert door.check(handshake("/connect", *offers)) == Admitted(
            ALICE_CLAIMS, "pushgate", True
        ), offers


def test_pushgate_is_answered_when_offered_and_nothing_else_is() -> None:
    """Without tokens, ``pushgate`` is answered when offered (empty offers and
    spaces ignored), and an offer the server does not speak is never echoed."""
    door = Gatekeeper()
    assert door.check(handshake("/connect", ", pushgate ,")) == Admitted(None, "pushgate", False)
    assert door.check(handshake("/connect", "chat, superchat")) == Admitted(None, None, False)
    assert with_tokens().check(handshake(f"/connect?token={ALICE}", "chat")) == Admitted(
        ALICE_CLAIMS, None, True
    )


def test_a_token_may_name_as_many_rooms_as_a_connection_may_join() -> None:
    """By default 100 (--max-rooms-per-conn); a token naming more is refused."""
    rooms = [f"r{n}" for n in range(101)]
    many = jwt.encode({"rooms": rooms[:100]}, SECRET, algorithm="HS256")
    too_many = jwt.encode({"rooms": rooms}, SECRET, algorithm="HS256")
    door = with_tokens()
    assert isinstance(door.check(handshake(f"/connect?token={many}")), Admitted)
    assert isinstance(door.check(handshake(f"/connect?token={too_many}")), Refusal)
    assert isinstance(with_tokens(max_rooms=99).check(handshake(f"/connect?token={many}")), Refusal)


def test_the_door_counts_connections_against_its_limits() -> None:
    """A connection counts from admit to release; without limits, any number pass."""
    door = Gatekeeper(
        limits=ConnectionLimits(
            max_connections=1, max_connections_per_ip=0, max_connects_per_second=0
        )
    )
    assert door.admit("10.0.0.1", 0.0) is None
    refused = door.admit("10.0.0.2", 0.0)
    assert refused is not None
    assert (refused.status, refused.kind) == (503, "server_full")
    door.release("10.0.0.1")
    assert door.admit("10.0.0.2", 0.0) is None
    unlimited = Gatekeeper()
    assert all(unlimited.admit("10.0.0.1", 0.0) is None for _ in range(1000))


# Refusals in the log

LOGGER = "pushgate.tests.refusals"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    caplog.clear()
    return found


def test_the_first_refusal_of_a_kind_is_logged_at_once_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One line at once, then one line per interval with the count and the last
    refusal's own line; each kind on its own."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    log = RefusalLog(logging.getLogger(LOGGER), interval=10.0)
    log.refused("origin", "refused 1", 100.0)
    assert lines(caplog) == ["refused 1 (more of these are counted for 10 s)"]
    log.refused("origin", "refused 2", 101.0)
    log.refused("ip_limit", "other kind", 102.0)
    log.refused("origin", "refused 3", 109.9)
    assert lines(caplog) == ["other kind (more of these are counted for 10 s)"]
    log.refused("origin", "refused 4", 110.0)
    assert lines(caplog) == ["3 more refused in the last 10 s (origin); the last: refused 4"]
    log.refused("origin", "refused 5", 110.5)
    assert lines(caplog) == ["refused 5 (more of these are counted for 10 s)"]


def test_a_flush_logs_the_intervals_that_are_over_and_a_stop_logs_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An interval without more refusals ends silently; ``all_kinds`` ends every one."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    log = RefusalLog(logging.getLogger(LOGGER), interval=10.0)
    log.refused("a", "a1", 0.0)
    log.refused("b", "b1", 5.0)
    log.refused("b", "b2", 6.0)
    lines(caplog)
    log.flush(9.9)
    assert lines(caplog) == []
    log.flush(10.0)
    assert lines(caplog) == []  # "a" had no more: its interval ends silently
    log.refused("a", "a2", 11.0)
    assert lines(caplog) == ["a2 (more of these are counted for 10 s)"]
    log.flush(12.0, all_kinds=True)
    assert lines(caplog) == ["1 more refused in the last 10 s (b); the last: b2"]
    log.refused("b", "b3", 13.0)
    assert lines(caplog) == ["b3 (more of these are counted for 10 s)"]


def test_a_gateways_refusals_are_counted_for_ten_seconds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pushgate.gateway")
    Gatekeeper().refusals.refused("origin", "refused", 0.0)
    assert [r.getMessage() for r in caplog.records if r.name == "pushgate.gateway"] == [
        "refused (more of these are counted for 10 s)"
    ]
