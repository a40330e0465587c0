"""A bench worker process: holds a share of the client connections and counts what
they receive. Run as ``python -m pushgate.bench.worker``; the coordinator
(:mod:`pushgate.bench.workers`) drives it.

Protocol: one JSON object per line on stdin, each ``{"id": N, "cmd": NAME, ...}``;
one reply per command on stdout, ``{"id": N, ...}`` or ``{"id": N, "error": TEXT}``.
Commands run concurrently (``status`` answers while ``connect`` is still running).
End of stdin means the coordinator is gone: the worker drops every connection and
exits, so no worker outlives a bench that was killed.

Commands: ``hello``, ``connect``, ``status``, ``mark``, ``report``, ``churn``,
``churn_stop``, ``drop_resume``, ``caught_up``, ``quit``; see the ``_cmd_*`` methods
for their fields.
"""

import asyncio
import contextlib
import gc
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from pushgate.bench.histogram import Histogram
from pushgate.bench.procstat import own_cpu_seconds, raise_fd_limit
from pushgate.bench.resumeclient import (
    ResumeClient,
    fresh_path,
    resume_path,
    stream_key,
    stream_name,
)
from pushgate.bench.wsclient import CLOSE_ABNORMAL, BenchClient, Counters, HandshakeError

# Linux's IP_BIND_ADDRESS_NO_PORT (24): with a source address bound, let connect()
# pick the port per destination, instead of bind() reserving one for every address.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SLOW_RCVBUF = 4096  # a slow client's receive buffer: it fills after a few pushes
STDIN_LIMIT = 64 * 1024 * 1024
MAX_ERROR_KINDS = 20
GIVE_UP_AFTER = 100  # failed connections, when more failed than opened
CATCH_UP_POLL = 0.05  # seconds between looks at the clients still catching up (the
# caught-up time comes from the arrival times, not from these looks)
RESUME_ATTEMPTS = 3  # a resume the server closes with 1013 (try again later) is retried
CLOSE_TRY_AGAIN_LATER = 1013
MAX_REASONS = 5
MAX_SAMPLES = 5

Json = dict[str, Any]


class Target:
    """One gateway URL, resolved: where a client connects and what it asks for."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first
        family, _, _, _, address = infos[0]
        self.family = family
        self.address = address
        self.path = path


async def open_client(
    target: Target,
    source: str | None,
    client: BenchClient,
    within: float,
    *,
    slow: bool = False,
) -> None:
    """Connect ``client`` from ``source`` (an address to bind, or None) and wait until
    it is open, at most ``within`` seconds. Raises OSError, HandshakeError or TimeoutError."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source is not None and target.family == socket.AF_INET:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        if slow:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
        async with asyncio.timeout(within):
            await loop.sock_connect(sock, target.address)
            await loop.create_connection(lambda: client, sock=sock)
            await client.opened
    except TimeoutError:
        client.abort()
        sock.close()
        if client.upgraded and client.need_welcome:
            raise HandshakeError(
                "no welcome frame after the 101: this scenario needs the wsId of a "
                '{"type":0,"data":{"wsId":...}} frame'
            ) from None
        raise
    except BaseException:
        client.abort()
        sock.close()
        raise


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"[:200]


class Commands:
    """A process driven by JSON lines: each command is answered by the method
    ``_cmd_<name>`` (an ``async`` method taking the message, returning the reply)."""

    async def handle(self, msg: Json, reply: Callable[[Json], None]) -> None:
        method: Callable[[Json], Coroutine[Any, Any, Json]] | None = getattr(
            self, f"_cmd_{msg.get('cmd')}", None
        )
        try:
            if method is None:
                raise ValueError(f"unknown command {msg.get('cmd')!r}")
            result = await method(msg)
        except Exception as exc:
            reply({"id": msg.get("id"), "error": describe(exc)})
            return
        reply({"id": msg.get("id"), **result})

    def drop_all(self) -> None:
        """The coordinator is gone or said quit: drop every connection at once."""


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
        self.churn_task: asyncio.Task[Json] | None = None
        self.churn_stop = asyncio.Event()
        self.ping_task: asyncio.Task[None] | None = None
        self.resumable = False  # the clients are ResumeClients (the resume scenario)
        self.resume_cpu_mark = 0.0

    # Commands

    async def _cmd_hello(self, msg: Json) -> Json:
        return {"pid": os.getpid(), "fd_limit": self.fd_limit}

    async def _cmd_connect(self, msg: Json) -> Json:
        """Open ``count`` clients numbered from ``first``. Fields: ``targets``
        ([[host, port, path]]), ``sources`` (addresses to bind), ``concurrency``,
        ``need_welcome``, ``timeout`` (per connection), ``slow`` (indexes of clients
        that stop reading for ``slow_pause`` seconds once pushes start), ``ping``
        (seconds between application PINGs, 0 for none), ``resumable`` (the clients
        keep their session and count per stream, for ``drop_resume``)."""
        self.targets = [Target(h, int(p), path) for h, p, path in msg["targets"]]
        self.resumable = bool(msg.get("resumable", False))
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

        async def connect_some() -> None:
            for index in indexes:
                failed = sum(errors.values())
                if failed >= GIVE_UP_AFTER and failed > len(opened):
                    return  # the server refuses us: do not wait out every timeout
                client = self._new_client(index, need_welcome=need_welcome)
                t0 = time.monotonic()
                try:
                    await open_client(
                        self._target(index),
                        self._source(index),
                        client,
                        timeout,
                        slow=index in self.slow,
                    )
                except (OSError, HandshakeError, TimeoutError) as exc:
                    errors[describe(exc)] += 1
                    continue
                hist.add(int((time.monotonic() - t0) * 1e6))
                opened.append(client)
                self.clients.append(client)

        concurrency = max(1, min(int(msg.get("concurrency", 100)), count))
        await asyncio.gather(*(connect_some() for _ in range(concurrency)))
        skipped = count - len(opened) - sum(errors.values())
        if skipped:
            errors["not tried: too many failures before"] += skipped
        ping = float(msg.get("ping", 0))
        if ping > 0 and self.ping_task is None:
            self.ping_task = asyncio.create_task(self._ping_forever(ping))
        return {
            "indexes": [c.index for c in opened],
            "failed": sum(errors.values()),
            "errors": dict(errors.most_common(MAX_ERROR_KINDS)),
            "elapsed_s": time.monotonic() - started,
            "connect_us": hist.to_pairs(),
            "ws_ids": [[c.index, c.ws_id] for c in opened if c.ws_id],
            "sessions": sum(1 for c in opened if isinstance(c, ResumeClient) and c.session),
        }

    async def _cmd_status(self, msg: Json) -> Json:
        return {
            "open": self.counters.open,
            "deliveries": self.counters.deliveries,
            "last_ns": self.counters.last_ns,
        }

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

    async def _cmd_report(self, msg: Json) -> Json:
        """Everything measured since ``mark``, and each client's own counts:
        ``clients`` is ``[[index, received, out_of_order, close_code], ...]``."""
        counters = self.counters
        return {
            "cpu_s": own_cpu_seconds() - self.cpu_mark,
            "deliveries": counters.deliveries,
            "last_ns": counters.last_ns,
            "hist": counters.hist.to_pairs(),
            "clients": [[c.index, c.received, c.out_of_order, c.close_code] for c in self.clients],
            # The resume scenario: [[index, {stream: Tally.to_list()}, [streams not
            # recovered], gap notices], ...]
            "streams": [
                [
                    c.index,
                    {stream_name(key): tally.to_list() for key, tally in c.streams.items()},
                    sorted(c.unrecovered),
                    c.gap_notices,
                ]
                for c in self.clients
                if isinstance(c, ResumeClient)
            ],
            "duplicated": self._duplicated_samples(),
            "unpositioned": sum(
                c.unpositioned for c in self.clients if isinstance(c, ResumeClient)
            ),
        }

    def _duplicated_samples(self) -> list[Json]:
        """A few clients that received a push twice: which, and where they resumed from."""
        samples: list[Json] = []
        for client in self.clients:
            if not isinstance(client, ResumeClient):
                continue
            streams = (client.welcome or {}).get("streams") or {}
            for key, tally in client.streams.items():
                if tally.dup_seqs and len(samples) < MAX_SAMPLES:
                    name = stream_name(key)
                    welcome = streams.get(name) if isinstance(streams, dict) else None
                    samples.append(
                        {
                            "client": client.index,
                            "stream": name,
                            "seqs": tally.dup_seqs,
                            "since": client.since.get(name),
                            "welcome": welcome,
                            "gateway": client.gateway,
                        }
                    )
        return samples

    async def _cmd_churn(self, msg: Json) -> Json:
        """Start opening ``rate`` clients per second, numbered from ``first``, each
        closed after ``lifetime`` seconds; they are not counted as measured."""
        if self.churn_task is not None:
            raise RuntimeError("churn is already running")
        self.targets = [Target(h, int(p), path) for h, p, path in msg["targets"]]
        self.sources = list(msg.get("sources") or [None])
        self.churn_stop.clear()
        self.churn_task = asyncio.create_task(
            self._churn(
                float(msg["rate"]),
                float(msg["lifetime"]),
                int(msg["first"]),
                float(msg["timeout"]),
                int(msg.get("max_open", 10_000)),
            )
        )
        return {}

    async def _cmd_churn_stop(self, msg: Json) -> Json:
        if self.churn_task is None:
            return {"opened": 0, "failed": 0, "closed": 0, "errors": {}, "connect_us": []}
        self.churn_stop.set()
        result = await self.churn_task
        self.churn_task = None
        return result

    async def _cmd_drop_resume(self, msg: Json) -> Json:
        """Drop every client's TCP connection at once (aborted, no close frame), then
        resume each one's session on a new connection (docs/recovery.md), ``concurrency``
        handshakes in flight, each within ``timeout`` seconds, on the target ``shift``
        places after the client's own (0: the same gateway), ``outage`` seconds after
        the drop (0: at once). From the drop until
        ``caught_up``, the arrival of every push is recorded per stream and seq.
        With ``fresh``, each client connects afresh instead (a new session, in the
        rooms ``token`` names, if given): the baseline a resume storm is compared
        with (``reconnected``)."""
        timeout, shift = float(msg["timeout"]), int(msg.get("shift", 0))
        fresh = bool(msg.get("fresh", False))
        token = msg.get("token")
        counters = self.counters
        olds = [(n, c) for n, c in enumerate(self.clients) if isinstance(c, ResumeClient)]
        counters.arrivals = {}
        self.resume_cpu_mark = own_cpu_seconds()
        drop_ns = time.time_ns()
        for _, client in olds:
            client.drop()
        outage = float(msg.get("outage", 0))
        if outage > 0:
            await asyncio.sleep(outage)
        errors: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        hist = Histogram()
        stats = {
            "resumed": 0,
            "new_session": 0,
            "not_recovered": 0,
            "replayed": 0,
            "retried": 0,
            "reconnected": 0,
        }
        seqs: dict[str, int] = {}
        welcome_ns = 0
        todo = iter(olds)

        async def resume_some() -> None:
            nonlocal welcome_ns
            for n, old in todo:
                failed = sum(errors.values()) + stats["new_session"]
                if failed >= GIVE_UP_AFTER and failed > stats["resumed"] + stats["reconnected"]:
                    return  # the server refuses us: do not wait out every timeout
                if not fresh and not (old.session and old.ws_id):
                    errors["no session to resume (the welcome had none)"] += 1
                    continue
                target = self._target(old.index + shift)
                t0 = time.monotonic()
                for attempt in range(1, RESUME_ATTEMPTS + 1):
                    client = ResumeClient(
                        old.index,
                        target.host_header,
                        fresh_path(target.path, token) if fresh else resume_path(target.path),
                        counters,
                        previous=None if fresh else old,
                    )
                    try:
                        await open_client(target, self._source(old.index), client, timeout)
                        break
                    except (OSError, HandshakeError, TimeoutError) as exc:
                        code = client.close_code
                        if code == CLOSE_TRY_AGAIN_LATER and attempt < RESUME_ATTEMPTS:
                            stats["retried"] += 1  # the server asks for it (docs/recovery.md)
                            continue
                        if code is not None and code != CLOSE_ABNORMAL:
                            errors[f"the server closed with {code} before the welcome"] += 1
                        else:
                            errors[describe(exc)] += 1
                        break
                if not client.welcome:
                    continue
                hist.add(int((time.monotonic() - t0) * 1e6))
                self.clients[n] = client
                if fresh:
                    stats["reconnected"] += 1
                    welcome_ns = max(welcome_ns, client.welcome_ns)
                    continue
                welcome = client.welcome or {}
                if not client.welcome_resumed or client.ws_id != old.ws_id:
                    stats["new_session"] += 1
                    reasons[str(welcome.get("reason") or "no reason given")[:200]] += 1
                    continue
                stats["resumed"] += 1
                welcome_ns = max(welcome_ns, client.welcome_ns)
                if welcome.get("recovered") is not True:
                    stats["not_recovered"] += 1
                streams = welcome.get("streams")
                for name, state in (streams if isinstance(streams, dict) else {}).items():
                    if not isinstance(state, dict) or not isinstance(state.get("seq"), int):
                        continue
                    seqs[name] = max(seqs.get(name, 0), state["seq"])
                    since = client.since.get(name)
                    if since and since[0] == state.get("epoch") and isinstance(since[1], int):
                        stats["replayed"] += max(0, state["seq"] - since[1])

        concurrency = max(1, min(int(msg.get("concurrency", 100)), len(olds) or 1))
        await asyncio.gather(*(resume_some() for _ in range(concurrency)))
        tried = stats["resumed"] + stats["new_session"] + stats["reconnected"]
        tried += sum(errors.values())
        if tried < len(olds):
            errors["not tried: too many failures before"] += len(olds) - tried
        return {
            "drop_ns": drop_ns,
            "welcome_ns": welcome_ns,
            **stats,
            "failed": sum(errors.values()),
            "errors": dict(errors.most_common(MAX_ERROR_KINDS)),
            "reasons": dict(reasons.most_common(MAX_REASONS)),
            "seqs": seqs,
            "resume_us": hist.to_pairs(),
            "cpu_s": own_cpu_seconds() - self.resume_cpu_mark,
        }

    async def _cmd_caught_up(self, msg: Json) -> Json:
        """Wait until every resumed client has received, on each stream of ``seqs``
        ({stream: seq}), every push up to that seq, or until none got there for
        ``stall`` seconds. Returns when the last one got there (``caught_up_ns``, wall
        clock: its welcome, or the arrival of the last push it needed), how many did
        not, and this worker's CPU since the drop; arrivals are no longer recorded."""
        targets = [(stream_key(name), name, int(seq)) for name, seq in msg["seqs"].items()]
        stall = float(msg["stall"])
        resumed = [c for c in self.clients if isinstance(c, ResumeClient) and c.welcome_resumed]
        pending = resumed
        last_change = time.monotonic()
        while pending:
            still = [c for c in pending if not c.caught_up(targets)]
            now = time.monotonic()
            if len(still) != len(pending):
                last_change = now
            pending = still
            if not pending or now - last_change > stall:
                break
            await asyncio.sleep(CATCH_UP_POLL)
        arrivals = self.counters.arrivals or {}
        self.counters.arrivals = None
        caught_ns = max((c.welcome_ns for c in resumed), default=0)
        for key, _, seq in targets:
            caught_ns = max(caught_ns, arrivals.get(key, {}).get(seq, 0))
        return {
            "caught_up_ns": caught_ns,
            "caught_up": len(resumed) - len(pending),
            "not_caught_up": len(pending),
            "cpu_s": own_cpu_seconds() - self.resume_cpu_mark,
        }

    async def _cmd_quit(self, msg: Json) -> Json:
        self.drop_all()
        return {}

    # Internals

    def _new_client(self, index: int, *, need_welcome: bool, measured: bool = True) -> BenchClient:
        target = self._target(index)
        if self.resumable and measured:
            return ResumeClient(index, target.host_header, target.path, self.counters)
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

    async def _churn(
        self, rate: float, lifetime: float, first: int, within: float, max_open: int
    ) -> Json:
        errors: Counter[str] = Counter()
        hist = Histogram()
        stats = {"opened": 0, "closed": 0}
        live: set[asyncio.Task[None]] = set()

        async def one(index: int) -> None:
            client = self._new_client(index, need_welcome=False, measured=False)
            t0 = time.monotonic()
            try:
                await open_client(self._target(index), self._source(index), client, within)
            except (OSError, HandshakeError, TimeoutError) as exc:
                errors[describe(exc)] += 1
                return
            hist.add(int((time.monotonic() - t0) * 1e6))
            stats["opened"] += 1
            await asyncio.sleep(lifetime)
            client.close()
            try:
                async with asyncio.timeout(within):
                    await client.closed
                stats["closed"] += 1
            except TimeoutError:
                errors["close timed out"] += 1
                client.abort()

        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not self.churn_stop.is_set():
            # Open-loop pacing: the n-th connection is due at start + n / rate.
            delay = start + n / rate - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.churn_stop.wait()
                continue
            if len(live) < max_open:
                task = asyncio.create_task(one(first + n))
                live.add(task)
                task.add_done_callback(live.discard)
            else:
                errors["skipped: too many churn connections open"] += 1
            n += 1
        # Let the last ones finish their life and close, within bounds.
        if live:
            _, pending = await asyncio.wait(live, timeout=lifetime + 2 * within)
            for task in pending:
                task.cancel()
        return {
            "opened": stats["opened"],
            "closed": stats["closed"],
            "failed": sum(v for k, v in errors.items() if not k.startswith("skipped")),
            "errors": dict(errors.most_common(MAX_ERROR_KINDS)),
            "connect_us": hist.to_pairs(),
        }

    def drop_all(self) -> None:
        for client in self.clients:
            client.abort()
        if self.ping_task is not None:
            self.ping_task.cancel()


def _resume(client: BenchClient) -> None:
    if client.transport is not None and not client.transport.is_closing():
        client.transport.resume_reading()


def _write_line(obj: Json) -> None:
    sys.stdout.buffer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    sys.stdout.buffer.flush()


async def serve_stdin(make: Callable[[], Commands] = Worker) -> None:
    """Answer commands from stdin until it ends or ``quit`` arrives."""
    worker = make()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STDIN_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            raw = await reader.readline()
            if not raw:
                break
            msg = json.loads(raw)
            task = asyncio.create_task(worker.handle(msg, _write_line))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if msg.get("cmd") == "quit":
                await task
                break
    finally:
        worker.drop_all()
        for task in tasks:
            task.cancel()


def main(make: Callable[[], Commands] = Worker) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve_stdin(make))
    else:
        uvloop.run(serve_stdin(make))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        main()
