"""The sweeper's timer wheel: each connection is taken once, at the first tick at or
after when it said it is next due, earlier if told so, never once it is gone."""

from pushgate.timerwheel import TimerWheel


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sweep_tick: int | None = None

    def __repr__(self) -> str:
        return self.name


def test_a_connection_is_taken_at_the_first_tick_after_it_is_due() -> None:
    wheel: TimerWheel[Conn] = TimerWheel(1.0)
    a, b = Conn("a"), Conn("b")
    wheel.take_due(100.0)
    wheel.schedule(a, 102.5)
    wheel.schedule(b, 104.0)
    assert wheel.take_due(102.9) == []
    assert wheel.take_due(103.0) == [a]
    assert wheel.take_due(103.5) == []
    assert wheel.take_due(110.0) == [b]  # a late sweep takes every tick it passed
    assert len(wheel) == 0


def test_the_earlier_schedule_wins_and_each_is_taken_once() -> None:
    wheel: TimerWheel[Conn] = TimerWheel(1.0)
    a = Conn("a")
    wheel.take_due(0.0)
    wheel.schedule(a, 15.0)
    wheel.schedule(a, 30.0)  # later: ignored, it is due at 15 already
    wheel.schedule(a, 2.0)  # a close: earlier wins, and it leaves the 15 s bucket
    assert len(wheel) == 1
    assert wheel.take_due(2.0) == [a]
    assert wheel.take_due(60.0) == []


def test_a_due_time_already_past_is_taken_on_the_next_tick() -> None:
    wheel: TimerWheel[Conn] = TimerWheel(0.5)
    a = Conn("a")
    wheel.take_due(10.0)
    wheel.schedule(a, 3.0)  # overdue: not lost in a tick already taken
    assert wheel.take_due(10.4) == []
    assert wheel.take_due(10.5) == [a]


def test_a_connection_gone_is_never_taken_and_not_held() -> None:
    wheel: TimerWheel[Conn] = TimerWheel(1.0)
    a, b = Conn("a"), Conn("b")
    wheel.schedule(a, 5.0)
    wheel.schedule(b, 5.0)
    wheel.forget(a)
    wheel.forget(a)  # twice: harmless
    assert len(wheel) == 1
    assert wheel.take_due(5.0) == [b]


def test_the_first_take_starts_from_the_buckets_not_from_time_zero() -> None:
    """A monotonic clock may read days: the first sweep must not walk every tick
    since zero."""
    wheel: TimerWheel[Conn] = TimerWheel(0.001)
    a = Conn("a")
    wheel.schedule(a, 1_000_000.0)
    assert wheel.take_due(1_000_000.0) == [a]


def test_connections_of_one_bucket_keep_one_tick_object() -> None:
    """A tick is a large int: the connections in one bucket share its object."""
    wheel: TimerWheel[Conn] = TimerWheel(0.25)
    a, b = Conn("a"), Conn("b")
    wheel.schedule(a, 35_000.1)
    wheel.schedule(b, 35_000.2)
    assert a.sweep_tick == b.sweep_tick == 140_001
    assert a.sweep_tick is b.sweep_tick
    assert wheel.take_due(35_000.25) == [a, b]
    wheel.schedule(a, 35_001.0)
    assert wheel.take_due(35_001.0) == [a]
