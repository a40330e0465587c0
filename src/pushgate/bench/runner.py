"""One run of a scenario, from starting the server to the last figure.

:func:`run_once` owns every process it starts and stops them all in ``finally``
blocks, workers first (their connections go with them), then the server. Each
phase is bounded: connecting by ``--connect-timeout`` per connection, pushing by
``--pushes`` or ``--duration``, draining by ``--drain-timeout`` without progress.

What is measured when:

- server RSS before the clients connect, and one second after the last one did:
  ``rss_kb_per_conn`` is the difference over the clients that opened;
- server CPU (``/proc``), the workers' own CPU and the pusher's from the moment
  the workers are told to start counting until the last expected delivery arrived
  (or deliveries stalled); the idle scenario over ``--duration`` instead;
- deliveries per second over first push sent to last delivery received.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pushgate.bench.histogram import Histogram
from pushgate.bench.options import BenchError, BenchOptions
from pushgate.bench.procstat import machine_cpu_seconds, own_cpu_seconds
from pushgate.bench.progress import Progress
from pushgate.bench.pusher import Pusher, join_all
from pushgate.bench.report import ClientCount, RunResult, account, ms
from pushgate.bench.scenarios import Plan
from pushgate.bench.server import ServerUnderTest, external_server, start_own_server
from pushgate.bench.workers import WorkerPool, split

SETTLE = 1.0  # seconds between connecting and reading RSS: let the server go quiet
POLL = 0.05  # seconds between status polls of the workers
JOIN_CONCURRENCY = 8
T = TypeVar("T")


@dataclass
class Totals:
    """The workers' summed status."""

    open: int = 0
    deliveries: int = 0


async def run_once(opts: BenchOptions, progress: Progress) -> RunResult:
    """Run the scenario once; raise BenchError when it cannot be run as asked."""
    result = RunResult(
        scenario=opts.scenario.name,
        connections=opts.connections,
        workers=opts.worker_count,
        rate=opts.rate,
        size=opts.size,
    )
    progress.phase("starting the server" if not opts.external else "checking the server")
    if opts.external:
        server = external_server(list(opts.ws_urls), opts.api_url, list(opts.server_pids))
    else:
        server = await start_own_server(list(opts.server_args))
    try:
        pool = WorkerPool()
        try:
            progress.phase("starting workers", f"{opts.worker_count}")
            await pool.start(opts.worker_count)
            await Run(opts, server, pool, progress, result).run()
        finally:
            progress.phase("stopping workers")
            await pool.stop()
    finally:
        progress.phase("stopping the server" if not opts.external else "done")
        await server.stop()
        progress.finish()
    return result


class Run:
    """The phases of one run, sharing the server, the workers and the result."""

    def __init__(
        self,
        opts: BenchOptions,
        server: ServerUnderTest,
        pool: WorkerPool,
        progress: Progress,
        result: RunResult,
    ) -> None:
        self.opts = opts
        self.server = server
        self.pool = pool
        self.progress = progress
        self.result = result

    async def run(self) -> None:
        rss_before = self.server.rss_bytes()
        indexes, ws_ids = await self.connect()
        await asyncio.sleep(SETTLE)
        rss_after = self.server.rss_bytes()
        if rss_before is not None and rss_after is not None:
            self.result.rss_kb_per_conn = (rss_after - rss_before) / 1024 / len(indexes)
        plan = Plan(self.opts.scenario, indexes)
        await self.join(plan, ws_ids)
        if self.opts.scenario.pushes:
            await self.push(plan)
        else:
            await self.idle(plan)
        rss_end = self.server.rss_bytes()
        if rss_end is not None:
            self.result.server_rss_mb = rss_end / 1024 / 1024

    # Phases

    async def connect(self) -> tuple[list[int], dict[int, str]]:
        """Open the clients over the workers; return the indexes that opened and
        their wsIds (when the server sends a welcome)."""
        opts, result = self.opts, self.result
        ranges = split(opts.connections, opts.worker_count)
        slow = _spread(opts.slow, opts.connections)
        fields = [
            {
                "targets": self._targets(),
                "sources": self._sources(),
                "first": first,
                "count": count,
                "concurrency": opts.connect_concurrency,
                "need_welcome": opts.scenario.needs_welcome,
                "timeout": opts.connect_timeout,
                "slow": [i for i in slow if first <= i < first + count],
                "slow_pause": opts.slow_pause,
                "ping": opts.client_ping,
            }
            for first, count in ranges
        ]
        # The whole phase is bounded too: every connection may wait its timeout, in
        # waves of `concurrency`, plus time for the handshakes themselves.
        biggest = max(count for _, count in ranges)
        waves = -(-biggest // opts.connect_concurrency)
        timeout = waves * opts.connect_timeout + biggest / 100 + 60
        started = time.monotonic()
        self.progress.phase("connecting")
        replies = await self._watch(
            self.pool.call_each("connect", fields, within=timeout),
            lambda t: f"{t.open:,}/{opts.connections:,} open",
        )
        result.connect_s = time.monotonic() - started
        hist, errors = _connect_stats(replies)
        indexes: list[int] = []
        ws_ids: dict[int, str] = {}
        for reply in replies:
            result.connect_failed += reply["failed"]
            indexes.extend(reply["indexes"])
            ws_ids.update((int(i), w) for i, w in reply["ws_ids"])
        result.connected = len(indexes)
        result.connect_p50_ms = ms(hist.percentile(0.5))
        result.connect_p99_ms = ms(hist.percentile(0.99))
        if errors:
            result.errors.append(f"{result.connect_failed} connections failed: {_top(errors)}")
        if not indexes:
            needs = opts.scenario.needs_welcome
            hint = " (this scenario needs the wsId of a welcome frame)" if needs else ""
            raise BenchError(f"no connection opened{hint}: {_top(errors)}")
        self.server.check_alive()
        return sorted(indexes), ws_ids

    async def join(self, plan: Plan, ws_ids: dict[int, str]) -> None:
        joins = plan.joins()
        if not joins:
            return
        missing = [i for _, i in joins if i not in ws_ids]
        if missing:
            raise BenchError(f"{len(missing)} clients got no wsId from a welcome frame")
        assert self.server.api_url is not None
        self.progress.phase("joining rooms")
        await join_all(
            self.server.api_url,
            [(room, ws_ids[i]) for room, i in joins],
            JOIN_CONCURRENCY,
            lambda done: self.progress.update(f"{done:,}/{len(joins):,} joins"),
        )

    async def push(self, plan: Plan) -> None:
        opts, result, server = self.opts, self.result, self.server
        assert server.api_url is not None
        pusher = Pusher(
            server.api_url,
            plan,
            rate=opts.rate,
            count=opts.push_count,
            duration=opts.push_duration,
            size=opts.size,
            senders=opts.senders,
            tag=opts.tag,
        )
        await self.pool.call_all("mark")
        before = Meter.read(server)
        churning = opts.scenario.name == "churn"
        if churning:
            await self._start_churn()
        self.progress.phase("pushing")
        log = pusher.log
        try:
            await self._watch(
                pusher.run(),
                lambda t: f"{log.sent:,} pushes sent, {t.deliveries:,} deliveries, {t.open:,} open",
            )
        finally:
            if churning:
                await self._stop_churn()
        expected = plan.expected(log.accepted)
        await self.drain(sum(expected.values()))
        after = Meter.read(server)
        reports = await self.pool.call_all("report", within=120)
        self._account(expected, reports)
        self._meter(before, after, reports)
        result.pushes = log.accepted_total
        result.push_errors = sum(log.errors.values())
        if log.errors:
            result.errors.append(f"push errors: {_top(log.errors)}")
        if log.gave_up:
            result.errors.append("pushing stopped early: the server answered errors only")
        elapsed = log.finished - log.started
        if elapsed > 0:
            result.pushes_per_s = result.pushes / elapsed
        result.server_delivered = log.server_delivered or None
        result.push_rtt_p50_ms = ms(log.rtt.percentile(0.5))
        result.push_rtt_p99_ms = ms(log.rtt.percentile(0.99))
        deliveries = result.deliveries
        last_ns = max(r["last_ns"] for r in reports)
        if deliveries and last_ns > log.first_ns:
            result.duration_s = (last_ns - log.first_ns) / 1e9
            result.deliveries_per_s = deliveries / result.duration_s
        if deliveries and result.client_cpu_s is not None:
            result.client_cpu_us_per_delivery = result.client_cpu_s * 1e6 / deliveries
        if deliveries and result.server_cpu_s is not None:
            result.server_cpu_us_per_delivery = result.server_cpu_s * 1e6 / deliveries
        if result.pushes:
            result.pusher_cpu_us_per_push = (after.own - before.own) * 1e6 / result.pushes

    async def idle(self, plan: Plan) -> None:
        """Hold the connections for ``--duration`` and meter the server meanwhile."""
        opts, result, server = self.opts, self.result, self.server
        duration = opts.push_duration or 10.0
        await self.pool.call_all("mark")
        before = Meter.read(server)
        t0 = before.wall
        self.progress.phase("idle")

        async def wait() -> None:
            await asyncio.sleep(duration)

        await self._watch(
            wait(),
            lambda t: f"{t.open:,} open, {duration - (time.monotonic() - t0):.0f} s left",
        )
        after = Meter.read(server)
        reports = await self.pool.call_all("report", within=120)
        self._account(plan.expected({}), reports)
        self._meter(before, after, reports)
        if result.server_cpu_s is not None:
            elapsed = after.wall - before.wall
            result.idle_cpu_us_per_conn_s = result.server_cpu_s * 1e6 / result.connected / elapsed

    async def drain(self, expected: int) -> None:
        """Wait until every expected delivery arrived, or none arrived for
        ``--drain-timeout`` seconds."""
        self.progress.phase("draining")
        last_change, seen = time.monotonic(), -1
        while True:
            totals = await self._poll()
            now = time.monotonic()
            if totals.deliveries >= expected:
                return
            if totals.deliveries != seen:
                seen, last_change = totals.deliveries, now
            elif now - last_change > self.opts.drain_timeout:
                return
            self.progress.update(f"{totals.deliveries:,}/{expected:,} deliveries")
            await asyncio.sleep(POLL)

    # Churn

    async def _start_churn(self) -> None:
        opts = self.opts
        rate = opts.churn_rate / opts.worker_count
        await self.pool.call_each(
            "churn",
            [
                {
                    "targets": self._targets(),
                    "sources": self._sources(),
                    "rate": rate,
                    "lifetime": opts.churn_lifetime,
                    # Churn clients are numbered after the measured ones, per worker.
                    "first": opts.connections + n * 10_000_000,
                    "timeout": opts.connect_timeout,
                }
                for n in range(opts.worker_count)
            ],
        )

    async def _stop_churn(self) -> None:
        timeout = self.opts.churn_lifetime + 3 * self.opts.connect_timeout + 10
        replies = await self.pool.call_all("churn_stop", within=timeout)
        hist, errors = _connect_stats(replies)
        result = self.result
        result.churn_opened = sum(r["opened"] for r in replies)
        result.churn_closed = sum(r["closed"] for r in replies)
        result.churn_failed = sum(r["failed"] for r in replies)
        result.churn_connect_p99_ms = ms(hist.percentile(0.99))
        if errors:
            result.errors.append(f"churn: {_top(errors)}")

    # Internals

    def _targets(self) -> list[list[object]]:
        """The gateway URLs as workers take them: [host, port, path]."""
        return [[p.hostname, p.port, p.path or "/"] for p in map(urlsplit, self.server.ws_urls)]

    def _sources(self) -> list[str]:
        """Loopback source addresses for the clients; 127.0.0.1 is left to the server."""
        return [f"127.0.0.{2 + k}" for k in range(self.opts.sources)]

    def _meter(self, before: "Meter", after: "Meter", reports: list[dict[str, Any]]) -> None:
        """CPU of the server, of the workers, and of everything else, between two readings."""
        result = self.result
        wall = after.wall - before.wall
        result.client_cpu_s = sum(r["cpu_s"] for r in reports)
        if before.server is not None and after.server is not None:
            result.server_cpu_s = after.server - before.server
            ours = result.server_cpu_s + result.client_cpu_s + (after.own - before.own)
            other = max(0.0, after.busy - before.busy - ours)
            result.other_cpu_pct = 100 * other / wall if wall > 0 else None
        result.steal_pct = 100 * (after.steal - before.steal) / wall if wall > 0 else None

    def _account(self, expected: dict[int, int], reports: list[dict[str, Any]]) -> None:
        hist = Histogram()
        clients: list[ClientCount] = []
        for report in reports:
            hist.merge(Histogram.from_pairs(report["hist"]))
            clients.extend(ClientCount(i, n, ooo, code) for i, n, ooo, code in report["clients"])
        self.result.deliveries = sum(r["deliveries"] for r in reports)
        self.result.set_latency(hist)
        self.result.set_losses(account(expected, clients))
        if self.opts.senders > 1:
            # Pushes sent concurrently may reach the server in any order: no order
            # is defined, so none is checked.
            self.result.out_of_order = None

    async def _poll(self) -> Totals:
        replies = await self.pool.call_all("status", within=30)
        return Totals(
            open=sum(r["open"] for r in replies),
            deliveries=sum(r["deliveries"] for r in replies),
        )

    async def _watch(self, work: Awaitable[T], describe: Callable[[Totals], str]) -> T:
        """Await ``work`` while showing progress from the workers' status."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.25)
                if task.done():
                    break
                self.server.check_alive()
                self.progress.update(describe(await self._poll()))
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Meter:
    """One reading of the clocks a run is metered with."""

    wall: float  # monotonic seconds
    server: float | None  # the server's CPU seconds, if its pids are known
    own: float  # the bench process's own CPU seconds (the pusher)
    busy: float  # CPU seconds of every process on the machine
    steal: float  # CPU seconds the hypervisor took

    @classmethod
    def read(cls, server: ServerUnderTest) -> "Meter":
        busy, steal = machine_cpu_seconds()
        return cls(time.monotonic(), server.cpu_seconds(), own_cpu_seconds(), busy, steal)


def _connect_stats(replies: list[dict[str, Any]]) -> tuple[Histogram, dict[str, int]]:
    """The workers' connect-time histograms and error counts, merged."""
    hist = Histogram()
    errors: dict[str, int] = {}
    for reply in replies:
        hist.merge(Histogram.from_pairs(reply["connect_us"]))
        for text, n in reply["errors"].items():
            errors[text] = errors.get(text, 0) + n
    return hist, errors


def _spread(count: int, total: int) -> list[int]:
    """``count`` indexes spread evenly over 0..total-1."""
    return [i * total // count for i in range(count)] if count else []


def _top(errors: dict[str, int], n: int = 3) -> str:
    ranked = sorted(errors.items(), key=lambda kv: -kv[1])[:n]
    return "; ".join(f"{text} ({count})" for text, count in ranked)
