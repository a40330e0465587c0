"""``--workers N``: several gateway processes on one WebSocket port, supervised.

One Python process runs one event loop on one core. ``pushgate serve --workers N``
(and ``pushgate gateway --workers N``) starts N ``pushgate gateway`` children that
listen on the same port with SO_REUSEPORT, so the kernel spreads new connections over
them; ``serve`` adds one ``pushgate logic`` child for the HTTP API. The children are
the cluster of docs/cluster.md: they share ``--broker``, or, when none is given, a
private ``redis-server`` started here (on a unix socket in a private directory, with
no persistence, stopped with the supervisor).

The supervisor holds no connection itself. It passes each child's log lines through
(prefixed with the child's name), prints one ready line once every child is ready,
restarts a child that dies (its clients resume on the others, as their sessions
allow: the sessions are in the broker), and on SIGTERM or SIGINT passes the signal
on, waits for every child to drain and exit, stops the private Redis and exits 0.

A port given as 0 is picked here, once, and held (bound with SO_REUSEPORT but never
listening, so that it gets no connection) until the end: every child and every
restart listens on the same one.
"""

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from pushgate import __version__
from pushgate.config import OPTIONS, Config
from pushgate.errors import StartupError
from pushgate.logformat import with_worker
from pushgate.processes import dies_with_parent
from pushgate.workermetrics import WorkerMetrics

log = logging.getLogger("pushgate.supervisor")

READY = re.compile(r" ready: ")
API_PORT = re.compile(r"logic API http://[^ ]*:(\d+)")
NODE = re.compile(r"node ([\w-]+),")
CAPACITY = re.compile(r"accepting up to (\d+) WebSocket connections")
METRICS_URL = re.compile(r"metrics (http://[^ ,]+/metrics)")
START_TIMEOUT = 30.0  # for a child or the private Redis to say it is ready
RESTART_BACKOFF = (1.0, 30.0)  # first delay, and the most, between restarts of a child
STABLE_AFTER = 10.0  # a child up this long resets its restart delay
KILL_GRACE = 10.0  # past drain and shutdown timeouts, then SIGKILL


@dataclass
class Child:
    """One supervised process: its name, its command, and the running process."""

    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[str] | None = None
    restarts: int = 0
    backoff: float = RESTART_BACKOFF[0]
    output: asyncio.Task[None] | None = None
    started_at: float = 0.0
    capacity: int = 0  # the WebSocket connections it accepts at most, once it said
    metrics_url: str | None = None  # where it serves /metrics, while it is up


# Options a child does not get on its command line: --workers is the supervisor's,
# and secrets go by the environment (secret_env), not where `ps` shows them.
NOT_FOR_CHILDREN = ("--workers", *(option.flag for option in OPTIONS if option.secret))


# Options that take a value (the next argument, unless given as --flag=value).
TAKES_VALUE = ("--config", *(option.flag for option in OPTIONS if not option.flag_only))


def child_argv(argv: Sequence[str], role: str, extra: Sequence[str]) -> list[str]:
    """The command of one child: ``argv`` (this process's options) without the
    options of NOT_FOR_CHILDREN and those ``role`` does not read (a gateway refuses
    --api-port: ``serve --workers 2 --api-port 9000`` gives it to the logic child
    only), and ``extra`` appended (the last of a repeated option wins)."""
    dropped = {*NOT_FOR_CHILDREN, *(o.flag for o in OPTIONS if role not in o.roles)}
    kept: list[str] = []
    skip = False
    for arg in argv:
        flag, equals, _ = arg.partition("=")
        if skip:
            skip = False
        elif flag in dropped:
            skip = not equals and flag in TAKES_VALUE
        else:
            kept.append(arg)
    return [sys.executable, "-m", "pushgate", role, *kept, *extra]


def secret_env(config: Config) -> dict[str, str]:
    """The secrets of ``config`` as the environment variables a child reads them from."""
    return {
        option.env: str(getattr(config, option.name))
        for option in OPTIONS
        if option.secret and getattr(config, option.name)
    }


class Supervisor:
    """Runs the children of ``pushgate <role> --workers N`` until a signal."""

    def __init__(self, config: Config, role: str, argv: Sequence[str]) -> None:
        self.config = config
        self.role = role
        self.argv = list(argv)
        self.children: list[Child] = []
        self.stopping = False
        self._held_port: socket.socket | None = None
        self._redis: asyncio.subprocess.Process | None = None
        self._redis_dir = ""
        self._background: set[asyncio.Task[None]] = set()
        self._capacity_reported = False
        self._metrics: WorkerMetrics | None = None

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig, stop)
        startup = asyncio.create_task(self._start_all())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not startup.done():  # a signal came first: stop what was started
                startup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await startup
                await self._stop_all()
                return
            ws_port, broker, lines = startup.result()
        except BaseException:
            stopped.cancel()
            await self._stop_all()
            raise
        self._say_ready(ws_port, broker, lines)
        await stop.wait()
        log.info("shutting down: every worker drains, then stops")
        await self._stop_all()
        log.info("stopped")

    async def _start_all(self) -> tuple[int, str, list[str]]:
        """Start the private Redis if needed and every child; wait until all are
        ready; return the WebSocket port, the broker URL and the ready lines."""
        config = self.config
        broker = config.broker if config.clustered else await self._start_redis()
        ws_port = self._hold_port(config.ws_host, config.ws_port)
        common = ["--broker", broker]
        gateway_extra = [*common, "--ws-port", str(ws_port), "--reuse-port"]
        metrics = config.metrics_endpoint
        for index in range(1, config.worker_count + 1):
            extra = list(gateway_extra)
            if metrics is not None:  # each worker on its own port: PORT+1, PORT+2, ...
                host, port = metrics
                extra += ["--metrics-address", f"{host}:{port + index if port else 0}"]
            argv = child_argv(self.argv, "gateway", extra)
            self.children.append(Child(f"gateway {index}", argv))
        if self.role == "serve":
            # The console page it serves connects to the workers' port, not 8888.
            gateway = f"{config.ws_host}:{ws_port}"
            extra = [*common, "--console-gateway", config.console_gateway or gateway]
            if metrics is not None:  # the logic process next: PORT+N+1
                host, port = metrics
                logic_port = port + config.worker_count + 1 if port else 0
                extra += ["--metrics-address", f"{host}:{logic_port}"]
            self.children.append(Child("logic", child_argv(self.argv, "logic", extra)))
        for child in self.children:
            await self._start(child)
        try:
            lines = await asyncio.wait_for(
                asyncio.gather(*(c.ready for c in self.children if c.ready is not None)),
                START_TIMEOUT,
            )
        except TimeoutError:
            raise StartupError("a worker did not get ready in time; its log is above") from None
        if metrics is not None:  # and all of them together on PORT
            self._metrics = WorkerMetrics(self._worker_metrics_urls)
            try:
                await self._metrics.start(*metrics)
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {metrics[0]}:{metrics[1]} for the metrics: {exc}"
                ) from None
        return ws_port, broker, list(lines)

    def _worker_metrics_urls(self) -> dict[str, str | None]:
        return {c.name: c.metrics_url for c in self.children}

    def _say_ready(self, ws_port: int, broker: str, lines: Sequence[str]) -> None:
        config = self.config
        parts = [f"gateway ws://{config.ws_host}:{ws_port}/connect ({config.worker_count} workers)"]
        for line in lines:
            api = API_PORT.search(line)
            if api:
                parts.append(f"logic API http://{config.api_host}:{api.group(1)}")
        if self._metrics is not None:
            host = self.config.metrics_address.rpartition(":")[0]
            parts.append(f"metrics http://{host}:{self._metrics.port}/metrics (every worker)")
        if self._redis is not None:
            parts.append("broker: a private redis-server")
        else:
            parts.append(f"broker {broker.rsplit('@', 1)[-1]}")
        log.info("pushgate %s %s ready: %s", __version__, self.role, ", ".join(parts))

    def _report_capacity(self) -> None:
        """Once every gateway said how many connections it accepts: the total."""
        gateways = [c for c in self.children if c.name.startswith("gateway")]
        if self._capacity_reported or not all(c.capacity for c in gateways):
            return
        self._capacity_reported = True
        log.info(
            "accepting up to %d WebSocket connections (%d workers)",
            sum(c.capacity for c in gateways),
            len(gateways),
        )

    async def _start(self, child: Child) -> None:
        env = {**os.environ, **secret_env(self.config), "PUSHGATE_WORKERS": "1"}
        process = await asyncio.create_subprocess_exec(
            *child.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            preexec_fn=dies_with_parent(signal.SIGTERM),
        )
        child.process = process
        child.ready = asyncio.get_running_loop().create_future()
        child.started_at = asyncio.get_running_loop().time()
        child.output = asyncio.create_task(self._relay(child, process))
        log.info("%s started (pid %d)", child.name, process.pid)

    async def _relay(self, child: Child, process: asyncio.subprocess.Process) -> None:
        """Pass the child's log through, note its ready line, and act when it ends."""
        assert process.stderr is not None
        ready = child.ready
        plain = self.config.log_format == "text"
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if ready is not None and not ready.done() and READY.search(line):
                ready.set_result(line)
                metrics_url = METRICS_URL.search(line)
                child.metrics_url = metrics_url.group(1) if metrics_url else None
                node = NODE.search(line)
                log.info(
                    "%s ready (pid %d, node %s)",
                    child.name,
                    process.pid,
                    node.group(1) if node else "?",
                )
                continue
            sys.stderr.write(
                f"[{child.name}] {line}\n" if plain else with_worker(line, child.name) + "\n"
            )
            capacity = CAPACITY.search(line)
            if capacity:
                child.capacity = int(capacity.group(1))
                self._report_capacity()
        code = await process.wait()
        child.metrics_url = None
        if ready is not None and not ready.done():
            ready.set_exception(StartupError(f"{child.name} exited with status {code}"))
        if self.stopping or process is not child.process:
            return
        self._restart_later(child, code)

    def _restart_later(self, child: Child, code: int) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - child.started_at > STABLE_AFTER:
            child.backoff = RESTART_BACKOFF[0]
        delay = child.backoff
        child.backoff = min(child.backoff * 2, RESTART_BACKOFF[1])
        child.restarts += 1
        log.warning(
            "%s (pid %s) exited with status %d; restarting it in %g s (restart %d)",
            child.name,
            child.process.pid if child.process else "?",
            code,
            delay,
            child.restarts,
        )
        task = asyncio.create_task(self._restart(child, delay))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _restart(self, child: Child, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._start(child)

    def _on_signal(self, sig: signal.Signals, stop: asyncio.Event) -> None:
        if stop.is_set():
            log.info("%s: already shutting down", sig.name)
            return
        log.info("%s received", sig.name)
        stop.set()

    async def _stop_all(self) -> None:
        """SIGTERM to every child (each drains its connections), wait for all, then
        stop the private Redis and release the port."""
        self.stopping = True
        if self._metrics is not None:
            await self._metrics.stop()
        for task in list(self._background):
            task.cancel()
        running = [c for c in self.children if c.process and c.process.returncode is None]
        for child in running:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        grace = self.config.drain_seconds + self.config.shutdown_timeout + KILL_GRACE
        for child in running:
            assert child.process is not None
            try:
                await asyncio.wait_for(child.process.wait(), grace)
            except TimeoutError:
                log.warning("%s did not stop in %g s; killing it", child.name, grace)
                child.process.kill()
                await child.process.wait()
        for child in self.children:
            if child.output is not None:
                with contextlib.suppress(Exception):
                    await child.output
        await self._stop_redis()
        if self._held_port is not None:
            self._held_port.close()
            self._held_port = None

    def _hold_port(self, host: str, port: int) -> int:
        """Bind the WebSocket port with SO_REUSEPORT without listening: it picks the
        port when 0 is given, and keeps it this supervisor's until the end."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise StartupError(
                f"cannot listen on {host}:{port} for the gateway: {exc.strerror}"
            ) from None
        self._held_port = sock
        return int(sock.getsockname()[1])

    async def _start_redis(self) -> str:
        """Start a private redis-server on a unix socket; return its URL."""
        server = shutil.which("redis-server")
        if server is None:
            raise StartupError(
                f"--workers {self.config.worker_count} needs a broker the workers share, "
                "and redis-server is not installed: install it (e.g. apt-get install "
                "redis-server), pass --broker redis://HOST:PORT/DB, or use --workers 1"
            )
        self._redis_dir = tempfile.mkdtemp(prefix="pushgate-redis-")
        path = os.path.join(self._redis_dir, "redis.sock")
        self._redis = await asyncio.create_subprocess_exec(
            server,
            "--port",
            "0",
            "--unixsocket",
            path,
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._redis_dir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=dies_with_parent(signal.SIGTERM),
        )
        assert self._redis.stdout is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(START_TIMEOUT):
                async for raw in self._redis.stdout:
                    seen.append(raw.decode(errors="replace"))
                    if "ready to accept connections" in seen[-1].lower():
                        break
                else:
                    raise StartupError("the private redis-server exited:\n" + "".join(seen))
        except TimeoutError:
            raise StartupError("the private redis-server did not start in time") from None
        task = asyncio.create_task(self._drain(self._redis.stdout))
        self._background.add(task)
        log.info("private redis-server started (pid %d, %s)", self._redis.pid, path)
        return f"unix://{path}"

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        async for _ in stream:
            pass

    async def _stop_redis(self) -> None:
        if self._redis is not None and self._redis.returncode is None:
            self._redis.terminate()
            await self._redis.wait()
        if self._redis_dir:
            shutil.rmtree(self._redis_dir, ignore_errors=True)
            self._redis_dir = ""


async def supervise(config: Config, role: str, argv: Sequence[str]) -> None:
    """Run ``pushgate <role> --workers N`` until SIGTERM or SIGINT."""
    await Supervisor(config, role, argv).run()
