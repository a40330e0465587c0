"""Connection limit bookkeeping, without sockets."""

from pushgate.limits import Admission, ConnectionLimits, MessageRate


def test_a_rate_below_one_per_second_still_admits() -> None:
    """--max-connects-per-second 0.5 lets one connection in every two seconds."""
    admission = Admission(ConnectionLimits(0, 0, 0.5))
    assert admission.admit("a", 0.0) is None
    refusal = admission.admit("a", 0.1)
    assert refusal is not None
    assert refusal.status == 429
    assert admission.admit("a", 2.2) is None


def test_a_burst_of_one_seconds_worth_then_refusals() -> None:
    """At 3 per second, three connect at once, the fourth is refused, and a second later more."""
    admission = Admission(ConnectionLimits(0, 0, 3))
    assert [admission.admit("a", 0.0) for _ in range(3)] == [None, None, None]
    assert admission.admit("a", 0.0) is not None
    assert admission.admit("a", 1.0) is None


def test_released_connections_make_room_per_address() -> None:
    """Closing a connection frees its place under the per-address and total limits."""
    admission = Admission(ConnectionLimits(2, 1, 0))
    assert admission.admit("a", 0) is None
    over = admission.admit("a", 0)
    assert over is not None
    assert over.status == 429
    assert admission.admit("b", 0) is None
    full = admission.admit("c", 0)
    assert full is not None
    assert full.status == 503
    admission.release("a")
    assert admission.admit("c", 0) is None


def test_message_rate_counts_per_second() -> None:
    """Messages are counted in one-second windows."""
    rate = MessageRate()
    assert [rate.over(10.0, 3) for _ in range(4)] == [False, False, False, True]
    assert rate.over(11.0, 3) is False
