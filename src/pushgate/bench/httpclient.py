"""A minimal HTTP/1.1 keep-alive client for the logic API: form POSTs, nothing else.

Why not aiohttp's client: it spends a few hundred microseconds of CPU per request
in the bench's process, which shares this machine's cores with the server it
measures; a pre-built request and a short response parser spend far less.

One :class:`HttpConnection` carries one request at a time; use several for
concurrency. A request that finds its kept-alive connection already closed by
the server (the seed's Go server drops idle connections after 10 ms) is sent
again once on a new connection, but only if no byte of a response had arrived.
"""

import asyncio
import contextlib
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024


class HttpError(Exception):
    """The request could not be completed (connection refused, reset, bad response)."""


class HttpConnection:
    """A kept-alive connection to one logic API base URL."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"not an http://HOST:PORT URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self._host_line = f" HTTP/1.1\r\nHost: {host}:{self.port}\r\n".encode()
        self._head_tail = self._host_line + (
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_form(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST a form body; return (status, response body)."""
        request = b"".join(
            (
                b"POST ",
                (self.prefix + path).encode(),
                self._head_tail,
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )
        return await self._send(request)

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path``; return (status, response body)."""
        return await self._send(b"GET " + (self.prefix + path).encode() + self._host_line + b"\r\n")

    async def _send(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is not None:
            try:
                return await self._exchange(request)
            except _StaleConnection:
                pass  # the server had closed the idle connection: once more, afresh
        try:
            return await self._exchange(request)
        except _StaleConnection:
            raise HttpError("the server closed the connection without answering") from None

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            try:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        reader, writer = self._reader, self._writer
        assert reader is not None
        try:
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                await self.close()
                if not exc.partial:
                    raise _StaleConnection from None
                raise HttpError("the connection ended inside the response headers") from None
            except asyncio.LimitOverrunError:
                await self.close()
                raise HttpError("response headers too long") from None
            status, body, keep = await _read_response(reader, head)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            await self.close()
            if isinstance(exc, ConnectionResetError | BrokenPipeError):
                raise _StaleConnection from None
            raise HttpError(f"connection failed: {exc}") from None
        if not keep:
            await self.close()
        return status, body


class _StaleConnection(Exception):
    """The kept-alive connection was closed before any response byte arrived."""


async def _read_response(reader: asyncio.StreamReader, head: bytes) -> tuple[int, bytes, bool]:
    """The status, the body and whether the connection may be reused."""
    status_line, _, header_block = head.partition(b"\r\n")
    try:
        status = int(status_line[9:12])
    except ValueError:
        raise HttpError(f"not an HTTP response: {status_line[:80]!r}") from None
    length: int | None = None
    chunked = False
    keep = not status_line.startswith(b"HTTP/1.0")
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = value.strip().lower() == b"keep-alive" or (
                keep and value.strip().lower() != b"close"
            )
    if chunked:
        body = await _read_chunked(reader)
    elif length is not None:
        body = await reader.readexactly(length)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        body = await reader.read()  # delimited by the end of the connection
        keep = False
    return status, body, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            while (await reader.readline()).strip():
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)  # CRLF
