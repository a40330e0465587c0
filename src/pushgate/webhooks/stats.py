"""What a node's webhooks count, for ``/metrics`` (pushgate.metrics exports it).

Plain integers bumped per batch, never per event in a loop. Pure.
"""

from collections import Counter
from dataclasses import dataclass, field

from pushgate.meters import Histogram

# Seconds a receiver takes to answer a POST.
POST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Why an event was failed (counted, and logged, never dropped silently).
GAVE_UP = "gave_up"  # its receiver failed for longer than the retry window
TRIMMED = "trimmed"  # the queue dropped it before its receiver's sender read it
DROPPED = "dropped"  # the emit buffer was full while the queue was unavailable
UNQUEUED = "unqueued"  # still in the emit buffer when the node closed
REASONS = (GAVE_UP, TRIMMED, DROPPED, UNQUEUED)


@dataclass(eq=False)
class WebhookStats:
    """``queued``: events this node added to the queue; ``sent``: events a receiver
    answered 2xx for (once per receiver); ``retried``: events in a POST that failed
    and will be tried again; ``failed``: events given up, by reason; ``buffered``:
    events emitted and not yet queued (a gauge)."""

    queued: int = 0
    sent: int = 0
    retried: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    buffered: int = 0
    post_seconds: Histogram = field(default_factory=lambda: Histogram(POST_BUCKETS))
