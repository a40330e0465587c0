"""The attackers of ``pushgate bench abuse`` (issue 25): what one machine with plain
sockets can do to a push server, one class per attack.

- ``ping``: one WebSocket connection that sends masked, empty ping frames as fast as
  the socket takes them. It reads and discards what the server sends (a pong per
  ping, and the pushes to all), scanning only for a close frame: a flooder that
  reads is the harder one, since the server's output bound never trips on it, and
  reading is how it learns when and how the server closed it.
- ``fragments``: one connection that sends a text frame with fin=0, then empty
  continuation frames with fin=0, as fast as the socket takes them: a message that
  never ends. It reads and discards as the ping flooder does.
- ``nonreaders``: connections with a 4 KB receive buffer (set before connecting)
  that complete the handshake and never read again, while pushes go to all.
- ``handshakes``: TCP connections that each send a request line and 128 headers of
  8 KB (1 MB, at once, as fast as the server reads) and never the blank line that
  would end the request, then hold the connection open.

:meth:`Attack.start` returns once the attack's connections are open (a WebSocket
attacker once the server answered 101), or failed to open; :meth:`Attack.stop`
ends it and says what the server did to each connection: closed it with which code
and when, dropped the TCP connection without a close frame, answered a handshake
with which status, or nothing. Times are seconds since ``t0_ns``, the wall-clock
moment the coordinator started the attack, the same for every attacker process.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pushgate.bench.abuseclients import (
    FatHandshake,
    FloodClient,
    NonReader,
    RawClient,
    open_raw,
)
from pushgate.bench.rawws import OP_CONT, OP_PING, OP_TEXT, masked_frame, repeated
from pushgate.bench.scenarios import ATTACKS
from pushgate.bench.targets import Target, describe
from pushgate.bench.wsclient import HandshakeError

Json = dict[str, Any]
FLOOD_CHUNK = 64 * 1024  # bytes of frames handed to the kernel per write
NONREADER_RCVBUF = 4096
DRAIN_WITHIN = 10.0  # at most this long for all the non-readers' backlogs together
DRAIN_POLL = 0.05
MAX_ERROR_KINDS = 10
C = TypeVar("C", FloodClient, NonReader, FatHandshake)


class Attack(Protocol):
    """One attack, run by one attacker process."""

    async def start(self) -> Json:
        """Open the attack's connections; say how many opened, and why others did not."""
        ...

    def status(self) -> Json:
        """A glance while it runs, for the progress display."""
        ...

    async def stop(self) -> Json:
        """End the attack and say what the server did to each connection."""
        ...

    def abort(self) -> None:
        """Drop every connection at once (the process is going)."""
        ...


class Connections(Generic[C]):
    """The connections of one attack, opened ``concurrency`` at a time from
    ``source``, each within ``timeout`` seconds; failures counted by reason."""

    def __init__(
        self,
        target: Target,
        source: str | None,
        *,
        count: int,
        t0_ns: int,
        timeout: float,
        concurrency: int,
    ) -> None:
        self.target, self.source = target, source
        self.count, self.t0_ns = count, t0_ns
        self.timeout, self.concurrency = timeout, max(1, concurrency)
        self.errors: Counter[str] = Counter()
        self.clients: list[C] = []

    async def open_all(self, make: Callable[[], C], *, rcvbuf: int | None = None) -> Json:
        """Open ``count`` connections made by ``make``; return how many opened."""
        todo = iter(range(self.count))

        async def opener() -> None:
            for _ in todo:
                try:
                    client = make()
                    await open_raw(self.target, self.source, client, self.timeout, rcvbuf=rcvbuf)
                except (OSError, HandshakeError, TimeoutError) as exc:
                    self.errors[describe(exc)] += 1
                    continue
                self.clients.append(client)

        await asyncio.gather(*(opener() for _ in range(min(self.concurrency, self.count))))
        return {"opened": len(self.clients), **self.failures()}

    def failures(self) -> Json:
        """How many failed to open, why, and how many were still opening at the end
        (stopped before the server let them in)."""
        failed = sum(self.errors.values())
        return {
            "failed": failed,
            "errors": dict(self.errors.most_common(MAX_ERROR_KINDS)),
            "unopened": max(0, self.count - len(self.clients) - failed),
        }

    def seconds(self, ns: int) -> float | None:
        """A wall-clock moment as seconds since the attack's start (None: never)."""
        return (ns - self.t0_ns) / 1e9 if ns else None

    def open_now(self) -> int:
        return sum(1 for client in self.clients if not client.ended_ns)

    def abort(self) -> None:
        for client in self.clients:
            client.abort()


class Flood(Connections[FloodClient]):
    """One connection that floods ``frame`` (after ``first``), reading and discarding."""

    def __init__(
        self, target: Target, source: str | None, *, frame: bytes, first: bytes = b"", **kw: Any
    ) -> None:
        super().__init__(target, source, **{**kw, "count": 1})
        self.chunk, self.per_chunk = repeated(frame, FLOOD_CHUNK)
        self.first = first

    async def start(self) -> Json:
        return await self.open_all(
            lambda: FloodClient(self.target, self.chunk, self.per_chunk, self.first)
        )

    def status(self) -> Json:
        return {"frames": sum(c.frames for c in self.clients), "open": self.open_now()}

    async def stop(self) -> Json:
        if not self.clients:
            return {"opened": False, "frames": 0, **self.failures()}
        [client] = self.clients
        fate = {
            "opened": True,
            "frames": client.frames,
            "close_code": client.close_code,
            "closed_s": self.seconds(client.closed_ns),
            "ended_s": self.seconds(client.ended_ns),
            **self.failures(),
        }
        client.stop()
        return fate


class NonReaders(Connections[NonReader]):
    """``count`` connections that complete the handshake and then never read."""

    async def start(self) -> Json:
        return await self.open_all(lambda: NonReader(self.target), rcvbuf=NONREADER_RCVBUF)

    def status(self) -> Json:
        return {"open": self.open_now()}

    async def stop(self) -> Json:
        """Read each one's backlog (the pushes have stopped by now) to find how the
        server ended it: a close frame behind the pushes, or a dropped connection.
        When it happened cannot be told: a connection that does not read learns
        nothing until it reads."""
        for client in self.clients:
            client.read_again()
        deadline = time.monotonic() + DRAIN_WITHIN
        while time.monotonic() < deadline:
            now = time.monotonic()
            if all(client.settled(now) for client in self.clients):
                break
            await asyncio.sleep(DRAIN_POLL)
        outcomes = Counter(_ws_outcome(client) for client in self.clients)
        self.abort()
        return {
            "count": self.count,
            "opened": len(self.clients),
            "outcomes": dict(outcomes),
            **self.failures(),
        }


class FatHandshakes(Connections[FatHandshake]):
    """``count`` connections that each send 1 MB of headers and never end the request."""

    async def start(self) -> Json:
        return await self.open_all(lambda: FatHandshake(self.target))

    def status(self) -> Json:
        return {"open": self.open_now()}

    async def stop(self) -> Json:
        clients = self.clients
        moments = [c.answered_ns or c.ended_ns for c in clients if c.answered_ns or c.ended_ns]
        fate = {
            "count": self.count,
            "opened": len(clients),
            "outcomes": dict(Counter(client.outcome() for client in clients)),
            "all_sent": sum(1 for c in clients if c.all_sent),
            "bytes_sent": sum(c.bytes_sent for c in clients),
            "first_s": self.seconds(min(moments)) if moments else None,
            "last_s": self.seconds(max(moments)) if moments else None,
            **self.failures(),
        }
        self.abort()
        return fate


if TYPE_CHECKING:
    _flood: type[Attack] = Flood
    _nonreaders: type[Attack] = NonReaders
    _handshakes: type[Attack] = FatHandshakes


def _ws_outcome(client: RawClient) -> str:
    """How the server ended a WebSocket attacker: its close code, "dropped" (the
    TCP connection ended without a close frame), or "open"."""
    if client.close_code is not None:
        return str(client.close_code)
    return "dropped" if client.ended_ns else "open"


def make_attack(kind: str, target: Target, source: str | None, **kw: Any) -> Attack:
    """The attack named ``kind`` (one of ATTACKS)."""
    if kind == "ping":
        return Flood(target, source, frame=masked_frame(OP_PING), **kw)
    if kind == "fragments":
        first = masked_frame(OP_TEXT, b"x", fin=False)
        frame = masked_frame(OP_CONT, fin=False)
        return Flood(target, source, frame=frame, first=first, **kw)
    if kind == "nonreaders":
        return NonReaders(target, source, **kw)
    if kind == "handshakes":
        return FatHandshakes(target, source, **kw)
    raise ValueError(f"unknown attack {kind!r}; expected one of {', '.join(ATTACKS)}")
