"""The chat scenario, the coordinator's side: clients that subscribe themselves,
talk to their rooms and hear who is there (docs/protocol.md, "Subscribing",
"Publishing", "Presence"), against the same messages sent through the logic API.

The server runs with ``--namespaces chat=public+publish+presence`` and a token
secret; each client connects with a token whose ``sub`` is its index, so presence
is per user, and its room is ``chat:<index // room_size>``. After the clients
connected (:class:`pushgate.bench.runner.Run`), the workers
(:mod:`pushgate.bench.chatworker`) and this module run four phases, each metered
on its own (server CPU, the workers' CPU, everything else's):

1. **subscribe**: every client subscribes itself, ``--subscribe-rate`` a second
   over all of them (0: all at once); the round trip of each, from its frame sent
   to its reply; then the presence joins every member heard, checked
   (:func:`pushgate.bench.chatreport.check_joins`);
2. **publish**: every member publishes ``--rate`` messages a second to its room
   for ``--duration`` seconds, in its slot of each period
   (:func:`pushgate.bench.scenarios.chat_slot`); each goes to the room's other
   members: deliveries, latency, CPU per delivery;
3. **api**: the same messages again, as many per client as the server took from
   it, on the same schedule, sent by the bench through ``POST /push/batch`` to the
   same rooms with ``exclude`` = the sender's wsId (:mod:`pushgate.bench.chatapi`):
   the same deliveries, so the two CPU costs per delivery compare;
4. **resume**: the API's pushes go on (``--resume-rate`` per client, default
   ``--rate``); after PRE_DROP seconds every client drops its TCP connection at
   once and resumes its session (the resume scenario's machinery,
   :mod:`pushgate.bench.reopen`); once all are back, one push to each room for
   all its members (a fence: see :meth:`ChatRun.fence`), and the wait until each
   one has caught up; the presence events heard meanwhile (the goal is none), the
   resumes, and the losses.

Losses are counted by position in every room's stream, presence events included
(:func:`pushgate.bench.chatreport.account_chat`), at the end of each phase.
"""

import asyncio
import secrets
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from pushgate.bench.chatapi import ApiLog, ApiPusher, Slot
from pushgate.bench.chatreplies import ChatReport, ChatStatus, Published, Subscribed
from pushgate.bench.chatreport import (
    ChatLosses,
    account_chat,
    api_figures,
    expected_joins,
    message_phase_figures,
    publish_figures,
    run_figures,
    subscribe_figures,
)
from pushgate.bench.chatresult import ChatResult
from pushgate.bench.dropreport import resume_figures
from pushgate.bench.meter import Meter
from pushgate.bench.options import MAX_DURATION, BenchError, BenchOptions
from pushgate.bench.replies import CaughtUp, Json, Resumed
from pushgate.bench.report import top
from pushgate.bench.scenarios import chat_room, chat_slot

if TYPE_CHECKING:
    from pushgate.bench.runner import Run

WORKER_MODULE = "pushgate.bench.chatworker"
PRE_DROP = 1.0  # seconds of the API's pushes in the resume phase before the drop
POLL = 0.05
SETTLE = 0.25  # seconds without a presence event once the joins expected were heard


def chat_setup(opts: BenchOptions) -> Json:
    """What every worker needs to know to open its chat clients: the room size, the
    prefixes of this run's rooms and users, and the secret their tokens are signed
    with. Against an external server, which outlives a run, rooms and users get a
    prefix of their own (a room of an earlier run would hold its users' sessions
    for their TTL, and a user still there joins silently)."""
    prefix = f"{secrets.token_hex(3)}-" if opts.external else ""
    if opts.token_secret is None:
        raise BenchError("chat needs the server's --token-secret")
    return {
        "room_size": opts.room_size,
        "connections": opts.connections,
        "room_prefix": prefix,
        "user_prefix": prefix,
        "secret": opts.token_secret,
    }


async def run_chat(run: "Run", ws_ids: Mapping[int, str]) -> None:
    """The four phases of one chat run, on ``run``'s server and workers."""
    await ChatRun(run, ws_ids).run()


class ChatRun:
    """One chat run's phases, sharing the run's server, workers and result."""

    def __init__(self, run: "Run", ws_ids: Mapping[int, str]) -> None:
        self.run_ = run
        self.opts = run.opts
        self.result = cast(ChatResult, run.result)
        self.ws_ids = ws_ids
        setup = run.chat_setup or {}
        self.room_prefix = str(setup.get("room_prefix", ""))
        self.pushed: Counter[str] = Counter()  # API pushes accepted per room, so far
        self.excluded: Counter[int] = Counter()  # accepted API pushes leaving each client out
        self.losses = ChatLosses()  # as counted at the end of the last phase
        self.sizes: Counter[str] = Counter()  # members per room
        self.slots: list[Slot] = []  # the members, in the API pusher's terms

    async def run(self) -> None:
        opts, result = self.opts, self.result
        result.room_size = opts.room_size
        result.duration = opts.push_duration or 0.0
        result.subscribe_rate = opts.subscribe_rate
        result.resume_rate = opts.chat_resume_rate
        result.api_push = opts.api_push
        await self.subscribe()
        if not self.slots:
            raise BenchError("no client could subscribe to its room")
        counts = await self.publish()
        await self.api(counts)
        reports = await self.resume()
        run_figures(result, self.losses, reports)

    # Phases

    async def subscribe(self) -> None:
        run, opts = self.run_, self.opts
        await self.mark("subscribe")
        before = Meter.read(run.server)
        run.progress.phase("subscribing")
        per_worker = -(-self.result.connected // opts.worker_count)
        rate = opts.subscribe_rate / opts.worker_count
        within = (per_worker / rate if rate else 0) + 10 * opts.drain_timeout + 120
        replies = Subscribed.from_each(
            await run.watch(
                run.pool.call_all(
                    "chat_subscribe", within=within, rate=rate, stall=opts.drain_timeout
                ),
                lambda t: f"{t.open:,} open",
            )
        )
        rooms = Counter(chat_room(i, opts.room_size, self.room_prefix) for i in self.ws_ids)
        await self.drain_presence(expected_joins(rooms.values()))
        after = Meter.read(run.server)
        reports = await self.reports()
        subscribe_figures(self.result, replies, before, after, reports)
        rows = [row for report in reports for row in report.rows if row.member]
        self.sizes = Counter(row.room for row in rows)
        self.slots = [
            Slot(
                chat_slot(row.index, opts.connections, opts.room_size),
                row.index,
                row.room,
                self.ws_ids[row.index],
            )
            for row in rows
            if row.index in self.ws_ids
        ]
        self.losses = self.account(reports)
        self.result.subscribe_lost = self.losses.lost

    async def publish(self) -> dict[int, int]:
        """The members publish; returns how many messages the server took from each."""
        run, opts = self.run_, self.opts
        duration = opts.push_duration or 0.0
        await self.mark("publish")
        before = Meter.read(run.server)
        run.progress.phase("publishing")
        replies = Published.from_each(
            await run.watch(
                run.pool.call_all(
                    "chat_publish",
                    within=duration + 10 * opts.drain_timeout + 120,
                    rate=opts.rate,
                    duration=duration,
                    size=opts.size,
                    tag=opts.tag,
                    stall=opts.drain_timeout,
                ),
                lambda t: f"{t.deliveries:,} deliveries, {t.open:,} open",
            )
        )
        ok_by_room: Counter[str] = Counter()
        for reply in replies:
            ok_by_room.update(reply.ok_by_room)
        await run.drain(self.deliveries_owed(ok_by_room))
        after = Meter.read(run.server)
        reports = await self.reports()
        publish_figures(self.result, replies)
        first_ns = min((reply.first_ns for reply in replies if reply.first_ns), default=0)
        self.phase_done("msg", reports, before, after, first_ns)
        return {row.index: row.published_ok for report in reports for row in report.rows}

    async def api(self, counts: Mapping[int, int]) -> None:
        """The same messages through the logic API, as many per client as the
        server took from it, on the same schedule."""
        run, opts = self.run_, self.opts
        assert run.server.api_url is not None
        await self.mark("api")
        pusher = self.pusher(opts.rate, counts)
        log = pusher.log
        before = Meter.read(run.server)
        run.progress.phase("pushing through the API")
        await run.watch(
            pusher.run(),
            lambda t: f"{log.accepted:,} pushes accepted, {t.deliveries:,} deliveries",
        )
        await run.drain(self.deliveries_owed(log.by_room))
        after = Meter.read(run.server)
        self.took(log)
        reports = await self.reports()
        api_figures(self.result, log, before, after)
        self.phase_done("api", reports, before, after, log.first_ns)

    async def resume(self) -> list[ChatReport]:
        """Every client drops and resumes while the API's pushes go on; returns the
        workers' last reports."""
        run, opts, result = self.run_, self.opts, self.result
        await self.mark("resume")
        rate = opts.chat_resume_rate
        pusher = self.pusher(rate, None) if rate > 0 else None
        phase_before = Meter.read(run.server)
        pushing = asyncio.create_task(pusher.run()) if pusher is not None else None
        try:
            run.progress.phase("pushing before the drop")
            await run.watch(asyncio.sleep(PRE_DROP), lambda t: f"{t.deliveries:,} deliveries")
            if pushing is not None and pushing.done():
                pushing.result()  # its exception, if it failed
            before = Meter.read(run.server)
            replies = await self.drop_and_resume()
            seqs: dict[str, int] = {}
            for reply in replies:
                for name, seq in reply.seqs.items():
                    seqs[name] = max(seqs.get(name, 0), seq)
            fence = await self.fence()
            run.progress.phase("catching up")
            caught = CaughtUp.from_each(
                await run.watch(
                    run.pool.call_all(
                        "chat_caught_up", within=MAX_DURATION, seqs=seqs, stall=opts.drain_timeout
                    ),
                    lambda t: f"{t.deliveries:,} deliveries",
                )
            )
            after = Meter.read(run.server)
        finally:
            if pusher is not None and pushing is not None:
                pusher.stop()
                await asyncio.gather(pushing, return_exceptions=True)
        log = pusher.log if pusher is not None else ApiLog()
        fenced = sum(n * self.sizes[room] for room, n in fence.by_room.items())
        await run.drain(self.deliveries_owed(log.by_room) + fenced)
        phase_after = Meter.read(run.server)
        self.took(log)
        self.took(fence)
        reports = await self.reports()
        resume_figures(result, replies, caught, before, after, stall=opts.drain_timeout)
        result.storm_pushes = log.accepted + fence.accepted
        errors = log.errors + fence.errors
        if errors:
            result.errors.append(f"API push errors while resuming: {top(errors)}")
        self.phase_done("storm", reports, phase_before, phase_after, log.first_ns)
        return reports

    # Internals

    async def mark(self, phase: str) -> None:
        await self.run_.pool.call_all("chat_mark", phase=phase)

    async def reports(self) -> list[ChatReport]:
        return ChatReport.from_each(await self.run_.pool.call_all("chat_report", within=120))

    async def drop_and_resume(self) -> list[Resumed]:
        run, opts = self.run_, self.opts
        run.progress.phase("dropping every connection and resuming")
        raw = await run.watch(
            run.pool.call_all(
                "chat_drop_resume",
                within=opts.outage + run.connect_within(self.result.connected),
                concurrency=opts.connect_concurrency,
                timeout=opts.connect_timeout,
                shift=opts.resume_shift,
                outage=opts.outage,
            ),
            lambda t: f"{t.open:,}/{self.result.connected:,} open",
        )
        run.server.check_alive()
        return Resumed.from_each(raw)

    async def fence(self) -> ApiLog:
        """Once every client resumed, one push to each room for all its members: a
        position after every welcome's that each member is sent, so that each one
        reaches its welcomes' seq even when the positions at its end are its own
        messages (or pushes that leave it out), which it is never sent."""
        assert self.run_.server.api_url is not None
        rooms = sorted(self.sizes)
        pusher = ApiPusher(
            self.run_.server.api_url,
            [Slot(0.0, -1 - n, room, "") for n, room in enumerate(rooms)],
            rate=1.0,
            size=self.opts.size,
            tag=self.opts.tag,
            senders=self.opts.senders,
            counts={-1 - n: 1 for n in range(len(rooms))},
            exclude=False,
        )
        return await pusher.run()

    async def drain_presence(self, expected: int) -> None:
        """Until the workers heard ``expected`` presence events and no more came for
        SETTLE seconds (a member may hear a few more: early joins), or none came for
        --drain-timeout seconds."""
        run = self.run_
        run.progress.phase("waiting for the joins")
        seen, since = -1, asyncio.get_running_loop().time()
        while True:
            statuses = ChatStatus.from_each(await run.pool.call_all("chat_status"))
            heard = sum(status.presence for status in statuses)
            now = asyncio.get_running_loop().time()
            if heard != seen:
                seen, since = heard, now
            elif now - since > (SETTLE if heard >= expected else self.opts.drain_timeout):
                return
            run.progress.update(f"{heard:,}/{expected:,} joins")
            await asyncio.sleep(POLL)

    def pusher(self, rate: float, counts: Mapping[int, int] | None) -> ApiPusher:
        opts = self.opts
        assert self.run_.server.api_url is not None
        return ApiPusher(
            self.run_.server.api_url,
            self.slots,
            rate=rate,
            size=opts.size,
            tag=opts.tag,
            senders=opts.senders,
            counts=counts,
            batch=opts.api_push == "batch",
        )

    def deliveries_owed(self, by_room: Mapping[str, int]) -> int:
        """Deliveries of messages (or pushes leaving one member out) to rooms."""
        return sum(n * max(0, self.sizes[room] - 1) for room, n in by_room.items())

    def took(self, log: ApiLog) -> None:
        """The API's pushes the server accepted: positions in the rooms' streams."""
        self.pushed.update(log.by_room)
        self.excluded.update(log.excluded)

    def account(self, reports: list[ChatReport]) -> ChatLosses:
        rows = [row for report in reports for row in report.rows]
        return account_chat(rows, self.excluded, self.pushed)

    def phase_done(
        self, prefix: str, reports: list[ChatReport], before: Meter, after: Meter, first_ns: int
    ) -> None:
        """Account a message phase: its figures, and its losses since the last."""
        losses = self.account(reports)
        message_phase_figures(
            self.result, prefix, reports, before, after, first_ns, losses, self.losses
        )
        self.losses = losses
