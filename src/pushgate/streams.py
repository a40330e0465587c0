"""Streams, positions and history: what makes a push recoverable.

Every push belongs to a stream, named as its broker topic: ``all``, ``room:<id>``,
``user:<uid>``. The broker gives each push a :class:`Position` in its stream (``seq``
grows by one per push; ``epoch`` changes whenever the stream's history was lost) and
keeps the last pushes as history. A frame carries its position as two extra JSON keys,
spliced into the already-encoded push once per publish (:func:`with_position`).

:class:`StreamGuard` is what a node keeps per subscribed stream to see gaps:
a position that does not follow the last one means pushes were lost on the way.

Pure and synchronous: no I/O. The memory broker's history lives here too
(:class:`MemoryHistory`); the Redis broker keeps the same shape in Redis.
"""

import os
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from pushgate.ids import RoomId

# Stream names, which are also the broker topics of pushes.
TOPIC_ALL = "all"
ROOM_TOPIC_PREFIX = "room:"
USER_TOPIC_PREFIX = "user:"


def room_topic(room: RoomId) -> str:
    return ROOM_TOPIC_PREFIX + room


def user_topic(user: str) -> str:
    return USER_TOPIC_PREFIX + user


EPOCH_BYTES = 4  # 8 hex characters: a lost history is told apart, not guarded by secrecy


def new_epoch() -> str:
    return os.urandom(EPOCH_BYTES).hex()


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream is: the ``seq`` of its last push (0: none yet) in ``epoch``."""

    epoch: str
    seq: int

    def as_json(self) -> list[object]:
        return [self.epoch, self.seq]


@dataclass(frozen=True, slots=True)
class Publication:
    """One push as published on a stream: its position and its encoded message
    (``data``: JSON and a newline, position keys included when history is on)."""

    seq: int
    epoch: str
    data: bytes
    # When the logic API accepted it (wall clock; 0: unknown, as for history reads):
    # where the delivery-latency metric starts.
    accepted_at: float = 0.0

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.seq)


@dataclass(frozen=True, slots=True)
class History:
    """What a stream holds after a position: ``publications`` in order, the stream's
    ``position`` now, and whether the publications are all that came after (false when
    some were trimmed or expired, or the epoch changed)."""

    position: Position
    publications: tuple[Publication, ...] = ()
    complete: bool = True


def with_position(message: bytes, seq: int, epoch: str) -> bytes:
    """Splice ``"seq"`` and ``"epoch"`` into an encoded push (JSON object + newline)."""
    return b'%s,"seq":%d,"epoch":"%s"}\n' % (message[:-2], seq, epoch.encode())


def history_after(top: Position, kept: tuple[Publication, ...], since: Position | None) -> History:
    """What a stream at ``top``, retaining ``kept`` (in order, of ``top``'s epoch), holds
    after ``since`` (None: only its position), and whether that is all that came after."""
    if since is None or since == top:
        return History(top)
    if since.epoch != top.epoch or since.seq > top.seq:
        return History(top, kept, complete=False)
    missed = tuple(p for p in kept if p.seq > since.seq)
    complete = bool(missed) and missed[0].seq == since.seq + 1
    return History(top, missed, complete)


@dataclass(slots=True)
class _Stream:
    epoch: str
    seq: int = 0
    touched: float = 0.0  # when it was last published to or read
    # (expires at, publication), oldest first
    kept: deque[tuple[float, Publication]] = field(default_factory=deque)


class MemoryHistory:
    """Streams kept in this process: each one's position and last ``size`` pushes,
    each kept for ``ttl`` seconds. Times are passed in (``now``), so it is pure."""

    def __init__(self, *, size: int, ttl: float, meta_ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        # How long an idle stream's position is kept; forgetting it changes its epoch.
        self.meta_ttl = max(meta_ttl, ttl)
        self._streams: dict[str, _Stream] = {}

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def publish(
        self, topic: str, message: bytes, now: float, accepted_at: float = 0.0
    ) -> Publication:
        """Give ``message`` the stream's next position and keep it."""
        stream = self._stream(topic, now)
        stream.seq += 1
        data = with_position(message, stream.seq, stream.epoch)
        pub = Publication(stream.seq, stream.epoch, data, accepted_at)
        kept = stream.kept
        kept.append((now + self.ttl, pub))
        while len(kept) > self.size:
            kept.popleft()
        return pub

    def read(self, topic: str, since: Position | None, now: float) -> History:
        """What ``topic`` holds after ``since`` (None: only its position now)."""
        stream = self._stream(topic, now)
        kept = stream.kept
        while kept and kept[0][0] <= now:
            kept.popleft()
        return history_after(Position(stream.epoch, stream.seq), tuple(p for _, p in kept), since)

    def expire(self, now: float) -> int:
        """Forget the streams idle for longer than ``meta_ttl``; return how many."""
        idle = [t for t, s in self._streams.items() if now - s.touched > self.meta_ttl]
        for topic in idle:
            del self._streams[topic]
        return len(idle)

    def __len__(self) -> int:
        return len(self._streams)

    def _stream(self, topic: str, now: float) -> _Stream:
        stream = self._streams.get(topic)
        if stream is None:
            stream = self._streams[topic] = _Stream(new_epoch())
        stream.touched = now
        return stream


class Verdict(Enum):
    """What :meth:`StreamGuard.check` says of a publication that arrived."""

    NEXT = "next"  # the one after the last: deliver it
    DUPLICATE = "duplicate"  # at or before the last: already delivered, drop it
    GAP = "gap"  # later than the next: fill the gap from history first
    NEW_EPOCH = "new epoch"  # the stream's history was lost: deliver, and say so


class StreamGuard:
    """The last position delivered on each stream a node follows."""

    def __init__(self) -> None:
        self._last: dict[str, Position] = {}

    def check(self, topic: str, pub: Publication) -> Verdict:
        last = self.last_seen_from(topic, pub.epoch)
        if last is None:
            return Verdict.NEXT
        if pub.epoch != last.epoch:
            return Verdict.NEW_EPOCH
        if pub.seq == last.seq + 1:
            return Verdict.NEXT
        return Verdict.DUPLICATE if pub.seq <= last.seq else Verdict.GAP

    def delivered(self, topic: str, position: Position) -> None:
        self._last[topic] = position

    def last(self, topic: str) -> Position | None:
        return self._last.get(topic)

    def last_seen_from(self, topic: str, epoch: str) -> Position | None:
        """The last position delivered, as a stream now in ``epoch`` sees it: a
        position noted before any push was delivered (seq 0, when the node
        subscribed) in another epoch becomes the start of this one, since no push
        of the old epoch can be missing."""
        last = self._last.get(topic)
        if last is not None and last.epoch != epoch and not last.seq:
            last = self._last[topic] = Position(epoch, 0)
        return last

    def forget(self, topic: str) -> None:
        self._last.pop(topic, None)

    def topics(self) -> list[str]:
        return list(self._last)
