"""Readings taken in the background while a run goes through its phases: ``GET
/healthz`` on one port every ~100 ms, and the server's RSS every ~100 ms.

Each reading is filed under the phase it started in (:attr:`PhaseClock.phase`), and
dropped between phases. A health poll opens a fresh connection, as a load
balancer's check does, so it measures what a newcomer gets: accept, request and
answer. Polls follow one another (the next ~100 ms after the previous started, or
at once if it took longer), so a server that stops answering is polled less, not
piled up on; a poll with no answer within HEALTH_TIMEOUT counts as failed, and its
time, the timeout, goes into the figures too.
"""

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from pushgate.bench.histogram import Histogram
from pushgate.bench.httpclient import HttpConnection, HttpError
from pushgate.bench.procstat import ProcessGone

INTERVAL = 0.1  # seconds between the starts of two readings
HEALTH_TIMEOUT = 2.0


class PhaseClock:
    """The phase readings are filed under now; None between phases."""

    def __init__(self) -> None:
        self.phase: str | None = None


@dataclass(frozen=True, slots=True)
class HealthFigures:
    """One port's polls in one phase."""

    polls: int
    failed: int
    p99_ms: float | None
    max_ms: float | None


class HealthPoller:
    """Polls ``GET /healthz`` at ``base_url`` (http://host:port) until cancelled."""

    def __init__(self, base_url: str, clock: PhaseClock) -> None:
        self.base_url = base_url
        self.clock = clock
        self.hists: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.failed: Counter[str] = Counter()

    async def run(self) -> None:
        while True:
            phase = self.clock.phase
            started = time.perf_counter()
            ok = await self.poll_once()
            elapsed = time.perf_counter() - started
            if phase is not None:
                self.hists[phase].add(int(elapsed * 1e6))
                self.failed[phase] += not ok
            await asyncio.sleep(max(0.0, INTERVAL - elapsed))

    async def poll_once(self) -> bool:
        """One poll on a new connection: True when answered 200 in time."""
        conn = HttpConnection(self.base_url)
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                status, _ = await conn.get("/healthz")
            return status == 200
        except (HttpError, TimeoutError):
            return False
        finally:
            await conn.close()

    def figures(self, phase: str) -> HealthFigures:
        hist = self.hists[phase]
        p99, worst = hist.percentile(0.99), hist.maximum()
        return HealthFigures(
            polls=hist.total,
            failed=self.failed[phase],
            p99_ms=None if p99 is None else p99 / 1000,
            max_ms=None if worst is None else worst / 1000,
        )


class RssSampler:
    """Reads the server's RSS (``read``, bytes, None when unknown) until cancelled or
    the server is gone, and keeps each phase's highest reading."""

    def __init__(self, read: Callable[[], int | None], clock: PhaseClock) -> None:
        self.read = read
        self.clock = clock
        self.peak: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            phase = self.clock.phase
            try:
                rss = self.read()
            except ProcessGone:
                return
            if phase is not None and rss is not None:
                self.peak[phase] = max(self.peak.get(phase, 0), rss)
            await asyncio.sleep(INTERVAL)
