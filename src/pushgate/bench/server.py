"""The server under test: a ``pushgate serve`` child of the bench, or an external one.

Its own server is started on port 0 (the kernel picks free ports) and the ports are
read from the "ready:" line it logs; the pid is then known, so ``/proc`` gives its
CPU and RSS. An external server is named by its URLs, and by ``--server-pid`` if
its CPU and RSS are to be read.
"""

import asyncio
import collections
import re
import signal
import sys
from dataclasses import dataclass, field

from pushgate.bench import procstat
from pushgate.bench.children import spawn, stop_process
from pushgate.bench.options import BenchError

READY = re.compile(rb"ready: gateway ws://[^ ]+:(\d+)/connect, logic API http://[^ ]+:(\d+)")
START_TIMEOUT = 20.0
LOG_LINES_KEPT = 50
LOOPBACK = "127.0.0.1"


@dataclass
class ServerUnderTest:
    """Where clients connect and pushes go, and which pids to read from ``/proc``."""

    ws_urls: list[str]
    api_url: str | None
    pids: list[int]
    process: asyncio.subprocess.Process | None = None
    log: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=LOG_LINES_KEPT)
    )
    _drain: asyncio.Task[None] | None = None

    def cpu_seconds(self) -> float | None:
        return procstat.total_cpu_seconds(self.pids) if self.pids else None

    def rss_bytes(self) -> int | None:
        return procstat.total_rss_bytes(self.pids) if self.pids else None

    def check_alive(self) -> None:
        """Raise BenchError if our own server has exited."""
        if self.process is not None and self.process.returncode is not None:
            raise BenchError(
                f"the server exited with status {self.process.returncode}; its last lines:\n"
                + "".join(self.log)
            )

    async def stop(self) -> None:
        """Stop our own server (SIGTERM, then SIGKILL); an external one is left alone."""
        if self.process is not None:
            await stop_process(self.process, signal.SIGTERM, grace=15.0)
        if self._drain is not None:
            self._drain.cancel()


async def start_own_server(args: list[str]) -> ServerUnderTest:
    """Start ``pushgate serve`` on free loopback ports; return once it is ready."""
    command = [
        sys.executable,
        "-m",
        "pushgate",
        "serve",
        "--ws-host",
        LOOPBACK,
        "--ws-port",
        "0",
        "--api-host",
        LOOPBACK,
        "--api-port",
        "0",
        *args,
    ]
    process = await spawn(
        *command,
        death_signal=signal.SIGTERM,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    server = ServerUnderTest([], None, [process.pid], process)
    try:
        assert process.stderr is not None
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                line = await process.stderr.readline()
                if not line:
                    await process.wait()
                    server.check_alive()
                server.log.append(line.decode(errors="replace"))
                match = READY.search(line)
                if match:
                    break
    except BaseException as exc:
        await server.stop()
        if isinstance(exc, TimeoutError):
            raise BenchError(
                f"the server was not ready within {START_TIMEOUT:g} s; its last lines:\n"
                + "".join(server.log)
            ) from None
        raise
    ws_port, api_port = int(match.group(1)), int(match.group(2))
    server.ws_urls = [f"ws://{LOOPBACK}:{ws_port}/connect"]
    server.api_url = f"http://{LOOPBACK}:{api_port}"
    # Keep reading its log, or the pipe fills and the server blocks on a log line.
    server._drain = asyncio.create_task(_keep_reading(process.stderr, server.log))
    return server


def external_server(ws_urls: list[str], api_url: str | None, pids: list[int]) -> ServerUnderTest:
    for pid in pids:
        try:
            procstat.cpu_seconds(pid)
        except procstat.ProcessGone as exc:
            raise BenchError(f"--server-pid {pid}: {exc}") from None
    return ServerUnderTest(list(ws_urls), api_url, list(pids))


async def _keep_reading(stream: asyncio.StreamReader, log: collections.deque[str]) -> None:
    async for line in stream:
        log.append(line.decode(errors="replace"))
