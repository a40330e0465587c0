"""Pushes, joins and the room's members over the logic API.

Every push is a form POST whose ``val`` is ``"<send time ns> <seq> <pad>"``, padded
with ``x`` to ``--size`` bytes: the workers read the send time (wall clock,
``time.time_ns``, which every process on the machine shares) for latency and the
sequence number for order. A form body and a text ``val`` work with pushgate and
with the seed's Go server alike.

Pacing: ``rate == 0`` sends back to back, each of ``senders`` connections sending
its next push as soon as its previous one was answered. ``rate > 0`` is open-loop:
push ``seq`` is due at ``start + seq / rate``, sent on whichever connection is
free; when all are busy the schedule slips, and the achieved rate shows it.
"""

import asyncio
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pushgate.bench.histogram import Histogram
from pushgate.bench.httpclient import HttpConnection, HttpError
from pushgate.bench.options import BenchError
from pushgate.bench.scenarios import ALL, ROOM, Plan

REQUEST_TIMEOUT = 30.0
MAX_CONSECUTIVE_ERRORS = 50  # then the server is taken to be down, and pushing stops
_DELIVERED = re.compile(rb'"delivered":(\d+)')


@dataclass
class PushLog:
    """What the pusher did; read live by the progress display."""

    sent: int = 0
    accepted: Counter[str] = field(default_factory=Counter)  # pushes answered 200, per target
    errors: Counter[str] = field(default_factory=Counter)
    server_delivered: int = 0  # the sum of the "delivered" counts in the answers, if any
    rtt: Histogram = field(default_factory=Histogram)  # µs from send to answer, per push
    first_ns: int = 0  # wall clock of the first send
    started: float = 0.0  # monotonic clock of the first send
    finished: float = 0.0  # monotonic clock of the last answer
    consecutive_errors: int = 0

    @property
    def accepted_total(self) -> int:
        return sum(self.accepted.values())

    @property
    def gave_up(self) -> bool:
        return self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS


class Pusher:
    """Sends the pushes of one run."""

    def __init__(
        self,
        api_url: str,
        plan: Plan,
        *,
        rate: float,
        count: int | None,
        duration: float | None,
        size: int,
        senders: int,
        tag: int = 2,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        if count is None and duration is None:
            raise ValueError("a push count or a duration is required")
        self.api_url = api_url
        self.plan = plan
        self.rate = rate
        self.count = count
        self.duration = duration
        self.size = size
        self.senders = senders
        self.tag = tag
        self.request_timeout = request_timeout  # then the push counts as an error
        self.log = PushLog()
        self._deadline = float("inf")
        self._stopped = False

    async def run(self) -> PushLog:
        connections = [HttpConnection(self.api_url) for _ in range(self.senders)]
        self.log.started = time.monotonic()
        self.log.first_ns = time.time_ns()
        if self.duration is not None and not self._stopped:
            self._deadline = self.log.started + self.duration
        try:
            if self.rate > 0:
                await self._paced(connections)
            else:
                await self._back_to_back(connections)
        finally:
            self.log.finished = time.monotonic()
            await asyncio.gather(*(c.close() for c in connections))
        return self.log

    def stop(self) -> None:
        """Send no more pushes (those in flight are still answered); ``run`` returns."""
        self._deadline = float("-inf")
        self._stopped = True

    def _more(self, seq: int) -> bool:
        if self.log.gave_up:
            return False
        if self.count is not None and seq >= self.count:
            return False
        return time.monotonic() < self._deadline

    async def _back_to_back(self, connections: Sequence[HttpConnection]) -> None:
        seqs = itertools.count()

        async def sender(conn: HttpConnection) -> None:
            while self._more(seq := next(seqs)):
                await self._push(conn, seq)

        await asyncio.gather(*(sender(c) for c in connections))

    async def _paced(self, connections: Sequence[HttpConnection]) -> None:
        free: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for conn in connections:
            free.put_nowait(conn)
        in_flight: set[asyncio.Task[None]] = set()

        async def send(conn: HttpConnection, seq: int) -> None:
            try:
                await self._push(conn, seq)
            finally:
                free.put_nowait(conn)

        start = time.monotonic()
        seq = 0
        while self._more(seq):
            delay = start + seq / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                if not self._more(seq):
                    break
            conn = await free.get()
            task = asyncio.create_task(send(conn, seq))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            seq += 1
        if in_flight:
            await asyncio.gather(*in_flight)

    async def _push(self, conn: HttpConnection, seq: int) -> None:
        target = self.plan.target(seq)
        path, prefix = self._route(target)
        sent_ns = time.time_ns()
        head = f"{sent_ns}+{seq}+".encode()
        body = prefix + head + b"x" * max(1, self.size - len(head))
        log = self.log
        log.sent += 1
        try:
            async with asyncio.timeout(self.request_timeout):
                status, answer = await conn.post_form(path, body)
        except (HttpError, TimeoutError) as exc:
            log.errors[str(exc) or "timed out"] += 1
            log.consecutive_errors += 1
            return
        if status != 200:
            log.errors[f"HTTP {status}: {answer[:200].decode(errors='replace')}"] += 1
            log.consecutive_errors += 1
            return
        log.rtt.add((time.time_ns() - sent_ns) // 1000)
        log.consecutive_errors = 0
        log.accepted[target] += 1
        match = _DELIVERED.search(answer)
        if match:
            log.server_delivered += int(match.group(1))

    def _route(self, target: str) -> tuple[str, bytes]:
        if target == ALL:
            return "/push/all", f"tag={self.tag}&val=".encode()
        return "/push/room", f"tag={self.tag}&id={target}&val=".encode()


async def join_all(
    api_url: str,
    pairs: Sequence[tuple[str, str]],
    concurrency: int,
    on_progress: Callable[[int], None] = lambda done: None,
) -> None:
    """POST /room/join for every (room, wsId) pair; raise BenchError on the first failure."""
    queue = iter(pairs)
    done = 0

    async def joiner() -> None:
        nonlocal done
        conn = HttpConnection(api_url)
        try:
            for room, ws_id in queue:
                body = f"id={room}&wsId={ws_id}".encode()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        status, answer = await conn.post_form("/room/join", body)
                except (HttpError, TimeoutError) as exc:
                    raise BenchError(f"joining room {room} failed: {exc or 'timed out'}") from None
                if status != 200:
                    raise BenchError(
                        f"joining room {room} failed: HTTP {status} "
                        f"{answer[:200].decode(errors='replace')}"
                    )
                done += 1
                on_progress(done)
        finally:
            await conn.close()

    await asyncio.gather(*(joiner() for _ in range(max(1, min(concurrency, len(pairs))))))


class NoRoomPages(BenchError):
    """The server answers GET /rooms/{id} with 404: it has no such endpoint (pushgate
    before 0.3, measured side by side by scripts/bench-versions), for a room it does
    not hold answers 200 with no members."""


async def room_page(conn: HttpConnection, query: str, room: str = ROOM) -> dict[str, Any]:
    """One answer of GET /rooms/{id} for the bench's room; BenchError unless 200
    (NoRoomPages for a 404)."""
    status, body = await conn.get(f"/rooms/{room}{query}")
    if status == 404:
        raise NoRoomPages(f"GET /rooms/{room}: HTTP 404 {body[:200]!r}")
    if status != 200:
        raise BenchError(f"GET /rooms/{room} failed: HTTP {status} {body[:200]!r}")
    page: dict[str, Any] = json.loads(body)
    return page
