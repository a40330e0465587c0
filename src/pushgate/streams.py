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
from collections.abc import Container
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from pushgate.ids import RoomId

# Stream names, which are also the broker topics of pushes.
TOPIC_ALL = "all"
ROOM_TOPIC_PREFIX = "room:"
USER_TOPIC_PREFIX = "user:"

T = TypeVar("T")


def room_topic(room: RoomId) -> str:
    return ROOM_TOPIC_PREFIX + room


def user_topic(user: str) -> str:
    return USER_TOPIC_PREFIX + user


def room_of(topic: str) -> RoomId | None:
    """The room a stream is the pushes of (None: not a room's)."""
    if topic.startswith(ROOM_TOPIC_PREFIX):
        return RoomId(topic[len(ROOM_TOPIC_PREFIX) :])
    return None


def user_of(topic: str) -> str | None:
    """The user a stream is the pushes of (None: not a user's)."""
    if topic.startswith(USER_TOPIC_PREFIX):
        return topic[len(USER_TOPIC_PREFIX) :]
    return None


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


@dataclass(slots=True, eq=False)
class _Stream:
    """One stream kept in memory: its position, and the data of its last pushes
    (oldest first: seqs ``seq - len(kept) + 1`` to ``seq``; None when it keeps none)."""

    epoch: str
    seq: int = 0
    touched: float = 0.0  # last published to, read, or left by its last follower
    kept: list[bytes] | None = None
    # How many of this stream's entries in the log are of pushes already trimmed by
    # ``size`` (its oldest entries there): the log skips them.
    trimmed: int = 0


class _TimedQueue(Generic[T]):
    """Items in the order they were put, each with the time it was put."""

    __slots__ = ("_items", "_times")

    def __init__(self) -> None:
        # Two deques side by side: 16 bytes an item, where a deque of pairs costs 80.
        self._items: deque[T] = deque()
        self._times: deque[float] = deque()

    def put(self, item: T, when: float) -> None:
        self._items.append(item)
        self._times.append(when)

    def due(self, deadline: float) -> bool:
        """Whether the first item was put at ``deadline`` or before."""
        return bool(self._times) and self._times[0] <= deadline

    def first_time(self) -> float | None:
        return self._times[0] if self._times else None

    def pop(self) -> T:
        self._times.popleft()
        return self._items.popleft()


# What a kept push costs beyond its bytes (the bytes object's header, its places in
# its stream's list and in the log, its time), counted against ``max_bytes``.
PUSH_OVERHEAD = 80


class MemoryHistory:
    """Streams kept in this process: each one's position, and its last ``size``
    pushes, each for ``ttl`` seconds, within ``max_bytes`` for all streams together
    (0: no limit). Times are passed in (``now``, monotonic), so it is pure.

    Every push kept is also entered in one log, in publish order. All pushes live
    ``ttl``, so the log's first entry is both the next push to expire and the oldest
    push of all: expiry (:meth:`expire`, which the caller runs on a timer) and the
    byte cap take pushes from there, O(1) each, and leave a stream without pushes
    holding its position only. Trimming a stream to ``size`` leaves its entry in the
    log (a reference, no bytes), skipped when its turn comes.

    A position outlives its pushes: it is what tells a resuming client that it
    missed nothing (same epoch, same seq), or that what it missed is gone (same
    epoch, later seq, pushes missing: not recovered). It is forgotten only when no
    node follows the stream and it was idle ``position_ttl``, which the caller makes
    longer than any session may stay away; the stream then starts over in a new
    epoch, which a client still holding an old position is told about. An epoch
    only has to differ from the stream's own earlier ones, so the streams made
    between two such forgettings share one (one string, not one a stream).
    """

    def __init__(self, *, size: int, ttl: float, position_ttl: float, max_bytes: int = 0) -> None:
        self.size = size
        self.ttl = ttl
        self.position_ttl = max(position_ttl, ttl)  # a stream with pushes keeps its position
        self.max_bytes = max_bytes
        self.bytes = 0  # of the pushes kept, PUSH_OVERHEAD included
        self._streams: dict[str, _Stream] = {}
        self._epoch = new_epoch()  # of the streams made from now on
        self._log: _TimedQueue[_Stream] = _TimedQueue()  # every push kept, by when published
        self._checks: _TimedQueue[str] = _TimedQueue()  # every stream, by when last checked

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def publish(
        self, topic: str, message: bytes, now: float, accepted_at: float = 0.0
    ) -> Publication:
        """Give ``message`` the stream's next position and keep it."""
        self._drop_expired(now)
        stream = self._stream(topic, now)
        stream.seq += 1
        data = with_position(message, stream.seq, stream.epoch)
        self._keep(stream, data, now)
        return Publication(stream.seq, stream.epoch, data, accepted_at)

    def read(self, topic: str, since: Position | None, now: float) -> History:
        """What ``topic`` holds after ``since`` (None: only its position now)."""
        self._drop_expired(now)
        stream = self._stream(topic, now)
        top = Position(stream.epoch, stream.seq)
        return history_after(top, self._kept_after(stream, since), since)

    def touch(self, topic: str, now: float) -> None:
        """Count ``topic`` as used at ``now`` (its last follower left): its position
        is kept ``position_ttl`` from now."""
        stream = self._streams.get(topic)
        if stream is not None:
            stream.touched = now

    def expire(self, now: float, followed: Container[str] = ()) -> int:
        """Drop the pushes older than ``ttl``, and forget the positions of the streams
        without pushes, not in ``followed``, idle ``position_ttl`` (noticed up to
        ``position_ttl`` late); return how many streams were forgotten."""
        self._drop_expired(now)
        forgotten = 0
        while self._checks.due(now - self.position_ttl):
            topic = self._checks.pop()
            stream = self._streams[topic]
            if stream.kept or topic in followed or now - stream.touched < self.position_ttl:
                self._checks.put(topic, now)
                continue
            del self._streams[topic]
            forgotten += 1
        if forgotten:  # a stream made again must not resume an epoch it had
            self._epoch = new_epoch()
        if forgotten > len(self._streams):  # a dict never shrinks: copy what is left
            self._streams = dict(self._streams)
        return forgotten

    def next_due(self) -> float | None:
        """When :meth:`expire` next has something to do (None: nothing kept)."""
        due = []
        if (pushed := self._log.first_time()) is not None:
            due.append(pushed + self.ttl)
        if (checked := self._checks.first_time()) is not None:
            due.append(checked + self.position_ttl)
        return min(due, default=None)

    def __len__(self) -> int:
        return len(self._streams)

    def _stream(self, topic: str, now: float) -> _Stream:
        stream = self._streams.get(topic)
        if stream is None:
            stream = self._streams[topic] = _Stream(self._epoch)
            self._checks.put(topic, now)
        stream.touched = now
        return stream

    def _keep(self, stream: _Stream, data: bytes, now: float) -> None:
        if stream.kept is None:
            stream.kept = []
        stream.kept.append(data)
        self.bytes += len(data) + PUSH_OVERHEAD
        self._log.put(stream, now)
        if len(stream.kept) > self.size:  # a list: size is small, del [0] is a memmove
            self.bytes -= len(stream.kept.pop(0)) + PUSH_OVERHEAD
            stream.trimmed += 1
        while self.max_bytes and self.bytes > self.max_bytes:
            self._drop_oldest()

    def _drop_expired(self, now: float) -> None:
        while self._log.due(now - self.ttl):
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Drop the oldest push of all (its log entry may be of one trimmed already)."""
        stream = self._log.pop()
        if stream.trimmed:
            stream.trimmed -= 1
        elif stream.kept:
            self.bytes -= len(stream.kept.pop(0)) + PUSH_OVERHEAD
            if not stream.kept:
                stream.kept = None

    def _kept_after(self, stream: _Stream, since: Position | None) -> tuple[Publication, ...]:
        """The stream's pushes after ``since`` (all of them: another epoch)."""
        kept = stream.kept
        if since is None or not kept:
            return ()
        first = stream.seq - len(kept) + 1
        skip = max(since.seq + 1 - first, 0) if since.epoch == stream.epoch else 0
        return tuple(Publication(first + i, stream.epoch, kept[i]) for i in range(skip, len(kept)))


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
