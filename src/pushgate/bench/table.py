"""How results are shown: a table with one column per run, then the median and the
spread over the runs, and the lines told in words under it.

Each row is ``(label, field, format)``: a field of
:class:`~pushgate.bench.result.RunResult` (or of a subclass that has a table of its
own, :meth:`~pushgate.bench.result.RunResult.table_rows`), and a format: ``n`` for
a count with separators, otherwise a precision. A row no run has a value for is
left out, so one table serves every scenario.
"""

import statistics
from collections.abc import Mapping, Sequence

from pushgate.bench.result import RunResult

# (label, field, format); format "n" is a count with separators, otherwise a precision.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("connections open", "connected", "n"),
    ("connect time s", "connect_s", ".2f"),
    ("connect p99 ms", "connect_p99_ms", ".1f"),
    ("connect retries", "connect_retries", "n"),
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
    ("frames per write", "frames_per_write", ".2f"),
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
    ("churn workers' CPU s", "churn_cpu_s", ".2f"),
    ("other processes' CPU %", "other_cpu_pct", ".0f"),
    ("server waiting for a CPU %", "server_waiting_pct", ".0f"),
    ("a client worker waiting for a CPU %", "client_waiting_pct", ".0f"),
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


# What reconnect does not count: fresh sessions start from nothing, no push is owed.
UNCOUNTED_ON_RECONNECT = {"deliveries", "lost", "lost_on_closed", "out_of_order", "duplicates"}

# The reconnect scenario's rows, after the connect rows.
RECONNECT_ROWS: tuple[tuple[str, str, str], ...] = (
    ("reconnected afresh", "reconnected", "n"),
    ("reconnect failed", "reconnect_failed", "n"),
    ("in the room after", "in_room", "n"),
    ("reconnect time s", "reconnect_s", ".2f"),
    ("reconnect / connect time", "reconnect_vs_connect", ".2f"),
    ("server CPU µs/reconnect", "server_cpu_us_per_reconnect", ".0f"),
    ("client CPU µs/reconnect", "client_cpu_us_per_reconnect", ".0f"),
)


def rows_for(results: Sequence[RunResult]) -> tuple[tuple[str, str, str], ...]:
    """The table's rows: the resume or reconnect scenario's inserted after the
    connect rows, or a scenario's own."""
    own = results[0].table_rows() if results else None
    if own is not None:
        return own
    if any(r.scenario == "reconnect" for r in results):
        kept = tuple(row for row in ROWS[3:] if row[1] not in UNCOUNTED_ON_RECONNECT)
        return ROWS[:3] + RECONNECT_ROWS + kept
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
