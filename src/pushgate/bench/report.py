"""What a run measured, how losses are accounted, and how results are shown.

Loss accounting (:func:`account`) is per client: each client should have received
every push the server accepted for a target it belongs to (its rooms, or all);
``lost`` is the sum of the shortfalls. The part of it on clients the server closed
(the slow-client policy's 1008, a heartbeat timeout's 1011, or a dropped TCP
connection, 1006) is ``lost_on_closed``, and those closes are counted by code in
``closed_by_server``: a non-zero ``lost`` is a bug unless it all sits there.
"""

import json
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pushgate.bench.histogram import Histogram


@dataclass(frozen=True, slots=True)
class ClientCount:
    """One client's tally, as its worker reports it."""

    index: int
    received: int
    out_of_order: int = 0
    close_code: int | None = None  # the server closed it (1006: without a close frame)


@dataclass(frozen=True, slots=True)
class Losses:
    expected: int
    received: int
    lost: int
    lost_on_closed: int
    duplicates: int
    out_of_order: int
    closed_by_server: dict[int, int]


def account(expected: Mapping[int, int], clients: Iterable[ClientCount]) -> Losses:
    """Compare what each client received with what it should have (``expected`` by
    client index). A client missing from ``clients`` lost everything it expected."""
    lost = lost_on_closed = duplicates = out_of_order = received_total = 0
    closed: Counter[int] = Counter()
    seen: set[int] = set()
    for client in clients:
        seen.add(client.index)
        want = expected.get(client.index, 0)
        received_total += client.received
        out_of_order += client.out_of_order
        shortfall = max(0, want - client.received)
        duplicates += max(0, client.received - want)
        lost += shortfall
        if client.close_code is not None:
            closed[client.close_code] += 1
            lost_on_closed += shortfall
    missing = sum(n for index, n in expected.items() if index not in seen)
    return Losses(
        expected=sum(expected.values()),
        received=received_total,
        lost=lost + missing,
        lost_on_closed=lost_on_closed,
        duplicates=duplicates,
        out_of_order=out_of_order,
        closed_by_server=dict(sorted(closed.items())),
    )


@dataclass
class RunResult:
    """One run's figures. ``None`` where a figure does not apply or was not measured
    (no deliveries, or an external server without ``--server-pid``)."""

    scenario: str
    connections: int
    connected: int = 0
    connect_failed: int = 0
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
    # Latency, ms
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    push_rtt_p50_ms: float | None = None  # from sending a push to the server's answer
    push_rtt_p99_ms: float | None = None
    # Memory and connecting
    rss_kb_per_conn: float | None = None
    server_rss_mb: float | None = None
    connect_s: float | None = None
    connect_p50_ms: float | None = None
    connect_p99_ms: float | None = None
    # Losses
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
        return json.dumps({k: _rounded(v) for k, v in data.items()}, separators=(",", ":"))


def ms(us: int | None) -> float | None:
    """Microseconds (from a histogram) as milliseconds; None stays None."""
    return None if us is None else us / 1000


def _rounded(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else value


# The table

# (label, field, format); format "n" is a count with separators, otherwise a precision.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("connections open", "connected", "n"),
    ("connect time s", "connect_s", ".2f"),
    ("connect p99 ms", "connect_p99_ms", ".1f"),
    ("pushes accepted", "pushes", "n"),
    ("pushes/s", "pushes_per_s", ".1f"),
    ("deliveries", "deliveries", "n"),
    ("deliveries/s", "deliveries_per_s", "n"),
    ("server CPU µs/delivery", "server_cpu_us_per_delivery", ".2f"),
    ("client CPU µs/delivery", "client_cpu_us_per_delivery", ".2f"),
    ("pusher CPU µs/push", "pusher_cpu_us_per_push", ".0f"),
    ("latency p50 ms", "p50_ms", ".2f"),
    ("latency p95 ms", "p95_ms", ".2f"),
    ("latency p99 ms", "p99_ms", ".2f"),
    ("latency max ms", "max_ms", ".2f"),
    ("push answered p50 ms", "push_rtt_p50_ms", ".2f"),
    ("push answered p99 ms", "push_rtt_p99_ms", ".2f"),
    ("server RSS KB/conn", "rss_kb_per_conn", ".2f"),
    ("server RSS MB", "server_rss_mb", ".1f"),
    ("idle CPU µs/conn/s", "idle_cpu_us_per_conn_s", ".3f"),
    ("churn opened", "churn_opened", "n"),
    ("churn closed", "churn_closed", "n"),
    ("churn failed", "churn_failed", "n"),
    ("churn connect p99 ms", "churn_connect_p99_ms", ".1f"),
    ("other processes' CPU %", "other_cpu_pct", ".0f"),
    ("steal %", "steal_pct", ".0f"),
    ("lost", "lost", "n"),
    ("lost on closed clients", "lost_on_closed", "n"),
    ("out of order", "out_of_order", "n"),
    ("push errors", "push_errors", "n"),
)


def summary(results: Sequence[RunResult], name: str) -> tuple[float, float, float] | None:
    """(median, min, max) of a numeric field over runs; None when no run has it."""
    values = [v for r in results if isinstance(v := getattr(r, name), int | float)]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def table(results: Sequence[RunResult], title: str) -> str:
    """A readable table: one column per run, then the median and the spread."""
    many = len(results) > 1
    header = ["", *(f"run {i + 1}" for i in range(len(results)))]
    if many:
        header += ["median", "min-max"]
    rows = [header]
    for label, name, fmt in ROWS:
        stats = summary(results, name)
        if stats is None:
            continue
        cells = [label, *(_fmt(getattr(r, name), fmt) for r in results)]
        if many:
            median, low, high = stats
            cells += [_fmt(median, fmt), f"{_fmt(low, fmt)}-{_fmt(high, fmt)}"]
        rows.append(cells)
    closed = [_closed_text(r.closed_by_server) for r in results]
    if any(closed):
        rows.append(["closed by server (code: n)", *(c or "-" for c in closed)])
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(header))]
    lines = [title]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(widths[i + 1]) for i, cell in enumerate(row[1:])
        ]
        lines.append("  ".join(cells).rstrip())
    for i, result in enumerate(results):
        for error in result.errors:
            lines.append(f"run {i + 1}: {error}")
    return "\n".join(lines)


def _fmt(value: object, fmt: str) -> str:
    if not isinstance(value, int | float):
        return "-"
    if fmt == "n":
        return f"{round(value):,}"
    return format(value, fmt)


def _closed_text(closed: Mapping[int, int]) -> str:
    return ", ".join(f"{code}: {n}" for code, n in closed.items())
