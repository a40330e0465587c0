"""The abuse scenario (issue 25): the honest clients measured quiet, then under
every attack at once.

After the honest clients connected (:class:`pushgate.bench.runner.Run`), one run:

1. starts one attacker process per attack (:mod:`pushgate.bench.abuseworker`),
   idle, so that their start-up costs the quiet phase nothing, and the samplers
   (:mod:`pushgate.bench.samplers`): ``/healthz`` on the gateway's port and on the
   API's, and the server's RSS, each every ~100 ms;
2. quiet phase: pushes to all at ``--rate`` for ``--duration`` seconds, then waits
   for the last deliveries (``--drain-timeout`` without progress at most);
3. attacked phase: starts every attack at once (the moment ``t0``, from which the
   attackers' fates are timed) and, at the same moment, pushes as in the quiet
   phase; then drains, with the attacks still going;
4. stops the attacks, each telling what the server did to its connections, stops
   the attacker processes, lets the server settle and reads its RSS once more.

Each phase accounts the honest clients on its own
(:func:`pushgate.bench.abusereport.phase_figures`).
"""

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from pushgate.bench.abusereport import (
    ATTACKED,
    QUIET,
    AbuseResult,
    Phase,
    bar_missed,
    mb,
    phase_figures,
    sampled_figures,
)
from pushgate.bench.abusers import DRAIN_WITHIN
from pushgate.bench.meter import Meter
from pushgate.bench.procstat import ProcessGone, total_cpu_seconds
from pushgate.bench.samplers import HealthPoller, PhaseClock, RssSampler
from pushgate.bench.scenarios import Plan
from pushgate.bench.workers import WorkerPool

if TYPE_CHECKING:
    from pushgate.bench.runner import Run

ATTACKER_MODULE = "pushgate.bench.abuseworker"
# The attackers' own source address: apart from the honest clients (127.0.0.2 and
# up, --sources at most 250) and from the health polls (127.0.0.1), so that a
# server's per-address limits can tell them apart, as they could on a network.
ATTACKER_SOURCE = "127.0.0.254"
SETTLE = 1.0  # seconds between stopping the attackers and the last RSS reading
# A push not answered within this long counts as an error: under attack a server
# may stall, and the phase must still end (a push answered 200 later, and then
# delivered, shows as "received beyond expected").
PUSH_TIMEOUT = 5.0
Json = dict[str, Any]


async def run_abuse(run: "Run", plan: Plan) -> None:
    """Measure the honest clients of ``run`` quiet, then under attack."""
    await AbuseRun(run, plan).run()


class AbuseRun:
    """The phases of one abuse run, sharing the run's server, workers and result."""

    def __init__(self, run: "Run", plan: Plan) -> None:
        self.run_ = run
        self.plan = plan
        self.opts = run.opts
        self.result = cast(AbuseResult, run.result)
        self.clock = PhaseClock()
        self.attackers = WorkerPool(ATTACKER_MODULE)
        self.received: dict[int, int] = {}  # each honest client's count so far

    async def run(self) -> None:
        opts, result, server = self.opts, self.result, self.run_.server
        result.attacks = list(opts.attacks)
        result.phase_s = opts.push_duration
        health = self._health_pollers()
        rss = RssSampler(server.rss_bytes, self.clock)
        try:
            self.run_.progress.phase("starting attacker processes", ",".join(opts.attacks))
            await self.attackers.start(len(opts.attacks))
            runs = [poller.run() for poller in health.values()] + [rss.run()]
            samplers = [asyncio.create_task(coro) for coro in runs]
            try:
                result.rss_start_mb = mb(server.rss_bytes())
                phase_figures(result, await self._phase(QUIET), self.received)
                phase_figures(result, await self._phase(ATTACKED), self.received)
                await self._stop_attacks()
            finally:
                for task in samplers:
                    task.cancel()
                await asyncio.gather(*samplers, return_exceptions=True)
        finally:
            await self.attackers.stop()
        await asyncio.sleep(SETTLE)
        result.rss_end_mb = mb(server.rss_bytes())
        sampled_figures(result, health, rss)
        result.bar_missed = bar_missed(result)

    # Phases

    async def _phase(self, name: str) -> Phase:
        """Push at --rate for --duration (after starting the attacks, when attacked),
        then drain; the samplers file their readings under ``name`` meanwhile."""
        run, opts = self.run_, self.opts
        await run.pool.call_all("mark")
        self.clock.phase = name
        before, attackers_before = Meter.read(run.server), self._attackers_cpu()
        pusher = run.make_pusher(
            self.plan, count=None, duration=opts.push_duration, request_timeout=PUSH_TIMEOUT
        )
        log = pusher.log
        run.progress.phase(f"pushing, {name}")
        starting = asyncio.create_task(self._start_attacks()) if name == ATTACKED else None
        try:
            await run.watch(
                pusher.run(),
                lambda t: f"{log.accepted_total:,} pushes accepted, {t.deliveries:,} deliveries",
            )
            expected = self.plan.expected(log.accepted)
            await run.drain(sum(expected.values()))
            if starting is not None and starting.done():
                starting.result()  # its error, if it failed
        finally:
            # Attacks still opening connections now are stopped as they are (the
            # server may be too busy to let them in): the phase does not wait.
            if starting is not None and not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
        after, attackers_after = Meter.read(run.server), self._attackers_cpu()
        self.clock.phase = None
        reports = await run.reports()
        attackers_cpu = None
        if attackers_before is not None and attackers_after is not None:
            attackers_cpu = attackers_after - attackers_before
        return Phase(name, log, expected, reports, before, after, attackers_cpu)

    async def _start_attacks(self) -> None:
        """Start every attack at once, as the attacked phase's pushes start; return
        when their connections are open (or failed to). What opened, and why others
        did not, the attackers tell when stopped."""
        opts = self.opts
        counts = {"nonreaders": opts.non_readers, "handshakes": opts.fat_handshakes}
        t0_ns = time.time_ns()
        fields = [
            {
                "kind": kind,
                "target": self.run_.targets()[0],
                "source": ATTACKER_SOURCE,
                "count": counts.get(kind, 1),
                "t0_ns": t0_ns,
                "timeout": opts.connect_timeout,
                "concurrency": opts.connect_concurrency,
            }
            for kind in opts.attacks
        ]
        waves = -(-max(counts.values()) // opts.connect_concurrency)
        within = waves * opts.connect_timeout + 30
        await self.attackers.call_each("start", fields, within=within)

    async def _stop_attacks(self) -> None:
        """Stop every attack; keep what each says the server did to it."""
        self.run_.progress.phase("stopping the attacks")
        fates = await self.attackers.call_all("stop", within=DRAIN_WITHIN + 60)
        self.result.attackers = {
            kind: {key: value for key, value in fate.items() if key != "id"}
            for kind, fate in zip(self.opts.attacks, fates, strict=True)
        }

    # Internals

    def _health_pollers(self) -> dict[str, HealthPoller]:
        """A poller for the first gateway's port and one for the API's."""
        gateway = urlsplit(self.run_.server.ws_urls[0])
        urls = {"gateway": f"http://{gateway.netloc}"}
        if self.run_.server.api_url is not None:
            urls["api"] = self.run_.server.api_url
        return {port: HealthPoller(url, self.clock) for port, url in urls.items()}

    def _attackers_cpu(self) -> float | None:
        with contextlib.suppress(ProcessGone):
            return total_cpu_seconds(self.attackers.pids)
        return None
