"""Writing to many connections: the :class:`Outbox` writes each connection's
queued frames once per turn of the event loop, and the :class:`ConnectionRegistry`
lists a gateway's live connections for its sweeper and its stop.

**Bursts coalesce.** A write carrying several frames costs little more than one
carrying one (the kernel's cost is per ``send``), so a burst's CPU per delivery is
set by how many pushes each write carries. Written on the very next turn, that is
how many pushes came in while the last writes were made: one per sender that pushes
back to back, as each waits for its answer (6.5 us per delivery with one sender,
2.2 with four, in the 10,000-client burst). So while pushes come back to back (the
first push after a flush of at least :data:`BIG_FLUSH` seconds, within
:data:`BURST_GAP` of its end), the next flush waits a quarter of the time the last
one took (:data:`COALESCE_SHARE`, at most :data:`MAX_COALESCE_DELAY`): senders
answered meanwhile push again, and one write carries them all. A push that follows
a quiet moment is written on the next turn, as before.

The outbox also asks the process-wide :class:`~pushgate.backlog.OutputBudget`, after
each turn's writes, whether the output held for slow clients has passed its bound.
"""

import asyncio
import logging
import time
from typing import Generic, Protocol, TypeVar

from pushgate import speedups
from pushgate.backlog import OutputBudget
from pushgate.framing import deflated_text_frame
from pushgate.meters import CHECKPOINT, Meters
from pushgate.timerwheel import Swept, TimerWheel

log = logging.getLogger("pushgate.gateway")

# A flush this long (seconds: about 150 sockets written) marks pushes as a burst ...
BIG_FLUSH = 0.001
# ... when the next push comes within this long of its end; that push's flush then
# waits for the pushes behind it a quarter of the time the last flush took, at most
# MAX_COALESCE_DELAY (module docstring): at most a quarter more latency.
BURST_GAP = 0.01
COALESCE_SHARE = 0.25
MAX_COALESCE_DELAY = 0.01

C = TypeVar("C", bound=Swept)


class Writable(Protocol):
    """A connection the outbox writes to."""

    @property
    def peer(self) -> str: ...

    def flush(self) -> None:
        """Write everything queued for it, in one write."""
        ...

    def abort(self) -> None: ...


class Outbox:
    """Writes each connection's queued frames once per turn of the event loop; with
    ``meters``, counts the writes and ends each push's delivery-latency clock."""

    __slots__ = (  # _dirty: read by _speedups.c
        "_big_flush_ended",
        "_coalesce_delay",
        "_deflated",
        "_dirty",
        "_loop",
        "budget",
        "meters",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        meters: Meters | None = None,
        budget: OutputBudget | None = None,
    ) -> None:
        self._loop = loop
        self.budget = budget if budget is not None else OutputBudget(0)
        self._dirty: list[Writable] = []
        self.meters = meters
        # Compressed frames of this turn, by (id of the plain frame, window bits):
        # a push's deflate is done once, whichever sinks ask. The plain frame is held
        # too, so that its id is not reused before the cache is cleared.
        self._deflated: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        # time.monotonic(): uvloop's clock counts whole milliseconds.
        self._big_flush_ended = float("-inf")
        self._coalesce_delay = 0.0

    def mark(self, conn: Writable) -> None:
        if not self._dirty:
            loop = self._loop
            if time.monotonic() - self._big_flush_ended < BURST_GAP:  # back to back
                loop.call_later(self._coalesce_delay, self._flush)
            else:
                loop.call_soon(self._flush)
        self._dirty.append(conn)

    def deflated(self, frame: bytes, window_bits: int) -> bytes:
        """``frame`` compressed for permessage-deflate, made once per push and turn."""
        key = (id(frame), window_bits)
        cached = self._deflated.get(key)
        if cached is None:
            if not self._deflated:
                self._loop.call_soon(self._deflated.clear)
            cached = self._deflated[key] = (frame, deflated_text_frame(frame, window_bits))
        return cached[1]

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        meters = self.meters
        began = time.monotonic()
        if meters is not None and meters.unwritten:
            self._flush_timed(dirty, meters)
        else:
            self._write_all(dirty, 0, len(dirty))
        ended = time.monotonic()
        if ended - began >= BIG_FLUSH:
            self._big_flush_ended = ended
            self._coalesce_delay = min(MAX_COALESCE_DELAY, (ended - began) * COALESCE_SHARE)
        if len(self.budget):  # some clients hold more than a little: is it too much?
            self.budget.check(self._loop.time())

    def _flush_timed(self, dirty: list[Writable], meters: Meters) -> None:
        """The same, reading the clock every CHECKPOINT sockets (delivery latency); a
        chunk's sockets count as written at its midpoint."""
        stamps = []
        began = time.time()
        for start in range(0, len(dirty), CHECKPOINT):
            stop = min(start + CHECKPOINT, len(dirty))
            self._write_all(dirty, start, stop)
            ended = time.time()
            stamps.append(((began + ended) / 2, stop - start))
            began = ended
        meters.written(stamps)

    def _write_all(self, conns: list[Writable], start: int, stop: int) -> None:
        """Write ``conns[start:stop]``, each with :meth:`_write`: compiled where
        pushgate._speedups was built (speedups.py), which calls :meth:`_write` for
        every connection but an open WebSocket one."""
        compiled = speedups.compiled
        if compiled is not None:
            compiled.flush(self, conns, start, stop)
        else:
            for conn in conns[start:stop]:
                self._write(conn)

    @staticmethod
    def _write(conn: Writable) -> None:
        try:
            conn.flush()
        except Exception as exc:  # one connection's failure must not starve the rest
            Outbox._failed(conn, exc)

    @staticmethod
    def _failed(conn: Writable, exc: Exception) -> None:
        log.error("writing to %s failed; dropping it", conn.peer, exc_info=exc)
        conn.abort()


class ConnectionRegistry(Generic[C]):
    """Every live TCP connection of a gateway, open or not yet, and when the sweeper
    next looks at each (timerwheel.py)."""

    def __init__(self, sweep_interval: float = 1.0) -> None:
        # A dict as an ordered set: half the bytes of a set's table per connection.
        self.connections: dict[C, None] = {}
        self.wheel: TimerWheel[C] = TimerWheel(sweep_interval)
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, conn: C, now: float) -> None:
        """A new connection: the sweeper looks at it on its next sweep."""
        self.connections[conn] = None
        self.wheel.schedule(conn, now)
        self.empty.clear()

    def check_by(self, conn: C, when: float) -> None:
        """Something of ``conn`` is due at ``when`` (loop clock): have the sweeper look
        at it by then, if it would not have."""
        if conn in self.connections:
            self.wheel.schedule(conn, when)

    def discard(self, conn: C) -> None:
        self.connections.pop(conn, None)
        self.wheel.forget(conn)
        if not self.connections:
            self.empty.set()
