"""Client-side WebSocket bytes written by hand, for every client of the bench.

Two kinds of client share them: the measured ones (:mod:`pushgate.bench.wsclient`),
which must cost as little CPU per frame as can be, since they share the machine
with the server they measure; and the attackers of ``bench abuse``, which must
control every byte they send: frames no honest library would send (fin=0 forever,
pings back to back) and requests no library would leave unfinished. So both frame
by hand here, masking included (RFC 6455 5.3: every client frame is masked, or the
server must fail the connection).

Reading, both walk the server's frames with :func:`frame_spans`, which finds where
each frame's payload lies without copying it; a measured client reads the frames,
an attacker only looks for the close frame (:class:`CloseScanner`).
"""

import base64
import contextlib
import hashlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from websockets.utils import apply_mask

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NO_STATUS = 1005  # RFC 6455 7.4.1: a close frame without a code
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
# Linux's IP_BIND_ADDRESS_NO_PORT (24): with a source address bound, let connect()
# pick the port per destination, instead of bind() reserving one for every address.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def masked_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One client frame: header, a fresh 4-byte mask, the payload masked with it."""
    length = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    if length < 126:
        head.append(0x80 | length)
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    return bytes(head) + mask + apply_mask(payload, mask)


def frame_spans(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Walk the frames in ``buf``: for each one whose header is complete, yield its
    first two bytes (FIN and opcode; MASK and the 7-bit length) and where its payload
    starts and ends (a masked frame's payload starts after its mask). Each frame
    starts where the one before ends, the first at 0. The last frame's payload, or
    even its mask, may run past the end of ``buf`` (``end > len(buf)``): the caller
    keeps that frame for the next read, or skips what it will not read.

    The one walk of every client (RFC 6455 5.2's lengths read in one place). A
    generator costs a little per frame over a loop written out in each client:
    about 0.17 µs, against some 1.6 µs to read and count a push."""
    pos, size = 0, len(buf)
    while size - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        start, length = pos + 2, b1 & 0x7F
        if length >= 126:
            extra = 2 if length == 126 else 8
            if size - start < extra:
                return
            length = int.from_bytes(buf[start : start + extra], "big")
            start += extra
        if b1 & 0x80:
            start += 4
        end = start + length
        yield b0, b1, start, end
        pos = end


def repeated(frame: bytes, size: int) -> tuple[bytes, int]:
    """As many copies of ``frame`` as fit in ``size`` bytes (at least one), and how
    many: one write of this chunk hands the kernel that many frames at once."""
    count = max(1, size // len(frame))
    return frame * count, count


def new_key() -> bytes:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64-encoded."""
    return base64.b64encode(os.urandom(16))


def accept_of(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server must answer ``key`` with (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade_request(host_header: str, path: str, key: bytes | None = None) -> bytes:
    """A minimal, valid WebSocket upgrade request (no extensions, no subprotocol),
    with ``key`` (a fresh one when not given: a caller that checks the answer keeps it)."""
    return (
        (
            f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: "
        ).encode()
        + (key or new_key())
        + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


def status_of(head: bytes) -> int | None:
    """The status code of an HTTP response that starts with ``head``, once its status
    line is complete; None before that, or when it is not HTTP."""
    line, sep, _ = head.partition(b"\r\n")
    if not sep or not line.startswith(b"HTTP/1."):
        return None
    code = line[9:12]
    return int(code) if code.isdigit() else None


@dataclass
class CloseScanner:
    """Finds the server's close frame in a stream of server frames, skipping every
    other frame's payload without copying it: cheap enough to run on a flooder that
    reads a pong for each of its pings."""

    _head: bytes = b""  # the start of a frame whose header is not complete yet
    _skip: int = 0  # payload bytes of the current frame still to come

    def feed(self, data: bytes) -> int | None:
        """Take the next bytes; return the close code once a close frame is complete
        (1005 when it carries none), None until then."""
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return None
            data, self._skip = data[self._skip :], 0
        buf = self._head + data if self._head else data
        pos, size = 0, len(buf)  # pos: where the frame being looked at starts
        for b0, _, start, end in frame_spans(buf):
            if b0 & 0x0F == OP_CLOSE:
                if end > size:
                    break  # wait for the whole close frame
                code = buf[start : start + 2]
                return int.from_bytes(code, "big") if len(code) == 2 else NO_STATUS
            if end > size:
                if start > size:
                    break  # even the header is cut: keep it whole
                self._skip = end - size
                pos = size
                break
            pos = end
        self._head = buf[pos:]
        return None


def client_socket(family: int, source: str | None, rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking TCP socket bound to ``source`` (when given and IPv4), with a
    receive buffer of ``rcvbuf`` bytes set before connecting (so the window the
    kernel announces in the handshake is small from the start)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None and family == socket.AF_INET:
            with contextlib.suppress(OSError):  # a kernel without it: bind() picks the port
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock
