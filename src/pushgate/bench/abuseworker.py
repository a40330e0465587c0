"""An attacker process of ``pushgate bench abuse``: runs one attack
(:mod:`pushgate.bench.abusers`) for the coordinator. Run as
``python -m pushgate.bench.abuseworker``; it speaks the workers' protocol (JSON
lines, see :mod:`pushgate.bench.commands`) and, like them, drops every connection
and exits when its stdin ends.

Why a process of its own per attack: a flood keeps its event loop busy writing,
and must neither slow the honest clients' processes (whose latency is the
measurement) nor the other attacks.

Commands: ``hello``; ``start`` (fields ``kind``, ``target`` [host, port, path],
``source``, ``count``, ``t0_ns``, ``timeout``, ``concurrency``), answered once the
attack's connections are open; ``status``; ``stop`` (also while ``start`` is still
opening connections), answered with what the server did to them; ``quit``.
"""

import asyncio
import contextlib
import os
from typing import Any

from pushgate.bench.abusers import Attack, make_attack
from pushgate.bench.commands import Commands, main
from pushgate.bench.procstat import raise_fd_limit
from pushgate.bench.replies import Hello
from pushgate.bench.targets import Target

Json = dict[str, Any]


class AbuseWorker(Commands):
    """Holds the one attack this process runs."""

    def __init__(self) -> None:
        self.attack: Attack | None = None
        self.opening: asyncio.Task[Json] | None = None  # the attack's start, while it runs
        self.fd_limit = raise_fd_limit()

    async def _cmd_hello(self, msg: Json) -> Hello:
        return Hello(os.getpid(), self.fd_limit)

    async def _cmd_start(self, msg: Json) -> Json:
        if self.attack is not None:
            raise RuntimeError("an attack is already running")
        host, port, path = msg["target"]
        self.attack = make_attack(
            str(msg["kind"]),
            Target(host, int(port), path),
            msg.get("source"),
            count=int(msg["count"]),
            t0_ns=int(msg["t0_ns"]),
            timeout=float(msg["timeout"]),
            concurrency=int(msg["concurrency"]),
        )
        self.opening = asyncio.create_task(self.attack.start())
        try:
            return await self.opening
        except asyncio.CancelledError:
            if not self.opening.cancelled():
                raise  # this command itself was cancelled
            return {"cancelled": True}  # stopped before every connection opened

    async def _cmd_status(self, msg: Json) -> Json:
        return self.attack.status() if self.attack is not None else {}

    async def _cmd_stop(self, msg: Json) -> Json:
        """Stop the attack, even while its connections are still opening (the server
        may be too busy to accept them): those not open by now never will be."""
        if self.opening is not None and not self.opening.done():
            self.opening.cancel()
            await asyncio.gather(self.opening, return_exceptions=True)
        if self.attack is None:
            return {}
        attack, self.attack = self.attack, None
        return await attack.stop()

    async def _cmd_quit(self, msg: Json) -> Json:
        self.drop_all()
        return {}

    def drop_all(self) -> None:
        if self.attack is not None:
            self.attack.abort()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        main(AbuseWorker)
