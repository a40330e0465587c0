"""What ``pushgate bench abuse`` measured, and how it is shown.

Issue 25 asks that one connection cannot stop the server, and says when that is
done: beside 300 honest clients receiving 20 pushes/s, all four attacks at once
leave the honest clients' p99 within 2x of quiet, lose them nothing, keep
``/healthz`` under 200 ms, cost under 300 MB, and end with both flooders closed by
the server. :class:`AbuseResult` holds every figure that sentence names, per phase
(quiet, then attacked), and :func:`bar_missed` says which parts of it a run missed.

The arithmetic is here too: each :class:`Phase` accounts the honest clients on its
own (:func:`phase_figures`): the pushes the server accepted in it, and what each
client received in it (its count at the end of the phase minus its count at the end
of the one before).
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pushgate.bench.histogram import Histogram
from pushgate.bench.losses import account
from pushgate.bench.replies import ClientCount, Report
from pushgate.bench.report import cpu_use
from pushgate.bench.result import RunResult, ms

if TYPE_CHECKING:
    from pushgate.bench.meter import Meter
    from pushgate.bench.pusher import PushLog
    from pushgate.bench.samplers import HealthPoller, RssSampler

# Issue 25's "Done when"
MAX_P99_RATIO = 2.0
MAX_HEALTH_MS = 200.0
MAX_ATTACK_COST_MB = 300.0
FLOODERS = {"ping": "ping flooder", "fragments": "endless message"}
QUIET, ATTACKED = "quiet", "attacked"  # the phases

Json = dict[str, Any]


@dataclass
class AbuseResult(RunResult):
    """One abuse run. Phases: ``quiet`` (honest clients and pushes only), then
    ``attacked`` (the same, with every attack going). Latencies in ms; times of the
    attackers' fates in seconds from the attack's start."""

    attacks: list[str] = field(default_factory=list)
    phase_s: float | None = None  # seconds of pushes in each phase
    # The honest clients, per phase. Pushes sent, and accepted (answered 200); push
    # errors are the rest (refused, failed, or not answered within abuse.PUSH_TIMEOUT).
    # Deliveries beyond expected are those of pushes answered too late to count.
    quiet_sent: int = 0
    quiet_pushes: int = 0
    quiet_push_errors: int = 0
    quiet_expected: int = 0
    quiet_received: int = 0
    quiet_lost: int = 0
    quiet_beyond: int = 0
    quiet_p50_ms: float | None = None
    quiet_p99_ms: float | None = None
    quiet_max_ms: float | None = None
    attacked_sent: int = 0
    attacked_pushes: int = 0
    attacked_push_errors: int = 0
    attacked_expected: int = 0
    attacked_received: int = 0
    attacked_lost: int = 0
    attacked_beyond: int = 0
    attacked_p50_ms: float | None = None
    attacked_p99_ms: float | None = None
    attacked_max_ms: float | None = None
    p50_ratio: float | None = None  # attacked / quiet
    p99_ratio: float | None = None
    max_ratio: float | None = None
    # GET /healthz every ~100 ms on the gateway's port and on the API's: a poll that
    # failed (an error, not 200, or no answer within the poll timeout) is counted
    # in *_failed and its time, up to that timeout, in the maximum.
    gateway_health_quiet_p99_ms: float | None = None
    gateway_health_quiet_max_ms: float | None = None
    gateway_health_quiet_failed: int = 0
    gateway_health_attacked_p99_ms: float | None = None
    gateway_health_attacked_max_ms: float | None = None
    gateway_health_attacked_failed: int = 0
    api_health_quiet_p99_ms: float | None = None
    api_health_quiet_max_ms: float | None = None
    api_health_quiet_failed: int = 0
    api_health_attacked_p99_ms: float | None = None
    api_health_attacked_max_ms: float | None = None
    api_health_attacked_failed: int = 0
    # Server memory (VmRSS, sampled every ~100 ms)
    rss_start_mb: float | None = None  # before the quiet phase
    rss_attack_peak_mb: float | None = None  # the highest sample under attack
    rss_end_mb: float | None = None  # after the attackers stopped and the server settled
    rss_attack_cost_mb: float | None = None  # peak - start
    # CPU, in percent of one core over each phase
    server_cpu_pct_quiet: float | None = None
    server_cpu_pct_attacked: float | None = None
    attackers_cpu_pct: float | None = None  # the attacker processes, attacked phase
    # What the server did to each attack, as its attacker process reported it
    # (pushgate.bench.abusers): keyed by attack name.
    attackers: dict[str, Json] = field(default_factory=dict)
    bar_missed: list[str] = field(default_factory=list)

    def table_rows(self) -> tuple[tuple[str, str, str], ...]:
        return ABUSE_ROWS

    def text_rows(self) -> list[tuple[str, str]]:
        rows = [
            (FLOODERS[name], flooder_text(self.attackers[name]))
            for name in FLOODERS
            if name in self.attackers
        ]
        if "nonreaders" in self.attackers:
            rows.append(("non-readers", crowd_text(self.attackers["nonreaders"])))
        if "handshakes" in self.attackers:
            rows.append(("fat handshakes", handshakes_text(self.attackers["handshakes"])))
        missed = "; ".join(self.bar_missed)
        rows.append(("issue 25's bar", f"missed: {missed}" if missed else "met"))
        return rows


@dataclass(frozen=True, slots=True)
class Phase:
    """What one phase's pushes and honest clients did."""

    name: str  # QUIET or ATTACKED
    log: "PushLog"
    expected: dict[int, int]  # pushes each honest client should have received
    reports: list[Report]  # the honest workers' reports at its end
    before: "Meter"
    after: "Meter"
    attackers_cpu_s: float | None  # the attacker processes' CPU over the phase


def phase_figures(result: AbuseResult, phase: Phase, received: dict[int, int]) -> None:
    """The honest clients' deliveries, losses and latency in one phase. ``received``
    holds each client's count at the end of the phase before; it is brought up to
    the end of this one."""
    name, log = phase.name, phase.log
    hist = Histogram()
    clients: list[ClientCount] = []
    for report in phase.reports:
        hist.merge(report.latency_hist)
        for client in report.clients:
            count = client.received - received.get(client.index, 0)
            clients.append(ClientCount(client.index, count, 0, client.close_code))
            received[client.index] = client.received
    losses = account(phase.expected, clients)
    figures = {
        "sent": log.sent,
        "pushes": log.accepted_total,
        "push_errors": sum(log.errors.values()),
        "expected": losses.expected,
        "received": losses.received,
        "lost": losses.lost,
        "beyond": losses.duplicates,
        "p50_ms": ms(hist.percentile(0.5)),
        "p99_ms": ms(hist.percentile(0.99)),
        "max_ms": ms(hist.maximum()),
    }
    for key, value in figures.items():
        setattr(result, f"{name}_{key}", value)
    result.pushes += log.accepted_total
    result.deliveries += losses.received
    result.expected += losses.expected
    result.lost += losses.lost
    result.lost_on_closed += losses.lost_on_closed
    result.closed_by_server = losses.closed_by_server
    result.push_errors += sum(log.errors.values())
    if log.errors:
        top = "; ".join(f"{e} ({n})" for e, n in log.errors.most_common(3))
        result.errors.append(f"push errors, {name}: {top}")
    _phase_cpu(result, phase)
    if name == ATTACKED:
        result.p50_ratio = _ratio(result.attacked_p50_ms, result.quiet_p50_ms)
        result.p99_ratio = _ratio(result.attacked_p99_ms, result.quiet_p99_ms)
        result.max_ratio = _ratio(result.attacked_max_ms, result.quiet_max_ms)


def _phase_cpu(result: AbuseResult, phase: Phase) -> None:
    """Server CPU per phase; under attack also the attackers' and the others'."""
    attackers = phase.attackers_cpu_s or 0.0
    clients = sum(report.cpu_s for report in phase.reports)
    use = cpu_use(phase.before, phase.after, clients, attackers)
    if use.wall <= 0 or use.server_s is None:
        return
    setattr(result, f"server_cpu_pct_{phase.name}", 100 * use.server_s / use.wall)
    if phase.name != ATTACKED:
        return
    result.attackers_cpu_pct = 100 * attackers / use.wall
    result.other_cpu_pct = use.other_pct
    result.steal_pct = use.steal_pct


def sampled_figures(
    result: AbuseResult, health: "dict[str, HealthPoller]", rss: "RssSampler"
) -> None:
    """The samplers' figures: health per port and phase, RSS at its peak."""
    for port, poller in health.items():
        for phase in (QUIET, ATTACKED):
            figures = poller.figures(phase)
            setattr(result, f"{port}_health_{phase}_p99_ms", figures.p99_ms)
            setattr(result, f"{port}_health_{phase}_max_ms", figures.max_ms)
            setattr(result, f"{port}_health_{phase}_failed", figures.failed)
    if ATTACKED in rss.peak:
        result.rss_attack_peak_mb = mb(rss.peak[ATTACKED])
        if result.rss_start_mb is not None and result.rss_attack_peak_mb is not None:
            result.rss_attack_cost_mb = result.rss_attack_peak_mb - result.rss_start_mb


def mb(rss: int | None) -> float | None:
    """Bytes of RSS as MB; None stays None."""
    return None if rss is None else rss / 1024 / 1024


def _ratio(attacked: float | None, quiet: float | None) -> float | None:
    return attacked / quiet if attacked is not None and quiet else None


# (label, field, format), as table.ROWS
ABUSE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("honest connections open", "connected", "n"),
    ("connect time s", "connect_s", ".2f"),
    ("pushes sent, quiet", "quiet_sent", "n"),
    ("pushes accepted, quiet", "quiet_pushes", "n"),
    ("push errors, quiet", "quiet_push_errors", "n"),
    ("pushes sent, attacked", "attacked_sent", "n"),
    ("pushes accepted, attacked", "attacked_pushes", "n"),
    ("push errors, attacked", "attacked_push_errors", "n"),
    ("deliveries expected, quiet", "quiet_expected", "n"),
    ("deliveries received, quiet", "quiet_received", "n"),
    ("lost, quiet", "quiet_lost", "n"),
    ("beyond expected, quiet", "quiet_beyond", "n"),
    ("deliveries expected, attacked", "attacked_expected", "n"),
    ("deliveries received, attacked", "attacked_received", "n"),
    ("lost, attacked", "attacked_lost", "n"),
    ("beyond expected, attacked", "attacked_beyond", "n"),
    ("latency p50 ms, quiet", "quiet_p50_ms", ".2f"),
    ("latency p50 ms, attacked", "attacked_p50_ms", ".2f"),
    ("latency p50 attacked/quiet", "p50_ratio", ".2f"),
    ("latency p99 ms, quiet", "quiet_p99_ms", ".2f"),
    ("latency p99 ms, attacked", "attacked_p99_ms", ".2f"),
    ("latency p99 attacked/quiet", "p99_ratio", ".2f"),
    ("latency max ms, quiet", "quiet_max_ms", ".2f"),
    ("latency max ms, attacked", "attacked_max_ms", ".2f"),
    ("latency max attacked/quiet", "max_ratio", ".2f"),
    ("gateway /healthz p99 ms, quiet", "gateway_health_quiet_p99_ms", ".2f"),
    ("gateway /healthz max ms, quiet", "gateway_health_quiet_max_ms", ".2f"),
    ("gateway /healthz failed, quiet", "gateway_health_quiet_failed", "n"),
    ("gateway /healthz p99 ms, attacked", "gateway_health_attacked_p99_ms", ".2f"),
    ("gateway /healthz max ms, attacked", "gateway_health_attacked_max_ms", ".2f"),
    ("gateway /healthz failed, attacked", "gateway_health_attacked_failed", "n"),
    ("API /healthz p99 ms, quiet", "api_health_quiet_p99_ms", ".2f"),
    ("API /healthz max ms, quiet", "api_health_quiet_max_ms", ".2f"),
    ("API /healthz failed, quiet", "api_health_quiet_failed", "n"),
    ("API /healthz p99 ms, attacked", "api_health_attacked_p99_ms", ".2f"),
    ("API /healthz max ms, attacked", "api_health_attacked_max_ms", ".2f"),
    ("API /healthz failed, attacked", "api_health_attacked_failed", "n"),
    ("server RSS MB, at start", "rss_start_mb", ".1f"),
    ("server RSS MB, peak under attack", "rss_attack_peak_mb", ".1f"),
    ("server RSS MB, at the end", "rss_end_mb", ".1f"),
    ("server RSS MB, attack's cost", "rss_attack_cost_mb", ".1f"),
    ("server CPU %, quiet", "server_cpu_pct_quiet", ".0f"),
    ("server CPU %, attacked", "server_cpu_pct_attacked", ".0f"),
    ("attackers' CPU %, attacked", "attackers_cpu_pct", ".0f"),
    ("other processes' CPU %, attacked", "other_cpu_pct", ".0f"),
)


def bar_missed(r: AbuseResult) -> list[str]:
    """The parts of issue 25's "Done when" this run missed, each in a few words."""
    missed = []
    if r.attacked_p99_ms is None:
        missed.append("no honest delivery under attack")
    elif r.p99_ratio is None or r.p99_ratio > MAX_P99_RATIO:
        missed.append(f"p99 x{_num(r.p99_ratio)} of quiet (at most x{MAX_P99_RATIO:g})")
    if r.quiet_lost or r.attacked_lost:
        missed.append(f"{r.quiet_lost + r.attacked_lost:,} deliveries lost")
    # Pushes the API did not take count too: a stalled API sends the pusher's
    # connections nowhere, so fewer are even sent (and none of them is late).
    if r.attacked_push_errors or r.attacked_pushes < r.quiet_pushes * 0.95:
        missed.append(
            f"pushes accepted under attack: {r.attacked_pushes:,} of {r.attacked_sent:,} "
            f"sent ({r.quiet_pushes:,} quiet)"
        )
    if r.closed_by_server:
        closed = ", ".join(f"{code}: {n}" for code, n in r.closed_by_server.items())
        missed.append(f"honest clients closed by the server ({closed})")
    for port in ("gateway", "api"):
        worst = getattr(r, f"{port}_health_attacked_max_ms")
        failed = getattr(r, f"{port}_health_attacked_failed")
        if failed or worst is None or worst >= MAX_HEALTH_MS:
            missed.append(
                f"{port} /healthz max {_num(worst)} ms, {failed} failed "
                f"(under {MAX_HEALTH_MS:g} ms)"
            )
    if r.rss_attack_cost_mb is not None and r.rss_attack_cost_mb >= MAX_ATTACK_COST_MB:
        missed.append(f"cost {r.rss_attack_cost_mb:.0f} MB (under {MAX_ATTACK_COST_MB:g})")
    for name, label in FLOODERS.items():
        fate = r.attackers.get(name)
        if fate is not None and fate.get("opened") and not _ended_by_server(fate):
            missed.append(f"the {label} was not closed")
    return missed


def _ended_by_server(fate: Json) -> bool:
    """The server sent a close frame, or ended the TCP connection, before we stopped."""
    return fate.get("close_code") is not None or fate.get("ended_s") is not None


def flooder_text(fate: Json) -> str:
    """E.g. "closed 1008 at 1.20 s, TCP ended at 6.21 s; 1,234,567 frames written"
    (written to its socket: most may have waited in socket buffers, unread)."""
    if not fate.get("opened"):
        if fate.get("unopened"):
            return "never let in: no answer to its handshake by the end"
        return f"did not open: {_errors(fate)}"
    parts = []
    if fate.get("close_code") is not None:
        parts.append(f"closed {fate['close_code']} at {fate['closed_s']:.2f} s")
    if fate.get("ended_s") is not None:
        parts.append(f"TCP ended at {fate['ended_s']:.2f} s")
        if fate.get("close_code") is None:
            parts[-1] += " without a close frame"
    if not parts:
        parts.append("still open at the end: never closed")
    return f"{', '.join(parts)}; {fate['frames']:,} frames written"


def crowd_text(fate: Json) -> str:
    """E.g. "300 of 300 opened; at the end: 1008: 290, open: 10": what became of
    the connections that opened (a close code, "dropped" without one, "open")."""
    text = f"{fate['opened']:,} of {fate['count']:,} opened"
    if fate.get("failed"):
        text += f", {fate['failed']:,} failed ({_errors(fate)})"
    if fate.get("unopened"):
        text += f", {fate['unopened']:,} still waiting to be let in"
    outcomes = ", ".join(f"{k}: {v:,}" for k, v in sorted(fate.get("outcomes", {}).items()))
    return f"{text}; at the end: {outcomes or '-'}"


def handshakes_text(fate: Json) -> str:
    """The crowd's outcomes (HTTP status, dropped, open), when, and what they wrote
    to their sockets (written is not read: the kernel buffers a few MB per socket
    on loopback, so a server that answers 431 after 16 KB still sees 1 MB written)."""
    text = crowd_text(fate)
    if fate.get("first_s") is not None:
        text += f" (from {fate['first_s']:.2f} to {fate['last_s']:.2f} s)"
    sent = fate.get("bytes_sent", 0) / 1024 / 1024
    return f"{text}; {fate.get('all_sent', 0):,} wrote all their headers, {sent:,.0f} MB in all"


def _errors(fate: Json) -> str:
    errors = fate.get("errors") or {}
    return "; ".join(f"{text} ({n})" for text, n in errors.items()) or "no reason given"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
