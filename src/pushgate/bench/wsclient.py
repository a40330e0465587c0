"""A lean WebSocket client for the bench workers: an asyncio protocol that does the
opening handshake itself and then parses server frames by hand.

Why not ``websockets``' ``ClientProtocol`` for every frame: its generator-based
parser costs several microseconds per frame, and the clients share this machine's
cores with the server they measure. Here a read that holds many frames (the server
coalesces them) is walked in one loop, and a push is recognised without decoding
its JSON: its ``data`` is the bench's own text ``"<send time ns> <seq> <pad>"``.
What it does not need, it does not implement: no extensions, no subprotocols;
fragmented messages are reassembled but rare. The bytes it writes and the walk of
the frames it reads are :mod:`pushgate.bench.rawws`'s.

A client's life: ``connection_made`` sends the upgrade request; ``opened`` resolves
once the 101 arrived (and the welcome frame, when ``need_welcome``); protocol pings
are answered; a close frame from the server is echoed and its code kept in
``close_code``; ``closed`` resolves when the TCP connection is gone.
"""

import asyncio
import json
import time
from typing import Any, cast

from pushgate.bench.histogram import SIGNIFICANT_BITS, Histogram
from pushgate.bench.rawws import (
    NO_STATUS,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    accept_of,
    frame_spans,
    masked_frame,
    new_key,
    upgrade_request,
)
from pushgate.wire import PING, TYPE_WELCOME

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_ABNORMAL = 1006  # no close frame: the TCP connection just ended
MAX_HANDSHAKE_BYTES = 16 * 1024


class HandshakeError(Exception):
    """The server refused or botched the WebSocket opening handshake."""


class HandshakeDropped(HandshakeError):
    """The server closed (or reset) the connection before its 101: what the seed's Go
    server does to an upgrade request that took over 10 ms to arrive. Worth a retry."""


class Counters:
    """What every measured client of one worker adds to, on each delivery."""

    __slots__ = ("arrivals", "deliveries", "hist", "last_ns", "open", "unmeasured")

    def __init__(self) -> None:
        self.open = 0  # measured clients past the handshake and not yet closed
        self.deliveries = 0  # pushes received by measured clients
        self.unmeasured = 0  # pushes received by churn clients, counted apart
        self.last_ns = 0  # wall clock (time.time_ns) of the latest delivery
        self.hist = Histogram()  # delivery latency in microseconds
        # The resume scenario, from the drop until every client caught up: per stream
        # key, per seq, the wall clock of its latest arrival at any client of this worker
        # (see pushgate.bench.resumeclient). None otherwise: nothing is recorded.
        self.arrivals: dict[bytes, dict[int, int]] | None = None


def close_payload(code: int) -> bytes:
    return code.to_bytes(2, "big")


class BenchClient(asyncio.Protocol):
    """One WebSocket connection to the server under test."""

    def __init__(
        self,
        index: int,
        host: str,
        path: str,
        counters: Counters,
        *,
        need_welcome: bool,
        measured: bool = True,
    ) -> None:
        self.index = index
        self.counters = counters
        self.measured = measured
        self.need_welcome = need_welcome
        self.key = new_key()
        self.request = upgrade_request(host, path, self.key)
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.ws_id: str | None = None
        self.heartbeat: float | None = None
        # Accounting
        self.received = 0
        self.last_seq = -1
        self.out_of_order = 0
        self.close_code: int | None = None  # set when the server closed us
        # Parser state
        self._handshaking = True
        self._buf = b""
        self._fragments: list[bytes] = []
        self._closing = False  # we sent a close frame

    @property
    def upgraded(self) -> bool:
        """The server answered the handshake with 101."""
        return not self._handshaking

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if self._handshaking:
            data = self._on_handshake_data(data)
            if not data:
                return
        self._on_frames(data)

    def eof_received(self) -> bool | None:
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.measured and not self._handshaking:
            self.counters.open -= 1
        if not self.opened.done():
            reason = f"connection lost during the handshake: {exc or 'EOF'}"
            self.opened.set_exception(HandshakeDropped(reason))
        if self.close_code is None and not self._closing:
            self.close_code = CLOSE_ABNORMAL
        if not self.closed.done():
            self.closed.set_result(None)

    # Commands from the worker

    def send_ping_message(self) -> None:
        """The application heartbeat a seed client sends: ``{"type":1,"data":"PING"}``."""
        if self.transport is not None and not self._closing and not self.transport.is_closing():
            self.transport.write(masked_frame(OP_TEXT, PING))

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the server answers and drops the TCP connection."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._handshaking:
            self.transport.abort()
            return
        if not self._closing:
            self._closing = True
            self.transport.write(masked_frame(OP_CLOSE, close_payload(code)))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # Handshake

    def _on_handshake_data(self, data: bytes) -> bytes:
        """Consume the 101 response; return the bytes after it (frames already)."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HANDSHAKE_BYTES:
                self._fail_handshake("response headers too long")
            else:
                self._buf = data
            return b""
        head, rest = data[:end], data[end + 4 :]
        status_line, _, headers = head.partition(b"\r\n")
        if status_line[9:12] != b"101":
            self._fail_handshake(f"server answered {status_line.decode('latin-1')!r}, not 101")
            return b""
        if _header(headers, b"sec-websocket-accept") != accept_of(self.key):
            self._fail_handshake("Sec-WebSocket-Accept does not match the key")
            return b""
        self._handshaking = False
        if self.measured:
            self.counters.open += 1
        if not self.need_welcome:
            self.opened.set_result(None)
        return rest

    def _fail_handshake(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(reason))
        if self.transport is not None:
            self.transport.abort()

    # Frames

    def _on_frames(self, buf: bytes) -> None:
        """Walk every complete frame in ``buf``; keep a partial one for the next read.

        This runs once per read and its loop once per delivery: a final text frame
        (a push, as a rule) goes straight to :meth:`_on_text`, which a subclass
        reads in its own way; the rest to :meth:`_on_other_frame`."""
        now = time.time_ns()  # one arrival time for every frame of this read
        on_text = self._on_text
        pos, size = 0, len(buf)
        for b0, b1, start, end in frame_spans(buf):
            if b1 & 0x80:
                self._protocol_error("the server masked a frame")
                return
            if end > size:
                break
            pos = end
            if b0 == 0x81:  # a final text frame
                on_text(buf, start, end, now)
            else:
                self._on_other_frame(b0, b0 & 0x0F, buf[start:end], now)
        if pos < size:
            self._buf = buf[pos:]

    def _on_text(self, buf: bytes, start: int, end: int, now: int) -> None:
        """A text message, ``buf[start:end]``. A push reads
        ``{"type":N,"data":"<sent ns> <seq> <pad>"...}`` and is counted in place,
        without decoding its JSON (the counting of :meth:`_on_push`, inlined);
        anything else (the welcome, a PONG, another layout) is decoded as JSON."""
        i = buf.find(b'"data":"', start, end) + 8
        j = buf.find(b" ", i, end) if i > 7 else -1
        k = buf.find(b" ", j + 1, end) if j > 0 else -1
        try:
            if k < 0:
                raise ValueError
            sent, seq = int(buf[i:j]), int(buf[j + 1 : k])
        except ValueError:
            self._on_other_message(buf[start:end], now)
            return
        counters = self.counters
        if not self.measured:
            counters.unmeasured += 1
            return
        self.received += 1
        if seq <= self.last_seq:
            self.out_of_order += 1
        self.last_seq = seq
        counters.deliveries += 1
        # Histogram.add, inlined.
        latency = (now - sent) // 1000
        if latency < 0:
            latency = 0
        shift = latency.bit_length() - SIGNIFICANT_BITS
        if shift > 0:
            latency = latency >> shift << shift
        counts = counters.hist.counts
        counts[latency] = counts.get(latency, 0) + 1
        counters.last_ns = now

    def _on_other_message(self, payload: bytes, now: int) -> None:
        """A message off the fast path, decoded as JSON: a type-0 message (the
        welcome), a PONG, or a push in a layout the fast path does not know."""
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if isinstance(message, dict):
            self._on_json(message, now)

    def _on_json(self, message: dict[str, Any], now: int) -> None:
        """A message off the fast path, decoded: what this protocol says to a client
        (a subclass for another protocol reads its own messages here)."""
        data = message.get("data")
        if message.get("type") == TYPE_WELCOME and isinstance(data, dict):
            self._on_type0(data, now)
        elif isinstance(data, str):
            parts = data.split(" ", 2)
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                self._on_push(message, int(parts[0]), int(parts[1]), now)

    def _on_type0(self, data: dict[str, Any], now: int) -> None:
        """The welcome: the wsId a scenario joins rooms with."""
        ws_id, heartbeat = data.get("wsId"), data.get("heartbeat")
        self.ws_id = ws_id if isinstance(ws_id, str) else None
        self.heartbeat = float(heartbeat) if isinstance(heartbeat, int | float) else None
        if self.need_welcome and not self.opened.done():
            self.opened.set_result(None)

    def _on_push(self, message: dict[str, Any], sent_ns: int, seq: int, now: int) -> None:
        """A push found off the fast path (fragmented, or in another JSON layout),
        sent at ``sent_ns`` with the bench's ``seq``: counted as :meth:`_on_text` does."""
        counters = self.counters
        if not self.measured:
            counters.unmeasured += 1
            return
        self.received += 1
        if seq <= self.last_seq:
            self.out_of_order += 1
        self.last_seq = seq
        counters.deliveries += 1
        counters.hist.add((now - sent_ns) // 1000)
        counters.last_ns = now

    def _on_other_frame(self, b0: int, opcode: int, payload: bytes, now: int) -> None:
        fin = bool(b0 & 0x80)
        if opcode in (OP_TEXT, OP_BINARY):  # the first of a fragmented message
            self._fragments = [payload]
            if fin:  # a binary message: decode it as text
                self._fragments = []
                self._on_other_message(payload, now)
        elif opcode == OP_CONT:
            self._fragments.append(payload)
            if fin:
                message = b"".join(self._fragments)
                self._fragments = []
                self._on_other_message(message, now)
        elif opcode == OP_CLOSE:
            self._on_close_frame(payload)
        elif opcode == OP_PING and self.transport is not None:
            self.transport.write(masked_frame(OP_PONG, payload))
        # OP_PONG and reserved opcodes: nothing to do.

    def _on_close_frame(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS
        if self._closing:
            return  # the echo of our own close; the server now drops the connection
        self.close_code = code
        self._closing = True
        if self.transport is not None:
            # Echo it (RFC 6455 5.5.1); the server closes the TCP connection first.
            self.transport.write(masked_frame(OP_CLOSE, payload[:2]))

    def _protocol_error(self, reason: str) -> None:
        """The server broke the protocol: drop the connection, as 1002 would."""
        self.close_code = CLOSE_PROTOCOL_ERROR
        self._closing = True
        if self.transport is not None:
            self.transport.abort()


def _header(headers: bytes, name: bytes) -> bytes | None:
    """The value of a header (name in lower case) in a raw header block."""
    for line in headers.split(b"\r\n"):
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None
