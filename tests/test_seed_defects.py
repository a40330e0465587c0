"""The original Go server's defects (../shared/seed/SEED-BEHAVIOUR.md), one test
each, against a real pushgate server. Every test here failed on the original.

Covered elsewhere: the non-reading client that stalled every push
(test_fanout.py), the wsId never sent to the client and the heartbeat that only
PING kept alive (test_gateway.py), the missing validation and delivery count
(test_api.py), the missing graceful shutdown (test_cli.py).
"""

import asyncio
import json

import aiohttp

from tests.helpers import UNIT, RawClient, Running, open_client, post, recv_json, until_gone


async def test_clients_that_close_after_any_message_leave_nothing_behind(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """Defect 1: a client that closed after a non-PING message leaked in the original,
    and one leak froze every push after the 22nd. Here 60 such clients (closing
    cleanly or dropping the socket) leave no trace, and pushes keep flowing."""
    closed_ids = []
    for i in range(60):
        raw = RawClient(server.ws_url, answer_pings=True)
        await raw.connect()
        closed_ids.append((await raw.next_message())["data"]["wsId"])
        status, _ = await post(
            http, server.api_url + "/room/join", data={"id": "1", "wsId": closed_ids[-1]}
        )
        assert status == 200
        raw.send_text(b'{"type":7,"data":"hello"}')
        if i % 2:  # half close with a close frame, half just drop the socket
            raw.send_close(1000)
        await raw.aclose()
    await asyncio.wait_for(server.server.gateway.wait_empty(), 5 * UNIT)

    live, live_id = await open_client(server.ws_url)
    await post(http, server.api_url + "/room/join", data={"id": "1", "wsId": live_id})
    for i in range(30):
        path = "/push/all" if i % 2 else "/push/room"
        status, body = await post(http, server.api_url + path, json={"val": i, "tag": 3, "id": "1"})
        assert (status, body["delivered"]) == (200, 1)
        assert (await recv_json(live))["data"] == i
    for ws_id in closed_ids:  # their sessions end after the session TTL
        await until_gone(http, server.api_url, ws_id)
    await live.close()


async def test_an_out_of_range_room_id_does_not_crash_the_server(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """Defect 4: /push/room with id=9 killed the original process. Here any valid id
    names a room (an empty one gets the push 0 times), a malformed one is a 400, and the server
    serves on."""
    ws, _ = await open_client(server.ws_url)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, body = await post(
        http, server.api_url + "/push/room", data="val=x&tag=3&id=9", headers=form
    )
    assert (status, body) == (200, {"ok": True, "room": "9", "delivered": 0})
    for room in ("-1", "4", "99999999999"):  # each a valid room name, even if empty
        status, body = await post(
            http, server.api_url + "/push/room", data=f"val=x&tag=3&id={room}", headers=form
        )
        assert (status, body) == (200, {"ok": True, "room": room, "delivered": 0})
    status, body = await post(
        http, server.api_url + "/push/room", data="val=x&tag=3&id=a%20b", headers=form
    )
    assert (status, body["field"]) == (400, "id")
    status, _ = await post(http, server.api_url + "/push/all", data="val=alive&tag=3", headers=form)
    assert status == 200
    assert await recv_json(ws) == {"type": 3, "data": "alive"}
    await ws.close()


async def test_a_handshake_sent_in_two_parts_is_accepted(server: Running) -> None:
    """Defect 6: the original refused a handshake not fully read within 10 ms."""
    raw = RawClient(server.ws_url)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ws_port)
    raw.proto.send_request(raw.proto.connect())
    request = b"".join(raw.proto.data_to_send())
    writer.write(request[:20])
    await asyncio.sleep(0.05)  # the pause under test: a slow client's two packets
    writer.write(request[20:])
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5 * UNIT)
    assert head.startswith(b"HTTP/1.1 101 ")
    writer.close()
    await writer.wait_closed()


async def test_keep_alive_survives_an_idle_pause(server: Running) -> None:
    """Defect 6: the original dropped an idle keep-alive connection after 10 ms."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(server.api_url.rsplit(":", 1)[1])
    )
    request = (
        b"POST /push/all HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 19\r\n\r\nval=test push&tag=3"
    )
    for _ in range(2):
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5 * UNIT)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(
            next(
                line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            ).split(b":")[1]
        )
        assert json.loads(await reader.readexactly(length))["ok"] is True
        await asyncio.sleep(0.05)  # the pause under test: idle time between requests
    writer.close()
    await writer.wait_closed()


async def test_a_large_push_gets_its_reply_and_is_delivered(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """Defect 6: with a 1 MB val the original sent an empty reply after queueing the
    push, inviting a retry and a duplicate. Here the caller gets its 200."""
    ws, _ = await open_client(server.ws_url, max_size=None)
    val = "v" * (1024 * 1024 - 100)
    status, body = await post(http, server.api_url + "/push/all", data={"val": val, "tag": "3"})
    assert (status, body) == (200, {"ok": True, "delivered": 1})
    assert (await recv_json(ws))["data"] == val
    await ws.close()
