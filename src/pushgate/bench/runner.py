"""One run of a scenario, from starting the server to the last figure.

:func:`run_once` owns every process it starts and stops them all in ``finally``
blocks, workers first (their connections go with them), then the server. Each
phase is bounded: connecting by ``--connect-timeout`` per connection, pushing by
``--pushes`` or ``--duration``, draining by ``--drain-timeout`` without progress.
The figures are computed by :mod:`pushgate.bench.report` from what each phase
gathered; here the phases only run and gather.

What is measured when:

- server RSS before the clients connect, and one second after the last one did:
  ``rss_kb_per_conn`` is the difference over the clients that opened;
- server CPU (``/proc``), the workers' own CPU and the pusher's from the moment
  the workers are told to start counting until the last expected delivery arrived
  (or deliveries stalled); the idle scenario over ``--duration`` instead (see
  :mod:`pushgate.bench.fanout`);
- deliveries per second over first push sent to last delivery received;
- resume: server CPU, the workers' CPU and the times from the moment the clients
  dropped their connections until every one of them caught up, and reconnect: the
  same until every one was welcomed afresh (see :mod:`pushgate.bench.drops`);
- abuse: everything per phase, quiet then attacked (see :mod:`pushgate.bench.abuse`);
- chat: everything per phase, subscribe, publish, api, resume (see
  :mod:`pushgate.bench.chat`).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from pushgate.bench import report
from pushgate.bench.abuse import run_abuse
from pushgate.bench.abusereport import AbuseResult
from pushgate.bench.chat import WORKER_MODULE as CHAT_WORKER_MODULE
from pushgate.bench.chat import chat_setup, run_chat
from pushgate.bench.chatresult import ChatResult
from pushgate.bench.drops import run_drop
from pushgate.bench.fanout import run_idle, run_push
from pushgate.bench.httpclient import HttpConnection
from pushgate.bench.options import BenchError, BenchOptions
from pushgate.bench.progress import Progress
from pushgate.bench.pusher import REQUEST_TIMEOUT, NoRoomPages, Pusher, join_all, room_page
from pushgate.bench.replies import Connected, Report, Status
from pushgate.bench.report import top
from pushgate.bench.result import RunResult
from pushgate.bench.scenarios import Plan
from pushgate.bench.server import ServerUnderTest, external_server, start_own_server
from pushgate.bench.workers import WorkerPool, split

SETTLE = 1.0  # seconds between connecting and reading RSS: let the server go quiet
POLL = 0.05  # seconds between status polls of the workers
JOIN_CONCURRENCY = 8
T = TypeVar("T")


async def run_once(opts: BenchOptions, progress: Progress) -> RunResult:
    """Run the scenario once; raise BenchError when it cannot be run as asked."""
    kinds: dict[str, type[RunResult]] = {"abuse": AbuseResult, "chat": ChatResult}
    result = kinds.get(opts.scenario.name, RunResult)(
        scenario=opts.scenario.name,
        connections=opts.connections,
        client=opts.client,
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
        pool = WorkerPool(CHAT_WORKER_MODULE) if opts.scenario.name == "chat" else WorkerPool()
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
        # chat: what its workers need to open their clients (rooms, users, tokens)
        self.chat_setup = chat_setup(opts) if opts.scenario.name == "chat" else None

    async def run(self) -> None:
        rss_before = self.server.rss_bytes()
        indexes, ws_ids = await self.connect()
        await asyncio.sleep(SETTLE)
        report.rss_per_connection(self.result, rss_before, self.server.rss_bytes())
        scenario = self.opts.scenario
        kind = self.opts.client_kind
        plan = Plan(scenario, indexes, room=kind.room, joined_by_api=kind.joins_by_api)
        await self.join(plan, ws_ids)
        if scenario.drops:
            await run_drop(self, plan)
        elif scenario.name == "chat":
            await run_chat(self, ws_ids)
        elif scenario.name == "abuse":
            await run_abuse(self, plan)
        elif scenario.pushes:
            await run_push(self, plan)
        else:
            await run_idle(self, plan)
        report.rss_at_end(self.result, self.server.rss_bytes())

    # Phases

    async def connect(self) -> tuple[list[int], dict[int, str]]:
        """Open the clients over the workers; return the indexes that opened and
        their wsIds (when the server sends a welcome)."""
        opts = self.opts
        ranges = split(opts.connections, opts.worker_count)
        slow = _spread(opts.slow, opts.connections)
        fields = [
            {
                "targets": self.targets(),
                "sources": self.sources(),
                "first": first,
                "count": count,
                "concurrency": opts.connect_concurrency,
                # Only the clients the bench joins by wsId need it from a welcome.
                "need_welcome": opts.scenario.needs_welcome and opts.client_kind.joins_by_api,
                "timeout": opts.connect_timeout,
                "retries": opts.connect_retries,
                "slow": [i for i in slow if first <= i < first + count],
                "slow_pause": opts.slow_pause,
                "ping": opts.client_ping,
                "resumable": opts.scenario.drops,
                "chat": self.chat_setup,
                "client": opts.client,
                # A Pusher client in the room scenario subscribes to its channel.
                "channel": opts.client_kind.channel if opts.scenario.name == "room" else None,
            }
            for first, count in ranges
        ]
        started = time.monotonic()
        self.progress.phase("connecting")
        connecting = self.pool.call_each("connect", fields, within=self.connect_within())
        replies = Connected.from_each(
            await self.watch(connecting, lambda t: f"{t.open:,}/{opts.connections:,} open")
        )
        errors = report.connect_figures(self.result, replies, time.monotonic() - started)
        indexes = sorted(i for reply in replies for i in reply.indexes)
        if not indexes:
            needs = opts.scenario.needs_welcome
            hint = " (this scenario needs the wsId of a welcome frame)" if needs else ""
            raise BenchError(f"no connection opened{hint}: {top(errors)}")
        self.server.check_alive()
        if opts.scenario.name in ("resume", "chat"):
            _check_sessions(replies, len(indexes))
        return indexes, {i: ws_id for reply in replies for i, ws_id in reply.ws_ids.items()}

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
            await self.page_members(plan.room)

    async def page_members(self, room: str) -> None:
        """Time a walk through the room's members, 1,000 a page (GET /rooms/{id}); none
        when the server has no such endpoint (an older pushgate): the figures stay None."""
        assert self.server.api_url is not None
        self.progress.phase("paging through the room's members")
        conn = HttpConnection(self.server.api_url)
        seen: set[str] = set()
        cursor = ""
        started = time.perf_counter()
        try:
            while True:
                query = f"?limit=1000&cursor={cursor}" if cursor else "?limit=1000"
                try:
                    page = await room_page(conn, query, room)
                except NoRoomPages:
                    if cursor:
                        raise
                    return
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

    # Internals

    def targets(self) -> list[list[object]]:
        """The gateway URLs as workers take them: [host, port, path], the path the
        clients' protocol connects to (``--client``)."""
        kind, in_room = self.opts.client_kind, self.opts.scenario.name == "room"
        return [
            [p.hostname, p.port, kind.path(p.path or "/", in_room)]
            for p in map(urlsplit, self.server.ws_urls)
        ]

    def sources(self) -> list[str]:
        """Loopback source addresses for the clients; 127.0.0.1 is left to the server."""
        return [f"127.0.0.{2 + k}" for k in range(self.opts.sources)]

    def connect_within(self, connections: int | None = None) -> float:
        """How long the workers may take to open ``connections`` (all of them when
        not given): every connection may wait its timeout, in waves of
        ``--connect-concurrency``, plus time for the handshakes themselves."""
        opts = self.opts
        total = opts.connections if connections is None else connections
        biggest = max(count for _, count in split(total, opts.worker_count))
        waves = -(-biggest // opts.connect_concurrency)
        return waves * opts.connect_timeout + biggest / 100 + 60

    async def reports(self) -> list[Report]:
        """What every worker measured since `mark`."""
        return Report.from_each(await self.pool.call_all("report", within=120))

    async def _poll(self) -> Status:
        """The workers' status, summed."""
        replies = Status.from_each(await self.pool.call_all("status", within=30))
        return Status(
            open=sum(r.open for r in replies),
            deliveries=sum(r.deliveries for r in replies),
            last_ns=max(r.last_ns for r in replies),
        )

    async def watch(self, work: Awaitable[T], describe: Callable[[Status], str]) -> T:
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


def _check_sessions(replies: Sequence[Connected], opened: int) -> None:
    """Raise BenchError unless every welcome gave a session (to resume later)."""
    sessions = sum(reply.sessions for reply in replies)
    if sessions < opened:
        raise BenchError(
            f"{opened - sessions} of {opened} welcomes gave no session: "
            "the server does not resume sessions (docs/recovery.md; is "
            "--session-ttl 0 or --history-size 0?)"
        )


def _spread(count: int, total: int) -> list[int]:
    """``count`` indexes spread evenly over 0..total-1."""
    return [i * total // count for i in range(count)] if count else []
