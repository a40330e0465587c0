"""The process-wide budget for output held unsent: the largest holders go first.

Each connection's own bound (``--max-output-bytes``) keeps one slow client from
holding much, but many slow clients together (300 that never read, each just under
its own bound) could still hold gigabytes. :class:`OutputBudget` watches the
connections that hold more than a little (their transport said so by pausing
writing) and, when their total passes ``--max-output-total-bytes``, closes the
largest holders first until the rest fits.

Pure: no asyncio, no sockets. The connections are anything with the two methods
of :class:`Holder`.
"""

from typing import Protocol

# A connection joins the watched set once it holds this much unsent (its transport's
# high-water mark, when its own bound is larger): below it, a client is keeping up.
WATCH_BYTES = 64 * 1024
# The total is summed at most this often (seconds): a sum walks every watched holder.
CHECK_INTERVAL = 0.01


class Holder(Protocol):
    """A connection that may hold output unsent."""

    def unsent(self) -> int:
        """Bytes held for it, not yet taken by the kernel."""
        ...

    def overflow(self, reason: str) -> None:
        """Close it (1008) for holding too much, and stop queuing output for it."""
        ...


class OutputBudget:
    """Bytes held unsent for all watched connections together, at most ``limit``
    (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._holders: set[Holder] = set()
        self._checked_at = float("-inf")
        self.closed = 0  # connections closed for the budget, for metrics and tests

    def watch(self, holder: Holder) -> None:
        """``holder`` holds more than :data:`WATCH_BYTES`."""
        self._holders.add(holder)

    def forget(self, holder: Holder) -> None:
        """``holder`` drained, or is closing, or is gone."""
        self._holders.discard(holder)

    def __len__(self) -> int:
        return len(self._holders)

    def check(self, now: float) -> int:
        """Close the largest holders while the total passes the limit; return how
        many were closed. Cheap when nobody holds much."""
        if not self.limit or not self._holders or now - self._checked_at < CHECK_INTERVAL:
            return 0
        self._checked_at = now
        sizes = [(holder.unsent(), holder) for holder in self._holders]
        total = sum(size for size, _ in sizes)
        if total <= self.limit:
            return 0
        sizes.sort(key=lambda pair: pair[0], reverse=True)
        closed = 0
        for size, holder in sizes:
            if total <= self.limit:
                break
            self._holders.discard(holder)
            holder.overflow(
                f"server output budget: {size} bytes unsent for this client, "
                f"{total} for all (limit {self.limit})"
            )
            total -= size
            closed += 1
        self.closed += closed
        return closed
