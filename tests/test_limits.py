"""Connection and input limit bookkeeping, without sockets."""

from pushgate.limits import Admission, ClientBudget, ConnectionLimits, InputLimits, address_key


def test_a_rate_below_one_per_second_still_admits() -> None:
    """--max-connects-per-second 0.5 lets one connection in every two seconds."""
    admission = Admission(ConnectionLimits(0, 0, 0.5))
    assert admission.admit("a", 0.0) is None
    refusal = admission.admit("b", 0.1)
    assert refusal is not None
    assert refusal.status == 429
    assert admission.admit("b", 2.2) is None


def test_a_burst_of_one_seconds_worth_then_refusals() -> None:
    """At 3 per second, three connect at once, the fourth is refused, and a second later more."""
    admission = Admission(ConnectionLimits(0, 0, 3, max_connects_per_second_per_ip=3))
    assert [admission.admit("a", 0.0) for _ in range(3)] == [None, None, None]
    assert admission.admit("a", 0.0) is not None
    assert admission.admit("a", 1.0) is None


def test_one_address_cannot_take_the_whole_connect_rate() -> None:
    """By default one address gets a quarter of --max-connects-per-second: past it,
    its connects are refused (429, naming it) while other addresses still get in."""
    admission = Admission(ConnectionLimits(0, 0, 20))
    admitted = [admission.admit("10.0.0.1", 0.0) for _ in range(10)]
    assert admitted.count(None) == 5
    refusal = next(r for r in admitted if r is not None)
    assert (refusal.status, refusal.kind) == (429, "ip_connect_rate")
    assert "10.0.0.1" in refusal.reason
    assert [admission.admit(f"10.0.1.{i}", 0.0) for i in range(15)] == [None] * 15
    over = admission.admit("10.0.2.1", 0.0)
    assert over is not None
    assert over.kind == "connect_rate"


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
    assert admission.open == 2


def test_an_ipv6_host_counts_as_its_slash_64() -> None:
    """Two addresses of one /64 share the per-address cap; another /64 does not; an
    IPv4-mapped address counts as its IPv4 address."""
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    admission = Admission(ConnectionLimits(0, 1, 0))
    assert admission.admit("2001:db8:1:2::1", 0) is None
    assert admission.admit("2001:db8:1:2::2", 0) is not None
    assert admission.admit("2001:db8:1:3::1", 0) is None


def test_message_rate_counts_per_second() -> None:
    """Messages are counted in one-second windows."""
    limits = InputLimits(messages_per_second=3)
    budget = ClientBudget(limits)
    assert [budget.message(10.0, limits) for _ in range(4)] == [False, False, False, True]
    assert budget.message(11.0, limits) is False


def test_frames_of_any_kind_count_against_a_bucket() -> None:
    """A burst of one second's worth of frames passes; one more is over, naming the
    option; a second later there is room again."""
    limits = InputLimits(frames_per_second=100)
    budget = ClientBudget(limits)
    assert budget.received(0.0, 100, 600, limits) is None
    over = budget.received(0.0, 1, 6, limits)
    assert over is not None
    assert over[0] == "max_client_frames_per_second"
    assert "100 frames per second" in over[1]
    assert ClientBudget(limits).received(0.0, 50, 1, limits) is None
    again = ClientBudget(limits)
    again.received(0.0, 100, 1, limits)
    assert again.received(1.0, 100, 1, limits) is None


def test_bytes_count_and_one_whole_message_always_fits() -> None:
    """The byte bucket holds a second's worth, or one largest message if that is more."""
    limits = InputLimits(bytes_per_second=1000, max_message_bytes=64 * 1024)
    budget = ClientBudget(limits)
    assert budget.received(0.0, 1, 64 * 1024, limits) is None
    over = budget.received(0.0, 1, 20 * 1024, limits)
    assert over is not None
    assert over[0] == "max_client_bytes_per_second"


def test_no_limits_count_nothing() -> None:
    limits = InputLimits()
    budget = ClientBudget(limits)
    assert budget.received(0.0, 10**6, 10**9, limits) is None
    assert budget.message(0.0, limits) is False
