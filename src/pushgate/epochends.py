"""Where a stream's lost epoch ended, as far as a node can tell: what lets a Redis
that restarted empty cost a client nothing it had not missed (docs/recovery.md,
"After Redis restarted empty").

Theory of operation
-------------------

A Redis without persistence that restarts loses every stream's history, and each
stream starts over in a new epoch. A client at a position of the old epoch would
be told it was not recovered: whatever came after its position went with the old
history. Often nothing did. A node takes its own last position (E, N) on a stream
as the **end** of epoch E, and a client at (E, N) as being at the start of the new
epoch, only when all of these hold:

1. **It was current.** When its subscription broke, the node had delivered every
   push of E up to N, with no repair under way (a gap being filled, or given up on,
   leaves its position in doubt), and the subscription was confirmed.
2. **The connection was closed under it** (an end of file or a reset, which is how
   a Redis that stops looks), while its probes were coming back: whatever Redis had
   written on it arrived first; and every attempt to reconnect until Redis was back
   was refused. A subscription that went silent (a partition, a machine that died),
   one closed before it was confirmed, or an attempt that something answered may
   hide pushes that Redis went on accepting. The broker says which
   (``BrokerHandler.on_interrupted``, called again when a closed cut stops being
   one).
3. **Nothing moved the stream since**: the repair that finds the new epoch finds
   the node still at (E, N).
4. **The new epoch's history holds all of it**, from seq 1 to its top: a client
   given it from its start misses none of it.

Then the repair hands the new epoch's pushes to the stream's members with no
notice, and a resume from (E, N) here is given the new epoch from its start, and
told it was recovered. That end stays known while the node follows the stream, and
``linger`` seconds (the sessions' TTL) after it lets go: its members, all cut at
once, resume within it. A client at any other position of E, a stream this node did
not follow, a cut that was not closed, or a new epoch trimmed already: not
recovered, as before. (The node leaves out the streams whose members it cannot
vouch for either: a presence room's roster lost its members without a leave.)

What no node can see: a push Redis answered in the instant it died, before writing
it on this node's connection. Redis writes a publish to the publisher and to the
subscribers in the same turn of its loop, but in separate writes, and the
publisher's may go first; a node that was falling behind (its connection's buffers
full) widens that instant to whatever Redis still held for it. Such a push never
reached this node and no history kept it; it is the one loss this cannot tell.

Pure and synchronous: nothing here awaits, reads a clock, or logs.
"""

from pushgate.streams import History, Position


def holds_from_start(history: History) -> bool:
    """Whether ``history`` keeps every push of its epoch, from seq 1 to its top (as a
    read after a position of another epoch returns them: all it keeps)."""
    top = history.position
    seqs = [pub.seq for pub in history.publications if pub.epoch == top.epoch]
    return seqs == list(range(1, top.seq + 1))


class EpochEnds:
    """Per stream: where the node stood when its subscription was closed under it
    (a candidate end of the epoch), and, once a repair found a new epoch that
    follows on from it, that end, which the new epoch's start stands for. Times
    (``now``, monotonic seconds) are passed in."""

    def __init__(self, linger: float = 0.0) -> None:
        self.linger = linger
        self._cut: dict[str, Position] = {}
        # stream -> (where the old epoch ended, the epoch that followed on from it)
        self._carried: dict[str, tuple[Position, str]] = {}
        # Of those, the streams the node let go of, and when (oldest first).
        self._retired: dict[str, float] = {}

    def interrupted(self, topic: str, at: Position | None, *, closed: bool) -> None:
        """The subscription carrying ``topic`` broke with the node at ``at`` (None:
        nowhere it can vouch for, such as a stream being repaired); ``closed``: the
        connection was closed under a confirmed subscription (see the module
        docstring). Only a closed cut can mark an epoch's end."""
        if closed and at is not None:
            self._cut[topic] = at
        else:
            self._cut.pop(topic, None)

    def carry(self, topic: str, at: Position | None, history: History | None) -> Position | None:
        """A repair read ``history`` (None: it could not) with the node at ``at``:
        the new epoch's start (seq 0), when the new epoch follows on from where the
        node's subscription was closed, with nothing between; else None. Either way
        the cut is used up: a later repair must find a cut of its own."""
        cut = self._cut.pop(topic, None)
        if cut is None or cut != at or history is None:
            return None
        top = history.position
        if top.epoch == cut.epoch or not holds_from_start(history):
            return None
        self._carried[topic] = (cut, top.epoch)
        self._retired.pop(topic, None)
        return Position(top.epoch, 0)

    def start(self, topic: str, since: Position, epoch: str) -> Position:
        """Where a client at ``since`` stands in ``epoch``, the stream's epoch now:
        at its start (seq 0) when ``since`` is where this node saw the epoch before
        it end; ``since`` itself otherwise."""
        if self._carried.get(topic) == (since, epoch):
            return Position(epoch, 0)
        return since

    def forget(self, topic: str, now: float) -> None:
        """The node no longer follows ``topic`` (from ``now``): a cut of it no longer
        holds; where its epoch ended does, ``linger`` seconds more. Ends the node let
        go of longer ago are dropped."""
        self._cut.pop(topic, None)
        if topic in self._carried:
            self._retired.pop(topic, None)  # to the end: the latest
            self._retired[topic] = now
        retired = self._retired
        while retired and (oldest := next(iter(retired.items())))[1] <= now - self.linger:
            del retired[oldest[0]]
            del self._carried[oldest[0]]
