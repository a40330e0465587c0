"""What a node delivered last on each stream it follows, so that a resume on it can
be caught up without reading the broker's history (a part of
:class:`~pushgate.recovery.StreamRecovery`).

On a cluster a resume read each of its streams' history from Redis: a round trip,
and the script's work, for pushes that the gateway itself had fanned out moments
before (a client that lost its connection resumes within seconds, typically on the
same gateway or on one that follows the same rooms). The node keeps the last
``per_stream`` pushes it fanned out on each stream, in order and without a gap, and
answers a resume from them when they reach back to the client's position and up to
the node's own: the same history a read would have given at the moment the stream
stood where the node is. Pushes published after it, still on their way to the node,
reach the connection live, as they would after any read.

It answers only where the node's position is that of a push it fanned out itself
and keeps: a position the node noted when it began following a stream, or moved to
past pushes it was told were lost, is one it cannot vouch for (it may be behind
without knowing it), and the caller reads history, which finds that out.

Bounded in bytes: ``budget`` of pushes' data in all (and ``OVERHEAD`` for each
push's own objects), the streams published to least recently dropped first; per
stream a list of ``per_stream`` to ``2 * per_stream - 1`` pushes, trimmed in halves,
not a deque (an empty deque costs ~600 bytes, and a node may follow a hundred
thousand rooms).

Pure and synchronous: nothing here awaits, reads a clock, or logs.
"""

from collections import OrderedDict

from pushgate.streams import History, Position, Publication

# The defaults a node keeps (node.py): 64 pushes a stream covers a client gone for
# 13 s of 5 pushes a second; 16 MiB in all, ~50,000 pushes of 200 bytes.
PER_STREAM = 64
BUDGET = 16 << 20
# What a kept push costs besides its data: the Publication, its bytes object's
# header, its epoch's reference and its slot in a list.
OVERHEAD = 120


class Recent:
    """The last pushes fanned out on each stream, each stream's without a gap."""

    def __init__(self, per_stream: int, budget: int) -> None:
        """``budget``: bytes, counting each push's data and ``OVERHEAD``."""
        if per_stream < 1 or budget < 1:
            raise ValueError("need per_stream >= 1 and budget >= 1")
        self.per_stream = per_stream
        self.budget = budget
        self._tails: OrderedDict[str, list[Publication]] = OrderedDict()
        self._bytes = 0  # held by all the tails

    @property
    def held(self) -> int:
        """Bytes held, as counted against the budget."""
        return self._bytes

    def add(self, topic: str, pub: Publication) -> None:
        """``pub`` was fanned out on ``topic``: keep it, after the stream's last if it
        follows it, instead of them if it does not (a gap, a new epoch)."""
        tails = self._tails
        tail = tails.get(topic)
        if tail is None:
            tail = tails[topic] = [pub]
        else:
            tails.move_to_end(topic)
            last = tail[-1]
            if pub.seq == last.seq + 1 and pub.epoch == last.epoch:
                tail.append(pub)
                if len(tail) >= 2 * self.per_stream:
                    # Trimmed a half at a time: each push is moved about once.
                    self._drop_head(tail, len(tail) - self.per_stream)
            else:
                self._drop_head(tail, len(tail))
                tail.append(pub)
        self._bytes += len(pub.data) + OVERHEAD
        while self._bytes > self.budget and len(tails) > 1:
            _, dropped = tails.popitem(last=False)  # never this one: it is the latest
            self._drop_head(dropped, len(dropped))
        while self._bytes > self.budget and len(tail) > 1:  # this stream alone: its
            self._drop_head(tail, 1)  # oldest go, its last stays

    def _drop_head(self, tail: list[Publication], count: int) -> None:
        self._bytes -= sum(len(p.data) for p in tail[:count]) + OVERHEAD * count
        del tail[:count]

    def forget(self, topic: str) -> None:
        """The node no longer follows ``topic``, or can no longer vouch for what it
        delivered on it (it was told pushes of it were lost)."""
        dropped = self._tails.pop(topic, None)
        if dropped is not None:
            self._drop_head(dropped, len(dropped))

    def after(self, topic: str, since: Position | None, top: Position) -> History | None:
        """What ``topic`` holds after ``since`` (None: only where it is), as of
        ``top`` (the node's position on it): None unless the last push kept is at
        ``top`` and the kept pushes reach back to ``since`` without a gap."""
        tail = self._tails.get(topic)
        if not tail or tail[-1].seq != top.seq or tail[-1].epoch != top.epoch:
            return None
        if since is None or since == top:
            return History(top)
        if since.epoch != top.epoch or since.seq > top.seq:
            return None
        missed = top.seq - since.seq
        if missed > len(tail):
            return None
        return History(top, tuple(tail[-missed:]))
