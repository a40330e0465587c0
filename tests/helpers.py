"""Test helpers: real servers on free loopback ports, and real clients.

Every wait is bounded by a multiple of ``UNIT`` seconds (``PUSHGATE_TEST_UNIT``,
default 1.0), so a slow machine can scale them all at once.
"""

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from pushgate import speedups
from pushgate.app import PushServer
from pushgate.config import Config

UNIT = float(os.environ.get("PUSHGATE_TEST_UNIT", "1.0"))
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on (bound once by the kernel, then released)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def require_compiled() -> speedups.Compiled:
    """pushgate._speedups, or the test is skipped, saying why; it fails instead when
    ``PUSHGATE_REQUIRE_SPEEDUPS=1`` (scripts/test sets it where it found a C compiler
    and Python's headers, so the extension should have been built)."""
    if speedups.BUILT is not None:
        return speedups.BUILT
    why = f"{speedups.WHY_NOT} (no C compiler or no Python headers at install?)"
    if os.environ.get("PUSHGATE_REQUIRE_SPEEDUPS") == "1":
        pytest.fail(f"{why}, but PUSHGATE_REQUIRE_SPEEDUPS=1: see pip's output")
    pytest.skip(f"{why}; the pure-Python path is tested")


# Short timers so that heartbeat and timeout tests run in about a second.
FAST_TIMERS: dict[str, Any] = {
    "heartbeat": 0.2,
    "idle_timeout": 0.6,
    "handshake_timeout": 0.5,
    "close_timeout": 0.5,
    "shutdown_timeout": 2.0,
    "session_ttl": 0.5,
}


@dataclass
class Running:
    """A PushServer started on free ports, with its URLs."""

    server: PushServer
    ws_url: str
    api_url: str

    @property
    def ws_port(self) -> int:
        return self.server.ws_port

    @property
    def api_port(self) -> int:
        return self.server.api_port


@asynccontextmanager
async def running_server(role: str = "serve", **overrides: Any) -> AsyncIterator[Running]:
    """Start a node in ``role`` in this event loop on free loopback ports."""
    config = replace(
        Config(ws_host=LOOPBACK, ws_port=0, api_host=LOOPBACK, api_port=0), **overrides
    )
    server = PushServer(config, role)
    await server.start()
    try:
        yield Running(
            server,
            f"ws://{LOOPBACK}:{server.ws_port}/connect" if role != "logic" else "",
            f"http://{LOOPBACK}:{server.api_port}" if role != "gateway" else "",
        )
    finally:
        await server.stop()


async def open_client(ws_url: str, **kwargs: Any) -> tuple[ClientConnection, str]:
    """Connect a websockets client and read its welcome; return it and its wsId.

    The client keeps reading whatever the test does meanwhile (no ``max_queue``,
    unless given): websockets otherwise stops reading after 16 unread messages, so a
    test that pushes 100 before receiving them would, on a slow machine, stop
    answering the server's pings and be closed for silence. A client meant not to
    read is a raw socket (tests/test_abuse.py)."""
    kwargs.setdefault("max_queue", None)
    ws = await connect(ws_url, open_timeout=5 * UNIT, **kwargs)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
    assert welcome["type"] == 0, welcome
    return ws, welcome["data"]["wsId"]


POSITION = re.compile(r',"seq":\d+,"epoch":"[0-9a-f]*"}\n$')


def without_position(frame: str | bytes) -> str:
    """A push frame as the original protocol has it: its stream position (the
    ``seq`` and ``epoch`` keys, tested in tests/test_recovery.py) taken off."""
    text = frame.decode() if isinstance(frame, bytes) else frame
    return POSITION.sub("}\n", text)


async def recv_json(ws: ClientConnection) -> Any:
    """The next message as JSON, without a push's stream position."""
    return json.loads(without_position(await asyncio.wait_for(ws.recv(), 5 * UNIT)))


async def until_gone(
    http: aiohttp.ClientSession, api_url: str, ws_id: str, timeout: float = 5 * UNIT
) -> dict[str, Any]:
    """Wait until a wsId's session has ended (a join for it answers 404); return that
    answer. Polls: a session ends by the passing of its TTL, which no event announces."""
    async with asyncio.timeout(timeout):
        while True:
            status, body = await post(
                http, api_url + "/room/leave", data={"id": "probe", "wsId": ws_id}
            )
            if status == 404:
                return body
            assert status == 200, body
            await asyncio.sleep(0.05)


async def close_code_of(ws: ClientConnection) -> int | None:
    """Wait until the server closes ``ws``; return the close code it sent."""
    await asyncio.wait_for(ws.wait_closed(), 5 * UNIT)
    return ws.close_code


async def post(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """POST and return (status, JSON body)."""
    async with http.post(url, **kwargs) as response:
        return response.status, await response.json()


class RawClient:
    """A WebSocket client that does only what a test tells it to.

    It uses the websockets library's sans-I/O ClientProtocol for framing, but
    writes nothing on its own: it answers no ping unless ``answer_pings`` is set,
    so it can play a dead or silent peer.
    """

    def __init__(
        self, url: str, *, answer_pings: bool = False, receive_buffer: int | None = None
    ) -> None:
        self.url = url
        self.answer_pings = answer_pings
        self.receive_buffer = receive_buffer  # SO_RCVBUF, set before connecting
        self.proto = ClientProtocol(parse_uri(url), max_size=None)
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.response: Response | None = None
        self._events: list[Any] = []

    async def connect(self) -> Response:
        uri = parse_uri(self.url)
        if self.receive_buffer is None:
            self.reader, self.writer = await asyncio.open_connection(uri.host, uri.port)
        else:  # a small one: a client that stops reading is soon seen not to read
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (uri.host, uri.port))
            self.reader, self.writer = await asyncio.open_connection(sock=sock)
        self.proto.send_request(self.proto.connect())
        self._write()
        while self.response is None:
            event = await self.next_event()
            assert isinstance(event, Response), event
            self.response = event
        return self.response

    async def next_event(self, timeout: float = 5 * UNIT) -> Any:
        """The next event (Response or Frame); None once the stream has ended."""
        async with asyncio.timeout(timeout):
            while not self._events:
                data = await self.reader.read(2**16)
                if not data:
                    self.proto.receive_eof()
                    events = self.proto.events_received()
                    if not events:
                        return None
                    self._events.extend(events)
                    break
                self.proto.receive_data(data)
                self._events.extend(self.proto.events_received())
                if self.answer_pings:
                    self._write()
                else:
                    self.proto.data_to_send()  # drop automatic pongs
        return self._events.pop(0)

    async def next_frame(self, timeout: float = 5 * UNIT) -> Frame | None:
        event = await self.next_event(timeout)
        assert event is None or isinstance(event, Frame), event
        return event

    async def next_message(self, timeout: float = 5 * UNIT) -> Any:
        """The next text message as JSON, skipping control frames."""
        while True:
            frame = await self.next_frame(timeout)
            assert frame is not None, "connection ended"
            if frame.opcode is Opcode.TEXT:
                return json.loads(without_position(bytes(frame.data)))

    async def close_frame(self, timeout: float = 5 * UNIT) -> Close:
        """Read until the server's close frame; return it."""
        while True:
            frame = await self.next_frame(timeout)
            assert frame is not None, "connection ended without a close frame"
            if frame.opcode is Opcode.CLOSE:
                return Close.parse(frame.data)

    def send_text(self, data: bytes) -> None:
        self.proto.send_text(data)
        self._write()

    def send_binary(self, data: bytes) -> None:
        self.proto.send_binary(data)
        self._write()

    def send_close(self, code: int) -> None:
        self.proto.send_close(code)
        self._write()

    def _write(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                self.writer.write(chunk)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# Subprocess servers

READY = re.compile(r" ready: ")
WS_PORT = re.compile(r"gateway ws://[^:]+:(\d+)/connect")
API_PORT = re.compile(r"logic API http://[^:]+:(\d+)")


@dataclass
class ServerProcess:
    """``pushgate serve`` in a child process, on free ports it reported itself."""

    process: asyncio.subprocess.Process
    ws_port: int
    api_port: int
    log: list[str]

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.ws_port}/connect"

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await asyncio.wait_for(self.process.wait(), 15 * UNIT)


def pushgate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pushgate", *args]


@asynccontextmanager
async def server_process(
    *args: str, env: dict[str, str] | None = None, role: str = "serve"
) -> AsyncIterator[ServerProcess]:
    """Run ``pushgate <role>`` on port 0 (the kernel picks free ports) until the block
    ends. Each role is given only the ports it listens on: it refuses the others'."""
    listen = {
        "serve": ("--ws-host", LOOPBACK, "--ws-port", "0", "--api-port", "0"),
        "gateway": ("--ws-host", LOOPBACK, "--ws-port", "0"),
        "logic": ("--api-port", "0"),
    }[role]
    command = pushgate_command(role, *listen, *args)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(15 * UNIT):
            while True:
                line = (await process.stderr.readline()).decode()
                if not line:
                    raise AssertionError("pushgate exited before it was ready:\n" + "".join(log))
                log.append(line)
                match = READY.search(line)
                if match:
                    break
        ws_port, api_port = WS_PORT.search(line), API_PORT.search(line)
        running = ServerProcess(
            process,
            int(ws_port.group(1)) if ws_port else 0,
            int(api_port.group(1)) if api_port else 0,
            log,
        )
        drain = asyncio.create_task(_collect(process.stderr, log))
        try:
            yield running
        finally:
            await running.stop()
            await drain
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _collect(stream: asyncio.StreamReader, log: list[str]) -> None:
    async for line in stream:
        log.append(line.decode())
