"""The figures of the scenarios that drop every client at once (resume and
reconnect, :mod:`pushgate.bench.drops`; chat's resume phase too), apart from the
usual ones because they are counted differently: times from the drop, not from the
first push; CPU per client brought back; and losses by position, stream by stream
(:func:`~pushgate.bench.losses.account_streams`), since a resumed client is owed
what came after its positions, not a count. What in them points to a bug is told as
an error: pushes without a position, pushes received twice, streams whose history
was lost.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from pushgate.bench.histogram import Histogram
from pushgate.bench.losses import account_streams
from pushgate.bench.replies import CaughtUp, Reconnected, Report, Resumed
from pushgate.bench.report import cpu_figures, merged_counts, top
from pushgate.bench.result import RunResult, ms

if TYPE_CHECKING:
    from pushgate.bench.meter import Meter


def reconnect_figures(
    result: RunResult, replies: Sequence[Reconnected], before: "Meter", after: "Meter"
) -> None:
    """The reconnect scenario: how long the fresh connects took after the drop, and
    their CPU (the pushes to the clients already back included, as for a resume)."""
    drop_ns = min(reply.drop_ns for reply in replies)
    welcome_ns = max(reply.welcome_ns for reply in replies)
    result.reconnected = sum(reply.reconnected for reply in replies)
    result.reconnect_failed = sum(reply.failed for reply in replies)
    errors = merged_counts(reply.errors for reply in replies)
    if errors:
        result.errors.append(f"{result.reconnect_failed} reconnects failed: {top(errors)}")
    if result.reconnected and welcome_ns > drop_ns:
        result.reconnect_s = (welcome_ns - drop_ns) / 1e9
        if result.connect_s:
            result.reconnect_vs_connect = result.reconnect_s / result.connect_s
    cpu_figures(result, before, after, replies)
    server_us, client_us = _cpu_us_per(result, result.reconnected)
    result.server_cpu_us_per_reconnect = server_us
    result.client_cpu_us_per_reconnect = client_us


def resume_figures(
    result: RunResult,
    replies: Sequence[Resumed],
    caught: Sequence[CaughtUp],
    before: "Meter",
    after: "Meter",
    *,
    stall: float,
) -> None:
    """The resume scenario: how many resumed, how long from the drop to the last
    welcome and until every client caught up (or not, after ``stall`` seconds
    without progress), and the CPU per resume."""
    result.resumed = sum(reply.resumed for reply in replies)
    result.resume_failed = sum(reply.failed + reply.new_session for reply in replies)
    result.not_recovered = sum(reply.not_recovered for reply in replies)
    result.replayed = sum(reply.replayed for reply in replies)
    result.not_caught_up = sum(reply.not_caught_up for reply in caught)
    hist = Histogram()
    for reply in replies:
        hist.merge(reply.reopen_hist)
    result.resume_p50_ms = ms(hist.percentile(0.5))
    result.resume_p99_ms = ms(hist.percentile(0.99))
    _resume_errors(result, replies, stall)
    _resume_times(result, replies, caught)
    cpu_figures(result, before, after, caught)
    server_us, client_us = _cpu_us_per(result, result.resumed)
    result.server_cpu_us_per_resume = server_us
    result.client_cpu_us_per_resume = client_us


def _resume_errors(result: RunResult, replies: Sequence[Resumed], stall: float) -> None:
    errors = merged_counts(reply.errors for reply in replies)
    reasons = merged_counts(reply.reasons for reply in replies)
    if errors:
        result.errors.append(f"{sum(errors.values())} resumes failed: {top(errors)}")
    if reasons:
        result.errors.append(
            f"{sum(reasons.values())} resumes got a new session instead: {top(reasons)}"
        )
    retried = sum(reply.retried for reply in replies)
    if retried:
        result.errors.append(f"{retried} resumes were closed with 1013 and tried again")
    if result.not_caught_up:
        result.errors.append(
            f"{result.not_caught_up} resumed clients had not caught up after "
            f"{stall:g} s without progress"
        )


def _resume_times(
    result: RunResult, replies: Sequence[Resumed], caught: Sequence[CaughtUp]
) -> None:
    """From the drop (the earliest of the workers' drops) to the last resumed
    welcome, and to the moment the last client caught up."""
    drop_ns = min(reply.drop_ns for reply in replies)
    welcome_ns = max(reply.welcome_ns for reply in replies)
    if result.resumed and welcome_ns > drop_ns:
        result.resume_s = (welcome_ns - drop_ns) / 1e9
    caught_ns = max(reply.caught_up_ns for reply in caught)
    if result.resumed and not result.not_caught_up and caught_ns > drop_ns:
        result.caught_up_s = (caught_ns - drop_ns) / 1e9
        if result.connect_s:
            result.caught_up_vs_connect = result.caught_up_s / result.connect_s


def _cpu_us_per(result: RunResult, count: int | None) -> tuple[float | None, float | None]:
    """Server and client CPU of the last :func:`cpu_figures`, in µs per one of ``count``."""
    server, client = result.server_cpu_s, result.client_cpu_s
    if not count:
        return None, None
    return (
        None if server is None else server * 1e6 / count,
        None if client is None else client * 1e6 / count,
    )


def stream_loss_figures(
    result: RunResult,
    accepted: Mapping[str, int],
    indexes: Iterable[int],
    reports: Sequence[Report],
) -> None:
    """Deliveries, latency and losses by position (:func:`account_streams`), and
    what in them points to a bug: pushes without a position, pushes received
    twice, streams whose history was lost."""
    hist = Histogram()
    for report in reports:
        hist.merge(report.latency_hist)
    clients = [client for report in reports for client in report.streams]
    result.deliveries = sum(report.deliveries for report in reports)
    result.set_latency(hist)
    losses = account_streams(accepted, indexes, clients)
    result.set_losses(losses)
    result.lost_not_recovered = losses.lost_not_recovered
    result.gap_notices = sum(client.gap_notices for client in clients)
    unpositioned = sum(report.unpositioned for report in reports)
    if unpositioned:
        result.errors.append(
            f"{unpositioned} pushes carried no seq: the server keeps no history "
            "(--history-size 0?), so nothing can be counted by position"
        )
    samples = [sample for report in reports for sample in report.duplicated][:3]
    if samples:
        result.errors.append(
            "received twice, e.g.: "
            + "; ".join(
                f"client {s.client} on {s.gateway}, {s.stream} seqs {s.seqs} "
                f"(resumed since {s.since}, welcome {s.welcome})"
                for s in samples
            )
        )
    if losses.epoch_changes:
        result.errors.append(
            f"{losses.epoch_changes} epoch changes seen by clients: the server lost a "
            "stream's history during the run"
        )
