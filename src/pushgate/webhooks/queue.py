"""The WebhookQueue contract: where events wait until every receiver has them.

Implementations: :class:`~pushgate.webhooks.memqueue.MemoryWebhookQueue` (one
process) and :class:`~pushgate.webhooks.redisqueue.RedisWebhookQueue` (a cluster's
nodes share a Redis stream). tests/webhooks/test_queue_contract.py runs one suite
against both, and against a Redis Cluster.

Theory of operation
-------------------

Every node adds the events it emits to one log; ids (events.py: ``"<ms>-<n>"``) are
given by the queue, unique and increasing, in the order of the log. Each receiver
has a **cursor**, the id of the last event it was sent (or given up), and a
**lease**: the one holder (a node's process) that sends its events, in log order,
from the cursor on. A holder renews the lease well within its length; when it dies,
the lease runs out and another node claims it, reads the cursor, and sends what
follows. A batch that was POSTed but whose cursor was not yet moved is sent again,
with the same ids: delivery is at least once.

Entries leave the log when every receiver whose cursor was touched within ``keep``
seconds has passed them, or when they are older than ``keep`` (their senders gave
them up by then). A cursor that fell behind what the log still holds sees the gap in
the ids' counts (:func:`~pushgate.webhooks.events.lost_between`).

Every method raises :class:`~pushgate.errors.BrokerUnavailable` when the queue's
store cannot be reached; nothing was done, or it is unknown whether it was (an add
is made idempotent by its ``(adder, batch)``; a commit or a claim may be repeated).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pushgate.webhooks.events import Entry, Queued


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease held: ``cursor`` is the id of the last event the receiver was sent or
    given up (None: none yet; read from the start of the log)."""

    cursor: str | None


class WebhookQueue(Protocol):
    async def add(self, entries: Sequence[Entry], *, adder: str, batch: int, keep: float) -> None:
        """Append ``entries``, in order, after everything added before, and drop the
        entries older than ``keep`` seconds. ``batch`` numbers the adds of ``adder``
        (a string unique to one process's emitter), increasing: an add whose batch
        was already added is not added again (the retry of an add whose answer was
        lost)."""
        ...

    async def read(self, after: str | None, count: int) -> list[Queued]:
        """Up to ``count`` entries after the id ``after`` (None: from the start), in
        order."""
        ...

    async def claim(self, receiver: str, holder: str, lease: float) -> Claim | None:
        """Take (or, for its holder, renew) the lease on ``receiver``'s events for
        ``lease`` seconds; None when another holder has it. Renew it well within
        ``lease``: a lease that ran out may be claimed by another holder."""
        ...

    async def commit(self, receiver: str, holder: str, last: str, *, keep: float) -> bool:
        """Move ``receiver``'s cursor to ``last`` if ``holder`` still holds its lease
        (False otherwise: nothing was done, and the holder must claim again), and
        drop the entries that every cursor touched within ``keep`` seconds has passed."""
        ...

    async def release(self, receiver: str, holder: str) -> None:
        """Give up the lease, if ``holder`` has it: another holder may claim it at once."""
        ...

    async def close(self) -> None: ...


# Every queue drops entries at most this much later than its senders give them up.
KEEP_MARGIN = 60.0


def keep_for(retry_for: float) -> float:
    """How long a queue keeps an entry whose senders retry for ``retry_for`` seconds."""
    return retry_for + KEEP_MARGIN
