"""The sessions of one process (:class:`MemorySessions`), in a dict: the
:class:`~pushgate.sessions.Sessions` store of ``pushgate serve`` on ``memory://``.
Every node of the process shares it; detached sessions end ``ttl`` after their
detach, swept in the order they were detached.
"""

import asyncio
import contextlib
import hmac
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pushgate.ids import ConnId
from pushgate.sessions import (
    ANY_USER,
    AddResult,
    AnyUser,
    HeldSession,
    RemoveResult,
    Session,
    SessionInfo,
    Sessions,
    rooms_of,
    token_digest,
)
from pushgate.streams import Position, room_of

# A session's streams as the memory store keeps them: each stream's name, epoch and
# seq, one after another in one flat tuple, the names and epochs interned (a dict and
# a Position per stream, and a string per room, cost three times as much).
Packed = tuple[str | int, ...]


def _pack(streams: Mapping[str, Position]) -> Packed:
    packed: list[str | int] = []
    for stream, position in streams.items():
        packed += (sys.intern(stream), sys.intern(position.epoch), position.seq)
    return tuple(packed)


def _unpack(packed: Packed) -> dict[str, Position]:
    return {
        cast(str, packed[i]): Position(cast(str, packed[i + 1]), cast(int, packed[i + 2]))
        for i in range(0, len(packed), 3)
    }


def _names(packed: Packed) -> list[str]:
    return cast(list[str], list(packed[::3]))


@dataclass(slots=True)
class _Entry:
    """One session in the memory store: its token's SHA-256, its user, its streams
    (packed), its holder ("" while detached), when it ends while detached, and the
    ends of the streams a subscription token opened (None: none has one)."""

    digest: bytes
    user: str | None
    streams: Packed
    holder: str
    expires_at: float = 0.0
    ends: dict[str, float] | None = None

    def without_end(self, stream: str) -> None:
        if self.ends is not None:
            self.ends.pop(stream, None)
            if not self.ends:
                self.ends = None


class MemorySessions:
    """The sessions of one process, in a dict; detached ones end ``ttl`` after."""

    enabled = True
    kept_elsewhere = False

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[ConnId, _Entry] = {}
        # The sessions detached, in the order of their detaches, and when each ends:
        # one TTL after it, so the ends come in the same order and a sweep stops at the
        # first not due (a walk of every session each second held up the loop 1-2 ms
        # at 10,000). A session resumed or detached again leaves its old pair stale.
        self._ends: deque[float] = deque()
        self._ending: deque[ConnId] = deque()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="pushgate-sessions")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.ttl / 4))
            self.expire()

    async def create(
        self, ws_id: ConnId, token: str, user: str | None, streams: dict[str, Position], holder: str
    ) -> None:
        self._entries[ws_id] = _Entry(token_digest(token), user, _pack(streams), holder)

    async def claim(
        self, ws_id: ConnId, token: str, holder: str, *, user: str | AnyUser | None = ANY_USER
    ) -> Session | None:
        entry = self._live(ws_id)
        if entry is None or not hmac.compare_digest(entry.digest, token_digest(token)):
            return None
        if user is not ANY_USER and entry.user != user:
            return None
        previous, entry.holder = entry.holder, holder
        ends = dict(entry.ends) if entry.ends is not None else {}
        return Session(ws_id, entry.user, _unpack(entry.streams), previous, ends)

    async def add_stream(
        self,
        ws_id: ConnId,
        stream: str,
        position: Position,
        *,
        max_rooms: int,
        expires_at: float | None = None,
    ) -> AddResult:
        entry = self._live(ws_id)
        if entry is None:
            return "unknown"
        result: AddResult = "already"
        names = _names(entry.streams)
        if stream not in names:
            rooms = sum(1 for s in names if room_of(s) is not None)
            if room_of(stream) is not None and rooms >= max_rooms:
                return "limit"
            entry.streams += _pack({stream: position})
            result = "added"
        if expires_at is None:
            entry.without_end(stream)
        else:
            if entry.ends is None:
                entry.ends = {}
            entry.ends[sys.intern(stream)] = expires_at
        return result

    async def remove_stream(self, ws_id: ConnId, stream: str) -> RemoveResult:
        entry = self._live(ws_id)
        if entry is None:
            return "unknown"
        names = _names(entry.streams)
        if stream not in names:
            return "absent"
        at = 3 * names.index(stream)
        entry.streams = entry.streams[:at] + entry.streams[at + 3 :]
        entry.without_end(stream)
        return "removed"

    async def detach(self, ws_id: ConnId, holder: str) -> None:
        entry = self._entries.get(ws_id)
        if entry is not None and entry.holder == holder:
            entry.holder = ""
            entry.expires_at = ends = self._clock() + self.ttl
            self._ends.append(ends)  # the same float: 16 bytes a detached session
            self._ending.append(ws_id)

    async def describe(self, ws_id: ConnId) -> SessionInfo | None:
        entry = self._live(ws_id)
        if entry is None:
            return None
        return SessionInfo(entry.user, rooms_of(_names(entry.streams)), bool(entry.holder))

    async def end(self, ws_id: ConnId) -> bool:
        if self._live(ws_id) is None:  # none, or it ended at its TTL and awaits the sweep
            return False
        del self._entries[ws_id]
        return True

    async def restore(self, held: Sequence[HeldSession]) -> int:
        written = 0
        for session in held:
            if self._live(session.ws_id) is None:
                self._entries[session.ws_id] = _Entry(
                    bytes.fromhex(session.token_hash),
                    session.user,
                    _pack(session.streams),
                    session.holder,
                    ends=dict(session.ends) or None,
                )
                written += 1
        return written

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def expire(self) -> int:
        """End the detached sessions whose time is up; return how many."""
        now = self._clock()
        ends, ending, entries = self._ends, self._ending, self._entries
        ended = 0
        while ends and ends[0] <= now:
            when, ws_id = ends.popleft(), ending.popleft()
            entry = entries.get(ws_id)
            if entry is not None and not entry.holder and entry.expires_at == when:
                del entries[ws_id]
                ended += 1
        return ended

    def __len__(self) -> int:
        return len(self._entries)

    def detached(self) -> int:
        return sum(1 for e in self._entries.values() if not e.holder)

    def _live(self, ws_id: ConnId) -> _Entry | None:
        entry = self._entries.get(ws_id)
        if entry is not None and not entry.holder and entry.expires_at <= self._clock():
            del self._entries[ws_id]
            return None
        return entry


if TYPE_CHECKING:
    _: type[Sessions] = MemorySessions
