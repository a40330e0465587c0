"""The measured phase of the fan-out scenarios (broadcast, room, rooms and churn)
and of idle, which holds the connections without pushing, once the clients
connected and joined (:class:`pushgate.bench.runner.Run`): push at ``--rate`` until
``--pushes`` or ``--duration`` and drain, or hold for ``--duration``, metering the
server, the workers and the pusher meanwhile. A module of its own, as the drops'
(:mod:`pushgate.bench.drops`), chat's and abuse's are: the runner keeps what every
scenario shares, and each scenario's way of pushing and metering is beside it.
"""

import asyncio
import time
from typing import TYPE_CHECKING

from pushgate.bench import report
from pushgate.bench.httpclient import HttpConnection, HttpError
from pushgate.bench.meter import Meter
from pushgate.bench.procstat import mean_waiting_seconds
from pushgate.bench.replies import ChurnStopped
from pushgate.bench.scenarios import Plan
from pushgate.bench.serverlatency import LatencyBuckets
from pushgate.bench.workers import WorkerPool

if TYPE_CHECKING:
    from pushgate.bench.runner import Run


async def run_push(run: "Run", plan: Plan) -> None:
    """Push to the clients of ``run`` and count what arrives (with churn beside, in
    the churn scenario)."""
    if run.opts.scenario.name != "churn":
        await _push(run, plan, None)
        return
    # The churning connections come from worker processes of their own: in the
    # measured clients' workers their connects and closes would take turns with
    # the reads in one event loop, and the clients' latency would measure the
    # bench as much as the server.
    churners = WorkerPool()
    try:
        run.progress.phase("starting churn workers", f"{run.opts.churn_worker_count}")
        await churners.start(run.opts.churn_worker_count)
        await _push(run, plan, churners)
    finally:
        await churners.stop()


async def _push(run: "Run", plan: Plan, churners: WorkerPool | None) -> None:
    opts, result, server = run.opts, run.result, run.server
    pusher = run.make_pusher(plan, count=opts.push_count, duration=opts.push_duration)
    await run.pool.call_all("mark")
    latency_before = await _server_latency(run)
    before = Meter.read(server)
    clients_waiting = mean_waiting_seconds(run.pool.pids)
    if churners is not None:
        await _start_churn(run, churners)
    run.progress.phase("pushing")
    log = pusher.log
    churn_cpu_s = 0.0
    try:
        await run.watch(
            pusher.run(),
            lambda t: f"{log.sent:,} pushes sent, {t.deliveries:,} deliveries, {t.open:,} open",
        )
    finally:
        if churners is not None:
            churn_cpu_s = await _stop_churn(run, churners)
    expected = plan.expected(log.accepted)
    await run.drain(sum(expected.values()))
    after = Meter.read(server)
    if clients_waiting is not None:
        waited = mean_waiting_seconds(run.pool.pids)
        if waited is not None:
            result.client_waiting_pct = (
                100 * (waited - clients_waiting) / (after.wall - before.wall)
            )
    report.server_latency_figures(result, latency_before, await _server_latency(run))
    reports = await run.reports()
    report.loss_figures(result, expected, reports, ordered=opts.senders == 1)
    report.cpu_figures(result, before, after, reports, churn_cpu_s)
    report.push_figures(result, log)
    report.delivery_figures(result, log, reports, before, after)


async def _server_latency(run: "Run") -> "LatencyBuckets | None":
    """The server's delivery-latency histogram from GET /metrics (None when it
    serves none: metrics off, an API key, or not pushgate)."""
    if run.server.api_url is None:
        return None
    conn = HttpConnection(run.server.api_url)
    try:
        status, body = await conn.get("/metrics")
    except HttpError:
        return None
    finally:
        await conn.close()
    return LatencyBuckets.parse(body.decode()) if status == 200 else None


async def run_idle(run: "Run", plan: Plan) -> None:
    """Hold the connections for ``--duration`` and meter the server meanwhile."""
    opts, result, server = run.opts, run.result, run.server
    duration = opts.push_duration or 10.0
    await run.pool.call_all("mark")
    before = Meter.read(server)
    t0 = before.wall
    run.progress.phase("idle")

    async def wait() -> None:
        await asyncio.sleep(duration)

    await run.watch(
        wait(),
        lambda t: f"{t.open:,} open, {duration - (time.monotonic() - t0):.0f} s left",
    )
    after = Meter.read(server)
    reports = await run.reports()
    report.loss_figures(result, plan.expected({}), reports, ordered=opts.senders == 1)
    report.cpu_figures(result, before, after, reports)
    report.idle_figures(result, before, after)


async def _start_churn(run: "Run", churners: WorkerPool) -> None:
    opts = run.opts
    count = len(churners.workers)
    await churners.call_each(
        "churn",
        [
            {
                "targets": run.targets(),
                "sources": run.sources(),
                "client": opts.client,
                "rate": opts.churn_rate / count,
                "lifetime": opts.churn_lifetime,
                # Churn clients are numbered after the measured ones, per worker.
                "first": opts.connections + n * 10_000_000,
                "timeout": opts.connect_timeout,
            }
            for n in range(count)
        ],
    )


async def _stop_churn(run: "Run", churners: WorkerPool) -> float:
    """Stop the churn; return the churn workers' CPU seconds meanwhile."""
    timeout = run.opts.churn_lifetime + 3 * run.opts.connect_timeout + 10
    replies = ChurnStopped.from_each(await churners.call_all("churn_stop", within=timeout))
    report.churn_figures(run.result, replies)
    return sum(reply.cpu_s for reply in replies)
