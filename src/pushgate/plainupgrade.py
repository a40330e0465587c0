"""The short way through the most common handshake: a plain WebSocket upgrade to
``/connect``, read and answered without the websockets library's HTTP parser.

A client that connects and goes at once (a page reloaded, a phone between cells,
a reconnect loop) costs the gateway one handshake each time; through websockets'
``Request.parse`` (a generator per line, a ``Headers`` object) and
``ServerProtocol.accept`` (each header parsed again, a ``Response`` object,
``formatdate``), that was a third of the server's CPU per connect-and-close
(docs/benchmarks.md, issue 22).

The request is attacker input, so this path takes only what is plainly valid and
leaves everything else, unchanged, to the full path (gatewayhttp.py over
websockets), which answers it exactly as before (400, 404, 405, 414, 426, 431, 505,
...). :func:`parse_plain_upgrade` returns None, and the full path reads the same
bytes, unless the read holds one whole request and nothing after it, and:

- all of it is within websockets' ``MAX_LINE_LENGTH`` (8 KiB: so is each line);
- its request line is ``GET /connect HTTP/1.1`` or ``GET /connect?<query> HTTP/1.1``
  (visible ASCII only);
- every header line is ``name: value`` with a token for a name and visible ASCII
  and spaces for a value (no tab), at most ``MAX_NUM_HEADERS`` of them, and no
  name twice;
- ``Host`` is there; ``Upgrade`` is ``websocket``; ``Connection`` is a list of tokens,
  ``upgrade`` among them; ``Sec-WebSocket-Key`` is base64 of 16 bytes;
  ``Sec-WebSocket-Version`` is ``13``;
- it offers no extension (``Sec-WebSocket-Extensions``: permessage-deflate) and no
  subprotocol (``Sec-WebSocket-Protocol``: a browser's token), and has no body
  (``Content-Length``, ``Transfer-Encoding``).

Those are the checks websockets makes, each as strict or stricter; what else it
reads of a request (``Origin``, the query) the gateway decides the same way on both
paths (gatewayhttp.py). The answer, :func:`switching_protocols`, is byte for byte
the 101 the full path sends (tests/test_plainupgrade.py compares them).
"""

import base64
import binascii
import email.utils
import re
import time
from dataclasses import dataclass

from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS
from websockets.utils import accept_key

from pushgate.gatewayhttp import ENDPOINT, SERVER_HEADER

# A token (RFC 9110 5.6.2): a header's name, a Connection option.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
# The request, whole, in one match (a C loop, not one Python step per line): the
# request line, GET of /connect with an optional query of visible ASCII, then at
# most MAX_NUM_HEADERS header lines of a token, a colon and visible ASCII and
# spaces (no tab, no obs-text, no control byte: the lines cannot run into each
# other), then the blank line, and nothing after it.
_REQUEST = re.compile(
    rb"GET "
    + re.escape(ENDPOINT.encode())
    + rb"(\?[\x21-\x7e]*)? HTTP/1\.1\r\n((?:"
    + _TOKEN
    + rb":[\x20-\x7e]*\r\n){0,%d})\r\n" % MAX_NUM_HEADERS
)
_OPTION = re.compile(_TOKEN)
# Headers that only the full path handles.
_NOT_PLAIN = frozenset(
    (
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"content-length",
        b"transfer-encoding",
    )
)


@dataclass(frozen=True, slots=True)
class PlainUpgrade:
    """What the gateway reads of a plain upgrade: its query (after ``?``; empty
    without one), its key, and its ``Origin`` (None without one)."""

    query: str
    key: str
    origin: str | None


def parse_plain_upgrade(data: bytes) -> PlainUpgrade | None:
    """The upgrade ``data`` is, if it is one whole plain upgrade to /connect and
    nothing more (module docstring); None: the full path reads it."""
    # Within one line's bound, every line is (websockets bounds each line alone).
    if len(data) > MAX_LINE_LENGTH:
        return None
    request = _REQUEST.fullmatch(data)
    if request is None:
        return None
    lines = request[2].split(b"\r\n")
    lines.pop()  # after the last CRLF
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.lower()] = value.strip(b" ")
    if len(headers) != len(lines) or not _NOT_PLAIN.isdisjoint(headers):
        return None  # a header twice, or one for the full path
    if b"host" not in headers or headers.get(b"upgrade", b"").lower() != b"websocket":
        return None
    if headers.get(b"sec-websocket-version") != b"13":
        return None
    options = [option.strip(b" ") for option in headers.get(b"connection", b"").split(b",")]
    if not all(_OPTION.fullmatch(option) for option in options):
        return None
    if b"upgrade" not in (option.lower() for option in options):
        return None
    key = headers.get(b"sec-websocket-key", b"")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    query = request[1]
    origin = headers.get(b"origin")
    return PlainUpgrade(
        query[1:].decode() if query else "",
        key.decode(),
        None if origin is None else origin.decode(),
    )


class HttpDate:
    """The ``Date`` header's value, made once a second rather than once a response."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._value = email.utils.formatdate(now, usegmt=True).encode()
            self._second = second
        return self._value


_HEAD = b"HTTP/1.1 101 Switching Protocols\r\nDate: "
_UPGRADE = b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
_TAIL = b"\r\nServer: " + SERVER_HEADER.encode() + b"\r\n\r\n"


# One per process, as there is one event loop (each worker of --workers has its own).
HTTP_DATE = HttpDate()


def switching_protocols(key: str, date: bytes | None = None) -> bytes:
    """The 101 that accepts ``key``, dated ``date`` (default: now): the full path's,
    with the same headers in the same order (websockets' ``accept``, then the
    gateway's ``Server``)."""
    when = HTTP_DATE.now() if date is None else date
    return b"".join((_HEAD, when, _UPGRADE, accept_key(key).encode(), _TAIL))
