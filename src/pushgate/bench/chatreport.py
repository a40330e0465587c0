"""The arithmetic of ``pushgate bench chat``'s accounting, phase by phase, into a
:class:`~pushgate.bench.chatresult.ChatResult`. Pure: the workers' replies, the API
pusher's log and the meters' readings in, figures out.

**Positions.** Every frame of a room's stream has a position (seq): the presence
events, the members' messages and the API's pushes. A subscribe's reply gives the
position P the stream stood at when the subscription took effect: everything after
P reaches the member (docs/protocol.md, "Subscribing"), except its own messages (a
publish is not echoed) and the API's pushes that leave it out (``exclude``). So,
per member (:func:`account_chat`)::

    owed = end - P - its messages the server took - API pushes that left it out
    lost = owed - distinct positions it received after P (at least 0)

where a room's ``end`` is the highest position any of its members received, or,
if higher, the room's first join plus what the run put in the stream: one join
per member, the messages the server took (``ok``), the API's pushes it accepted. A
stream that went further than that holds positions nobody accounted for (a leave
and a join again on a resume, say): ``extra``. Each phase's losses are those
counted at its end less those counted at the end of the phase before.

**Joins** (:func:`check_joins`). A member hears its own join (at P or before it in
one process; in a cluster the reply may name a position before it), and the join of
every member whose join comes after P: in a room of R members whose positions are
their own joins, R(R+1)/2 in all, whatever order they subscribed in. It may hear
more: a join published after the member was in the room but before its P was read
(two members subscribing at the same moment); those are ``early``, allowed and
counted apart. And each member knows every member exactly once: listed in its
reply's presence (as of that presence's position), or announced by a join after
that position.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pushgate.bench.chatreplies import ChatReport, ChatRow, Published, Subscribed
from pushgate.bench.chatresult import ChatResult, goals
from pushgate.bench.histogram import Histogram
from pushgate.bench.report import cpu_use, merged_counts, top
from pushgate.bench.result import ms

if TYPE_CHECKING:
    from pushgate.bench.chatapi import ApiLog
    from pushgate.bench.meter import Meter

MESSAGE_PHASES = ("msg", "api", "storm")  # the prefixes of each message phase's fields


@dataclass(frozen=True, slots=True)
class ChatLosses:
    """The accounting by position of every member, at one moment."""

    expected: int = 0
    received: int = 0
    lost: int = 0
    lost_on_closed: int = 0  # on clients the server closed
    lost_not_recovered: int = 0  # on streams the server said it could not recover
    duplicates: int = 0
    extra: int = 0  # positions beyond what the run put in the streams
    epoch_changes: int = 0


def account_chat(
    rows: Iterable[ChatRow], excluded: Mapping[int, int], pushed: Mapping[str, int]
) -> ChatLosses:
    """Every member's shortfall of positions (see the module's text). ``excluded``:
    the API pushes accepted that left each client out; ``pushed``: the API pushes
    accepted per room. Clients that are not members (no subscription) are left out."""
    rooms: defaultdict[str, list[ChatRow]] = defaultdict(list)
    for row in rows:
        if row.member:
            rooms[row.room].append(row)
    expected = received = lost = on_closed = not_recovered = dups = extra = epochs = 0
    for room, members in rooms.items():
        put = len(members) + sum(m.published_ok for m in members) + pushed.get(room, 0)
        first = min((m.own_join for m in members if m.own_join >= 0), default=None)
        if first is None:  # no member heard its own join: the lowest position instead
            first = min(m.position for m in members)
        planned_end = first + put - 1
        seen_end = max(m.last for m in members)
        end = max(planned_end, seen_end)
        extra += max(0, seen_end - planned_end)
        for m in members:
            owed = end - m.position - m.published_ok - excluded.get(m.index, 0)
            short = max(0, owed - m.received)
            expected += owed
            received += m.received
            lost += short
            if m.unrecovered:
                not_recovered += short
            elif m.close_code is not None:
                on_closed += short
            dups += m.dups
            epochs += m.epoch_changes
    return ChatLosses(expected, received, lost, on_closed, not_recovered, dups, extra, epochs)


@dataclass(frozen=True, slots=True)
class JoinCheck:
    """The joins every member heard, against what it should have (module's text)."""

    members: int = 0  # clients whose subscription took effect
    rooms: int = 0
    received: int = 0  # joins heard
    expected: int = 0  # its own and those after its position, per member, summed
    early: int = 0  # joins of others heard at or before its position: allowed
    wrong: int = 0  # members that missed a join after their position, or heard one twice
    roster_wrong: int = 0  # members that do not know every member exactly once
    no_own_join: int = 0  # members that never heard the join of their own user


def check_joins(rows: Iterable[ChatRow]) -> JoinCheck:
    rooms: defaultdict[str, list[ChatRow]] = defaultdict(list)
    for row in rows:
        if row.member:
            rooms[row.room].append(row)
    members = received = expected = early = wrong = roster_wrong = no_own = 0
    for room_members in rooms.values():
        joins = sorted(m.own_join for m in room_members if m.own_join >= 0)
        size = len(room_members)
        for m in room_members:
            members += 1
            after = len(joins) - _count_at_or_below(joins, m.position)
            own_before = 0 <= m.own_join <= m.position  # else among those after
            received += m.joins
            expected += after + own_before
            early += max(0, m.joins - m.joins_after_position - own_before)
            wrong += m.joins_after_position != after
            roster_wrong += m.roster < 0 or m.roster + m.joins_after_roster != size
            no_own += m.own_join < 0
    return JoinCheck(members, len(rooms), received, expected, early, wrong, roster_wrong, no_own)


def _count_at_or_below(sorted_values: list[int], value: int) -> int:
    """How many of ``sorted_values`` are at most ``value``."""
    low, high = 0, len(sorted_values)
    while low < high:
        mid = (low + high) // 2
        if sorted_values[mid] <= value:
            low = mid + 1
        else:
            high = mid
    return low


def expected_joins(room_sizes: Iterable[int]) -> int:
    """Joins heard in all in rooms of these sizes: R(R+1)/2 each."""
    return sum(r * (r + 1) // 2 for r in room_sizes)


# The figures of each phase


def subscribe_figures(
    result: ChatResult,
    replies: Sequence[Subscribed],
    before: "Meter",
    after: "Meter",
    reports: Sequence[ChatReport],
) -> None:
    """The subscribe phase: round trips, refusals, the server's CPU per subscribe,
    and the joins each member heard (:func:`check_joins`)."""
    hist = Histogram()
    for reply in replies:
        hist.merge(reply.sub_hist)
    sent = sum(reply.sent for reply in replies)
    replied = sum(reply.replied for reply in replies)
    result.subscribed = sum(reply.ok for reply in replies)
    result.subscribe_refused = replied - result.subscribed
    result.subscribe_unanswered = sent - replied
    result.subscribe_s = max((reply.elapsed_s for reply in replies), default=None)
    result.sub_p50_ms = ms(hist.percentile(0.50))
    result.sub_p99_ms = ms(hist.percentile(0.99))
    result.sub_max_ms = ms(hist.maximum())
    refused = merged_counts(reply.refused for reply in replies)
    if refused:
        result.errors.append(f"subscribes refused, by code: {top(refused)}")
    if result.subscribe_unanswered:
        result.errors.append(f"{result.subscribe_unanswered} subscribes got no reply")
    use = cpu_use(before, after, sum(r.cpu_s for r in reports))
    if use.server_s is not None and result.subscribed:
        result.server_cpu_us_per_subscribe = use.server_s * 1e6 / result.subscribed
    rows = [row for report in reports for row in report.rows]
    joins = check_joins(rows)
    result.rooms = joins.rooms
    result.joins_received = joins.received
    result.joins_expected = joins.expected
    result.joins_early = joins.early
    result.joins_wrong = joins.wrong
    result.roster_wrong = joins.roster_wrong
    result.no_own_join = joins.no_own_join
    if joins.wrong or joins.roster_wrong or joins.no_own_join:
        result.errors.append(
            f"presence: {joins.wrong} members missed a join after their position or heard "
            f"one twice, {joins.roster_wrong} "
            f"do not know every member once, {joins.no_own_join} never heard their own join"
        )


def publish_figures(result: ChatResult, replies: Sequence[Published]) -> None:
    """What the clients published and how the server answered."""
    hist = Histogram()
    for reply in replies:
        hist.merge(reply.ack_hist)
    result.published = sum(reply.sent for reply in replies)
    result.publish_ok = sum(reply.ok for reply in replies)
    refused = merged_counts(reply.refused for reply in replies)
    result.publish_refused = sum(refused.values())
    result.publish_unanswered = sum(reply.unanswered for reply in replies)
    result.publish_late_ms = max((reply.late_ms for reply in replies), default=None)
    result.publish_ack_p50_ms = ms(hist.percentile(0.50))
    result.publish_ack_p99_ms = ms(hist.percentile(0.99))
    if refused:
        result.errors.append(f"publishes refused, by code: {top(refused)}")
    if result.publish_unanswered:
        result.errors.append(f"{result.publish_unanswered} publishes got no reply")


def api_figures(result: ChatResult, log: "ApiLog", before: "Meter", after: "Meter") -> None:
    """What the bench pushed through the API in the api phase."""
    result.api_pushes = log.accepted
    result.api_push_errors = sum(log.errors.values())
    result.api_batches = log.batches
    result.api_late_ms = log.late_ms
    result.api_batch_p50_ms = ms(log.rtt.percentile(0.50))
    result.api_batch_p99_ms = ms(log.rtt.percentile(0.99))
    if log.sent:
        result.api_bench_cpu_us_per_push = (after.own - before.own) * 1e6 / log.sent
    if log.errors:
        result.errors.append(f"API push errors: {top(log.errors)}")


def message_phase_figures(
    result: ChatResult,
    prefix: str,
    reports: Sequence[ChatReport],
    before: "Meter",
    after: "Meter",
    first_ns: int,
    losses: ChatLosses,
    losses_before: ChatLosses,
) -> None:
    """One message phase (``prefix``: msg, api or resume): its deliveries and their
    latency, the CPU per delivery (server, clients, others), and its losses (those
    counted at its end less those counted before it)."""
    assert prefix in MESSAGE_PHASES
    hist = Histogram()
    for report in reports:
        hist.merge(report.latency_hist)
    deliveries = sum(report.deliveries for report in reports)
    client_s = sum(report.cpu_s for report in reports)
    use = cpu_use(before, after, client_s)
    last_ns = max((report.last_ns for report in reports), default=0)
    figures: dict[str, object] = {
        "deliveries": deliveries,
        "expected": losses.expected - losses_before.expected,
        "lost": losses.lost - losses_before.lost,
        "duplicates": losses.duplicates - losses_before.duplicates,
        "p50_ms": ms(hist.percentile(0.50)),
        "p95_ms": ms(hist.percentile(0.95)),
        "p99_ms": ms(hist.percentile(0.99)),
        "max_ms": ms(hist.maximum()),
        "other_cpu_pct": use.other_pct,
        "deliveries_per_s": None,
        "server_cpu_us_per_delivery": None,
        "client_cpu_us_per_delivery": client_s * 1e6 / deliveries if deliveries else None,
    }
    if deliveries and first_ns and last_ns > first_ns:
        figures["deliveries_per_s"] = deliveries * 1e9 / (last_ns - first_ns)
    if deliveries and use.server_s is not None:
        figures["server_cpu_us_per_delivery"] = use.server_s * 1e6 / deliveries
    for name, value in figures.items():
        key = f"{prefix}_{name}"
        assert hasattr(result, key), key
        setattr(result, key, value)
    result.steal_pct = use.steal_pct


def run_figures(result: ChatResult, losses: ChatLosses, reports: Sequence[ChatReport]) -> None:
    """Over the whole run: losses, presence per phase, the goals; the base fields
    that other scenarios fill (deliveries, latency, CPU per delivery) take the
    publish phase's."""
    result.expected = losses.expected
    result.lost = losses.lost
    result.lost_on_closed = losses.lost_on_closed
    result.lost_not_recovered = losses.lost_not_recovered
    result.duplicates = losses.duplicates
    result.extra_positions = losses.extra
    result.epoch_changes = losses.epoch_changes
    presence: dict[str, list[int]] = {}
    for report in reports:
        for phase, counts in report.presence.items():
            mine = presence.setdefault(phase, [0] * len(counts))
            for i, n in enumerate(counts):
                mine[i] += n
    result.presence_by_phase = presence
    result.presence_on_resume = sum(presence.get("resume", []))
    result.leaves = sum(counts[1] for counts in presence.values())
    result.unpositioned = sum(report.unpositioned for report in reports)
    result.gap_notices = sum(report.gap_notices for report in reports)
    result.deliveries = result.msg_deliveries
    result.deliveries_per_s = result.msg_deliveries_per_s
    result.server_cpu_us_per_delivery = result.msg_server_cpu_us_per_delivery
    result.client_cpu_us_per_delivery = result.msg_client_cpu_us_per_delivery
    result.p50_ms, result.p95_ms = result.msg_p50_ms, result.msg_p95_ms
    result.p99_ms, result.max_ms = result.msg_p99_ms, result.msg_max_ms
    result.pushes = result.api_pushes + result.storm_pushes
    msg, api = result.msg_server_cpu_us_per_delivery, result.api_server_cpu_us_per_delivery
    if msg is not None and api:
        result.cpu_ratio = msg / api
    if losses.extra:
        result.errors.append(
            f"{losses.extra} positions in the rooms' streams that the run did not put there"
        )
    if losses.epoch_changes:
        result.errors.append(f"{losses.epoch_changes} epoch changes: a stream's history was lost")
    if result.unpositioned:
        result.errors.append(f"{result.unpositioned} frames carried no position (history off?)")
    result.goals = goals(result)
