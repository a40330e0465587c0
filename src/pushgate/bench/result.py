"""What one run measured: :class:`RunResult`, a field for each figure, ``None`` where
one does not apply or was not measured, and as JSON for ``--json``. The phases'
arithmetic (:mod:`pushgate.bench.report`) fills it in and :mod:`pushgate.bench.table`
shows it; a scenario with figures of its own extends it
(:class:`~pushgate.bench.abusereport.AbuseResult`,
:class:`~pushgate.bench.chatresult.ChatResult`) without importing that arithmetic.
"""

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pushgate.bench.histogram import Histogram
from pushgate.bench.losses import Losses


@dataclass
class RunResult:
    """One run's figures. ``None`` where a figure does not apply or was not measured
    (no deliveries, or an external server without ``--server-pid``)."""

    scenario: str
    connections: int
    client: str = "pushgate"  # the protocol the clients spoke (--client)
    connected: int = 0
    connect_failed: int = 0
    connect_retries: int | None = None  # dropped handshakes tried again, if any
    workers: int = 0
    rate: float = 0.0
    size: int = 0
    # Pushes and deliveries
    pushes: int = 0  # accepted by the server
    push_errors: int = 0
    pushes_per_s: float | None = None
    deliveries: int = 0
    expected: int = 0
    duration_s: float | None = None
    deliveries_per_s: float | None = None
    # CPU
    server_cpu_s: float | None = None
    server_cpu_us_per_delivery: float | None = None
    client_cpu_s: float | None = None
    client_cpu_us_per_delivery: float | None = None
    pusher_cpu_us_per_push: float | None = None
    idle_cpu_us_per_conn_s: float | None = None
    # Noise: CPU that other processes on the machine (not the server, the workers or
    # the bench) used during the measured phase, and CPU the hypervisor stole, in
    # percent of one core.
    other_cpu_pct: float | None = None
    steal_pct: float | None = None
    # Of the measured phase, the share the server's event loop (on average over its
    # processes) and each measured clients' worker (on average) spent ready to run
    # but waiting for a CPU (/proc/<pid>/schedstat), in percent: latency that is the
    # machine's, not the server's work.
    server_waiting_pct: float | None = None
    client_waiting_pct: float | None = None
    # Latency, ms
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    # The server's own pushgate_delivery_latency_seconds over the run (GET /metrics):
    # from accepting a push to writing it to each socket, without the client's share.
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None
    frames_per_write: float | None = None  # frames a socket write carried, on average
    push_rtt_p50_ms: float | None = None  # from sending a push to the server's answer
    push_rtt_p99_ms: float | None = None
    # Memory and connecting
    rss_kb_per_conn: float | None = None
    server_rss_mb: float | None = None
    connect_s: float | None = None
    connect_p50_ms: float | None = None
    connect_p99_ms: float | None = None
    # Presence: a walk through the room's members (GET /rooms/{id}, 1,000 a page)
    members_paged: int | None = None  # distinct wsIds listed
    members_page_s: float | None = None
    # Losses (not counted by reconnect)
    lost: int = 0
    lost_on_closed: int = 0
    duplicates: int = 0
    out_of_order: int | None = None  # only when pushes are sent one at a time
    closed_by_server: dict[int, int] = field(default_factory=dict)
    server_delivered: int | None = None
    # Churn
    churn_opened: int | None = None
    churn_closed: int | None = None
    churn_failed: int | None = None
    churn_connect_p99_ms: float | None = None
    churn_workers: int | None = None  # worker processes of their own that churned
    churn_cpu_s: float | None = None  # their CPU while churning
    # Resume (docs/recovery.md): times from the moment every client dropped its
    # connection; connect_s above is the same clients' fresh connections, to compare.
    resumed: int | None = None  # clients whose session was resumed
    resume_failed: int | None = None  # no new connection, or a new session instead
    not_recovered: int | None = None  # resumes whose welcome said recovered false
    resume_s: float | None = None  # from the drop to the last resumed welcome
    caught_up_s: float | None = None  # from the drop until every client caught up
    caught_up_vs_connect: float | None = None  # caught_up_s / connect_s
    not_caught_up: int | None = None  # resumed clients that did not catch up
    resume_p50_ms: float | None = None  # one client's resume: new connection to welcome
    resume_p99_ms: float | None = None
    replayed: int | None = None  # pushes the welcomes said each client had missed, summed
    server_cpu_us_per_resume: float | None = None  # from the drop to caught up
    client_cpu_us_per_resume: float | None = None
    lost_not_recovered: int | None = None  # lost on streams the server said were not recovered
    gap_notices: int | None = None  # type-0 frames after a welcome: recovered false
    # Reconnect: the same drop as resume, then fresh connects under the same pushes.
    reconnected: int | None = None  # clients that got a fresh welcome after the drop
    reconnect_failed: int | None = None
    in_room: int | None = None  # members of the room after the reconnects (a token joins)
    reconnect_s: float | None = None  # from the drop to the last fresh welcome
    reconnect_vs_connect: float | None = None  # reconnect_s / connect_s
    server_cpu_us_per_reconnect: float | None = None  # from the drop to the last welcome
    client_cpu_us_per_reconnect: float | None = None
    errors: list[str] = field(default_factory=list)

    def set_losses(self, losses: Losses) -> None:
        self.expected = losses.expected
        self.lost = losses.lost
        self.lost_on_closed = losses.lost_on_closed
        self.duplicates = losses.duplicates
        self.out_of_order = losses.out_of_order
        self.closed_by_server = losses.closed_by_server

    def set_latency(self, hist: Histogram) -> None:
        """Latency percentiles from a histogram of microseconds."""
        self.p50_ms = ms(hist.percentile(0.50))
        self.p95_ms = ms(hist.percentile(0.95))
        self.p99_ms = ms(hist.percentile(0.99))
        self.max_ms = ms(hist.maximum())

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["closed_by_server"] = {str(k): v for k, v in self.closed_by_server.items()}
        return json.dumps(_rounded(data), separators=(",", ":"))

    def table_rows(self) -> tuple[tuple[str, str, str], ...] | None:
        """The numeric rows of a scenario with a table of its own (None: the usual)."""
        return None

    def text_rows(self) -> list[tuple[str, str]]:
        """Rows told in words after the numeric ones: (label, text)."""
        return []


def ms(us: int | None) -> float | None:
    """Microseconds (from a histogram) as milliseconds; None stays None."""
    return None if us is None else us / 1000


def _rounded(value: object) -> object:
    """Floats to 3 decimals, also inside dicts and lists."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
