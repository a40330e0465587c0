"""What a node delivered last on each stream it follows, so that a resume on it can
be caught up without reading the broker's history (a part of
:class:`~pushgate.recovery.StreamRecovery`).

On a cluster a resume read each of its streams' history from Redis: a round trip,
and the script's work, for pushes that the gateway itself had fanned out moments
before (a client that lost its connection resumes within seconds, typically on the
same gateway or on one that follows the same rooms). The node keeps the last
``per_stream`` pushes it fanned out on each stream, in order and without a gap, and
answers a resume from them when they reach back to the client's position: the same
history a read would have given at the moment the node's own position was the
stream's. Pushes published after it, still on their way to the node, reach the
connection live, as they would after any read.

Bounded: ``budget`` pushes in all, the streams published to least recently dropped
first; per stream a list, trimmed in halves, not a deque (an empty deque costs
~600 bytes, and a node may follow a hundred thousand rooms).

Pure and synchronous: nothing here awaits, reads a clock, or logs.
"""

from collections import OrderedDict

from pushgate.streams import History, Position, Publication

# The defaults a node keeps (node.py): 64 pushes a stream covers a client gone for
# 13 s of 5 pushes a second; 32,768 in all are ~10 MB at 300 bytes a push.
PER_STREAM = 64
BUDGET = 32_768


class Recent:
    """The last pushes fanned out on each stream, each stream's without a gap."""

    def __init__(self, per_stream: int, budget: int) -> None:
        if per_stream < 1 or budget < per_stream:
            raise ValueError("need per_stream >= 1 and budget >= per_stream")
        self.per_stream = per_stream
        self.budget = budget
        self._tails: OrderedDict[str, list[Publication]] = OrderedDict()
        self._kept = 0  # pushes held in all the tails (up to 2 * per_stream each)

    def __len__(self) -> int:
        return self._kept

    def add(self, topic: str, pub: Publication) -> None:
        """``pub`` was fanned out on ``topic``: keep it, after the stream's last if it
        follows it, instead of them if it does not (a gap, a new epoch)."""
        tails = self._tails
        tail = tails.get(topic)
        if tail is None:
            tails[topic] = [pub]
            self._kept += 1
        else:
            tails.move_to_end(topic)
            last = tail[-1]
            if pub.seq == last.seq + 1 and pub.epoch == last.epoch:
                tail.append(pub)
                self._kept += 1
                if len(tail) >= 2 * self.per_stream:
                    # Trimmed a half at a time: each push is moved about once.
                    cut = len(tail) - self.per_stream
                    del tail[:cut]
                    self._kept -= cut
            else:
                self._kept += 1 - len(tail)
                tails[topic] = [pub]
        while self._kept > self.budget:
            _, dropped = tails.popitem(last=False)
            self._kept -= len(dropped)

    def forget(self, topic: str) -> None:
        """The node no longer follows ``topic``, or can no longer vouch for what it
        delivered on it (a notice of lost pushes moved its position on)."""
        dropped = self._tails.pop(topic, None)
        if dropped is not None:
            self._kept -= len(dropped)

    def after(self, topic: str, since: Position, top: Position) -> History | None:
        """What ``topic`` holds after ``since``, as of ``top`` (the node's position on
        it, every push up to which it has fanned out): None unless the kept pushes
        reach from ``since`` to ``top`` without a gap."""
        if since == top:
            return History(top)
        if since.epoch != top.epoch or since.seq > top.seq:
            return None
        tail = self._tails.get(topic)
        if not tail or tail[-1].seq != top.seq or tail[-1].epoch != top.epoch:
            return None
        missed = top.seq - since.seq
        if missed > len(tail):
            return None
        return History(top, tuple(tail[-missed:]))
