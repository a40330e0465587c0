"""The logic HTTP API, called by a real HTTP client."""

import json
from typing import Any

import aiohttp
import pytest

from tests.helpers import (
    FAST_TIMERS,
    Running,
    open_client,
    post,
    recv_json,
    running_server,
    without_position,
)

FORM = "application/x-www-form-urlencoded"


async def test_push_all_reaches_every_connection(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """push/all with the blog's form body reaches every client as {"type":tag,"data":val}."""
    clients = [await open_client(server.ws_url) for _ in range(3)]
    status, body = await post(
        http,
        server.api_url + "/push/all",
        data="val=test push&tag=3",
        headers={"Content-Type": FORM},
    )
    assert (status, body) == (200, {"ok": True, "delivered": 3})
    for ws, _ in clients:
        assert without_position(await ws.recv()) == '{"type":3,"data":"test push"}\n'
        await ws.close()


async def test_push_room_reaches_members_only(server: Running, http: aiohttp.ClientSession) -> None:
    """push/room reaches the room's members, with the room named, and nobody else."""
    member, member_id = await open_client(server.ws_url)
    outsider, _ = await open_client(server.ws_url)
    status, _ = await post(http, server.api_url + "/room/join", data={"id": "1", "wsId": member_id})
    assert status == 200
    status, body = await post(
        http, server.api_url + "/push/room", data={"val": "test push", "tag": "3", "id": "1"}
    )
    assert (status, body) == (200, {"ok": True, "room": "1", "delivered": 1})
    assert await recv_json(member) == {"type": 3, "data": "test push", "room": "1"}
    await outsider.send('{"type":1,"data":"PING"}')
    assert await recv_json(outsider) == {"type": 1, "data": "PONG"}  # and no push before it
    await member.close()
    await outsider.close()


async def test_json_bodies_deliver_any_json_value(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """With a JSON body, val is delivered as the JSON value it is, not as a string."""
    ws, ws_id = await open_client(server.ws_url)
    await post(http, server.api_url + "/room/join", json={"id": 7, "wsId": ws_id})
    val = {"price": 1.5, "tags": ["a", "中文"], "none": None}
    status, _ = await post(http, server.api_url + "/push/all", json={"val": val, "tag": 5})
    assert status == 200
    assert await recv_json(ws) == {"type": 5, "data": val}
    status, _ = await post(
        http, server.api_url + "/push/room", json={"val": None, "tag": "6", "id": 7}
    )
    assert status == 200
    assert await recv_json(ws) == {"type": 6, "data": None, "room": "7"}
    await ws.close()


async def test_fields_in_the_query_string_work(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """The seed read fields from the URL too; so does pushgate (for POST)."""
    ws, _ = await open_client(server.ws_url)
    status, _ = await post(http, server.api_url + "/push/all?val=hi&tag=4")
    assert status == 200
    assert await recv_json(ws) == {"type": 4, "data": "hi"}
    await ws.close()


@pytest.mark.parametrize(
    ("path", "fields", "field"),
    [
        ("/push/all", {"tag": "3"}, "val"),
        ("/push/all", {"val": "x"}, "tag"),
        ("/push/all", {"val": "x", "tag": "abc"}, "tag"),
        ("/push/all", {"val": "x", "tag": "1"}, "tag"),
        ("/push/room", {"val": "x", "tag": "3"}, "id"),
        ("/push/room", {"val": "x", "tag": "3", "id": "no spaces"}, "id"),
        ("/push/room", {"val": "x", "tag": "3", "id": "x" * 65}, "id"),
        ("/room/join", {"id": "1"}, "wsId"),
        ("/room/join", {"id": "1", "wsId": "3cc97117"}, "wsId"),
        ("/room/join", {"wsId": "3cc97117-aa4d-55bb-86db-a1d77e51283b"}, "id"),
        ("/room/leave", {"id": "", "wsId": "3cc97117-aa4d-55bb-86db-a1d77e51283b"}, "id"),
    ],
)
async def test_a_missing_or_invalid_field_is_400_naming_it(
    server: Running, http: aiohttp.ClientSession, path: str, fields: dict[str, str], field: str
) -> None:
    """Each bad field gets a 400 whose JSON body names the field and what was wrong."""
    status, body = await post(http, server.api_url + path, data=fields)
    assert status == 400
    assert body["ok"] is False
    assert body["field"] == field
    assert body["error"].startswith(field + " ")


@pytest.mark.parametrize("path", ["/room/join", "/room/leave"])
async def test_an_unknown_wsid_is_404(
    server: Running, http: aiohttp.ClientSession, path: str
) -> None:
    """A well-formed wsId that no open connection has is 404."""
    status, body = await post(
        http,
        server.api_url + path,
        data={"id": "1", "wsId": "3cc97117-aa4d-55bb-86db-a1d77e51283b"},
    )
    assert status == 404
    assert body == {
        "ok": False,
        "error": "no open connection with wsId 3cc97117-aa4d-55bb-86db-a1d77e51283b",
        "field": "wsId",
    }


async def test_join_and_leave_are_idempotent(server: Running, http: aiohttp.ClientSession) -> None:
    """Joining twice is 200 (already a member); leaving twice is 200 (was not a member)."""
    ws, ws_id = await open_client(server.ws_url)
    fields = {"id": "r", "wsId": ws_id.upper()}  # any letter case is the same wsId
    results = [await post(http, server.api_url + "/room/join", data=fields) for _ in range(2)]
    assert [body["alreadyMember"] for _, body in results] == [False, True]
    assert {status for status, _ in results} == {200}
    assert results[0][1]["wsId"] == ws_id
    results = [await post(http, server.api_url + "/room/leave", data=fields) for _ in range(2)]
    assert [body["wasMember"] for _, body in results] == [True, False]
    assert {status for status, _ in results} == {200}
    await ws.close()


async def test_a_connection_in_too_many_rooms_is_409(http: aiohttp.ClientSession) -> None:
    """Past --max-rooms-per-conn a join is refused with 409, naming the limit."""
    async with running_server(**FAST_TIMERS, max_rooms_per_conn=2) as server:
        ws, ws_id = await open_client(server.ws_url)
        for room in ("a", "b", "b"):
            status, _ = await post(
                http, server.api_url + "/room/join", data={"id": room, "wsId": ws_id}
            )
            assert status == 200
        status, body = await post(
            http, server.api_url + "/room/join", data={"id": "c", "wsId": ws_id}
        )
        assert status == 409
        assert "2 rooms" in body["error"]
        await ws.close()


async def test_a_wrong_method_is_405_with_allow(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """GET on a POST endpoint is 405 with an Allow header and a JSON body."""
    async with http.get(server.api_url + "/push/all?val=x&tag=3") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["ok"] is False


async def test_an_unknown_path_is_404_json(server: Running, http: aiohttp.ClientSession) -> None:
    """A path that is not an endpoint is 404 with a JSON body naming it."""
    async with http.post(server.api_url + "/push/everyone") as response:
        assert response.status == 404
        assert "/push/everyone" in (await response.json())["error"]


async def test_a_body_over_the_limit_is_413(http: aiohttp.ClientSession) -> None:
    """A body over --max-body-bytes is refused with 413, and nothing is pushed."""
    async with running_server(**FAST_TIMERS, max_body_bytes=1000) as server:
        ws, _ = await open_client(server.ws_url)
        status, body = await post(
            http, server.api_url + "/push/all", data={"val": "x" * 2000, "tag": "3"}
        )
        assert status == 413
        assert body == {"ok": False, "error": "the body is over --max-body-bytes (1000 bytes)"}
        status, _ = await post(
            http, server.api_url + "/push/all", data={"val": "small", "tag": "3"}
        )
        assert status == 200
        assert await recv_json(ws) == {"type": 3, "data": "small"}
        await ws.close()


async def test_another_content_type_is_415(server: Running, http: aiohttp.ClientSession) -> None:
    """A body that is neither a form nor JSON is 415, saying which types work."""
    status, body = await post(
        http,
        server.api_url + "/push/all",
        data=b"val=x&tag=3",
        headers={"Content-Type": "text/plain"},
    )
    assert status == 415
    assert "application/json" in body["error"]


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, "the request says application/x-"),
        ({}, "the request has no Content-Type"),
    ],
)
async def test_a_json_body_without_its_content_type_is_told_so(
    server: Running, http: aiohttp.ClientSession, headers: dict[str, str], said: str
) -> None:
    """`curl -d '{"val":...}'` (a form's Content-Type) or no Content-Type at all: 415
    saying the body is JSON and which header to send, not "tag is required"."""
    status, body = await post(
        http,
        server.api_url + "/push/all",
        data=b'{"val": "x", "tag": 3}',
        headers=headers,
        skip_auto_headers=["Content-Type"],
    )
    assert status == 415
    assert body["error"].startswith("the body looks like JSON but " + said)
    assert "send Content-Type: application/json" in body["error"]


async def test_json_answers_end_with_a_newline(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """An answer, an error and the OpenAPI document are each one JSON line, ended by
    a newline (a shell prompt after curl starts on its own line)."""
    for method, path in (
        ("POST", "/push/all?val=x&tag=3"),
        ("GET", "/nope"),
        ("GET", "/openapi.json"),
    ):
        async with http.request(method, server.api_url + path) as response:
            text = await response.text()
        assert text.endswith("}\n")
        assert text.count("\n") == 1
        json.loads(text)


@pytest.mark.parametrize("payload", [b"{not json", b"[1,2]", b'{"val": NaN, "tag": 3}', b"\xff"])
async def test_a_bad_json_body_is_400(
    server: Running, http: aiohttp.ClientSession, payload: bytes
) -> None:
    """A JSON body that is not a JSON object is 400 with a reason."""
    status, body = await post(
        http,
        server.api_url + "/push/all",
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert "JSON" in body["error"]


async def test_healthz_and_stats(server: Running, http: aiohttp.ClientSession) -> None:
    """/healthz answers while serving; /stats counts connections and rooms."""
    ws, ws_id = await open_client(server.ws_url)
    await post(http, server.api_url + "/room/join", data={"id": "1", "wsId": ws_id})
    async with http.get(server.api_url + "/healthz") as response:
        assert response.status == 200
    async with http.get(server.api_url + "/stats") as response:
        stats: dict[str, Any] = await response.json()
    assert (stats["connections"], stats["rooms"]) == (1, 1)
    await ws.close()


async def test_pushes_arrive_in_the_order_they_were_accepted(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """Pushes accepted one after another, to all and to a room, reach a client in that order."""
    ws, ws_id = await open_client(server.ws_url)
    await post(http, server.api_url + "/room/join", data={"id": "1", "wsId": ws_id})
    for i in range(200):
        path = "/push/all" if i % 2 else "/push/room"
        status, _ = await post(http, server.api_url + path, json={"val": i, "tag": 2, "id": "1"})
        assert status == 200
    received = [(await recv_json(ws))["data"] for _ in range(200)]
    assert received == list(range(200))
    await ws.close()


async def test_error_bodies_are_json(server: Running, http: aiohttp.ClientSession) -> None:
    """Every error answer is a JSON object with ok=false and a message."""
    async with http.post(
        server.api_url + "/push/all", data="tag=3", headers={"Content-Type": FORM}
    ) as r:
        assert r.headers["Content-Type"].startswith("application/json")
        body = json.loads(await r.text())
    assert body == {"ok": False, "error": "val is required", "field": "val"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"tag":3,"val":"\\ud800"}', "val"),  # a lone surrogate: not sendable as UTF-8
        (b'{"tag":3,"val":1e999}', "val"),  # a number too large for JSON
    ],
)
async def test_a_val_json_cannot_carry_is_400(
    server: Running, http: aiohttp.ClientSession, body: bytes, field: str
) -> None:
    """A value that cannot be sent as JSON text is refused naming val, not a 500."""
    status, answer = await post(
        http, server.api_url + "/push/all", data=body, headers={"Content-Type": "application/json"}
    )
    assert (status, answer["field"]) == (400, field)


@pytest.mark.parametrize("limit", ["\u00b2", "9" * 5000, "0", "abc"])
async def test_a_bad_rooms_limit_is_400(
    server: Running, http: aiohttp.ClientSession, limit: str
) -> None:
    """/rooms?limit= must be an integer from 1 to 1000."""
    async with http.get(server.api_url + "/rooms", params={"limit": limit}) as response:
        assert response.status == 400
        assert (await response.json())["field"] == "limit"


async def test_rooms_lists_the_largest_first(server: Running, http: aiohttp.ClientSession) -> None:
    """/rooms gives each room's member count, largest first."""
    clients = [await open_client(server.ws_url) for _ in range(3)]
    for i, (_, ws_id) in enumerate(clients):
        for room in ["big", "small"][: 1 if i else 2]:
            await post(http, server.api_url + "/room/join", data={"id": room, "wsId": ws_id})
    async with http.get(server.api_url + "/rooms") as response:
        body = await response.json()
    assert body["rooms"] == [{"id": "big", "members": 3}, {"id": "small", "members": 1}]
    assert body["total"] == 2
    for ws, _ in clients:
        await ws.close()
