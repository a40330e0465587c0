"""A bench worker process: holds a share of the client connections and counts what
they receive. Run as ``python -m pushgate.bench.worker``; the coordinator
(:mod:`pushgate.bench.workers`) drives it over the workers' protocol
(:mod:`pushgate.bench.commands`), and when its stdin ends it drops every connection
and exits.

Commands: ``hello``, ``connect``, ``status``, ``mark``, ``report``, ``churn``,
``churn_stop``, ``drop_resume``, ``drop_reconnect``, ``caught_up``, ``quit``; see the
``_cmd_*`` methods for their fields, and :mod:`pushgate.bench.replies` for what
each answers.
"""

import asyncio
import contextlib
import gc
import os
import time
from collections import Counter
from dataclasses import replace

from pushgate.bench.churn import churn
from pushgate.bench.clientkinds import CLIENTS, PUSHER, PUSHGATE, SSE
from pushgate.bench.commands import Commands, Json, main
from pushgate.bench.histogram import Histogram
from pushgate.bench.procstat import own_cpu_seconds, raise_fd_limit
from pushgate.bench.pusherclient import PusherClient
from pushgate.bench.reopen import Drop, Reconnects, Resumes, caught_up
from pushgate.bench.replies import (
    CaughtUp,
    ChurnStopped,
    ClientCount,
    Connected,
    Hello,
    Reconnected,
    Report,
    Resumed,
    Status,
)
from pushgate.bench.resumeclient import ResumeClient
from pushgate.bench.sseclient import SseClient
from pushgate.bench.targets import MAX_ERROR_KINDS, Target, describe, gave_up, open_client
from pushgate.bench.wsclient import BenchClient, Counters, HandshakeDropped, HandshakeError

MAX_SAMPLES = 5  # clients that received a push twice, shown in the report


class Worker(Commands):
    """The state of one worker process."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.clients: list[BenchClient] = []
        self.cpu_mark = 0.0
        self.fd_limit = raise_fd_limit()
        self.targets: list[Target] = []
        self.sources: list[str | None] = [None]
        self.slow: set[int] = set()
        self.slow_pause = 1.0
        self.churn_task: asyncio.Task[ChurnStopped] | None = None
        self.churn_stop = asyncio.Event()
        self.churn_cpu_mark = 0.0
        self.ping_task: asyncio.Task[None] | None = None
        self.resumable = False  # the clients are ResumeClients (resume, reconnect)
        self.client = PUSHGATE  # the protocol they speak (pushgate.bench.clientkinds)
        self.channel: str | None = None  # a Pusher client's channel, if it subscribes
        self.drop: Drop | None = None  # the last drop_resume or drop_reconnect

    # Commands

    async def _cmd_hello(self, msg: Json) -> Hello:
        return Hello(os.getpid(), self.fd_limit)

    async def _cmd_connect(self, msg: Json) -> Connected:
        """Open ``count`` clients numbered from ``first``. Fields: ``targets``
        ([[host, port, path]]), ``sources`` (addresses to bind), ``concurrency``,
        ``need_welcome``, ``timeout`` (per connection), ``slow`` (indexes of clients
        that stop reading for ``slow_pause`` seconds once pushes start), ``ping``
        (seconds between application PINGs, 0 for none), ``resumable`` (the clients
        keep their session and count per stream, for ``drop_resume`` and
        ``drop_reconnect``), ``client`` (their protocol: pushgate, pusher, sse) and
        ``channel`` (the one a Pusher client subscribes to, or none)."""
        self.targets = [Target(h, int(p), path) for h, p, path in msg["targets"]]
        self.resumable = bool(msg.get("resumable", False))
        self.client = str(msg.get("client") or PUSHGATE)
        if self.client not in CLIENTS:
            raise ValueError(f"unknown client {self.client!r}")
        self.channel = msg.get("channel")
        self.sources = list(msg.get("sources") or [None])
        self.slow = set(msg.get("slow", []))
        self.slow_pause = float(msg.get("slow_pause", 1.0))
        first, count = int(msg["first"]), int(msg["count"])
        need_welcome, timeout = bool(msg["need_welcome"]), float(msg["timeout"])
        errors: Counter[str] = Counter()
        hist = Histogram()
        opened: list[BenchClient] = []
        indexes = iter(range(first, first + count))
        started = time.monotonic()

        retries = int(msg.get("retries", 0))
        retried = 0

        async def open_one(index: int) -> BenchClient | None:
            """Client ``index``, open; None when it failed (the reason is counted).
            A handshake the server dropped is tried again, ``retries`` times at most."""
            nonlocal retried
            for attempt in range(retries + 1):
                client = self._new_client(index, need_welcome=need_welcome)
                try:
                    await open_client(
                        self._target(index),
                        self._source(index),
                        client,
                        timeout,
                        slow=index in self.slow,
                    )
                    return client
                except HandshakeDropped as exc:
                    if attempt < retries:
                        retried += 1
                        continue
                    errors[describe(exc)] += 1
                except (OSError, HandshakeError, TimeoutError) as exc:
                    errors[describe(exc)] += 1
                return None
            return None  # pragma: no cover - the last attempt returns above

        async def connect_some() -> None:
            for index in indexes:
                if gave_up(sum(errors.values()), len(opened)):
                    return
                t0 = time.monotonic()
                client = await open_one(index)
                if client is None:
                    continue
                hist.add(int((time.monotonic() - t0) * 1e6))
                opened.append(client)
                self.clients.append(client)

        # The PINGs start with the first clients: the seed's Go server closes a
        # connection that sent none for 10 s, and connecting 10,000 can take longer.
        ping = float(msg.get("ping", 0))
        if ping > 0 and self.ping_task is None:
            self.ping_task = asyncio.create_task(self._ping_forever(ping))
        concurrency = max(1, min(int(msg.get("concurrency", 100)), count))
        await asyncio.gather(*(connect_some() for _ in range(concurrency)))
        skipped = count - len(opened) - sum(errors.values())
        if skipped:
            errors["not tried: too many failures before"] += skipped
        return Connected(
            indexes=[c.index for c in opened],
            failed=sum(errors.values()),
            errors=dict(errors.most_common(MAX_ERROR_KINDS)),
            elapsed_s=time.monotonic() - started,
            connect_us=hist.to_pairs(),
            ws_ids={c.index: c.ws_id for c in opened if c.ws_id},
            sessions=sum(1 for c in opened if isinstance(c, ResumeClient) and c.session),
            retries=retried,
        )

    async def _cmd_status(self, msg: Json) -> Status:
        counters = self.counters
        return Status(counters.open, counters.deliveries, counters.last_ns)

    async def _cmd_mark(self, msg: Json) -> Json:
        """Start of the measured phase: zero the counters and the CPU meter, and make
        the slow clients stop reading."""
        self.counters.deliveries = 0
        self.counters.last_ns = 0
        self.counters.hist = Histogram()
        loop = asyncio.get_running_loop()
        for client in self.clients:
            if client.index in self.slow and client.transport is not None:
                client.transport.pause_reading()
                loop.call_later(self.slow_pause, _resume, client)
        # The clients set up so far live until the end: out of the way of this
        # worker's own full garbage collections, which would otherwise stop its loop
        # for tens of milliseconds at 10,000 clients and count as delivery latency.
        gc.collect()
        gc.freeze()
        self.cpu_mark = own_cpu_seconds()
        return {}

    async def _cmd_report(self, msg: Json) -> Report:
        """Everything measured since ``mark``, and each client's own counts (per
        stream too, for the clients that count by position)."""
        counters = self.counters
        resumable = [c for c in self.clients if isinstance(c, ResumeClient)]
        return Report(
            cpu_s=own_cpu_seconds() - self.cpu_mark,
            deliveries=counters.deliveries,
            last_ns=counters.last_ns,
            hist=counters.hist.to_pairs(),
            clients=[
                ClientCount(c.index, c.received, c.out_of_order, c.close_code) for c in self.clients
            ],
            streams=[c.client_streams() for c in resumable],
            duplicated=[sample for c in resumable for sample in c.duplicated()][:MAX_SAMPLES],
            unpositioned=sum(c.unpositioned for c in resumable),
        )

    async def _cmd_churn(self, msg: Json) -> Json:
        """Start opening ``rate`` clients per second, numbered from ``first``, each
        closed after ``lifetime`` seconds; they are not counted as measured. Fields:
        ``targets``, ``sources``, ``client`` (as for ``connect``), ``rate``,
        ``lifetime``, ``first``, ``timeout`` (per connect and per close)."""
        if self.churn_task is not None:
            raise RuntimeError("churn is already running")
        self.targets = [Target(h, int(p), path) for h, p, path in msg["targets"]]
        self.sources = list(msg.get("sources") or [None])
        # A worker of its own churns (no connect before): it learns the protocol here.
        self.client = str(msg.get("client") or self.client)
        if self.client not in CLIENTS:
            raise ValueError(f"unknown client {self.client!r}")
        self.churn_stop.clear()
        self.churn_cpu_mark = own_cpu_seconds()
        self.churn_task = asyncio.create_task(
            churn(
                lambda index: self._new_client(index, need_welcome=False, measured=False),
                self._target,
                self._source,
                self.churn_stop,
                float(msg["rate"]),
                float(msg["lifetime"]),
                int(msg["first"]),
                float(msg["timeout"]),
                int(msg.get("max_open", 10_000)),
            )
        )
        return {}

    async def _cmd_churn_stop(self, msg: Json) -> ChurnStopped:
        if self.churn_task is None:
            return ChurnStopped(opened=0, closed=0, failed=0, errors={}, connect_us=[], cpu_s=0.0)
        self.churn_stop.set()
        result = await self.churn_task
        self.churn_task = None
        return replace(result, cpu_s=own_cpu_seconds() - self.churn_cpu_mark)

    async def _cmd_drop_resume(self, msg: Json) -> Resumed:
        """Drop every client's TCP connection at once, then resume each one's session
        on a new connection (:class:`pushgate.bench.reopen.Resumes`): ``concurrency``
        handshakes in flight, each within ``timeout`` seconds, on the target ``shift``
        places after the client's own, ``outage`` seconds after the drop. From the
        drop until ``caught_up``, the arrival of every push is recorded."""
        return await Resumes(self._new_drop(msg)).run(float(msg.get("outage", 0)))

    async def _cmd_drop_reconnect(self, msg: Json) -> Reconnected:
        """The same drop, then each client connects afresh instead (a new session, in
        the rooms ``token`` names, if given): the baseline a resume storm is
        compared with (:class:`pushgate.bench.reopen.Reconnects`)."""
        reconnects = Reconnects(self._new_drop(msg), msg.get("token"))
        return await reconnects.run(float(msg.get("outage", 0)))

    async def _cmd_caught_up(self, msg: Json) -> CaughtUp:
        """Wait until every resumed client has received, on each stream of ``seqs``
        ({stream: seq}), every push up to that seq, or until none got there for
        ``stall`` seconds (:func:`pushgate.bench.reopen.caught_up`); with this
        worker's CPU since the drop."""
        if self.drop is None:
            raise RuntimeError("caught_up comes after drop_resume")
        seqs, stall = msg["seqs"], float(msg["stall"])
        caught_ns, caught, not_caught = await caught_up(self.clients, self.counters, seqs, stall)
        cpu_s = own_cpu_seconds() - self.drop.cpu_mark
        return CaughtUp(caught_ns, caught, not_caught, cpu_s)

    async def _cmd_quit(self, msg: Json) -> Json:
        self.drop_all()
        return {}

    # Internals

    def _new_client(self, index: int, *, need_welcome: bool, measured: bool = True) -> BenchClient:
        target = self._target(index)
        if self.resumable and measured:
            return ResumeClient(index, target.host_header, target.path, self.counters)
        if self.client == PUSHER:
            return PusherClient(
                index,
                target.host_header,
                target.path,
                self.counters,
                channel=self.channel,
                measured=measured,
            )
        if self.client == SSE:
            return SseClient(
                index, target.host_header, target.path, self.counters, measured=measured
            )
        return BenchClient(
            index,
            target.host_header,
            target.path,
            self.counters,
            need_welcome=need_welcome,
            measured=measured,
        )

    def _target(self, index: int) -> Target:
        return self.targets[index % len(self.targets)]

    def _source(self, index: int) -> str | None:
        return self.sources[index % len(self.sources)]

    async def _ping_forever(self, interval: float) -> None:
        """Send each client the seed's application PING every ``interval`` seconds,
        spread evenly: each one-second tick pings one slice of the clients."""
        slices = max(1, round(interval))
        tick = 0
        while True:
            await asyncio.sleep(interval / slices)
            for client in self.clients[tick % slices :: slices]:
                client.send_ping_message()
            tick += 1

    def _new_drop(self, msg: Json) -> Drop:
        self.drop = Drop(
            self.clients,
            self.counters,
            self._target,
            self._source,
            timeout=float(msg["timeout"]),
            shift=int(msg.get("shift", 0)),
            concurrency=int(msg.get("concurrency", 100)),
        )
        return self.drop

    def drop_all(self) -> None:
        for client in self.clients:
            client.abort()
        if self.ping_task is not None:
            self.ping_task.cancel()


def _resume(client: BenchClient) -> None:
    if client.transport is not None and not client.transport.is_closing():
        client.transport.resume_reading()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        main(Worker)
