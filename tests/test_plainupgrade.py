"""A plain upgrade to /connect is answered without the websockets parser
(plainupgrade.py): what it takes, it reads as the full path does and answers with
the same bytes; everything else goes the full path, with the full path's answer."""

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.utils import accept_key

from pushgate import plainupgrade
from pushgate.gatewayhttp import SERVER_HEADER
from pushgate.plainupgrade import HttpDate, PlainUpgrade, parse_plain_upgrade, switching_protocols
from pushgate.wsprotocol import PARKED_PARSER, GatewayProtocol, new_protocol
from tests.helpers import (
    FAST_TIMERS,
    LOOPBACK,
    UNIT,
    Running,
    open_client,
    post,
    recv_json,
    running_server,
    without_position,
)
from tests.test_connect_hook import SETTINGS, always, backend

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SECRET = "s" * 32


def request(
    path: str = "/connect",
    *,
    extra: str = "",
    drop: str | None = None,
    first: str | None = None,
) -> bytes:
    """A plain upgrade (``first`` for another request line), without the header
    ``drop`` names, with ``extra`` header lines."""
    headers = [
        f"Host: {LOOPBACK}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    lines = [line for line in headers if drop is None or not line.startswith(drop + ":")]
    head = first if first is not None else f"GET {path} HTTP/1.1"
    return (head + "\r\n" + "".join(f"{line}\r\n" for line in lines) + extra + "\r\n").encode()


# What the short way takes


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (request(), PlainUpgrade("", KEY, None)),
        (request("/connect?resume=1&v=2"), PlainUpgrade("resume=1&v=2", KEY, None)),
        (request("/connect?"), PlainUpgrade("", KEY, None)),
        (
            request(extra="Origin: https://example.com\r\n"),
            PlainUpgrade("", KEY, "https://example.com"),
        ),
        (
            request(drop="Connection", extra="Connection: keep-alive, Upgrade\r\n"),
            PlainUpgrade("", KEY, None),
        ),
        (
            request(drop="Upgrade", extra="UPGRADE:  WebSocket  \r\nUser-Agent: a b/1\r\n"),
            PlainUpgrade("", KEY, None),
        ),
    ],
)
def test_a_plain_upgrade_is_read(data: bytes, expected: PlainUpgrade) -> None:
    assert parse_plain_upgrade(data) == expected
    # ... as the full path reads it, which accepts it
    assert full_path(data) == expected


def full_path(data: bytes) -> PlainUpgrade | None:
    """What websockets reads of ``data`` and accepts (None: it does not accept it)."""
    proto = ServerProtocol()
    proto.receive_data(data)
    events = proto.events_received()
    if len(events) != 1 or not isinstance(events[0], Request) or proto.reader.buffer:
        return None
    incoming = events[0]
    response = proto.accept(incoming)
    path, _, query = incoming.path.partition("?")
    if response.status_code != 101 or path != "/connect" or "Host" not in incoming.headers:
        return None
    return PlainUpgrade(query, incoming.headers["Sec-WebSocket-Key"], proto.origin)


NOT_PLAIN = {
    "an extension offered": request(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"),
    "a subprotocol offered": request(extra="Sec-WebSocket-Protocol: pushgate\r\n"),
    "a body": request(extra="Content-Length: 0\r\n"),
    "a transfer coding": request(extra="Transfer-Encoding: chunked\r\n"),
    "a header twice": request(extra=f"Sec-WebSocket-Key: {KEY}\r\n"),
    "a header twice, in another case": request(extra=f"host: {LOOPBACK}\r\n"),
    "no Host": request(drop="Host"),
    "no Upgrade": request(drop="Upgrade"),
    "another Upgrade": request(drop="Upgrade", extra="Upgrade: h2c\r\n"),
    "Upgrade of two": request(drop="Upgrade", extra="Upgrade: websocket, h2c\r\n"),
    "no Connection": request(drop="Connection"),
    "Connection without upgrade": request(drop="Connection", extra="Connection: close\r\n"),
    "Connection with an empty element": request(
        drop="Connection", extra="Connection: , Upgrade\r\n"
    ),
    "no key": request(drop="Sec-WebSocket-Key"),
    "a key not base64": request(drop="Sec-WebSocket-Key", extra="Sec-WebSocket-Key: !!!\r\n"),
    "a key of 15 bytes": request(
        drop="Sec-WebSocket-Key",
        extra=f"Sec-WebSocket-Key: {base64.b64encode(bytes(15)).decode()}\r\n",
    ),
    "no version": request(drop="Sec-WebSocket-Version"),
    "version 8": request(drop="Sec-WebSocket-Version", extra="Sec-WebSocket-Version: 8\r\n"),
    "POST": request(first="POST /connect HTTP/1.1"),
    "HEAD": request(first="HEAD /connect HTTP/1.1"),
    "HTTP/1.0": request(first="GET /connect HTTP/1.0"),
    "a request line of four words": request(first="GET /connect HTTP/1.1 x"),
    "another path": request("/connectx"),
    "Pusher's path": request("/app/key?protocol=7"),
    "the events": request("/events"),
    "the echo": request("/echo"),
    "the root": request("/"),
    "a path that is not ASCII": request("/connect?x=\xe9"),
    "a tab in a value": request(extra="X-A: b\tc\r\n"),
    "a tab around a value": request(extra="X-A:\tb\r\n"),
    "obs-text in a value": request(extra="X-A: caf\xe9\r\n"),
    "a control byte in a value": request(extra="X-A: b\x01c\r\n"),
    "a bare LF": request(extra="X-A: b\nX-B: c\r\n"),
    "a bare CR": request(extra="X-A: b\rX-B: c\r\n"),
    "a line without a colon": request(extra="X-A\r\n"),
    "a space before the colon": request(extra="X-A : b\r\n"),
    "obsolete line folding": request(extra="X-A: b\r\n c\r\n"),
    "more after the request": request() + b"\x88\x80abcd",
    "a request not ended": request()[:-2],
    "two requests": request() + request(),
    "a line too long": request(extra=f"X-A: {'a' * (MAX_LINE_LENGTH - 6)}\r\n"),
    "a request line too long": request(f"/connect?{'a' * MAX_LINE_LENGTH}"),
    "too many headers": request(extra="".join(f"X-{i}: a\r\n" for i in range(MAX_NUM_HEADERS - 4))),
}


@pytest.mark.parametrize("data", NOT_PLAIN.values(), ids=NOT_PLAIN.keys())
def test_anything_else_is_left_to_the_full_path(data: bytes) -> None:
    assert parse_plain_upgrade(data) is None


def test_the_limits_are_websockets_own() -> None:
    """As many headers as websockets takes are plain, one more is not (nor does
    websockets take it: 431); and a request is plain within the length websockets
    allows each of its lines, not a byte more."""
    most = request(extra="".join(f"X-{i}: a\r\n" for i in range(MAX_NUM_HEADERS - 5)))
    padding = MAX_LINE_LENGTH - len(request(extra="X-A: \r\n"))
    longest = request(extra=f"X-A: {'a' * padding}\r\n")
    assert len(longest) == MAX_LINE_LENGTH
    for data in (most, longest):
        assert parse_plain_upgrade(data) == full_path(data) == PlainUpgrade("", KEY, None)
    assert full_path(NOT_PLAIN["too many headers"]) is None
    longer = request(extra=f"X-A: {'a' * (padding + 1)}\r\n")
    assert parse_plain_upgrade(longer) is None
    assert full_path(longer) == PlainUpgrade("", KEY, None)  # taken the long way
    assert full_path(NOT_PLAIN["a line too long"]) is None


LINES = st.sampled_from(
    [
        "Host: h",
        "Upgrade: websocket",
        "Upgrade: WebSocket",
        "Upgrade: h2c",
        "Connection: Upgrade",
        "Connection: keep-alive, upgrade",
        "Connection: close",
        "Connection: ,upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Version: 12",
        "Sec-WebSocket-Protocol: pushgate",
        "Origin: http://a.example",
        "X-Empty:",
        "X-Spaces:   a  b   ",
        "X-Tab: a\tb",
        "Content-Length: 0",
        "bad line",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    first=st.sampled_from(
        ["GET /connect HTTP/1.1", "GET /connect?a=1 HTTP/1.1", "GET /connect HTTP/1.0"]
    ),
    lines=st.lists(LINES, max_size=9),
    noise=st.binary(max_size=4),
    at=st.integers(min_value=0),
)
def test_what_the_short_way_takes_the_full_path_takes_alike(
    first: str, lines: list[str], noise: bytes, at: int
) -> None:
    """Whatever mix of header lines (and a few bytes of noise anywhere): when the
    short way takes a request, websockets takes it too and reads the same."""
    data = (first + "\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()
    at %= len(data) + 1
    for candidate in (data, data[:at] + noise + data[at:]):
        plain = parse_plain_upgrade(candidate)
        if plain is not None:
            assert full_path(candidate) == plain


# What it answers


def test_the_101_is_the_full_paths_byte_for_byte() -> None:
    proto = ServerProtocol()
    proto.receive_data(request())
    [incoming] = proto.events_received()
    assert isinstance(incoming, Request)
    response = proto.accept(incoming)
    response.headers["Server"] = SERVER_HEADER
    date = response.headers["Date"].encode()
    assert switching_protocols(KEY, date) == response.serialize()
    assert f"Sec-WebSocket-Accept: {accept_key(KEY)}\r\n".encode() in response.serialize()


def test_the_date_is_made_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [784111777.25]
    monkeypatch.setattr("pushgate.plainupgrade.time.time", lambda: now[0])
    clock = HttpDate()
    first = clock.now()
    assert first == b"Sun, 06 Nov 1994 08:49:37 GMT"
    now[0] += 0.5
    assert clock.now() is first
    now[0] += 0.5
    assert clock.now() == b"Sun, 06 Nov 1994 08:49:38 GMT"


def test_a_protocol_opened_plain_is_open_and_parked() -> None:
    """open_plain leaves the protocol as send_response(101) does, with its parser
    parked; frames read after it as after a full handshake."""
    proto = new_protocol(max_size=2**20, logger=None, extensions=None)
    proto.open_plain(b"HTTP/1.1 101 ...\r\n\r\n", "https://example.com")
    assert proto.state is State.OPEN
    assert proto.parser is PARKED_PARSER
    assert proto.origin == "https://example.com"
    assert (proto.extensions, proto.subprotocol) == ([], None)
    assert proto.data_to_send() == [b"HTTP/1.1 101 ...\r\n\r\n"]
    proto.receive_data(b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"hi", b"ab", strict=True)))
    [frame] = proto.events_received()
    assert bytes(frame.data) == b"hi"  # type: ignore[union-attr]
    assert isinstance(proto, GatewayProtocol)


# Through a gateway


@asynccontextmanager
async def counting(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[list[str]]:
    """The keys answered by the short way, as they are answered."""
    keys: list[str] = []
    real: Callable[[str], bytes] = plainupgrade.switching_protocols

    def counted(key: str) -> bytes:
        keys.append(key)
        return real(key)

    monkeypatch.setattr("pushgate.wshandshake.switching_protocols", counted)
    yield keys


async def exchange(port: int, data: bytes, *, split: int | None = None) -> bytes:
    """Send ``data`` (in two writes with ``split``); what the gateway answers before
    its first frame: the head of its response."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        if split is None:
            writer.write(data)
        else:
            writer.write(data[:split])
            await writer.drain()
            await asyncio.sleep(0.05 * UNIT)  # two reads, not one: the full path
            writer.write(data[split:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5 * UNIT)
        if head.startswith(b"HTTP/1.1 101 "):
            assert await recv_frame_json(reader) is not None  # the welcome follows
        return head
    finally:
        writer.close()


async def recv_frame_json(reader: asyncio.StreamReader) -> bytes:
    first, size = await asyncio.wait_for(reader.readexactly(2), 5 * UNIT)
    assert first == 0x81, first
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    return await reader.readexactly(size)


def without_date(head: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"", head)


async def test_a_plain_upgrade_takes_the_short_way_and_gets_the_same_101(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same request whole (the short way) and in two reads (the full path): the
    same 101, the welcome after it."""
    async with counting(monkeypatch) as keys:
        whole = await exchange(server.ws_port, request())
        assert keys == [KEY]
        split = await exchange(server.ws_port, request(), split=20)
        assert keys == [KEY]
    assert whole.startswith(b"HTTP/1.1 101 ")
    assert without_date(whole) == without_date(split)


async def test_a_plain_client_is_served_as_any(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Welcome, pong, push and close on a connection opened the short way (the
    websockets client's upgrade is plain without compression)."""
    async with counting(monkeypatch) as keys:
        ws, ws_id = await open_client(server.ws_url, compression=None)
    assert len(keys) == 1
    await ws.send('{"type":1,"data":"PING"}')
    assert await recv_json(ws) == {"type": 1, "data": "PONG"}
    async with aiohttp.ClientSession() as http:
        status, _ = await post(http, server.api_url + "/push/all", json={"val": 7, "tag": 9})
    assert status == 200
    assert without_position(await asyncio.wait_for(ws.recv(), 5 * UNIT)) == '{"type":9,"data":7}\n'
    await ws.close()
    assert ws.close_code == 1000
    assert ws_id


FULL_PATH_ANSWERS = [
    ("no Upgrade", request(drop="Upgrade"), b"426"),
    ("version 8", NOT_PLAIN["version 8"], b"400"),
    ("POST", NOT_PLAIN["POST"], b"405"),
    ("HTTP/1.0", NOT_PLAIN["HTTP/1.0"], b"505"),
    ("no Host", NOT_PLAIN["no Host"], b"400"),
    ("another path", NOT_PLAIN["another path"], b"404"),
    ("a line too long", NOT_PLAIN["a line too long"], b"431"),
    ("too many headers", NOT_PLAIN["too many headers"], b"431"),
    ("a request line too long", NOT_PLAIN["a request line too long"], b"414"),
    ("a subprotocol offered", NOT_PLAIN["a subprotocol offered"], b"101"),
    ("an extension offered", NOT_PLAIN["an extension offered"], b"101"),
]


@pytest.mark.parametrize(
    ("data", "status"),
    [(data, status) for _, data, status in FULL_PATH_ANSWERS],
    ids=[name for name, _, _ in FULL_PATH_ANSWERS],
)
async def test_what_is_not_plain_gets_the_full_paths_answer(
    data: bytes, status: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_server(**FAST_TIMERS, max_handshake_bytes=64 * 1024) as server,
        counting(monkeypatch) as keys,
    ):
        head = await exchange(server.ws_port, data)
        assert head.split(b" ")[1] == status, head
        assert keys == []
    if data is NOT_PLAIN["a subprotocol offered"]:
        assert b"Sec-WebSocket-Protocol: pushgate\r\n" in head
    if data is NOT_PLAIN["an extension offered"]:
        assert b"Sec-WebSocket-Extensions: permessage-deflate" in head


async def test_a_refusal_is_the_full_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Origin not allowed, a token required or not valid: refused as before, with
    the status and reason the full path gives; a valid token is taken the short way."""
    origin = "Origin: https://evil.example\r\n"
    async with (
        running_server(
            **FAST_TIMERS,
            allowed_origins="https://good.example",
            token_secret=SECRET,
            require_token=True,
        ) as server,
        counting(monkeypatch) as keys,
    ):
        token = jwt.encode({"sub": "ann"}, SECRET, algorithm="HS256")
        assert (await exchange(server.ws_port, request(extra=origin))).split(b" ")[1] == b"403"
        assert (await exchange(server.ws_port, request())).split(b" ")[1] == b"401"
        bad = request("/connect?token=a.b.c")
        assert (await exchange(server.ws_port, bad)).split(b" ")[1] == b"403"
        assert keys == []
        good = request(f"/connect?token={token}", extra="Origin: https://good.example\r\n")
        assert (await exchange(server.ws_port, good)).startswith(b"HTTP/1.1 101 ")
        assert keys == [KEY]


async def test_with_a_connect_hook_every_upgrade_takes_the_full_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hook is given the whole request: the short way is not taken."""
    async with (
        backend(always({"allow": True})) as hooked,
        running_server(**SETTINGS, connect_hook=hooked.url) as server,
        counting(monkeypatch) as keys,
    ):
        assert (await exchange(server.ws_port, request())).startswith(b"HTTP/1.1 101 ")
        assert keys == []
        assert len(hooked.asked) == 1
