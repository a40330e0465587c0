"""Client-side WebSocket bytes written by hand, for the attackers of ``bench abuse``.

An attacker must control every byte it sends: frames no honest library would send
(fin=0 forever, pings back to back) and requests no library would leave unfinished.
So the attackers frame by hand here, masking included (RFC 6455 5.3: every client
frame is masked, or the server must fail the connection, which would end the attack
before it began). The one thing they read is how the server ends their connection:
:class:`CloseScanner` walks the server's frames just far enough to find a close frame.
"""

import base64
import os
import socket
from dataclasses import dataclass

OP_CONT, OP_TEXT, OP_CLOSE, OP_PING = 0x0, 0x1, 0x8, 0x9
NO_STATUS = 1005  # RFC 6455 7.4.1: a close frame without a code


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
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + mask + body


def repeated(frame: bytes, size: int) -> tuple[bytes, int]:
    """As many copies of ``frame`` as fit in ``size`` bytes (at least one), and how
    many: one write of this chunk hands the kernel that many frames at once."""
    count = max(1, size // len(frame))
    return frame * count, count


def upgrade_request(host_header: str, path: str) -> bytes:
    """A minimal, valid WebSocket upgrade request (no extensions, no subprotocol)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


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
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            start, length = pos + 2, b1 & 0x7F
            if length >= 126:
                extra = 2 if length == 126 else 8
                if size - start < extra:
                    break
                length = int.from_bytes(buf[start : start + extra], "big")
                start += extra
            if b1 & 0x80:
                start += 4  # a masked server frame breaks the RFC; skip its mask anyway
            end = start + length
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
            # Linux's IP_BIND_ADDRESS_NO_PORT: let connect() pick the port.
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
            sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock
