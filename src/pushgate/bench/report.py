"""The arithmetic that makes a run's figures: from the workers' replies
(:mod:`pushgate.bench.replies`), the pusher's log and the meters' readings
(:class:`~pushgate.bench.meter.Meter`), one function per phase fills in the
:class:`~pushgate.bench.result.RunResult`. Losses are accounted by
:mod:`pushgate.bench.losses`; how the figures are shown is :mod:`pushgate.bench.table`'s.
The resume and reconnect scenarios' own figures are :mod:`pushgate.bench.dropreport`'s.

CPU (:func:`cpu_use`) is the difference of two meter readings: the server's, the
bench's own processes' (workers, pusher, attackers), and the rest of the machine's,
which is noise the run is told about (``other_cpu_pct``).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pushgate.bench.histogram import Histogram
from pushgate.bench.losses import account
from pushgate.bench.replies import ChurnStopped, Connected, Report
from pushgate.bench.result import RunResult, ms
from pushgate.bench.serverlatency import ms_of

if TYPE_CHECKING:
    from pushgate.bench.meter import Meter
    from pushgate.bench.pusher import PushLog
    from pushgate.bench.serverlatency import LatencyBuckets


class Metered(Protocol):
    """A worker's reply that says how much CPU the worker used."""

    @property
    def cpu_s(self) -> float: ...


def connect_figures(
    result: RunResult, replies: Sequence[Connected], seconds: float
) -> dict[str, int]:
    """The connect phase, which took ``seconds``: how many opened, how many failed
    and why, how long each took. Returns the failures by reason."""
    hist = Histogram()
    for reply in replies:
        hist.merge(reply.connect_hist)
    errors = merged_counts(reply.errors for reply in replies)
    result.connect_s = seconds
    result.connect_failed = sum(reply.failed for reply in replies)
    result.connected = sum(len(reply.indexes) for reply in replies)
    result.connect_retries = sum(reply.retries for reply in replies) or None
    result.connect_p50_ms = ms(hist.percentile(0.5))
    result.connect_p99_ms = ms(hist.percentile(0.99))
    if errors:
        result.errors.append(f"{result.connect_failed} connections failed: {top(errors)}")
    return errors


def rss_per_connection(result: RunResult, before: int | None, after: int | None) -> None:
    """The server's RSS growth over the connect phase, per connection opened."""
    if before is not None and after is not None:
        result.rss_kb_per_conn = (after - before) / 1024 / result.connected


def rss_at_end(result: RunResult, rss: int | None) -> None:
    if rss is not None:
        result.server_rss_mb = rss / 1024 / 1024


def push_figures(result: RunResult, log: "PushLog") -> None:
    """What the pusher saw: pushes accepted, errors, rate, answer times."""
    result.pushes = log.accepted_total
    result.push_errors = sum(log.errors.values())
    if log.errors:
        result.errors.append(f"push errors: {top(log.errors)}")
    if log.gave_up:
        result.errors.append("pushing stopped early: the server answered errors only")
    elapsed = log.finished - log.started
    if elapsed > 0:
        result.pushes_per_s = result.pushes / elapsed
    result.server_delivered = log.server_delivered or None
    result.push_rtt_p50_ms = ms(log.rtt.percentile(0.5))
    result.push_rtt_p99_ms = ms(log.rtt.percentile(0.99))


def delivery_figures(
    result: RunResult,
    log: "PushLog",
    reports: Sequence[Report],
    before: "Meter",
    after: "Meter",
) -> None:
    """Deliveries per second, from the first push sent to the last delivery, and
    CPU per delivery and per push (after :func:`loss_figures`, :func:`cpu_figures`
    and :func:`push_figures`)."""
    deliveries = result.deliveries
    last_ns = max(report.last_ns for report in reports)
    if deliveries and last_ns > log.first_ns:
        result.duration_s = (last_ns - log.first_ns) / 1e9
        result.deliveries_per_s = deliveries / result.duration_s
    if deliveries and result.client_cpu_s is not None:
        result.client_cpu_us_per_delivery = result.client_cpu_s * 1e6 / deliveries
    if deliveries and result.server_cpu_s is not None:
        result.server_cpu_us_per_delivery = result.server_cpu_s * 1e6 / deliveries
    if result.pushes:
        result.pusher_cpu_us_per_push = (after.own - before.own) * 1e6 / result.pushes


def server_latency_figures(
    result: RunResult, before: "LatencyBuckets | None", after: "LatencyBuckets | None"
) -> None:
    """The server's own delivery latency over the run, from two scrapes of /metrics."""
    if before is not None and after is not None:
        buckets = after.since(before)
        result.server_p50_ms = ms_of(buckets.quantile(0.50))
        result.server_p99_ms = ms_of(buckets.quantile(0.99))
        result.frames_per_write = buckets.frames_per_write


def loss_figures(
    result: RunResult, expected: Mapping[int, int], reports: Sequence[Report], *, ordered: bool
) -> None:
    """Deliveries, latency and losses, client by client (:func:`account`). Order is
    checked only when ``ordered``: pushes sent concurrently may reach the server in
    any order, so no order is defined."""
    hist = Histogram()
    for report in reports:
        hist.merge(report.latency_hist)
    result.deliveries = sum(report.deliveries for report in reports)
    result.set_latency(hist)
    result.set_losses(account(expected, (c for report in reports for c in report.clients)))
    if not ordered:
        result.out_of_order = None


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU used between two meter readings: the server's (None when its pids are
    unknown), and the rest of the machine's and the hypervisor's, in percent of one
    core (None over no time)."""

    wall: float
    server_s: float | None
    other_pct: float | None
    steal_pct: float | None


def cpu_use(before: "Meter", after: "Meter", *ours: float) -> CpuUse:
    """What the server and everything else used between ``before`` and ``after``;
    ``ours`` are the CPU seconds of the bench's processes beside the server (its
    workers, its attackers) over the same span. The bench's own process is metered."""
    wall = after.wall - before.wall
    server = other = steal = None
    if before.server is not None and after.server is not None:
        server = after.server - before.server
        used = server
        for seconds in ours:
            used += seconds
        used += after.own - before.own
        other = 100 * max(0.0, after.busy - before.busy - used) / wall if wall > 0 else None
    if wall > 0:
        steal = 100 * (after.steal - before.steal) / wall
    return CpuUse(wall, server, other, steal)


def cpu_figures(
    result: RunResult,
    before: "Meter",
    after: "Meter",
    replies: Sequence[Metered],
    churn_cpu_s: float = 0.0,
) -> None:
    """CPU of the server, of the workers (as ``replies`` say), and of everything else;
    ``churn_cpu_s`` is the churn workers' (theirs, not the measured clients')."""
    result.client_cpu_s = sum(reply.cpu_s for reply in replies)
    use = cpu_use(before, after, result.client_cpu_s, churn_cpu_s)
    if use.server_s is not None:
        result.server_cpu_s = use.server_s
        result.other_cpu_pct = use.other_pct
    result.steal_pct = use.steal_pct
    if before.server_waiting is not None and after.server_waiting is not None and use.wall > 0:
        result.server_waiting_pct = 100 * (after.server_waiting - before.server_waiting) / use.wall


def idle_figures(result: RunResult, before: "Meter", after: "Meter") -> None:
    """The idle scenario: server CPU per connection and second (after :func:`cpu_figures`)."""
    if result.server_cpu_s is not None:
        elapsed = after.wall - before.wall
        result.idle_cpu_us_per_conn_s = result.server_cpu_s * 1e6 / result.connected / elapsed


def churn_figures(result: RunResult, replies: Sequence[ChurnStopped]) -> None:
    """The churning connections: opened, closed, failed, and their connect time."""
    hist = Histogram()
    for reply in replies:
        hist.merge(reply.connect_hist)
    errors = merged_counts(reply.errors for reply in replies)
    result.churn_opened = sum(reply.opened for reply in replies)
    result.churn_closed = sum(reply.closed for reply in replies)
    result.churn_failed = sum(reply.failed for reply in replies)
    result.churn_connect_p99_ms = ms(hist.percentile(0.99))
    result.churn_workers = len(replies)
    result.churn_cpu_s = sum(reply.cpu_s for reply in replies)
    if errors:
        result.errors.append(f"churn: {top(errors)}")


def merged_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Counts by text (errors, reasons) from several workers, summed."""
    merged: dict[str, int] = {}
    for each in counts:
        for text, n in each.items():
            merged[text] = merged.get(text, 0) + n
    return merged


def top(counts: Mapping[str, int], n: int = 3) -> str:
    """The ``n`` most frequent texts, with their counts, for a one-line message."""
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return "; ".join(f"{text} ({count})" for text, count in ranked)
