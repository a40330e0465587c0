"""Connection and input limit bookkeeping, without sockets."""

from pushgate.limits import Admission, ClientBudget, ConnectionLimits, InputLimits, address_key
from pushgate.security import Refusal


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
    assert [budget.count_message(10.0, limits) for _ in range(4)] == [False, False, False, True]
    assert budget.count_message(11.0, limits) is False


def test_frames_of_any_kind_count_against_a_bucket() -> None:
    """A burst of one second's worth of frames passes; one more is over, naming the
    option; a second later there is room again."""
    limits = InputLimits(frames_per_second=100)
    budget = ClientBudget(limits)
    assert budget.count_input(0.0, 100, 600, limits) is None
    over = budget.count_input(0.0, 1, 6, limits)
    assert over is not None
    assert over[0] == "max_client_frames_per_second"
    assert "100 frames per second" in over[1]
    assert ClientBudget(limits).count_input(0.0, 50, 1, limits) is None
    again = ClientBudget(limits)
    again.count_input(0.0, 100, 1, limits)
    assert again.count_input(1.0, 100, 1, limits) is None


def test_bytes_count_and_one_whole_message_always_fits() -> None:
    """The byte bucket holds a second's worth, or one largest message if that is more."""
    limits = InputLimits(bytes_per_second=1000, max_message_bytes=64 * 1024)
    budget = ClientBudget(limits)
    assert budget.count_input(0.0, 1, 64 * 1024, limits) is None
    over = budget.count_input(0.0, 1, 20 * 1024, limits)
    assert over is not None
    assert over[0] == "max_client_bytes_per_second"


def test_no_limits_count_nothing() -> None:
    limits = InputLimits()
    budget = ClientBudget(limits)
    assert budget.count_input(0.0, 10**6, 10**9, limits) is None
    assert budget.count_message(0.0, limits) is False


def test_each_refusal_says_which_limit_and_how_much() -> None:
    """The status, the reason a client reads and the kind the metrics count, for the
    limits on open connections in all and per address."""
    admission = Admission(ConnectionLimits(2, 1, 0))
    assert admission.admit("10.0.0.1", 0) is None
    assert admission.admit("10.0.0.1", 0) == Refusal(
        429, "too many connections from 10.0.0.1: 1 (limit)", "ip_limit"
    )
    assert admission.admit("10.0.0.2", 0) is None
    assert admission.admit("10.0.0.3", 0) == Refusal(
        503, "server full: 2 connections (limit)", "server_full"
    )


def test_each_address_holds_its_own_count_of_open_connections() -> None:
    """Two per address: a third is refused until one of the two goes, and then one
    more, not two, may come; the count in all follows."""
    admission = Admission(ConnectionLimits(0, 2, 0))
    assert [admission.admit("a", 0) for _ in range(2)] == [None, None]
    assert admission.admit("a", 0) is not None
    assert admission.admit("b", 0) is None
    admission.release("a")
    assert admission.open == 2
    assert admission.admit("a", 0) is None
    assert admission.admit("a", 0) is not None
    for _ in range(2):
        admission.release("a")
    assert admission.open == 1
    again = [admission.admit("a", 0) for _ in range(3)]
    assert again[:2] == [None, None]
    assert again[2] is not None


def test_connect_rates_refill_with_time_whatever_the_clock_reads() -> None:
    """At 1 per second (per address and in all): one now, none half a second later,
    one a second later, on a monotonic clock far from zero."""
    for limits in (ConnectionLimits(0, 0, 1.0), ConnectionLimits(0, 0, 0, 1.0)):
        admission = Admission(limits)
        assert admission.admit("a", 5000.0) is None
        assert admission.admit("a", 5000.5) is not None
        assert admission.admit("a", 5001.5) is None


def test_the_buckets_of_addresses_that_refilled_are_forgotten_and_only_those() -> None:
    """Past 10,000 addresses the per-address buckets that have refilled are dropped,
    so a client cycling through addresses cannot make them grow without bound; an
    address still short of tokens keeps its bucket (and is still refused)."""
    admission = Admission(ConnectionLimits(0, 0, 0, 0.5))
    assert admission.admit("busy", 100.0) is None
    for n in range(9_998):
        assert admission.admit(f"10.{n // 256}.{n % 256}.1", 100.0 - 10.0) is None
    assert admission.admit("ten-thousandth", 100.0) is None
    assert len(admission._ip_buckets) == 10_000
    assert admission.admit("one more", 100.5) is None  # prunes: the 9,998 have refilled
    assert sorted(admission._ip_buckets) == ["busy", "one more", "ten-thousandth"]
    assert admission.admit("busy", 100.5) is not None


def test_frames_and_bytes_refill_with_time_whatever_the_clock_reads() -> None:
    """Half a second after a burst, half a second's worth may be sent again."""
    limits = InputLimits(frames_per_second=100, bytes_per_second=100_000)
    budget = ClientBudget(limits)
    assert budget.count_input(5000.0, 100, 100_000, limits) is None
    assert budget.count_input(5000.5, 50, 50_000, limits) is None
    over = budget.count_input(5000.5, 0, 1, limits)
    assert over == ("max_client_bytes_per_second", "rate limit: over 100000 bytes per second")
    assert ClientBudget(limits).count_input(5000.0, 101, 0, limits) == (
        "max_client_frames_per_second",
        "rate limit: over 100 frames per second",
    )


def test_a_whole_burst_to_the_last_byte_passes() -> None:
    limits = InputLimits(bytes_per_second=100_000)
    assert ClientBudget(limits).count_input(0.0, 1, 100_000, limits) is None
    assert ClientBudget(limits).count_input(0.0, 1, 100_001, limits) is not None


def test_past_twice_the_message_rate_a_client_is_abusing() -> None:
    """Between once and twice the rate its messages are refused one by one; past
    twice, in the same second, it is closed."""
    limits = InputLimits(messages_per_second=3)
    budget = ClientBudget(limits)
    over = [budget.count_message(10.0, limits) for _ in range(7)]
    assert over == [False, False, False, True, True, True, True]
    assert not ClientBudget(limits).abusing(limits)
    budget = ClientBudget(limits)
    abusing = []
    for _ in range(7):
        budget.count_message(10.0, limits)
        abusing.append(budget.abusing(limits))
    assert abusing == [False] * 6 + [True]
    assert not budget.abusing(InputLimits())
