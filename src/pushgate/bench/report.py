"""What a run measured, how losses are accounted, and how results are shown.

Loss accounting (:func:`account`) is per client: each client should have received
every push the server accepted for a target it belongs to (its rooms, or all);
``lost`` is the sum of the shortfalls. The part of it on clients the server closed
(the slow-client policy's 1008, a heartbeat timeout's 1011, or a dropped TCP
connection, 1006) is ``lost_on_closed``, and those closes are counted by code in
``closed_by_server``: a non-zero ``lost`` is a bug unless it all sits there.

The resume scenario accounts by position instead (:func:`account_streams`): each
client reports, per stream, the first and last seq it received and the gaps and
duplicates between; a stream's pushes of the run are the seqs from the lowest any
client received, as many as the server accepted for it. Losses on a stream the
server said it could not recover (``recovered`` false) are ``lost_not_recovered``:
told, hence explained.
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


@dataclass(frozen=True, slots=True)
class StreamCount:
    """What one client received on one stream, as its worker reports it (see
    :meth:`pushgate.bench.resumeclient.Tally.to_list`)."""

    first: int
    last: int
    received: int
    missing: int  # seqs between first and last never received
    dups: int = 0
    late: int = 0
    epoch_changes: int = 0


@dataclass(frozen=True, slots=True)
class ClientStreams:
    """One client's per-stream tally, and the streams the server said it could not
    recover for it."""

    index: int
    streams: Mapping[str, StreamCount]
    unrecovered: frozenset[str] = frozenset()
    close_code: int | None = None


@dataclass(frozen=True, slots=True)
class StreamLosses(Losses):
    lost_not_recovered: int = 0
    epoch_changes: int = 0


def account_streams(
    accepted: Mapping[str, int], indexes: Iterable[int], clients: Iterable[ClientStreams]
) -> StreamLosses:
    """Per client and stream, the pushes of the run it did not receive (``lost``)
    and those it received twice (``duplicates``). ``accepted`` is the number of
    pushes the server accepted per stream; every client in ``indexes`` should have
    received them all. Each stream's pushes are taken to be ``accepted`` seqs from
    the lowest seq any client received on it."""
    by_index = {c.index: c for c in clients}
    start: dict[str, int] = {}
    for tallies in by_index.values():
        for name, tally in tallies.streams.items():
            start[name] = min(start.get(name, tally.first), tally.first)
    lost = lost_on_closed = lost_not_recovered = duplicates = out_of_order = 0
    received_total = expected_total = epoch_changes = 0
    closed: Counter[int] = Counter()
    for index in indexes:
        client = by_index.get(index)
        if client is not None and client.close_code is not None:
            closed[client.close_code] += 1
        for name, n in accepted.items():
            if n <= 0:
                continue
            expected_total += n
            count = client.streams.get(name) if client is not None else None
            if count is None:
                shortfall = n
            else:
                first, end = start[name], start[name] + n - 1
                shortfall = min(
                    n, max(0, count.first - first) + count.missing + max(0, end - count.last)
                )
                received_total += count.received
                duplicates += count.dups
                out_of_order += count.late
                epoch_changes += count.epoch_changes
            lost += shortfall
            if client is None:
                continue
            if name in client.unrecovered:
                lost_not_recovered += shortfall
            elif client.close_code is not None:
                lost_on_closed += shortfall
    return StreamLosses(
        expected=expected_total,
        received=received_total,
        lost=lost,
        lost_on_closed=lost_on_closed,
        duplicates=duplicates,
        out_of_order=out_of_order,
        closed_by_server=dict(sorted(closed.items())),
        lost_not_recovered=lost_not_recovered,
        epoch_changes=epoch_changes,
    )


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
    # The server's own pushgate_delivery_latency_seconds over the run (GET /metrics):
    # from accepting a push to writing it to each socket, without the client's share.
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None
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
    # Losses (not counted by resume --fresh)
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
    # Resume --fresh: the same drop, then fresh connects under the same pushes.
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
    ("server's latency p50 ms", "server_p50_ms", ".2f"),
    ("server's latency p99 ms", "server_p99_ms", ".2f"),
    ("push answered p50 ms", "push_rtt_p50_ms", ".2f"),
    ("push answered p99 ms", "push_rtt_p99_ms", ".2f"),
    ("room members paged", "members_paged", "n"),
    ("paging through them s", "members_page_s", ".2f"),
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


# The resume scenario's rows, after the connect rows.
RESUME_ROWS: tuple[tuple[str, str, str], ...] = (
    ("resumed", "resumed", "n"),
    ("resume failed", "resume_failed", "n"),
    ("resumed, recovered=false", "not_recovered", "n"),
    ("resume time s", "resume_s", ".2f"),
    ("resume p50 ms", "resume_p50_ms", ".1f"),
    ("resume p99 ms", "resume_p99_ms", ".1f"),
    ("caught up time s", "caught_up_s", ".2f"),
    ("caught up / connect time", "caught_up_vs_connect", ".2f"),
    ("not caught up", "not_caught_up", "n"),
    ("pushes replayed", "replayed", "n"),
    ("server CPU µs/resume", "server_cpu_us_per_resume", ".0f"),
    ("client CPU µs/resume", "client_cpu_us_per_resume", ".0f"),
    ("duplicated", "duplicates", "n"),
    ("lost, not recovered", "lost_not_recovered", "n"),
    ("gap notices", "gap_notices", "n"),
)


UNCOUNTED_WHEN_FRESH = {"deliveries", "lost", "lost_on_closed", "out_of_order", "duplicates"}

# The rows of resume --fresh, after the connect rows.
FRESH_ROWS: tuple[tuple[str, str, str], ...] = (
    ("reconnected afresh", "reconnected", "n"),
    ("reconnect failed", "reconnect_failed", "n"),
    ("in the room after", "in_room", "n"),
    ("reconnect time s", "reconnect_s", ".2f"),
    ("reconnect / connect time", "reconnect_vs_connect", ".2f"),
    ("server CPU µs/reconnect", "server_cpu_us_per_reconnect", ".0f"),
    ("client CPU µs/reconnect", "client_cpu_us_per_reconnect", ".0f"),
)


def rows_for(results: Sequence[RunResult]) -> tuple[tuple[str, str, str], ...]:
    """The table's rows: the resume scenario's inserted after the connect rows, or
    a scenario's own."""
    own = results[0].table_rows() if results else None
    if own is not None:
        return own
    if any(r.reconnected is not None for r in results):
        # Fresh sessions start from nothing: no push is owed them, none counted lost.
        kept = tuple(row for row in ROWS[3:] if row[1] not in UNCOUNTED_WHEN_FRESH)
        return ROWS[:3] + FRESH_ROWS + kept
    if not any(r.scenario == "resume" for r in results):
        return ROWS
    return ROWS[:3] + RESUME_ROWS + ROWS[3:]


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
    for label, name, fmt in rows_for(results):
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
    texts = _text_lines(results)
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(header))]
    widths[0] = max([widths[0], *(len(label) for label, _ in texts)])
    lines = [title]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(widths[i + 1]) for i, cell in enumerate(row[1:])
        ]
        lines.append("  ".join(cells).rstrip())
    # Told in words: too wide for a column, so one line each, under the table.
    lines.extend(f"{label.ljust(widths[0])}  {text}" for label, text in texts)
    for i, result in enumerate(results):
        for error in result.errors:
            lines.append(f"run {i + 1}: {error}")
    return "\n".join(lines)


def _text_lines(results: Sequence[RunResult]) -> list[tuple[str, str]]:
    """Each run's text rows, labelled with the run when there are several."""
    if len(results) == 1:
        return results[0].text_rows()
    return [
        (f"{label}, run {i + 1}", text)
        for i, result in enumerate(results)
        for label, text in result.text_rows()
    ]


def _fmt(value: object, fmt: str) -> str:
    if not isinstance(value, int | float):
        return "-"
    if fmt == "n":
        return f"{round(value):,}"
    return format(value, fmt)


def _closed_text(closed: Mapping[int, int]) -> str:
    return ", ".join(f"{code}: {n}" for code, n in closed.items())
