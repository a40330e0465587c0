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
- deliveries per second over first push sent to last delivery received;
- resume: server CPU, the workers' CPU and the times from the moment the clients
  dropped their connections until every one of them caught up (see :meth:`Run.resume`);
- abuse: everything per phase, quiet then attacked (see :mod:`pushgate.bench.abuse`).
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jwt

from pushgate.bench.abuse import run_abuse
from pushgate.bench.abusereport import AbuseResult
from pushgate.bench.histogram import Histogram
from pushgate.bench.httpclient import HttpConnection, HttpError
from pushgate.bench.meter import Meter
from pushgate.bench.options import MAX_DURATION, BenchError, BenchOptions
from pushgate.bench.progress import Progress
from pushgate.bench.pusher import REQUEST_TIMEOUT, Pusher, PushLog, join_all
from pushgate.bench.report import (
    ClientCount,
    ClientStreams,
    RunResult,
    StreamCount,
    account,
    account_streams,
    ms,
)
from pushgate.bench.scenarios import ROOM, Plan, stream_of
from pushgate.bench.server import ServerUnderTest, external_server, start_own_server
from pushgate.bench.serverlatency import LatencyBuckets, ms_of
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
    result = (AbuseResult if opts.scenario.name == "abuse" else RunResult)(
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
        if self.opts.scenario.name == "resume":
            await self.resume(plan)
        elif self.opts.scenario.name == "abuse":
            await run_abuse(self, plan)
        elif self.opts.scenario.pushes:
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
                "targets": self.targets(),
                "sources": self._sources(),
                "first": first,
                "count": count,
                "concurrency": opts.connect_concurrency,
                "need_welcome": opts.scenario.needs_welcome,
                "timeout": opts.connect_timeout,
                "slow": [i for i in slow if first <= i < first + count],
                "slow_pause": opts.slow_pause,
                "ping": opts.client_ping,
                "resumable": opts.scenario.name == "resume",
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
        replies = await self.watch(
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
        if opts.scenario.name == "resume" and not opts.fresh:
            sessions = sum(reply["sessions"] for reply in replies)
            if sessions < len(indexes):
                raise BenchError(
                    f"{len(indexes) - sessions} of {len(indexes)} welcomes gave no session: "
                    "the server does not resume sessions (docs/recovery.md; is "
                    "--session-ttl 0 or --history-size 0?)"
                )
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
        if self.opts.scenario.name == "room":
            await self.page_members()

    async def _room_size(self) -> int:
        """How many connections are in the room now (GET /rooms/{id})."""
        assert self.server.api_url is not None
        conn = HttpConnection(self.server.api_url)
        try:
            status, body = await conn.get(f"/rooms/{ROOM}?limit=1")
        finally:
            await conn.close()
        if status != 200:
            raise BenchError(f"GET /rooms/{ROOM} failed: HTTP {status} {body[:200]!r}")
        count: int = json.loads(body)["count"]
        return count

    async def page_members(self) -> None:
        """Time a walk through the room's members, 1,000 a page (GET /rooms/{id})."""
        assert self.server.api_url is not None
        self.progress.phase("paging through the room's members")
        conn = HttpConnection(self.server.api_url)
        seen: set[str] = set()
        cursor = ""
        started = time.perf_counter()
        try:
            while True:
                query = f"?limit=1000&cursor={cursor}" if cursor else "?limit=1000"
                status, body = await conn.get(f"/rooms/{ROOM}{query}")
                if status != 200:
                    raise BenchError(f"GET /rooms/{ROOM} failed: HTTP {status} {body[:200]!r}")
                page = json.loads(body)
                seen.update(member["wsId"] for member in page["members"])
                cursor = page["nextCursor"]
                if not cursor:
                    break
        finally:
            await conn.close()
        self.result.members_paged = len(seen)
        self.result.members_page_s = time.perf_counter() - started

    def make_pusher(
        self,
        plan: Plan,
        *,
        count: int | None,
        duration: float | None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> Pusher:
        opts = self.opts
        assert self.server.api_url is not None
        return Pusher(
            self.server.api_url,
            plan,
            rate=opts.rate,
            count=count,
            duration=duration,
            size=opts.size,
            senders=opts.senders,
            tag=opts.tag,
            request_timeout=request_timeout,
        )

    async def push(self, plan: Plan) -> None:
        opts, result, server = self.opts, self.result, self.server
        pusher = self.make_pusher(plan, count=opts.push_count, duration=opts.push_duration)
        await self.pool.call_all("mark")
        latency_before = await self._server_latency()
        before = Meter.read(server)
        churning = opts.scenario.name == "churn"
        if churning:
            await self._start_churn()
        self.progress.phase("pushing")
        log = pusher.log
        try:
            await self.watch(
                pusher.run(),
                lambda t: f"{log.sent:,} pushes sent, {t.deliveries:,} deliveries, {t.open:,} open",
            )
        finally:
            if churning:
                await self._stop_churn()
        expected = plan.expected(log.accepted)
        await self.drain(sum(expected.values()))
        after = Meter.read(server)
        latency_after = await self._server_latency()
        if latency_before is not None and latency_after is not None:
            buckets = latency_after.since(latency_before)
            result.server_p50_ms = ms_of(buckets.quantile(0.50))
            result.server_p99_ms = ms_of(buckets.quantile(0.99))
        reports = await self.pool.call_all("report", within=120)
        self._account(expected, reports)
        self._meter(before, after, reports)
        self._push_figures(log)
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

    async def _server_latency(self) -> "LatencyBuckets | None":
        """The server's delivery-latency histogram from GET /metrics (None when it
        serves none: metrics off, an API key, or not pushgate)."""
        if self.server.api_url is None:
            return None
        conn = HttpConnection(self.server.api_url)
        try:
            status, body = await conn.get("/metrics")
        except HttpError:
            return None
        finally:
            await conn.close()
        return LatencyBuckets.parse(body.decode()) if status == 200 else None

    async def resume(self, plan: Plan) -> None:
        """Push at ``--rate``; after ``--duration`` (or ``--pushes``) drop every client
        at once and resume them all; keep pushing until every client caught up, then
        drain and account per stream.

        Measured from the drop (the earliest of the workers' drop times: they drop
        when the command reaches them, within a millisecond of each other): the last
        resumed welcome (``resume_s``) and the moment the last client had every push
        published up to the last resume (``caught_up_s``): up to, on each stream, the
        highest seq any resumed welcome named. Server and client CPU are read from
        just before the drop until the workers saw every client caught up."""
        opts, result, server = self.opts, self.result, self.server
        # A bound on the duration: the pusher is stopped once every client caught up.
        pusher = self.make_pusher(plan, count=None, duration=MAX_DURATION)
        log = pusher.log
        await self.pool.call_all("mark")
        self.progress.phase("pushing before the drop")
        pushing = asyncio.create_task(pusher.run())
        try:
            await self.watch(
                self._until_drop(pusher, pushing),
                lambda t: f"{log.accepted_total:,} pushes accepted, {t.deliveries:,} deliveries",
            )
            if pushing.done():
                pushing.result()  # its exception, if it failed
                raise BenchError("pushing stopped before the drop: the server answered errors only")
            if not log.accepted_total:
                raise BenchError(f"no push was accepted before the drop: {_top(log.errors)}")
            before = Meter.read(server)
            verb = "reconnecting afresh" if opts.fresh else "resuming"
            self.progress.phase(f"dropping every connection and {verb}")
            biggest = max(count for _, count in split(result.connected, opts.worker_count))
            waves = -(-biggest // opts.connect_concurrency)
            timeout = opts.outage + waves * opts.connect_timeout + biggest / 100 + 60
            dropped = await self.watch(
                self.pool.call_all(
                    "drop_resume",
                    within=timeout,
                    concurrency=opts.connect_concurrency,
                    timeout=opts.connect_timeout,
                    shift=opts.resume_shift,
                    outage=opts.outage,
                    fresh=opts.fresh,
                    token=self._room_token(),
                ),
                lambda t: f"{t.open:,}/{result.connected:,} open",
            )
            self.server.check_alive()
            if opts.fresh:
                self._reconnect_figures(dropped, before, Meter.read(server))
                result.in_room = await self._room_size()
                return
            # Caught up: on each stream this run pushed to, up to its seq at the last
            # resume (a stream may hold pushes from before the run: those are not owed).
            pushed = {stream_of(target) for target, n in log.accepted.items() if n}
            seqs: dict[str, int] = {}
            for reply in dropped:
                for name, seq in reply["seqs"].items():
                    if name in pushed:
                        seqs[name] = max(seqs.get(name, 0), seq)
            self.progress.phase("catching up")
            caught = await self.watch(
                self.pool.call_all(
                    "caught_up", within=MAX_DURATION, seqs=seqs, stall=opts.drain_timeout
                ),
                lambda t: f"{t.deliveries:,} deliveries",
            )
            after = Meter.read(server)
        finally:
            pusher.stop()
            await asyncio.gather(pushing, return_exceptions=True)
            self._push_figures(log)
        accepted = {stream_of(target): n for target, n in log.accepted.items()}
        expected = plan.expected(log.accepted)
        await self.drain(sum(expected.values()))
        reports = await self.pool.call_all("report", within=120)
        self._resume_figures(dropped, caught, before, after)
        self._account_streams(plan, accepted, reports)

    def _push_figures(self, log: PushLog) -> None:
        """What the pusher saw: pushes accepted, errors, rate, answer times."""
        result = self.result
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

    async def _until_drop(self, pusher: Pusher, pushing: "asyncio.Task[Any]") -> None:
        """Return after --pushes accepted pushes or --duration seconds of pushing (or
        when the pusher stopped by itself)."""
        count, duration = self.opts.push_count, self.opts.push_duration
        deadline = time.monotonic() + (duration if duration is not None else MAX_DURATION)
        log = pusher.log
        while not pushing.done() and time.monotonic() < deadline:
            if count is not None and log.accepted_total >= count:
                return
            await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    def _room_token(self) -> str | None:
        """A connection token that joins ROOM on connect, signed with --token-secret:
        how a fresh reconnect gets back into the room without an API call."""
        if not (self.opts.fresh and self.opts.token_secret):
            return None
        return jwt.encode({"rooms": [ROOM]}, self.opts.token_secret, algorithm="HS256")

    def _reconnect_figures(
        self, dropped: list[dict[str, Any]], before: Meter, after: Meter
    ) -> None:
        """resume --fresh: how long the fresh connects took after the drop, and their
        CPU (the pushes to the clients already back included, as for a resume)."""
        result = self.result
        drop_ns = min(r["drop_ns"] for r in dropped)
        welcome_ns = max(r["welcome_ns"] for r in dropped)
        result.reconnected = sum(r["reconnected"] for r in dropped)
        result.reconnect_failed = sum(r["failed"] for r in dropped)
        errors = _merged_counts(dropped, "errors")
        if errors:
            result.errors.append(f"{result.reconnect_failed} reconnects failed: {_top(errors)}")
        if result.reconnected and welcome_ns > drop_ns:
            result.reconnect_s = (welcome_ns - drop_ns) / 1e9
            if result.connect_s:
                result.reconnect_vs_connect = result.reconnect_s / result.connect_s
        self._meter(before, after, dropped)
        server_us, client_us = self._cpu_us_per(result.reconnected)
        result.server_cpu_us_per_reconnect = server_us
        result.client_cpu_us_per_reconnect = client_us

    def _resume_figures(
        self,
        dropped: list[dict[str, Any]],
        caught: list[dict[str, Any]],
        before: Meter,
        after: Meter,
    ) -> None:
        result = self.result
        drop_ns = min(r["drop_ns"] for r in dropped)
        result.resumed = sum(r["resumed"] for r in dropped)
        result.resume_failed = sum(r["failed"] + r["new_session"] for r in dropped)
        result.not_recovered = sum(r["not_recovered"] for r in dropped)
        result.replayed = sum(r["replayed"] for r in dropped)
        result.not_caught_up = sum(r["not_caught_up"] for r in caught)
        hist = Histogram()
        for reply in dropped:
            hist.merge(Histogram.from_pairs(reply["resume_us"]))
        errors = _merged_counts(dropped, "errors")
        reasons = _merged_counts(dropped, "reasons")
        result.resume_p50_ms = ms(hist.percentile(0.5))
        result.resume_p99_ms = ms(hist.percentile(0.99))
        if errors:
            result.errors.append(f"{sum(errors.values())} resumes failed: {_top(errors)}")
        if reasons:
            result.errors.append(
                f"{sum(reasons.values())} resumes got a new session instead: {_top(reasons)}"
            )
        retried = sum(r["retried"] for r in dropped)
        if retried:
            result.errors.append(f"{retried} resumes were closed with 1013 and tried again")
        if result.not_caught_up:
            result.errors.append(
                f"{result.not_caught_up} resumed clients had not caught up after "
                f"{self.opts.drain_timeout:g} s without progress"
            )
        welcome_ns = max(r["welcome_ns"] for r in dropped)
        if result.resumed and welcome_ns > drop_ns:
            result.resume_s = (welcome_ns - drop_ns) / 1e9
        caught_ns = max(r["caught_up_ns"] for r in caught)
        if result.resumed and not result.not_caught_up and caught_ns > drop_ns:
            result.caught_up_s = (caught_ns - drop_ns) / 1e9
            if result.connect_s:
                result.caught_up_vs_connect = result.caught_up_s / result.connect_s
        self._meter(before, after, caught)
        server_us, client_us = self._cpu_us_per(result.resumed)
        result.server_cpu_us_per_resume = server_us
        result.client_cpu_us_per_resume = client_us

    def _cpu_us_per(self, count: int | None) -> tuple[float | None, float | None]:
        """Server and client CPU of the last :meth:`_meter`, in µs per one of ``count``."""
        server, client = self.result.server_cpu_s, self.result.client_cpu_s
        if not count:
            return None, None
        return (
            None if server is None else server * 1e6 / count,
            None if client is None else client * 1e6 / count,
        )

    def _account_streams(
        self, plan: Plan, accepted: dict[str, int], reports: list[dict[str, Any]]
    ) -> None:
        result = self.result
        hist = Histogram()
        close_codes: dict[int, int | None] = {}
        clients: list[ClientStreams] = []
        gap_notices = 0
        for report in reports:
            hist.merge(Histogram.from_pairs(report["hist"]))
            close_codes.update((i, code) for i, _, _, code in report["clients"])
        for report in reports:
            for index, streams, unrecovered, gaps in report["streams"]:
                gap_notices += gaps
                clients.append(
                    ClientStreams(
                        index,
                        {name: StreamCount(*counts) for name, counts in streams.items()},
                        frozenset(unrecovered),
                        close_codes.get(index),
                    )
                )
        result.deliveries = sum(r["deliveries"] for r in reports)
        result.set_latency(hist)
        losses = account_streams(accepted, plan.indexes, clients)
        result.set_losses(losses)
        result.lost_not_recovered = losses.lost_not_recovered
        result.gap_notices = gap_notices
        unpositioned = sum(r["unpositioned"] for r in reports)
        if unpositioned:
            result.errors.append(
                f"{unpositioned} pushes carried no seq: the server keeps no history "
                "(--history-size 0?), so nothing can be counted by position"
            )
        samples = [s for report in reports for s in report["duplicated"]][:3]
        if samples:
            result.errors.append(
                "received twice, e.g.: "
                + "; ".join(
                    f"client {s['client']} on {s['gateway']}, {s['stream']} seqs {s['seqs']} "
                    f"(resumed since {s['since']}, welcome {s['welcome']})"
                    for s in samples
                )
            )
        if losses.epoch_changes:
            result.errors.append(
                f"{losses.epoch_changes} epoch changes seen by clients: the server lost a "
                "stream's history during the run"
            )

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

        await self.watch(
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
                    "targets": self.targets(),
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

    def targets(self) -> list[list[object]]:
        """The gateway URLs as workers take them: [host, port, path]."""
        return [[p.hostname, p.port, p.path or "/"] for p in map(urlsplit, self.server.ws_urls)]

    def _sources(self) -> list[str]:
        """Loopback source addresses for the clients; 127.0.0.1 is left to the server."""
        return [f"127.0.0.{2 + k}" for k in range(self.opts.sources)]

    def _meter(self, before: Meter, after: Meter, reports: list[dict[str, Any]]) -> None:
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

    async def watch(self, work: Awaitable[T], describe: Callable[[Totals], str]) -> T:
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


def _connect_stats(replies: list[dict[str, Any]]) -> tuple[Histogram, dict[str, int]]:
    """The workers' connect-time histograms and error counts, merged."""
    hist = Histogram()
    for reply in replies:
        hist.merge(Histogram.from_pairs(reply["connect_us"]))
    return hist, _merged_counts(replies, "errors")


def _merged_counts(replies: list[dict[str, Any]], key: str) -> dict[str, int]:
    """The workers' counts by text under ``key`` (errors, reasons), summed."""
    merged: dict[str, int] = {}
    for reply in replies:
        for text, n in reply[key].items():
            merged[text] = merged.get(text, 0) + n
    return merged


def _spread(count: int, total: int) -> list[int]:
    """``count`` indexes spread evenly over 0..total-1."""
    return [i * total // count for i in range(count)] if count else []


def _top(errors: dict[str, int], n: int = 3) -> str:
    ranked = sorted(errors.items(), key=lambda kv: -kv[1])[:n]
    return "; ".join(f"{text} ({count})" for text, count in ranked)
