"""When the gateway's sweeper looks at each connection: a timer wheel.

Every connection has timers (its heartbeat, the idle timeout, the handshake and close
timeouts, a subscription's end), and none has a timer of its own in the event loop:
the sweeper checks them. Checking every connection on every sweep (a second) made
the sweeper the largest cost of an idle server after the kernel's (10,000 calls a
second for 10,000 connections that had nothing due). Instead, each check says when
the connection next has something due, and the wheel keeps it in the bucket of that
tick: a connection that pings every few seconds is looked at about once per
``--ping-after``, when its heartbeat would have been due.

A deadline can only come earlier than its bucket by something the connection is
told (a close, which sets its abort time; a subscription with an end): whoever sets
it calls :meth:`TimerWheel.schedule` with it, and the earlier bucket wins. A
connection is in one bucket at most, and leaves it when it closes
(:meth:`TimerWheel.forget`): the wheel holds no closed connection.

Pure and synchronous: the gateway's sweeper (gateway.py) drives it.
"""

import math
from typing import Generic, Protocol, TypeVar


class Swept(Protocol):
    """A connection the wheel schedules: it keeps the tick of its bucket."""

    sweep_tick: int | None


S = TypeVar("S", bound=Swept)


class TimerWheel(Generic[S]):
    """Connections in buckets of ``interval`` seconds, by when they are next due."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        # Dicts as ordered sets: a connection leaves its bucket in O(1).
        self._buckets: dict[int, dict[S, None]] = {}
        # Each bucket's tick, the int object its connections keep (a tick is past 256:
        # one int per bucket, not one per connection).
        self._ticks: dict[int, int] = {}
        self._taken: int | None = None  # the last tick whose bucket was taken

    def schedule(self, swept: S, at: float) -> None:
        """Have ``swept`` taken by the first tick at or after ``at`` (and after the last
        tick taken), unless it is due earlier already."""
        tick = math.ceil(at / self.interval)
        if self._taken is not None and tick <= self._taken:
            tick = self._taken + 1
        current = swept.sweep_tick
        if current is not None:
            if current <= tick:
                return
            del self._buckets[current][swept]
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = {swept: None}
            self._ticks[tick] = tick
        else:
            bucket[swept] = None
            tick = self._ticks[tick]
        swept.sweep_tick = tick

    def forget(self, swept: S) -> None:
        """``swept`` is gone: out of its bucket."""
        tick = swept.sweep_tick
        if tick is not None:
            swept.sweep_tick = None
            del self._buckets[tick][swept]

    def take_due(self, now: float) -> list[S]:
        """Every connection whose tick has come by ``now``, in the order scheduled;
        they are no longer scheduled (the sweeper checks each, and schedules it
        again)."""
        up_to = math.floor(now / self.interval)
        taken, buckets = self._taken, self._buckets
        if taken is not None and up_to - taken <= len(buckets):
            ticks: list[int] | range = range(taken + 1, up_to + 1)
        else:  # the first take, or after a long stall: only the buckets there are
            ticks = sorted(tick for tick in buckets if tick <= up_to)
        due: list[S] = []
        for tick in ticks:
            bucket = buckets.pop(tick, None)
            if bucket is not None:
                del self._ticks[tick]
                due.extend(bucket)
        for swept in due:
            swept.sweep_tick = None
        if taken is None or up_to > taken:
            self._taken = up_to
        return due

    def __len__(self) -> int:
        """Connections scheduled."""
        return sum(len(bucket) for bucket in self._buckets.values())
