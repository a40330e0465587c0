"""One connection, or one address, must not be able to stop the gateway: each attack
an attacker on the same network could make, and what the server does about it.

Attacks are made with plain sockets and hand-made frames (masked, as a client must),
so that nothing in a client library softens them; an honest client beside each
checks that it is still served.
"""

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.frames import Close

from tests.helpers import (
    FAST_TIMERS,
    LOOPBACK,
    UNIT,
    RawClient,
    Running,
    open_client,
    post,
    recv_json,
    running_server,
)

PING = '{"type":1,"data":"PING"}'
MASK = b"\x01\x02\x03\x04"
TEXT, CONT, CLOSE, PING_OP = 0x1, 0x0, 0x8, 0x9


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A client frame: masked, as RFC 6455 requires of a client."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + masked


def upgrade_request(path: str = "/connect", *, extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


@asynccontextmanager
async def raw_socket(
    port: int, *, request: bytes | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TCP connection to the gateway; with ``request``, upgraded and past its 101."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        if request is not None:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5 * UNIT)
            assert head.startswith(b"HTTP/1.1 101 "), head
        yield reader, writer
    finally:
        writer.close()


async def server_close_code(reader: asyncio.StreamReader) -> int | None:
    """Read what the server sends until it ends the connection; the code of its close
    frame, or None if it dropped the connection without one. (A server that closes
    while a flood still comes in resets the connection: what came before counts.)"""
    data = b""
    async with asyncio.timeout(10 * UNIT):
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except ConnectionResetError:
            pass
    position, code = 0, None
    while position + 2 <= len(data):
        opcode, size = data[position] & 0x0F, data[position + 1] & 0x7F
        position += 2
        if size == 126:
            size = struct.unpack("!H", data[position : position + 2])[0]
            position += 2
        elif size == 127:
            size = struct.unpack("!Q", data[position : position + 8])[0]
            position += 8
        if opcode == CLOSE:
            code = Close.parse(data[position : position + size]).code
        position += size
    return code


async def flood_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, first: bytes = b""
) -> int | None:
    """Write ``first``, then ``data`` again and again, reading all the while (as an
    attacker who wants its pongs would), until the server hangs up; its close code."""
    closing = asyncio.create_task(server_close_code(reader))
    writer.write(first)
    try:
        while not closing.done():
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    return await closing


async def honest_round_trip(ws_url: str) -> None:
    ws, _ = await open_client(ws_url)
    await ws.send(PING)
    assert await recv_json(ws) == {"type": 1, "data": "PONG"}
    await ws.close()


# Frame floods (issue 25, item 1)


@pytest.mark.parametrize(
    ("name", "first", "burst", "code"),
    [
        pytest.param("ping frames", b"", frame(PING_OP, b"x" * 16), 1008, id="pings"),
        pytest.param("pong frames", b"", frame(0xA), 1008, id="pongs"),
        pytest.param(
            "a message that never ends",
            frame(TEXT, b"{", fin=False),
            frame(CONT, fin=False),
            1008,  # the frame rate trips first; without it, the frames per message (1009)
            id="never-ending-message",
        ),
    ],
)
async def test_a_frame_flood_is_closed_and_others_are_served(
    server: Running, name: str, first: bytes, burst: bytes, code: int
) -> None:
    """Frames of any kind count against --max-client-frames-per-second, not only
    whole messages: a flood is closed with 1008 (a message in too many frames with
    1009) while another client is served and new clients connect."""
    async with raw_socket(server.ws_port, request=upgrade_request()) as (reader, writer):
        assert await flood_until_closed(reader, writer, burst * 512, first) == code, name
    await honest_round_trip(server.ws_url)


async def test_a_message_in_too_many_frames_is_closed_with_1009() -> None:
    """With the frame rate unlimited, a message still has a bound on its frames:
    empty continuation frames add no bytes, yet each was kept in memory."""
    async with (
        running_server(**FAST_TIMERS, max_client_frames_per_second=0) as server,
        raw_socket(server.ws_port, request=upgrade_request()) as (reader, writer),
    ):
        first = frame(TEXT, b"{", fin=False)
        assert await flood_until_closed(reader, writer, frame(CONT, fin=False) * 512, first) == 1009


async def test_a_byte_flood_is_closed_with_1008() -> None:
    """--max-client-bytes-per-second counts every byte, inside messages or not."""
    async with (
        running_server(
            **FAST_TIMERS, max_client_bytes_per_second=20_000, max_client_frames_per_second=0
        ) as server,
        raw_socket(server.ws_port, request=upgrade_request()) as (reader, writer),
    ):
        burst = frame(PING_OP, b"p" * 125) * 64
        assert await flood_until_closed(reader, writer, burst) == 1008


async def test_frames_under_the_limits_are_served() -> None:
    """An honest burst (40 PINGs beside 40 protocol pings) is under every default limit."""
    async with running_server(**FAST_TIMERS) as server:
        client = RawClient(server.ws_url)
        await client.connect()
        await client.next_message()  # welcome
        for _ in range(40):
            client.proto.send_text(PING.encode())
            client.proto.send_ping(b"")
        client.send_text(PING.encode())
        answers = [await client.next_message() for _ in range(41)]
        assert answers == [{"type": 1, "data": "PONG"}] * 41
        await client.aclose()


# Handshakes (issue 25, item 4)


async def test_a_fat_handshake_is_answered_431(server: Running) -> None:
    """More than --max-handshake-bytes before the handshake is answered is a 431,
    without parsing it, and the connection ends."""
    headers = "".join(f"X-Fat-{i}: {'y' * 1000}\r\n" for i in range(20))
    async with raw_socket(server.ws_port) as (reader, writer):
        writer.write(upgrade_request(extra=headers))
        answer = await asyncio.wait_for(reader.read(), 5 * UNIT)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:60]
    await honest_round_trip(server.ws_url)


async def test_a_handshake_that_never_ends_is_answered_431(server: Running) -> None:
    """Header lines sent one after another, never finished, are cut off at the bound."""
    async with raw_socket(server.ws_port) as (reader, writer):
        writer.write(b"GET /connect HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(12):  # 24 KB of header lines, the blank line never comes
            writer.write(b"X-More: " + b"z" * 2000 + b"\r\n")
        answer = await asyncio.wait_for(reader.read(), 5 * UNIT)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:40]


async def test_handshakes_in_progress_count_against_the_connection_caps() -> None:
    """Unfinished handshakes hold files: they count against --max-connections and
    --max-connections-per-ip from the TCP accept, so idle sockets cannot use up the
    files the limits keep; once they go, the room is back."""

    async def idle(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(LOOPBACK, server.ws_port, local_addr=(address, 0))

    async def status_from(address: str) -> bytes:
        reader, writer = await idle(address)
        writer.write(upgrade_request())
        answer = await asyncio.wait_for(reader.read(), 5 * UNIT)
        writer.close()
        return answer.split(b" ")[1]

    async with running_server(**FAST_TIMERS, max_connections=5, max_connections_per_ip=2) as server:
        holding = [await idle("127.0.0.1"), await idle("127.0.0.1")]
        assert await status_from("127.0.0.1") == b"429"
        holding += [await idle(f"127.0.0.{i}") for i in (2, 3, 4)]
        assert await status_from("127.0.0.5") == b"503"
        for _, writer in holding:
            writer.close()
        await asyncio.wait_for(server.server.gateway.wait_empty(), 5 * UNIT)
        await honest_round_trip(server.ws_url)


async def test_a_refusal_at_accept_is_read_by_a_real_client() -> None:
    """A client refused at the TCP accept, before its request was read, still reads
    the status (the server stops sending and lets the client close first)."""
    async with running_server(**FAST_TIMERS, max_connections=1) as server:
        first, _ = await open_client(server.ws_url)
        for _ in range(20):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.ws_url, open_timeout=5 * UNIT):
                    pass
            assert refused.value.response.status_code == 503
        await first.close()


# The gateway's HTTP side


async def test_the_side_paths_answer_get_and_head_only(server: Running) -> None:
    """DELETE /healthz is 405 naming the methods; HEAD /healthz has no body; an
    upgrade must be a GET."""
    async with raw_socket(server.ws_port) as (reader, writer):
        writer.write(b"DELETE /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5 * UNIT)
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"Allow: GET, HEAD" in answer
    async with raw_socket(server.ws_port) as (reader, writer):
        writer.write(b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5 * UNIT)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\n")
    async with raw_socket(server.ws_port) as (reader, writer):
        writer.write(upgrade_request().replace(b"GET ", b"POST ", 1))
        assert (await asyncio.wait_for(reader.read(), 5 * UNIT)).startswith(b"HTTP/1.1 405 ")


async def test_an_upgrade_without_a_host_is_400(server: Running) -> None:
    async with raw_socket(server.ws_port) as (reader, writer):
        writer.write(upgrade_request().replace(f"Host: {LOOPBACK}\r\n".encode(), b""))
        answer = await asyncio.wait_for(reader.read(), 5 * UNIT)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Host" in answer


# Connects per second (issue 25, item 8)


async def test_one_address_cannot_take_the_connect_rate(caplog: pytest.LogCaptureFixture) -> None:
    """An address that connects as fast as it can gets its share of
    --max-connects-per-second and no more: another address still connects; and the
    refusals are logged once, with a count later, not once each."""
    caplog.set_level(logging.INFO, logger="pushgate")
    async with running_server(**FAST_TIMERS, max_connects_per_second=8) as server:
        statuses = []
        for _ in range(30):
            async with raw_socket(server.ws_port) as (reader, writer):
                writer.write(upgrade_request())
                head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5 * UNIT)
                statuses.append(int(head.split()[1]))
        assert statuses.count(101) <= 3
        assert statuses.count(429) >= 27
        for i in range(4):  # other addresses are served meanwhile
            ws, _ = await open_client(server.ws_url, local_addr=(f"127.0.0.{10 + i}", 0))
            await ws.close()
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) < 5, refused
    assert "too many new connections from 127.0.0.1" in refused[0]


# Unsent output (issue 25, item 3)


@pytest.mark.usefixtures("fanout")  # on both fan-out paths (conftest.py)
async def test_the_largest_holders_of_unsent_output_go_first(http: aiohttp.ClientSession) -> None:
    """Clients that never read hold output; past --max-output-total-bytes for all of
    them together, the ones holding the most are closed with 1008 until the rest
    fits, while a reading client gets every push."""
    # The stuck clients never send a heartbeat: the idle timeout is long enough that
    # only the budget can close them, however slowly this machine runs the test.
    async with running_server(
        **{**FAST_TIMERS, "session_ttl": 0, "idle_timeout": 60.0},
        max_output_bytes=2 * 1024 * 1024,
        max_output_total_bytes=2 * 1024 * 1024,
    ) as server:
        reader_ws, _ = await open_client(server.ws_url, max_size=None)
        stuck = []
        for _ in range(6):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, server.ws_port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(upgrade_request())
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5 * UNIT)
            stuck.append((reader, writer))
        val = "v" * 16 * 1024
        gateway = server.server.gateway
        pushes = 0
        async with asyncio.timeout(30 * UNIT):
            while gateway.output_budget.closed < 3:
                # 2 MiB over 6 stuck clients is about 22 pushes of 16 KiB, plus what
                # their socket buffers take: far fewer than this.
                assert pushes < 1000, "the output budget closed nobody"
                status, _ = await post(
                    http, server.api_url + "/push/all", json={"val": val, "tag": 2}
                )
                assert status == 200
                pushes += 1
        for _ in range(pushes):  # the reading client missed nothing
            assert (await recv_json(reader_ws))["type"] == 2
        await reader_ws.close()
        for _, writer in stuck:
            writer.close()
