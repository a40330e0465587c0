"""What a node counts while it runs, for ``/metrics`` (pushgate.metrics exports it).

Plain integers and fixed-bucket histograms, bumped where things happen: the fan-out
path adds to an int per push and per write pass, never calls a metrics library per
delivery. Pure: no I/O, no clock of its own (callers pass times in).

Delivery latency is measured per push, not per delivery: when a node hands a push
to its local recipients it notes (the time the push was accepted, how many got it).
The outbox then writes that turn's frames, socket after socket, reading the clock
after every ``CHECKPOINT`` sockets; each note is spread over those checkpoints in
proportion to the sockets each covers, one weighted observation per checkpoint. A
write pass over 10,000 sockets takes tens of milliseconds: the first sockets are
written that much sooner than the last, and the histogram shows it.
"""

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence

# Seconds. Latency from acceptance to the socket write, and publish times: steps of
# about 1.5x, so that a quantile read from them is within a third of the truth.
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
)
# Sockets written between two readings of the clock in a write pass.
CHECKPOINT = 256
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# A node without an outbox (no gateway) never drains its notes; nor does one whose
# recipients are not sockets (tests): bound what waits.
MAX_UNWRITTEN = 10_000


class Histogram:
    """Counts per bucket (upper bounds, +Inf implied), a sum and a count."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float, weight: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += weight
        self.total += value * weight
        self.count += weight

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or under it), +Inf last: Prometheus' form."""
        running = 0
        out = []
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (None: no data)."""
        if not self.count:
            return None
        rank = q * self.count
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            if running >= rank:
                return bound
        return float("inf")


class Meters:
    """One node's counts. Attributes are bumped in place by the code that does the work."""

    def __init__(self) -> None:
        # The logic API's side
        # Accepted, by target kind (each kind shown from the start, at 0).
        self.pushes: Counter[str] = Counter(
            dict.fromkeys(("all", "room", "user", "conn", "client"), 0)
        )
        self.publish_seconds = Histogram(LATENCY_BUCKETS)
        # Fan-out and writes
        self.deliveries = 0  # frames handed to local connections
        self.frames_written = 0
        self.bytes_written = 0
        self.writes = 0  # transport.write calls: frames_written / writes is the coalescing
        self.delivery_latency = Histogram(LATENCY_BUCKETS)
        self._unwritten: list[tuple[float, int]] = []
        # Connections
        self.closes: Counter[int] = Counter()  # by close code; 1006 when none was exchanged
        self.refused: Counter[str] = Counter()  # refused handshakes, by kind
        self.limits: Counter[str] = Counter()  # limits tripped, by limit
        self.resumes: Counter[str] = Counter(
            dict.fromkeys(("recovered", "not_recovered", "failed"), 0)
        )
        # Each resumed stream's catch-up, by where it came from: what the node had
        # fanned out itself (recent.py), or a read of the broker's history.
        self.resume_histories: Counter[str] = Counter(dict.fromkeys(("node", "broker"), 0))
        # The connect hook (pushgate.connecthook): calls by outcome, failures by
        # cause, and how long each call took (failures included)
        self.hook_calls: Counter[str] = Counter(dict.fromkeys(("allow", "deny", "failure"), 0))
        self.hook_failures: Counter[str] = Counter()
        self.hook_seconds = Histogram(LATENCY_BUCKETS)
        # The process
        self.loop_lag = Histogram(PAUSE_BUCKETS)
        self.gc_pauses = Histogram(PAUSE_BUCKETS)

    def caught_up(self, streams: int, read: int) -> None:
        """A resume was caught up on ``streams``, ``read`` of them from a history read,
        the others from what the node fanned out itself."""
        self.resume_histories["node"] += streams - read
        self.resume_histories["broker"] += read

    def handed(self, accepted_at: float, recipients: int) -> None:
        """A push accepted at ``accepted_at`` (wall clock) went to ``recipients``
        local connections; its latency is observed once they are written."""
        self.deliveries += recipients
        if accepted_at and len(self._unwritten) < MAX_UNWRITTEN:
            self._unwritten.append((accepted_at, recipients))

    @property
    def unwritten(self) -> bool:
        """Pushes handed out whose latency waits for the next write pass."""
        return bool(self._unwritten)

    def written(self, stamps: Sequence[tuple[float, int]]) -> None:
        """The outbox has written this turn's frames: ``stamps`` holds (the time, how
        many sockets were written since the previous stamp). Observe each push's
        latency, its recipients spread over the stamps like the sockets."""
        if not self._unwritten or not stamps:
            return
        notes, self._unwritten = self._unwritten, []
        observe = self.delivery_latency.observe
        sockets = sum(count for _, count in stamps) or 1
        for accepted_at, recipients in notes:
            left = recipients
            for i, (when, count) in enumerate(stamps):
                share = left if i == len(stamps) - 1 else round(recipients * count / sockets)
                share = min(share, left)
                if share:
                    observe(max(0.0, when - accepted_at), share)
                    left -= share
