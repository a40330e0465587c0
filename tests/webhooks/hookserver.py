"""A webhook receiver for tests: a real aiohttp server on a free loopback port that
checks each request as docs/webhooks.md tells a receiver to, and keeps what came.

It can answer another status for a while (``status``), hang (``hang``), and be
stopped and started again on the same port (a receiver that is down).
"""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pushgate import __version__
from pushgate.webhooks.signing import HEADER, verify
from tests.helpers import LOOPBACK, UNIT, free_port

SECRET = b"s" * 32


class HookServer:
    """Keeps every request (``attempts``: the ids each carried, in order) and the
    events of the ones it answered 2xx (``events``)."""

    def __init__(self, secret: bytes = SECRET) -> None:
        self.secret = secret
        self.port = free_port()
        self.status = 200
        self.hang = False
        self.attempts: list[list[str]] = []
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []  # what a careful receiver would refuse
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()  # ends the requests it hangs
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        signature = request.headers.get(HEADER, "")
        if not verify(self.secret, body, signature, now=time.time()):
            self.problems.append(f"bad signature {signature!r}")
        if request.content_type != "application/json":
            self.problems.append(f"content type {request.content_type}")
        if request.headers.get("User-Agent") != f"pushgate/{__version__}":
            self.problems.append(f"user agent {request.headers.get('User-Agent')}")
        events = json.loads(body)["events"]
        async with self._changed:
            self.attempts.append([event["id"] for event in events])
            if self.status // 100 == 2 and not self.hang:
                self.events += events
            self._changed.notify_all()
        if self.hang:
            await self._stopping.wait()  # the client gives up first, or the test ends
        return web.Response(status=self.status)

    async def until(self, done: Callable[[], bool], timeout: float = 5 * UNIT) -> None:
        """Return once ``done()`` is true after some request."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(done)

    async def until_events(self, count: int, timeout: float = 5 * UNIT) -> list[dict[str, Any]]:
        """The events of the 2xx answers, once there are ``count`` at least."""
        await self.until(lambda: len(self.events) >= count, timeout)
        return self.events

    def ids(self) -> list[str]:
        return [event["id"] for event in self.events]

    def unique(self) -> list[dict[str, Any]]:
        """The events delivered, each once: a duplicate (delivery is at least once)
        must repeat an earlier event exactly, with its id."""
        seen: dict[str, dict[str, Any]] = {}
        for event in self.events:
            assert seen.setdefault(event["id"], event) == event
        return list(seen.values())


def id_key(event_id: str) -> tuple[int, int]:
    """An id's place in the queue's order."""
    ms, _, n = event_id.partition("-")
    return int(ms), int(n)
