"""Real Pusher clients and server libraries, driven from a test: pusher-js (in Node,
tests/pusher/driver.cjs, with channel authorization by the `pusher` Node library),
and the `pusher` Node server library calling the HTTP API (tests/pusher/server_lib.cjs),
installed pinned by scripts/test (tests/pusher/package.json and its lock)."""

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.helpers import UNIT

HERE = Path(__file__).parent
NODE = shutil.which("node") or "node"
WAIT = 10 * UNIT

Line = dict[str, Any]


class PusherJs:
    """One pusher-js client in its own Node process: commands in, what it saw out."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.seen: list[Line] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._process.stdout is not None
        async for raw in self._process.stdout:
            self.seen.append(json.loads(raw))
            self._changed.set()
        self._changed.set()

    def send(self, **command: Any) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command).encode() + b"\n")

    async def until(self, found: Callable[[Line], bool], wait: float = WAIT) -> Line:
        """The first line seen (from the start) for which ``found`` holds."""
        async with asyncio.timeout(wait):
            while True:
                for line in self.seen:
                    if found(line):
                        return line
                if self._reader.done():
                    raise AssertionError(f"the client ended; it saw {self.seen}")
                self._changed.clear()
                await self._changed.wait()

    def heard(self, channel: str, event: str) -> list[Line]:
        """What a channel's bindings heard of ``event`` so far."""
        return [
            line
            for line in self.seen
            if line["kind"] == "channel" and line["channel"] == channel and line["event"] == event
        ]

    async def hears(self, channel: str, event: str, n: int = 1, wait: float = WAIT) -> list[Line]:
        await self.until(lambda _: len(self.heard(channel, event)) >= n, wait)
        return self.heard(channel, event)

    async def state(self, name: str) -> Line:
        """Wait for the connection to reach the state ``name`` (pusher-js's)."""
        return await self.until(lambda line: line["kind"] == "state" and line["current"] == name)

    def reached(self, name: str) -> bool:
        return any(line["kind"] == "state" and line["current"] == name for line in self.seen)

    async def message(self, event: str) -> Line:
        """Wait for a message of ``event`` on the connection, as pusher-js decoded it."""
        return await self.until(lambda line: line["kind"] == "message" and line["event"] == event)

    async def connected(self) -> str:
        """Wait for the connection; its socket_id."""
        return str((await self.state("connected"))["socket_id"])

    async def subscribed(self, channel: str, **more: Any) -> Line:
        self.send(op="subscribe", channel=channel, **more)
        lines = await self.hears(channel, "pusher:subscription_succeeded")
        return lines[0]

    async def close(self) -> None:
        process = self._process
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                async with asyncio.timeout(5 * UNIT):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await self._reader


@asynccontextmanager
async def pusher_js(
    ws_port: int, app: tuple[str, str, str], script: str = "driver.cjs"
) -> AsyncIterator[PusherJs]:
    """A pusher-js client of ``app`` (id, key, secret) connecting to 127.0.0.1:ws_port,
    driven by ``script`` (driver.cjs: pusher-js itself; echo.mjs: Laravel Echo)."""
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(HERE / script),
        "127.0.0.1",
        str(ws_port),
        *app,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=HERE,
    )
    client = PusherJs(process)
    try:
        yield client
    finally:
        await client.close()


async def node_server_call(api_port: int, app: tuple[str, str, str], **call: Any) -> Line:
    """One call of the `pusher` Node server library (tests/pusher/server_lib.cjs) to
    the logic API at 127.0.0.1:api_port: ``{"status": S, "body": B}``."""
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(HERE / "server_lib.cjs"),
        "127.0.0.1",
        str(api_port),
        *app,
        json.dumps(call),
        stdout=asyncio.subprocess.PIPE,
        cwd=HERE,
    )
    async with asyncio.timeout(WAIT):
        out, _ = await process.communicate()
    assert process.returncode == 0, out
    result: Line = json.loads(out)
    return result


class RawPusher:
    """A Pusher client that is only the wire (websockets, no Pusher library): what a
    test sends is what the server gets, and each message is read as it came."""

    def __init__(self, ws: ClientConnection, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    async def send(self, event: str, data: object, channel: str | None = None) -> None:
        message: dict[str, object] = {"event": event, "data": data}
        if channel is not None:
            message["channel"] = channel
        await self.ws.send(json.dumps(message))

    async def subscribe(self, channel: str, auth: str | None = None) -> None:
        data = {"channel": channel} if auth is None else {"channel": channel, "auth": auth}
        await self.send("pusher:subscribe", data)
        answer = await self.next_event(
            "pusher_internal:subscription_succeeded", "pusher:subscription_error"
        )
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer

    async def next_event(self, *events: str) -> Line:
        """The next message of one of ``events`` (others before it are passed over)."""
        async with asyncio.timeout(WAIT):
            while True:
                message: Line = json.loads(await self.ws.recv())
                if message["event"] in events:
                    return message


@asynccontextmanager
async def raw_pusher(ws_port: int, key: str) -> AsyncIterator[RawPusher]:
    async with connect(f"ws://127.0.0.1:{ws_port}/app/{key}?protocol=7") as ws:
        established = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert established["event"] == "pusher:connection_established", established
        yield RawPusher(ws, json.loads(established["data"])["socket_id"])
