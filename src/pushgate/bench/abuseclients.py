"""The sockets of ``pushgate bench abuse``'s attackers, as asyncio protocols that
send exactly the bytes an attacker would (see :mod:`pushgate.bench.abusers` for the
attacks they make up, and :mod:`pushgate.bench.rawws` for the framing).

Each keeps what it learns of the server's answer: a WebSocket attacker
(:class:`RawClient`) the close frame's code and the moment it arrived, and the moment
the TCP connection ended; a fat handshake (:class:`FatHandshake`) the HTTP status it
was answered with, if any. Moments are wall clock (``time.time_ns``), which every
process on the machine shares.
"""

import asyncio
import contextlib
import socket
import time
from typing import TypeVar, cast

from pushgate.bench.rawws import CloseScanner, client_socket, status_of, upgrade_request
from pushgate.bench.targets import Target
from pushgate.bench.wsclient import HandshakeError

FLOOD_HIGH_WATER = 256 * 1024  # bytes buffered in the flooder before it waits
FLOOD_WRITES_PER_TURN = 4  # chunks written before the loop reads and answers commands
MAX_RESPONSE_HEAD = 64 * 1024
DRAIN_RCVBUF = 256 * 1024  # a non-reader reads its backlog faster once it may read again
QUIET = 0.5  # a draining non-reader that received nothing this long is still open
FAT_HEADERS = 128  # websockets' MAX_NUM_HEADERS: one more would be refused at once
FAT_HEADER_BYTES = 8 * 1024  # a whole line, CRLF included: websockets' MAX_LINE_LENGTH
P = TypeVar("P", bound=asyncio.Protocol)


class RawClient(asyncio.Protocol):
    """A WebSocket client that sends the upgrade request, waits for the 101, and then
    only watches for the end: the server's close frame, or the end of the TCP
    connection. What it sends after the 101 is its subclass's business."""

    def __init__(self, target: Target) -> None:
        self.request = upgrade_request(target.host_header, target.path)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Nobody may await it (an attack given up before its 101): no warning then.
        self.opened.add_done_callback(_retrieve)
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None
        self.closed_ns = 0  # wall clock of the server's close frame
        self.ended_ns = 0  # wall clock of the end of the TCP connection
        self.last_data = time.monotonic()
        self._head = b""  # the response to the upgrade, while it is incomplete
        self._upgrading = True
        self._scanner = CloseScanner()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        if self._upgrading:
            data = self._upgrade(data)
        if data and self.close_code is None:
            code = self._scanner.feed(data)
            if code is not None:
                self.close_code, self.closed_ns = code, time.time_ns()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended_ns = time.time_ns()
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(f"connection lost: {exc or 'EOF'}"))

    def on_open(self) -> None:
        """The server answered 101: the attack proper may start."""

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _upgrade(self, data: bytes) -> bytes:
        """Consume the response to the upgrade; return the bytes after it."""
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            self._head = head
            if len(head) > MAX_RESPONSE_HEAD:
                self._fail("response headers too long")
            return b""
        status = status_of(head)
        if status != 101:
            self._fail(f"server answered {status or 'not HTTP'}, not 101")
            return b""
        self._upgrading, self._head = False, b""
        self.opened.set_result(None)
        self.on_open()
        return head[end + 4 :]

    def _fail(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(reason))
        self.abort()


class FloodClient(RawClient):
    """Writes ``chunk`` (many frames) again and again as fast as the socket takes it,
    after ``first``; reads and discards, watching for the close frame."""

    def __init__(self, target: Target, chunk: bytes, frames_per_chunk: int, first: bytes) -> None:
        super().__init__(target)
        self.chunk, self.frames_per_chunk, self.first = chunk, frames_per_chunk, first
        self.frames = 0  # frames handed to the transport
        self._paused = False
        self._scheduled = False
        self._stopped = False

    def on_open(self) -> None:
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=FLOOD_HIGH_WATER)
        if self.first:
            self.transport.write(self.first)
            self.frames += 1
        self._flood()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._flood()

    def stop(self) -> None:
        self._stopped = True
        self.abort()

    def _flood(self) -> None:
        """A few chunks, then the loop gets a turn (to read, and to answer the
        coordinator) before the next few: the kernel takes chunks as fast as the
        server reads them, so without that this loop would never yield."""
        transport = self.transport
        for _ in range(FLOOD_WRITES_PER_TURN):
            if self._paused or self._stopped or transport is None or transport.is_closing():
                return
            transport.write(self.chunk)
            self.frames += self.frames_per_chunk
        if not self._scheduled:  # one chain of turns, however often resumed
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._scheduled = False
        self._flood()


class NonReader(RawClient):
    """Completes the handshake, then stops reading: its small receive buffer fills
    with pushes, and the server holds the rest."""

    def on_open(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def read_again(self) -> None:
        """At the end: read what is waiting, to learn whether the server closed it."""
        self.last_data = time.monotonic()
        if self.transport is None or self.transport.is_closing():
            return
        sock = self.transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DRAIN_RCVBUF)
        self.transport.resume_reading()

    def settled(self, now: float) -> bool:
        """Closed, ended, or quiet for QUIET seconds: nothing more to learn."""
        ended = self.close_code is not None or self.ended_ns != 0
        return ended or now - self.last_data >= QUIET


class FatHandshake(asyncio.Protocol):
    """Sends a request line and FAT_HEADERS headers of FAT_HEADER_BYTES each, as fast
    as the socket takes them, and never the blank line that ends a request."""

    def __init__(self, target: Target) -> None:
        self.transport: asyncio.Transport | None = None
        self.status: int | None = None  # the server's answer, if any
        self.answered_ns = 0
        self.ended_ns = 0
        self.bytes_sent = 0  # handed to the transport
        self.all_sent = False
        self._head = b""
        self._next = 0  # the next header to send
        self._paused = False
        self._request_line = f"GET {target.path} HTTP/1.1\r\n".encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._write(self._request_line)
        self._send_more()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._send_more()

    def data_received(self, data: bytes) -> None:
        if self.status is None and len(self._head) < MAX_RESPONSE_HEAD:
            self._head += data
            self.status = status_of(self._head)
            if self.status is not None:
                self.answered_ns = time.time_ns()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended_ns = time.time_ns()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def outcome(self) -> str:
        if self.status is not None:
            return str(self.status)
        return "dropped" if self.ended_ns else "open"

    def _send_more(self) -> None:
        transport = self.transport
        while not self._paused and self._next < FAT_HEADERS:
            if transport is None or transport.is_closing():
                return
            self._write(fat_header(self._next))
            self._next += 1
        self.all_sent = self._next == FAT_HEADERS

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self.bytes_sent += len(data)


def fat_header(number: int) -> bytes:
    """Header line ``number``: exactly FAT_HEADER_BYTES bytes, CRLF included."""
    name = f"X-Pad-{number:03d}: ".encode()
    return name + b"a" * (FAT_HEADER_BYTES - len(name) - 2) + b"\r\n"


def _retrieve(future: "asyncio.Future[None]") -> None:
    if not future.cancelled():
        future.exception()


async def open_raw(
    target: Target,
    source: str | None,
    protocol: P,
    within: float,
    *,
    rcvbuf: int | None = None,
) -> P:
    """Connect ``protocol`` from ``source`` within ``within`` seconds; a RawClient
    also waits for its 101. Raises OSError, HandshakeError or TimeoutError."""
    loop = asyncio.get_running_loop()
    sock = client_socket(target.family, source, rcvbuf)
    try:
        async with asyncio.timeout(within):
            await loop.sock_connect(sock, target.address)
            await loop.create_connection(lambda: protocol, sock=sock)
            if isinstance(protocol, RawClient):
                await protocol.opened
    except BaseException:
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abort()
        sock.close()
        raise
    return protocol
