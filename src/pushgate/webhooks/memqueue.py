"""The webhook queue of one process: the WebhookQueue contract (queue.py) in memory.

What a process emits is lost with it: durable queuing takes Redis (redisqueue.py).
Leases are kept as the Redis queue keeps them, so that one suite tests both and two
emitters in one process behave as two nodes would.
"""

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pushgate.webhooks.events import Entry, Queued, event_id, id_count, id_ms
from pushgate.webhooks.queue import Claim, WebhookQueue

# A cursor is kept this long after it was last touched; then it is forgotten.
FORGET_CURSOR = 7 * 24 * 3600.0


class MemoryWebhookQueue:
    """A list of entries with the count of the first one, cursors and leases."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._entries: list[Queued] = []
        self._head = 0  # entries before it are dropped
        self._count = 0  # of the last entry added
        self._last_ms = 0
        self._batches: dict[str, int] = {}  # adder -> its last batch added
        self._cursors: dict[str, tuple[str | None, float]] = {}  # -> (id, touched at)
        self._leases: dict[str, tuple[str, float]] = {}  # receiver -> (holder, until)

    async def add(self, entries: Sequence[Entry], *, adder: str, batch: int, keep: float) -> None:
        if self._batches.get(adder, 0) >= batch:
            return
        self._batches[adder] = batch
        now = self._now_ms()
        self._last_ms = max(now, self._last_ms)
        for entry in entries:
            self._count += 1
            self._entries.append(Queued(event_id(self._last_ms, self._count), entry))
        self._drop_before(now - int(keep * 1000), None)

    async def read(self, after: str | None, count: int) -> list[Queued]:
        start = self._head
        if after is not None and self._head < len(self._entries):
            first = id_count(self._entries[self._head].id)
            start += max(0, id_count(after) + 1 - first)
        return self._entries[start : start + count]

    async def claim(self, receiver: str, holder: str, lease: float) -> Claim | None:
        now = self._monotonic()
        held = self._leases.get(receiver)
        if held is not None and held[0] != holder and held[1] > now:
            return None
        self._leases[receiver] = (holder, now + lease)
        cursor, _ = self._cursors.get(receiver, (None, 0.0))
        self._cursors[receiver] = (cursor, self._clock())
        return Claim(cursor)

    async def commit(self, receiver: str, holder: str, last: str, *, keep: float) -> bool:
        held = self._leases.get(receiver)
        if held is None or held[0] != holder or held[1] <= self._monotonic():
            return False
        now = self._clock()
        self._cursors[receiver] = (last, now)
        live = []
        for name, (cursor, touched) in list(self._cursors.items()):
            if touched < now - FORGET_CURSOR:
                del self._cursors[name]
            elif touched >= now - keep:
                live.append(cursor)
        counts = [id_count(cursor) for cursor in live if cursor is not None]
        if counts and len(counts) == len(live):  # a cursor not yet moved holds everything
            self._drop_before(None, min(counts))
        return True

    async def release(self, receiver: str, holder: str) -> None:
        held = self._leases.get(receiver)
        if held is not None and held[0] == holder:
            del self._leases[receiver]

    async def close(self) -> None:
        pass

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _drop_before(self, ms: int | None, count: int | None) -> None:
        """Drop the entries queued before ``ms``, or counted before ``count``."""
        entries, head = self._entries, self._head
        while head < len(entries) and (
            (ms is not None and id_ms(entries[head].id) < ms)
            or (count is not None and id_count(entries[head].id) < count)
        ):
            head += 1
        self._head = head
        if head > 1024 and head * 2 > len(entries):  # compact now and then, not per drop
            del entries[:head]
            self._head = 0


def memory_queue() -> MemoryWebhookQueue:
    """A queue for the webhooks of one process."""
    return MemoryWebhookQueue()


if TYPE_CHECKING:
    _: type[WebhookQueue] = MemoryWebhookQueue
