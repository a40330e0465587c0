"""The workers' protocol, a process's side: a process its coordinator
(:mod:`pushgate.bench.workers`) drives over JSON lines, whatever it runs: the
clients (:mod:`pushgate.bench.worker`, :mod:`pushgate.bench.chatworker`) or an
attack (:mod:`pushgate.bench.abuseworker`). One loop for all of them, so that each
answers the same way and none outlives a bench that was killed.

Protocol: one JSON object per line on stdin, each ``{"id": N, "cmd": NAME, ...}``;
one reply per command on stdout, ``{"id": N, ...}`` or ``{"id": N, "error": TEXT}``.
Commands run concurrently (``status`` answers while ``connect`` is still running).
End of stdin means the coordinator is gone: the process drops every connection and
exits.
"""

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from pushgate.bench.replies import Reply
from pushgate.bench.targets import describe

STDIN_LIMIT = 64 * 1024 * 1024

Json = dict[str, Any]


class Commands:
    """A process driven by JSON lines: each command is answered by the method
    ``_cmd_<name>`` (an ``async`` method taking the message, returning the reply)."""

    async def handle(self, msg: Json, reply: Callable[[Json], None]) -> None:
        method: Callable[[Json], Coroutine[Any, Any, Json | Reply]] | None = getattr(
            self, f"_cmd_{msg.get('cmd')}", None
        )
        try:
            if method is None:
                raise ValueError(f"unknown command {msg.get('cmd')!r}")
            result = await method(msg)
        except Exception as exc:
            reply({"id": msg.get("id"), "error": describe(exc)})
            return
        body = result.to_json() if isinstance(result, Reply) else result
        reply({"id": msg.get("id"), **body})

    def drop_all(self) -> None:
        """The coordinator is gone or said quit: drop every connection at once."""


def _write_line(obj: Json) -> None:
    sys.stdout.buffer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    sys.stdout.buffer.flush()


async def serve_stdin(make: Callable[[], Commands]) -> None:
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


def main(make: Callable[[], Commands]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve_stdin(make))
    else:
        uvloop.run(serve_stdin(make))
