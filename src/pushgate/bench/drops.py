"""The resume and reconnect scenarios, the coordinator's side: every client drops
its connection at once, mid-run, and comes back while the pushes go on.

After the clients connected and joined the room (:class:`pushgate.bench.runner.Run`),
one run:

1. pushes at ``--rate``, alternating between the room and all, and after
   ``--duration`` seconds (or ``--pushes``) tells every worker to drop its clients
   and bring them back (:mod:`pushgate.bench.reopen` is the workers' side):
2. resume: each client resumes its session (docs/recovery.md); the workers then
   wait until each has every push owed it (caught up), and the run drains and
   accounts every client's streams by position;
3. reconnect: each client connects afresh, with a token naming the room when the
   bench knows the server's ``--token-secret``: the baseline a resume storm is
   compared with; the run then counts the room's members.

Measured from the drop: the earliest of the workers' drop times (they drop when
the command reaches them, within a millisecond of each other). Server and client
CPU are read from just before the drop until every client caught up (resume) or
was welcomed (reconnect), the live pushes to the clients already back included.
"""

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jwt

from pushgate.bench import dropreport, report
from pushgate.bench.httpclient import HttpConnection
from pushgate.bench.meter import Meter
from pushgate.bench.options import MAX_DURATION, BenchError
from pushgate.bench.pusher import Pusher, PushLog, room_page
from pushgate.bench.replies import CaughtUp, Json, Reconnected, Resumed
from pushgate.bench.report import top
from pushgate.bench.scenarios import ROOM, Plan, stream_of

if TYPE_CHECKING:
    from pushgate.bench.runner import Run

POLL = 0.05  # seconds between looks at the pusher before the drop


async def run_drop(run: "Run", plan: Plan) -> None:
    """Push, drop every client of ``run`` at once, and bring them back."""
    await DropRun(run, plan).run()


class DropRun:
    """One drop and its comeback, sharing the run's server, workers and result."""

    def __init__(self, run: "Run", plan: Plan) -> None:
        self.run_ = run
        self.plan = plan
        self.opts = run.opts
        self.result = run.result

    async def run(self) -> None:
        # A bound on the duration: the pusher is stopped once every client is back.
        pusher = self.run_.make_pusher(self.plan, count=None, duration=MAX_DURATION)
        log = pusher.log
        await self.run_.pool.call_all("mark")
        self.run_.progress.phase("pushing before the drop")
        pushing = asyncio.create_task(pusher.run())
        try:
            await self._until_drop(pusher, pushing)
            if self.opts.scenario.name == "reconnect":
                await self._reconnect()
                return
            before, after, replies, caught = await self._resume(log)
        finally:
            pusher.stop()
            await asyncio.gather(pushing, return_exceptions=True)
            report.push_figures(self.result, log)
        await self._account_resume(log, before, after, replies, caught)

    async def _until_drop(self, pusher: Pusher, pushing: "asyncio.Task[Any]") -> None:
        """Return after --pushes accepted pushes or --duration seconds of pushing;
        BenchError when the pusher stopped by itself, or nothing was accepted."""
        log = pusher.log
        await self.run_.watch(
            self._pushed_enough(pusher, pushing),
            lambda t: f"{log.accepted_total:,} pushes accepted, {t.deliveries:,} deliveries",
        )
        if pushing.done():
            pushing.result()  # its exception, if it failed
            raise BenchError("pushing stopped before the drop: the server answered errors only")
        if not log.accepted_total:
            raise BenchError(f"no push was accepted before the drop: {top(log.errors)}")

    async def _pushed_enough(self, pusher: Pusher, pushing: "asyncio.Task[Any]") -> None:
        count, duration = self.opts.push_count, self.opts.push_duration
        deadline = time.monotonic() + (duration if duration is not None else MAX_DURATION)
        log = pusher.log
        while not pushing.done() and time.monotonic() < deadline:
            if count is not None and log.accepted_total >= count:
                return
            await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    async def _reconnect(self) -> None:
        """Every client connects afresh after the drop: how long until the last was
        welcomed, at what CPU, and how many are back in the room (a token joins)."""
        server = self.run_.server
        before = Meter.read(server)
        raw = await self._drop_all("drop_reconnect", "reconnecting afresh")
        replies = Reconnected.from_each(raw)
        dropreport.reconnect_figures(self.result, replies, before, Meter.read(server))
        self.result.in_room = await self._room_size()

    async def _resume(self, log: PushLog) -> tuple[Meter, Meter, list[Resumed], list[CaughtUp]]:
        """Every client resumes after the drop; return the meters around it, and
        what the workers said once every client caught up: had every push published
        up to the last resume, up to, on each stream, the highest seq any resumed
        welcome named."""
        run = self.run_
        before = Meter.read(run.server)
        raw = await self._drop_all("drop_resume", "resuming")
        replies = Resumed.from_each(raw)
        seqs = _owed_seqs(replies, log)
        run.progress.phase("catching up")
        caught = await run.watch(
            run.pool.call_all(
                "caught_up", within=MAX_DURATION, seqs=seqs, stall=self.opts.drain_timeout
            ),
            lambda t: f"{t.deliveries:,} deliveries",
        )
        return before, Meter.read(run.server), replies, CaughtUp.from_each(caught)

    async def _account_resume(
        self,
        log: PushLog,
        before: Meter,
        after: Meter,
        replies: list[Resumed],
        caught: list[CaughtUp],
    ) -> None:
        """Drain, then account the resume: its times and CPU, and every client's
        losses per stream."""
        plan = self.plan
        accepted = {stream_of(target): n for target, n in log.accepted.items()}
        expected = plan.expected(log.accepted)
        await self.run_.drain(sum(expected.values()))
        reports = await self.run_.reports()
        dropreport.resume_figures(
            self.result, replies, caught, before, after, stall=self.opts.drain_timeout
        )
        dropreport.stream_loss_figures(self.result, accepted, plan.indexes, reports)

    async def _drop_all(self, cmd: str, how: str) -> list[Json]:
        """Tell every worker to drop its clients and bring them back (``cmd``)."""
        run, opts = self.run_, self.opts
        run.progress.phase(f"dropping every connection and {how}")
        replies = await run.watch(
            run.pool.call_all(
                cmd,
                within=opts.outage + run.connect_within(self.result.connected),
                concurrency=opts.connect_concurrency,
                timeout=opts.connect_timeout,
                shift=opts.resume_shift,
                outage=opts.outage,
                token=self._room_token(),
            ),
            lambda t: f"{t.open:,}/{self.result.connected:,} open",
        )
        run.server.check_alive()
        return replies

    def _room_token(self) -> str | None:
        """A connection token that joins ROOM on connect, signed with --token-secret:
        how a fresh reconnect gets back into the room without an API call."""
        if not (self.opts.scenario.name == "reconnect" and self.opts.token_secret):
            return None
        return jwt.encode({"rooms": [ROOM]}, self.opts.token_secret, algorithm="HS256")

    async def _room_size(self) -> int:
        """How many connections are in the room now (GET /rooms/{id})."""
        assert self.run_.server.api_url is not None
        conn = HttpConnection(self.run_.server.api_url)
        try:
            count: int = (await room_page(conn, "?limit=1"))["count"]
        finally:
            await conn.close()
        return count


def _owed_seqs(replies: Sequence[Resumed], log: PushLog) -> dict[str, int]:
    """What a client must have to be caught up: on each stream this run pushed to,
    every push up to its seq at the last resume (a stream may hold pushes from
    before the run: those are not owed)."""
    pushed = {stream_of(target) for target, n in log.accepted.items() if n}
    seqs: dict[str, int] = {}
    for reply in replies:
        for name, seq in reply.seqs.items():
            if name in pushed:
                seqs[name] = max(seqs.get(name, 0), seq)
    return seqs
