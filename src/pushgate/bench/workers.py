"""The coordinator's side of the worker processes: start them, send them commands,
stop them.

Each worker is ``python -m pushgate.bench.worker`` (or another module that speaks
the same protocol: the attackers of :mod:`pushgate.bench.abuseworker`) with JSON
lines on its stdin and stdout (:mod:`pushgate.bench.commands`; the commands are
:mod:`pushgate.bench.worker`'s). Every call has a timeout; a worker that exits or
answers with an error raises :class:`BenchError`.
"""

import asyncio
import contextlib
import itertools
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pushgate.bench.children import spawn, stop_process
from pushgate.bench.options import BenchError

Json = dict[str, Any]
REPLY_LIMIT = 256 * 1024 * 1024  # a report lists every client: allow long lines
CALL_TIMEOUT = 60.0
START_TIMEOUT = 30.0


class WorkerProcess:
    """One worker and the replies it owes."""

    def __init__(self, process: asyncio.subprocess.Process, number: int) -> None:
        self.process = process
        self.number = number
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Json]] = {}
        self._reader = asyncio.create_task(self._read_replies())

    async def call(self, cmd: str, within: float = CALL_TIMEOUT, **fields: Any) -> Json:
        """Send one command and return its reply, waiting at most ``within`` seconds."""
        if self.process.returncode is not None or self._reader.done():
            raise BenchError(f"worker {self.number} has exited")
        msg_id = next(self._ids)
        future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        assert self.process.stdin is not None
        line = json.dumps({"id": msg_id, "cmd": cmd, **fields}, separators=(",", ":"))
        try:
            self.process.stdin.write(line.encode() + b"\n")
            await self.process.stdin.drain()
            reply = await asyncio.wait_for(future, within)
        except (ConnectionError, TimeoutError) as exc:
            raise BenchError(f"worker {self.number}: {cmd} failed: {exc or 'timed out'}") from None
        finally:
            self._pending.pop(msg_id, None)
        if "error" in reply:
            raise BenchError(f"worker {self.number}: {cmd} failed: {reply['error']}")
        return reply

    async def _read_replies(self) -> None:
        assert self.process.stdout is not None
        try:
            async for line in self.process.stdout:
                reply = json.loads(line)
                future = self._pending.get(reply.get("id"))
                if future is not None and not future.done():
                    future.set_result(reply)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BenchError(f"worker {self.number} has exited"))

    async def stop(self) -> None:
        with contextlib.suppress(BenchError):
            await self.call("quit", within=5.0)
        if self.process.stdin is not None:
            self.process.stdin.close()
        await stop_process(self.process, signal.SIGKILL, grace=0.0)
        self._reader.cancel()


class WorkerPool:
    """Several workers; :meth:`start`, then calls, then :meth:`stop` (in a finally)."""

    def __init__(self, module: str = "pushgate.bench.worker") -> None:
        self.module = module  # what each worker runs: python -m MODULE
        self.workers: list[WorkerProcess] = []

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]

    async def start(self, count: int) -> None:
        """Start ``count`` workers and wait until each has said hello."""
        for number in range(count):
            process = await spawn(
                sys.executable,
                "-m",
                self.module,
                death_signal=signal.SIGKILL,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=REPLY_LIMIT,
            )
            self.workers.append(WorkerProcess(process, number))
        await self.call_all("hello", within=START_TIMEOUT)

    async def call_all(self, cmd: str, within: float = CALL_TIMEOUT, **fields: Any) -> list[Json]:
        """The same command to every worker, concurrently."""
        return list(
            await asyncio.gather(*(w.call(cmd, within=within, **fields) for w in self.workers))
        )

    async def call_each(
        self, cmd: str, fields: Sequence[Json], within: float = CALL_TIMEOUT
    ) -> list[Json]:
        """Worker i gets ``fields[i]``."""
        calls = (w.call(cmd, within=within, **f) for w, f in zip(self.workers, fields, strict=True))
        return list(await asyncio.gather(*calls))

    async def stop(self) -> None:
        """Stop every worker; its connections go with it."""
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """(first, count) ranges that cover 0..total-1 in ``parts`` near-equal pieces."""
    ranges: list[tuple[int, int]] = []
    first = 0
    for part in range(parts):
        count = total // parts + (1 if part < total % parts else 0)
        ranges.append((first, count))
        first += count
    return ranges
