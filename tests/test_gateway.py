"""The WebSocket gateway, seen by real clients over loopback."""

import asyncio
import json
import uuid

import aiohttp
import pytest
from websockets.frames import Close, Frame, Opcode

from tests.helpers import (
    FAST_TIMERS,
    UNIT,
    RawClient,
    Running,
    close_code_of,
    open_client,
    post,
    recv_json,
    running_server,
    until_gone,
)


async def test_welcome_is_the_first_frame_and_carries_a_random_wsid(server: Running) -> None:
    """The first frame tells the client its wsId (a UUID4) and the PING interval."""
    raw = RawClient(server.ws_url)
    response = await raw.connect()
    assert response.status_code == 101
    welcome = await raw.next_message()
    assert welcome["type"] == 0
    ws_id = welcome["data"]["wsId"]
    assert uuid.UUID(ws_id).version == 4
    assert str(uuid.UUID(ws_id)) == ws_id
    assert welcome["data"]["heartbeat"] == FAST_TIMERS["heartbeat"]
    await raw.aclose()


async def test_every_connection_gets_its_own_wsid(server: Running) -> None:
    """No two connections share a wsId."""
    clients = [await open_client(server.ws_url) for _ in range(20)]
    assert len({ws_id for _, ws_id in clients}) == 20
    for ws, _ in clients:
        await ws.close()


async def test_ping_is_answered_with_the_seeds_exact_pong(server: Running) -> None:
    """{"type":1,"data":"PING"} gets {"type":1,"data":"PONG"} byte for byte, as the seed."""
    ws, _ = await open_client(server.ws_url)
    await ws.send('{"type":1,"data":"PING"}')
    assert await asyncio.wait_for(ws.recv(), 5 * UNIT) == '{"type":1,"data":"PONG"}\n'
    await ws.close()


async def test_ping_in_a_binary_frame_is_answered_too(server: Running) -> None:
    """The seed answered PING in binary frames; so does pushgate."""
    ws, _ = await open_client(server.ws_url)
    await ws.send(b'{"type":1,"data":"PING"}')
    assert await recv_json(ws) == {"type": 1, "data": "PONG"}
    await ws.close()


async def test_a_fragmented_message_is_reassembled(server: Running) -> None:
    """A PING sent in three fragments is one message."""
    ws, _ = await open_client(server.ws_url)
    await ws.send(['{"type":1,', '"data":', '"PING"}'])
    assert await recv_json(ws) == {"type": 1, "data": "PONG"}
    await ws.close()


async def test_unknown_message_types_are_ignored(server: Running) -> None:
    """An integer type the server does not know is no error: the connection stays."""
    ws, _ = await open_client(server.ws_url)
    await ws.send('{"type":7,"data":"hello"}')
    await ws.send('{"type":1,"data":"PING"}')
    assert await recv_json(ws) == {"type": 1, "data": "PONG"}
    await ws.close()


@pytest.mark.parametrize(
    ("message", "code", "reason_part"),
    [
        ("not json", 1007, "not valid JSON"),
        ('{"type":1', 1007, "not valid JSON"),
        ("[]", 1003, "JSON object"),
        ('"PING"', 1003, "JSON object"),
        ('{"type":"1","data":"PING"}', 1003, "integer"),
        ('{"data":"PING"}', 1003, "missing"),
    ],
)
async def test_a_bad_message_closes_only_that_connection(
    server: Running, message: str, code: int, reason_part: str
) -> None:
    """An unusable message closes its connection with a close frame and a reason;
    another client is untouched."""
    bystander, _ = await open_client(server.ws_url)
    ws, _ = await open_client(server.ws_url)
    await ws.send(message)
    assert await close_code_of(ws) == code
    assert ws.close_reason is not None
    assert reason_part in ws.close_reason
    await bystander.send('{"type":1,"data":"PING"}')
    assert await recv_json(bystander) == {"type": 1, "data": "PONG"}
    await bystander.close()


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(server: Running) -> None:
    """Text frames must be UTF-8 (RFC 6455 section 8.1)."""
    raw = RawClient(server.ws_url)
    await raw.connect()
    await raw.next_message()  # welcome
    raw.send_text(b'{"type":1,"data":"\xff"}')
    close = await raw.close_frame()
    assert close.code == 1007
    await raw.aclose()


async def test_a_close_between_the_fragments_of_a_message_closes_normally(
    server: Running,
) -> None:
    """RFC 6455 lets a close frame come between fragments: the server answers with the
    closing handshake, echoing 1000, not a protocol error (Autobahn case 7.1.5)."""
    raw = RawClient(server.ws_url)
    await raw.connect()
    await raw.next_message()  # welcome
    raw.proto.send_frame(Frame(Opcode.TEXT, b'{"type":1,', fin=False))
    raw.proto.send_frame(Frame(Opcode.CLOSE, Close(1000, "bye").serialize()))
    raw._write()
    close = await raw.close_frame()
    assert (close.code, close.reason) == (1000, "bye")
    await raw.aclose()


async def test_a_message_over_the_size_limit_closes_with_1009() -> None:
    """A client message over --max-message-bytes is refused with 1009."""
    async with running_server(**FAST_TIMERS, max_message_bytes=1024) as server:
        ws, _ = await open_client(server.ws_url)
        await ws.send('{"type":1,"data":"' + "x" * 2000 + '"}')
        assert await close_code_of(ws) == 1009


async def test_a_sweep_in_slices_reaches_every_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweeper checks timers a slice of connections per turn of the event loop:
    with slices of 2, all 7 silent clients still get their heartbeat timeout."""
    monkeypatch.setattr("pushgate.gateway.SWEEP_SLICE", 2)
    async with running_server(**FAST_TIMERS) as server:
        clients = [RawClient(server.ws_url, answer_pings=False) for _ in range(7)]
        for raw in clients:
            await raw.connect()
            await raw.next_message()  # welcome
        closes = [await raw.close_frame() for raw in clients]
        assert [close.code for close in closes] == [1011] * 7
        for raw in clients:
            await raw.aclose()


async def test_a_silent_client_is_closed_with_a_close_frame(server: Running) -> None:
    """A client that sends nothing and answers no ping gets a 1011 close frame,
    not a dropped socket, once the idle timeout passes."""
    raw = RawClient(server.ws_url, answer_pings=False)
    await raw.connect()
    await raw.next_message()  # welcome
    loop = asyncio.get_running_loop()
    start = loop.time()
    close = await raw.close_frame()
    assert close.code == 1011
    assert "heartbeat timeout" in close.reason
    assert loop.time() - start >= FAST_TIMERS["idle_timeout"] * 0.9
    await raw.aclose()


async def test_answering_protocol_pings_keeps_a_connection_alive(server: Running) -> None:
    """A browser that never sends PING but answers the server's pings stays connected
    well past the idle timeout."""
    raw = RawClient(server.ws_url, answer_pings=True)
    await raw.connect()
    await raw.next_message()  # welcome
    loop = asyncio.get_running_loop()
    start = loop.time()
    pings = 0
    while loop.time() - start < 3 * FAST_TIMERS["idle_timeout"]:
        frame = await raw.next_frame()
        assert frame is not None
        assert frame.opcode is Opcode.PING, frame
        pings += 1
    assert pings >= 3
    await raw.aclose()


@pytest.mark.parametrize("message", ['{"type":1,"data":"PING"}', '{"type":7,"data":"x"}'])
async def test_any_message_keeps_a_connection_alive(server: Running, message: str) -> None:
    """A client that sends PING, or any other message, each heartbeat is never
    closed, even if it ignores protocol pings (the seed only counted PING)."""
    raw = RawClient(server.ws_url, answer_pings=False)
    await raw.connect()
    await raw.next_message()  # welcome
    for _ in range(int(3 * FAST_TIMERS["idle_timeout"] / FAST_TIMERS["heartbeat"])):
        raw.send_text(message.encode())
        await asyncio.sleep(FAST_TIMERS["heartbeat"])  # the client's heartbeat interval
    raw.send_text(b'{"type":1,"data":"PING"}')
    while True:  # it is still open: the PING is answered
        message_in = await raw.next_message()
        if message_in == {"type": 1, "data": "PONG"}:
            break
    await raw.aclose()


async def test_other_paths_are_404(server: Running) -> None:
    """Only /connect is a WebSocket endpoint."""
    raw = RawClient(server.ws_url.replace("/connect", "/elsewhere"))
    response = await raw.connect()
    assert response.status_code == 404
    await raw.aclose()


async def test_a_plain_http_get_is_refused_with_a_4xx(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """GET /connect without upgrade headers is told it needs a WebSocket handshake."""
    async with http.get(server.ws_url.replace("ws://", "http://")) as response:
        assert response.status in (400, 426)
        assert "WebSocket" in await response.text() or response.status == 426


async def test_a_connection_that_never_handshakes_is_dropped(server: Running) -> None:
    """A TCP connection that sends no handshake is closed after the handshake timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ws_port)
    assert await asyncio.wait_for(reader.read(), 5 * UNIT) == b""
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("how", ["going away", "dropped socket", "goodbye"])
async def test_disconnecting_leaves_every_room_at_once(
    server: Running, http: aiohttp.ClientSession, how: str
) -> None:
    """However a client goes, its connection leaves all its rooms at once. Going away
    (1001) or dropped, its session waits for a resume (a join applies to it) and then
    ends, and its wsId is 404; after a goodbye (1000) it is 404 at once."""
    raw = RawClient(server.ws_url, answer_pings=True)
    try:
        await raw.connect()
        ws_id = (await raw.next_message())["data"]["wsId"]
        for room in ("a", "b", "c"):
            status, _ = await post(
                http, server.api_url + "/room/join", data={"id": room, "wsId": ws_id}
            )
            assert status == 200
        if how == "dropped socket":
            raw.writer.transport.abort()
        else:
            code = 1000 if how == "goodbye" else 1001
            raw.send_close(code)
            assert (await raw.close_frame()).code == code
        await asyncio.wait_for(server.server.gateway.wait_empty(), 5 * UNIT)
        assert server.server.node.room_sizes() == {}
        join = {"id": "d", "wsId": ws_id}
        if how == "goodbye":  # well before the session's TTL (0.5 s) could end it
            body = await until_gone(http, server.api_url, ws_id, timeout=0.25)
        else:
            status, body = await post(http, server.api_url + "/room/join", data=join)
            assert status == 200, body  # the session, between connections
            assert server.server.node.room_sizes() == {}  # no live member
            body = await until_gone(http, server.api_url, ws_id)
        assert body["field"] == "wsId"
    finally:
        await raw.aclose()


async def test_a_client_close_is_echoed(server: Running) -> None:
    """A client's close frame (1000) is answered with a close frame, as RFC 6455 asks."""
    ws, _ = await open_client(server.ws_url)
    await ws.close(1000, "bye")
    assert ws.close_code == 1000
    assert json.dumps(ws.close_reason) == '"bye"'


async def test_the_gateway_serves_the_browser_client(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """GET /static/pushgate.js on the gateway's port is the ES module, importable from any page."""
    url = server.ws_url.replace("ws://", "http://").replace("/connect", "/static/pushgate.js")
    async with http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "export class PushgateClient" in await response.text()
