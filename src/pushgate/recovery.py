"""Stream recovery, without I/O: what a node does with each push of a stream it
follows, what it does once history comes back to fill a gap, and what a resuming
connection is handed. It decides; :class:`~pushgate.node.Node` acts (reads
history, retries, waits for ``Broker.sync``, hands frames to the hub).

Theory of operation (docs/recovery.md)
--------------------------------------

Every push of a stream carries its position (epoch, seq). The
:class:`~pushgate.streams.StreamGuard` holds the last position delivered on each
stream. A push that follows it is delivered. One at or before it was delivered
already and is dropped. One further on means pushes were lost on the way (a broker
reconnecting, a Redis Cluster slot moving): the stream is **repaired**, its later
pushes held until history has filled the gap, and whatever history cannot give is
told to the clients with a notice, never passed over. A push of a new epoch means
the stream's history itself was lost: it is delivered, after a notice, unless the
node can tell that nothing of the old epoch came after what it delivered
(:mod:`pushgate.epochends`): then the new epoch simply follows on.

A **resume** captures the live pushes of the session's streams from before it
reads their history until it completes; :meth:`StreamRecovery.catch_up` then
merges history and capture, each push once and in order, in one synchronous step,
as centrifuge's ``MergePublications`` does. If the node itself is behind on a
stream (it is repairing it), the connection gets only what the node has delivered,
and the repair gives the rest to every member at once.

Pure and synchronous: nothing here awaits, reads a clock, or logs.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from pushgate.epochends import EpochEnds
from pushgate.recent import Recent
from pushgate.streams import History, Position, Publication, StreamGuard, Verdict, history_after
from pushgate.wire import StreamReport, excluded_conn


class Action(Enum):
    """What to do with a push that arrived live."""

    DELIVER = "deliver"  # hand it to the stream's local members now
    HOLD = "hold"  # its stream is being repaired: it waits, and is delivered after
    DROP = "drop"  # delivered already (a duplicate)
    REPAIR = "repair"  # it came after a gap: read history, then deliver it (held)


@dataclass(frozen=True, slots=True)
class Arrival:
    """The verdict on a live push, and the notice to send before it (a new epoch:
    the stream's history was lost)."""

    action: Action
    notice: StreamReport | None = None
    was: str = ""  # with a notice: the epoch the stream had before


DELIVER = Arrival(Action.DELIVER)
HOLD = Arrival(Action.HOLD)
DROP = Arrival(Action.DROP)
REPAIR = Arrival(Action.REPAIR)

# One step of a finished repair: a push to hand to the stream's members, or a
# notice that pushes of it were lost.
Step = Publication | StreamReport


@dataclass(slots=True)
class RepairOutcome:
    """What a finished repair hands out, in order, and what it counted."""

    steps: list[Step] = field(default_factory=list)
    filled: int = 0  # pushes filled from history
    lost: int = 0  # notices that pushes were lost
    # The epoch the stream had before, when history was lost but nothing that came
    # after the node's position in it (epochends.py): the new one follows on.
    carried_from: str = ""


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What a resuming connection is handed: the frames it missed, in order per
    stream; each stream's report; and the streams the node itself must repair."""

    frames: list[bytes]
    reports: dict[str, StreamReport]
    repair: list[str]


class StreamRecovery:
    """The positions, repairs and resume captures of one node's streams."""

    def __init__(self, *, linger: float = 0.0, recent: Recent | None = None) -> None:
        """``linger``: how long, in seconds, the node remembers where a stream's lost
        epoch ended once it no longer follows the stream (epochends.py); ``recent``:
        where the node keeps the last pushes it fanned out, to catch resumes up from
        (recent.py; None: every resume reads history)."""
        self.guard = StreamGuard()
        # Streams being repaired, and the pushes that arrived meanwhile, in order.
        self._repairs: dict[str, list[Publication]] = {}
        # Streams some resume captures live pushes of: (how many resumes, pushes).
        self._captures: dict[str, tuple[int, list[Publication]]] = {}
        # Where each stream was when the node began following it, while nothing has
        # been handed out on it since (see clean_start).
        self._noted: dict[str, Position] = {}
        # Where epochs lost with the broker's history ended, where the node can tell.
        self._ends = EpochEnds(linger)
        self._recent = recent

    # Live pushes

    def arrive(self, topic: str, pub: Publication) -> Arrival:
        """Decide on a push of a followed stream. DELIVER and a notice count as
        delivered at once; REPAIR starts a repair (see :meth:`finish_repair`)."""
        if not pub.seq:
            return DELIVER  # no positions (history off): nothing to check
        waiting = self._repairs.get(topic)
        if waiting is not None:
            waiting.append(pub)
            return HOLD
        verdict = self.guard.check(topic, pub)
        if verdict is Verdict.DUPLICATE:
            return DROP
        if verdict is Verdict.GAP:
            self._repairs[topic] = [pub]
            return REPAIR
        if verdict is Verdict.NEW_EPOCH:
            before = self.guard.last(topic)
            self.guard.delivered(topic, pub.position)
            notice = StreamReport(False, pub.epoch, pub.seq)
            return Arrival(Action.DELIVER, notice, before.epoch if before else "?")
        self.guard.delivered(topic, pub.position)
        return DELIVER

    def fanned_out(self, topic: str, pub: Publication) -> None:
        """A push of ``topic`` was handed to its local members: resumes under way
        on the stream keep it (see :meth:`catch_up`)."""
        capture = self._captures.get(topic)
        if capture is not None:
            capture[1].append(pub)
        if self._recent is not None and pub.seq:
            self._recent.add(topic, pub)

    def noted(self, topic: str, position: Position) -> None:
        """Where a stream was when the node began to follow it, unless a push
        arrived meanwhile: gaps are then found from its first push on."""
        if self.guard.last(topic) is None:
            self.guard.delivered(topic, position)
            self._noted[topic] = position

    def clean_start(self, topic: str) -> Position | None:
        """Where a session that follows ``topic`` here may be resumed from when its
        client names no position of it: where the node began following it, if no
        push and no notice has been handed out on it since (so none can have been
        missed by a member); None when the node cannot tell."""
        noted = self._noted.get(topic)
        return noted if noted is not None and self.guard.last(topic) == noted else None

    def forget(self, topic: str, now: float) -> None:
        """The node no longer follows ``topic``, from ``now`` (monotonic seconds)."""
        self.guard.forget(topic)
        self._noted.pop(topic, None)
        self._ends.forget(topic, now)
        if self._recent is not None:
            self._recent.forget(topic)

    def interrupted(self, topics: Mapping[str, bool]) -> None:
        """The broker's subscription to ``topics`` broke, each closed under it or not
        (``BrokerHandler.on_interrupted``): note where each stream stood, where that
        may turn out to be the end of its epoch (epochends.py)."""
        for topic, closed in topics.items():
            at = None if topic in self._repairs else self.guard.last(topic)
            self._ends.interrupted(topic, at, closed=closed)

    def last(self, topic: str) -> Position | None:
        return self.guard.last(topic)

    # Repairs

    def start_repair(self, topic: str) -> bool:
        """Repair a stream whose pushes may have been lost (the broker reconnected);
        False when a repair of it is under way already."""
        if topic in self._repairs:
            return False
        self._repairs[topic] = []
        return True

    def repairing(self, topic: str) -> bool:
        return topic in self._repairs

    def topics(self) -> list[str]:
        """Every stream with a known position."""
        return self.guard.topics()

    def finish_repair(self, topic: str, history: History | None) -> RepairOutcome:
        """History (None: it could not be read) after the stream's last delivered
        position came back: the pushes to hand out and the notices to send, in
        order, the held pushes last; the stream is delivered again from here on."""
        waiting = self._repairs.pop(topic, [])
        guard = self.guard
        outcome = RepairOutcome()
        before = guard.last(topic)
        start = self._ends.carry(topic, before, history)
        if start is not None and before is not None:
            # The new epoch follows on from the old one's end: nothing to tell.
            if self._noted.get(topic) == before:
                self._noted[topic] = start  # and nothing handed out since the node noted it
            guard.delivered(topic, start)
            outcome.carried_from = before.epoch
        last = (
            guard.last(topic)
            if history is None
            else guard.last_seen_from(topic, history.position.epoch)
        )
        if history is not None and last is not None:
            self._fill(topic, history, last, bool(waiting), outcome)
        elif history is None and not waiting and last is not None:
            # The catch-up could not be read: what was missed is unknown.
            outcome.steps.append(StreamReport(False, last.epoch, last.seq))
            outcome.lost += 1
        for pub in waiting:
            last = guard.last(topic)
            if last is not None and pub.epoch == last.epoch and pub.seq <= last.seq:
                continue
            if last is not None and pub.position != Position(last.epoch, last.seq + 1):
                outcome.steps.append(StreamReport(False, pub.epoch, pub.seq))
                outcome.lost += 1
            outcome.steps.append(pub)
            guard.delivered(topic, pub.position)
        if outcome.lost:  # a notice leaves the position as it was, and is not clean
            self._noted.pop(topic, None)
            if self._recent is not None:
                # Nor can the node vouch for it: told lost without history read, it
                # may be behind (recent.py); from the next push it fans out on, it can.
                self._recent.forget(topic)
        return outcome

    def _fill(
        self, topic: str, history: History, last: Position, held: bool, outcome: RepairOutcome
    ) -> None:
        """History's pushes after ``last``, as far as they follow on without a gap."""
        guard = self.guard
        if history.position.epoch != last.epoch:
            # The stream's history was lost (Redis restarted empty): what followed
            # `last` is gone; say so, then give what the new epoch has kept.
            outcome.steps.append(StreamReport(False, history.position.epoch, 0))
            outcome.lost += 1
            last = Position(history.position.epoch, 0)
            guard.delivered(topic, last)
        for pub in history.publications:
            if pub.epoch != last.epoch or pub.seq <= last.seq:
                continue
            if pub.seq != last.seq + 1:
                break
            outcome.steps.append(pub)
            guard.delivered(topic, pub.position)
            last = pub.position
            outcome.filled += 1
        if not held and history.position != last:
            # History could not give all the stream has: say so, and go on from there.
            top = history.position
            outcome.steps.append(StreamReport(False, top.epoch, top.seq))
            outcome.lost += 1
            guard.delivered(topic, top)

    # Resumes

    def capture(self, topics: list[str]) -> None:
        """Keep every push of these streams handed out from now until :meth:`release`."""
        for topic in topics:
            count, captured = self._captures.get(topic, (0, []))
            self._captures[topic] = (count + 1, captured)

    def release(self, topics: list[str]) -> None:
        """A resume that captured ``topics`` is over, however it ended."""
        for topic in topics:
            count, captured = self._captures[topic]
            if count == 1:
                del self._captures[topic]
            else:
                self._captures[topic] = (count - 1, captured)

    def recent_histories(self, starts: Mapping[str, Position | None]) -> dict[str, History]:
        """What each stream holds after its start, for the streams whose every push
        since then this node has fanned out and still keeps (recent.py): what a read
        of history would give at the moment the stream stood where the node is (a
        start of None: only that position). The others must be read. Call it once
        the streams are captured: a push fanned out after it is in the capture."""
        recent = self._recent
        if recent is None:
            return {}
        histories: dict[str, History] = {}
        for topic, start in starts.items():
            top = self.guard.last(topic)
            if top is None or topic in self._repairs:
                continue
            history = recent.after(topic, start, top)
            if history is not None:
                histories[topic] = history
        return histories

    def capturing(self) -> list[str]:
        """The streams some resume captures (empty when no resume is under way)."""
        return list(self._captures)

    def catch_up(
        self,
        starts: dict[str, Position],
        histories: dict[str, History],
        history_on: bool,
        conn: str | None = None,
    ) -> CatchUp:
        """History after each stream's start, then what was captured live, each push
        once: called in one synchronous step with the connection's opening to
        fan-out, so that no push can slip between. Every stream of ``histories``
        must be captured. A push that excludes ``conn`` (the resuming connection's
        own message, say) moves its position on but is not handed to it."""
        frames: list[bytes] = []
        reports: dict[str, StreamReport] = {}
        repair: list[str] = []
        for topic, history in histories.items():
            report, behind = self._catch_up_one(
                starts[topic], history, self._captures[topic][1], history_on, frames, topic, conn
            )
            reports[topic] = report
            if behind and topic not in self._repairs:
                repair.append(topic)
        return CatchUp(frames, reports, repair)

    def _catch_up_one(
        self,
        start: Position,
        history: History,
        captured: list[Publication],
        history_on: bool,
        frames: list[bytes],
        topic: str,
        conn: str | None,
    ) -> tuple[StreamReport, bool]:
        top = history.position
        carried = self._ends.start(topic, start, top.epoch)
        if carried != start:  # where this node saw the epoch before end: at this one's start
            start, history = carried, history_after(top, history.publications, carried)
        last = start if start.epoch == top.epoch else Position("", 0)
        # This node may itself have missed pushes of the stream (lost while it was
        # not subscribed, or on the way): then the connection gets only what the
        # node has delivered, and a repair gives the rest to every member, this
        # one included, once. Replaying it here too would deliver it twice.
        node_at = self.guard.last(topic)
        behind = node_at is not None and node_at.epoch == top.epoch and node_at.seq < top.seq
        upto = node_at.seq if node_at is not None and behind else top.seq
        for pub in history.publications:
            if pub.epoch == top.epoch and pub.seq > upto:
                break
            if conn is None or excluded_conn(pub.data) != conn:
                frames.append(pub.data)
            last = pub.position
        recovered = history_on and history.complete
        for pub in captured:
            if pub.epoch != last.epoch:
                recovered = recovered and last.epoch == ""
            elif pub.seq <= last.seq:
                continue
            elif pub.seq != last.seq + 1:
                recovered = False
            if conn is None or excluded_conn(pub.data) != conn:
                frames.append(pub.data)
            last = pub.position
        if last.epoch == "":
            last = top if node_at is None or not behind else node_at
        return StreamReport(recovered, last.epoch, last.seq), behind
