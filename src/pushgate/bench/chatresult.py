"""What ``pushgate bench chat`` measured and how it is shown: :class:`ChatResult`,
one run's fields, phase by phase; its table's rows (``CHAT_ROWS``); and the issue's
goals, each met or not (:func:`goals`, :func:`goals_text`). The figures are filled
in by :mod:`pushgate.bench.chatreport`.
"""

from dataclasses import dataclass, field

from pushgate.bench.result import RunResult

# The goals
SUBSCRIBE_P99_GOAL_MS = 5.0
CPU_RATIO_GOAL = 1.2


@dataclass
class ChatResult(RunResult):
    """One chat run. Phases: subscribe, publish (``msg_*``: the clients' messages),
    api (``api_*``: the same messages through the logic API), resume (``storm_*``
    and the resume scenario's fields: every client drops and resumes while the API's
    pushes go on). The base fields
    ``deliveries``, ``p50_ms``... and ``server_cpu_us_per_delivery`` are the publish
    phase's; ``lost``, ``expected`` and ``duplicates`` are over the whole run."""

    room_size: int = 0
    rooms: int = 0
    duration: float = 0.0  # seconds of publishing
    subscribe_rate: float = 0.0
    resume_rate: float = 0.0
    api_push: str = "batch"  # how the API phase sent its copies (options.API_PUSHES)
    # Subscribe
    subscribed: int = 0  # subscribe replies ok
    subscribe_refused: int = 0
    subscribe_unanswered: int = 0
    subscribe_s: float | None = None  # from the first subscribe to the last reply
    sub_p50_ms: float | None = None
    sub_p99_ms: float | None = None
    sub_max_ms: float | None = None
    server_cpu_us_per_subscribe: float | None = None
    joins_received: int = 0
    joins_expected: int = 0
    joins_early: int = 0
    joins_wrong: int = 0
    roster_wrong: int = 0
    no_own_join: int = 0
    subscribe_lost: int = 0
    # Publish: the clients' messages
    published: int = 0
    publish_ok: int = 0
    publish_refused: int = 0
    publish_unanswered: int = 0
    publish_late_ms: float | None = None
    publish_ack_p50_ms: float | None = None
    publish_ack_p99_ms: float | None = None
    msg_deliveries: int = 0
    msg_expected: int = 0
    msg_lost: int = 0
    msg_duplicates: int = 0
    msg_deliveries_per_s: float | None = None
    msg_p50_ms: float | None = None
    msg_p95_ms: float | None = None
    msg_p99_ms: float | None = None
    msg_max_ms: float | None = None
    msg_server_cpu_us_per_delivery: float | None = None
    msg_client_cpu_us_per_delivery: float | None = None
    msg_other_cpu_pct: float | None = None
    # API: the same messages through POST /push/batch (or /push/room, one each: api_push),
    # excluding their sender
    api_pushes: int = 0  # items accepted
    api_push_errors: int = 0
    api_batches: int = 0  # requests
    api_late_ms: float | None = None
    api_batch_p50_ms: float | None = None
    api_batch_p99_ms: float | None = None
    api_bench_cpu_us_per_push: float | None = None
    api_deliveries: int = 0
    api_expected: int = 0
    api_lost: int = 0
    api_duplicates: int = 0
    api_deliveries_per_s: float | None = None
    api_p50_ms: float | None = None
    api_p95_ms: float | None = None
    api_p99_ms: float | None = None
    api_max_ms: float | None = None
    api_server_cpu_us_per_delivery: float | None = None
    api_client_cpu_us_per_delivery: float | None = None
    api_other_cpu_pct: float | None = None
    cpu_ratio: float | None = None  # msg / api server CPU per delivery
    # Resume: the base fields (resumed, resume_failed, resume_s, resume_p99_ms, ...)
    # tell the resumes; storm_* the whole phase's deliveries, from before the drop
    # until every client caught up and the last push arrived
    storm_pushes: int = 0  # API pushes accepted during the phase
    storm_deliveries: int = 0
    storm_expected: int = 0
    storm_lost: int = 0
    storm_duplicates: int = 0
    storm_deliveries_per_s: float | None = None
    storm_p50_ms: float | None = None
    storm_p95_ms: float | None = None
    storm_p99_ms: float | None = None
    storm_max_ms: float | None = None
    storm_server_cpu_us_per_delivery: float | None = None
    storm_client_cpu_us_per_delivery: float | None = None
    storm_other_cpu_pct: float | None = None
    presence_on_resume: int = 0  # presence events heard in the resume phase (goal: 0)
    # Over the run
    presence_by_phase: dict[str, list[int]] = field(default_factory=dict)  # [joins, leaves, ...]
    leaves: int = 0  # leave events heard, in any phase
    extra_positions: int = 0
    epoch_changes: int = 0
    unpositioned: int = 0
    goals: dict[str, bool] = field(default_factory=dict)

    def table_rows(self) -> tuple[tuple[str, str, str], ...]:
        return CHAT_ROWS

    def text_rows(self) -> list[tuple[str, str]]:
        return [("API pushes", self.api_push), ("goals", goals_text(self))]


CHAT_ROWS: tuple[tuple[str, str, str], ...] = (
    ("connections open", "connected", "n"),
    ("connect time s", "connect_s", ".2f"),
    ("rooms", "rooms", "n"),
    ("server RSS KB/conn", "rss_kb_per_conn", ".2f"),
    ("subscribe: subscribed", "subscribed", "n"),
    ("subscribe: refused", "subscribe_refused", "n"),
    ("subscribe: unanswered", "subscribe_unanswered", "n"),
    ("subscribe: phase s", "subscribe_s", ".2f"),
    ("subscribe: p50 ms", "sub_p50_ms", ".2f"),
    ("subscribe: p99 ms", "sub_p99_ms", ".2f"),
    ("subscribe: max ms", "sub_max_ms", ".2f"),
    ("subscribe: server CPU µs each", "server_cpu_us_per_subscribe", ".0f"),
    ("subscribe: joins heard", "joins_received", "n"),
    ("subscribe: joins expected", "joins_expected", "n"),
    ("subscribe: joins heard early", "joins_early", "n"),
    ("subscribe: members, wrong joins", "joins_wrong", "n"),
    ("subscribe: members, wrong roster", "roster_wrong", "n"),
    ("messages: published", "published", "n"),
    ("messages: taken (ok)", "publish_ok", "n"),
    ("messages: refused", "publish_refused", "n"),
    ("messages: unanswered", "publish_unanswered", "n"),
    ("messages: sent late, max ms", "publish_late_ms", ".1f"),
    ("messages: answered p50 ms", "publish_ack_p50_ms", ".2f"),
    ("messages: answered p99 ms", "publish_ack_p99_ms", ".2f"),
    ("messages: deliveries", "msg_deliveries", "n"),
    ("messages: deliveries/s", "msg_deliveries_per_s", "n"),
    ("messages: server CPU µs/delivery", "msg_server_cpu_us_per_delivery", ".2f"),
    ("messages: client CPU µs/delivery", "msg_client_cpu_us_per_delivery", ".2f"),
    ("messages: latency p50 ms", "msg_p50_ms", ".2f"),
    ("messages: latency p95 ms", "msg_p95_ms", ".2f"),
    ("messages: latency p99 ms", "msg_p99_ms", ".2f"),
    ("messages: latency max ms", "msg_max_ms", ".2f"),
    ("messages: lost", "msg_lost", "n"),
    ("messages: duplicated", "msg_duplicates", "n"),
    ("messages: others' CPU %", "msg_other_cpu_pct", ".0f"),
    ("API: pushes accepted", "api_pushes", "n"),
    ("API: push errors", "api_push_errors", "n"),
    ("API: requests", "api_batches", "n"),
    ("API: sent late, max ms", "api_late_ms", ".1f"),
    ("API: request answered p50 ms", "api_batch_p50_ms", ".2f"),
    ("API: request answered p99 ms", "api_batch_p99_ms", ".2f"),
    ("API: bench CPU µs/push", "api_bench_cpu_us_per_push", ".1f"),
    ("API: deliveries", "api_deliveries", "n"),
    ("API: deliveries/s", "api_deliveries_per_s", "n"),
    ("API: server CPU µs/delivery", "api_server_cpu_us_per_delivery", ".2f"),
    ("API: client CPU µs/delivery", "api_client_cpu_us_per_delivery", ".2f"),
    ("API: latency p50 ms", "api_p50_ms", ".2f"),
    ("API: latency p95 ms", "api_p95_ms", ".2f"),
    ("API: latency p99 ms", "api_p99_ms", ".2f"),
    ("API: latency max ms", "api_max_ms", ".2f"),
    ("API: lost", "api_lost", "n"),
    ("API: duplicated", "api_duplicates", "n"),
    ("API: others' CPU %", "api_other_cpu_pct", ".0f"),
    ("CPU/delivery, messages / API", "cpu_ratio", ".2f"),
    ("resume: API pushes accepted", "storm_pushes", "n"),
    ("resume: resumed", "resumed", "n"),
    ("resume: failed", "resume_failed", "n"),
    ("resume: recovered=false", "not_recovered", "n"),
    ("resume: time s", "resume_s", ".2f"),
    ("resume: p50 ms", "resume_p50_ms", ".1f"),
    ("resume: p99 ms", "resume_p99_ms", ".1f"),
    ("resume: caught up s", "caught_up_s", ".2f"),
    ("resume: not caught up", "not_caught_up", "n"),
    ("resume: pushes replayed", "replayed", "n"),
    ("resume: server CPU µs/resume", "server_cpu_us_per_resume", ".0f"),
    ("resume: presence events", "presence_on_resume", "n"),
    ("resume: deliveries", "storm_deliveries", "n"),
    ("resume: latency p50 ms", "storm_p50_ms", ".2f"),
    ("resume: latency p99 ms", "storm_p99_ms", ".2f"),
    ("resume: latency max ms", "storm_max_ms", ".2f"),
    ("resume: server CPU µs/delivery", "storm_server_cpu_us_per_delivery", ".2f"),
    ("resume: lost", "storm_lost", "n"),
    ("resume: duplicated", "storm_duplicates", "n"),
    ("leave events heard", "leaves", "n"),
    ("positions unaccounted", "extra_positions", "n"),
    ("lost, whole run", "lost", "n"),
    ("lost on closed clients", "lost_on_closed", "n"),
    ("steal %", "steal_pct", ".0f"),
)


# What the API phase's pushes were, in the goals line: the ratio is against these.
API_PUSH_NAMES = {
    "batch": "API pushes ~10 to a POST /push/batch",
    "room": "API pushes one POST /push/room each",
}


def goals(result: ChatResult) -> dict[str, bool]:
    """The issue's goals, each met or not (left out when not measured)."""
    met: dict[str, bool] = {}
    if result.sub_p99_ms is not None:
        met["subscribe p99"] = result.sub_p99_ms <= SUBSCRIBE_P99_GOAL_MS
    if result.cpu_ratio is not None:
        met["cpu ratio"] = result.cpu_ratio <= CPU_RATIO_GOAL
    if result.resumed is not None:
        met["presence on resume"] = result.presence_on_resume == 0
    return met


def goals_text(result: ChatResult) -> str:
    def said(name: str, text: str) -> str:
        if name not in result.goals:
            return f"{text}: not measured"
        return f"{text}: {'met' if result.goals[name] else 'MISSED'}"

    sub = "-" if result.sub_p99_ms is None else f"{result.sub_p99_ms:.2f} ms"
    ratio = "-" if result.cpu_ratio is None else f"{result.cpu_ratio:.2f}"
    return "; ".join(
        (
            said("subscribe p99", f"subscribe p99 {sub} ≤ {SUBSCRIBE_P99_GOAL_MS:g} ms"),
            said(
                "cpu ratio",
                f"message/API CPU per delivery {ratio} ≤ {CPU_RATIO_GOAL:g} "
                f"({API_PUSH_NAMES.get(result.api_push, result.api_push)})",
            ),
            said(
                "presence on resume",
                f"presence events on resume {result.presence_on_resume} = 0",
            ),
        )
    )
