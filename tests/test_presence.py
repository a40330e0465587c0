"""Presence and the operator's actions (GET /stats, /rooms, /rooms/{id},
/connections/{wsId}, /users/{uid}; POST /push/conn, /push/batch, /disconnect, and
joins and leaves by uid), in one process and over two gateways sharing a real
redis-server, answered from a logic node that holds no connection."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import jwt
import pytest
from websockets.asyncio.client import ClientConnection

from tests.helpers import (
    FAST_TIMERS,
    Running,
    close_code_of,
    open_client,
    post,
    recv_json,
    running_server,
)
from tests.redis_server import RedisServer

SECRET = "a-test-secret-of-at-least-32-bytes!!"
OTHER_WSID = "3cc97117-aa4d-45bb-86db-a1d77e51283b"


def as_user(ws_url: str, user: str) -> str:
    return ws_url + "?token=" + jwt.encode({"sub": user}, SECRET, algorithm="HS256")


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def quiet(ws: ClientConnection) -> None:
    """Nothing is waiting for ``ws``: its next frame is the answer to a PING."""
    await ws.send('{"type":1,"data":"PING"}')
    assert await recv_json(ws) == {"type": 1, "data": "PONG"}


@dataclass
class Setup:
    """Where the clients connect (one URL per gateway) and where the API is."""

    ws_urls: list[str]
    api: str


@pytest.fixture(params=["one process", "cluster"])
async def setup(request: pytest.FixtureRequest, redis: RedisServer) -> AsyncIterator[Setup]:
    settings: dict[str, Any] = {**FAST_TIMERS, "token_secret": SECRET, "session_ttl": 30.0}
    async with AsyncExitStack() as stack:
        if request.param == "one process":
            server = await stack.enter_async_context(running_server(**settings))
            yield Setup([server.ws_url], server.api_url)
            return
        cluster = {**settings, "broker": redis.url, "prefix": "p:", "node_ttl": 2.0}
        gateways: list[Running] = [
            await stack.enter_async_context(running_server("gateway", **cluster)) for _ in range(2)
        ]
        logic = await stack.enter_async_context(running_server("logic", **cluster))
        yield Setup([g.ws_url for g in gateways], logic.api_url)


def spread(setup: Setup, i: int) -> str:
    """The i-th client's gateway: round robin over the gateways."""
    return setup.ws_urls[i % len(setup.ws_urls)]


# Presence


async def test_stats_and_rooms_count_every_gateway(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    """Connections, rooms and users are counted over every gateway, on a node that
    may hold none of them; a join and a disconnect show at once."""
    clients = [
        await open_client(as_user(spread(setup, i), user))
        for i, user in enumerate(["alice", "alice", "bob"])
    ]
    anonymous, anonymous_id = await open_client(spread(setup, 1))
    for ws_id in [clients[0][1], clients[2][1], anonymous_id]:
        await post(http, setup.api + "/room/join", json={"id": "lobby", "wsId": ws_id})
    await post(http, setup.api + "/room/join", json={"id": "vip", "wsId": clients[1][1]})

    status, stats = await get(http, setup.api + "/stats")
    assert status == 200
    assert (stats["connections"], stats["rooms"], stats["users"]) == (4, 2, 2)
    assert len(stats["nodes"]) == len(setup.ws_urls)
    assert sum(n["connections"] for n in stats["nodes"]) == 4
    status, rooms = await get(http, setup.api + "/rooms")
    assert rooms["rooms"] == [{"id": "lobby", "members": 3}, {"id": "vip", "members": 1}]
    assert rooms["total"] == 2

    await anonymous.close()
    await clients[1][0].close()
    for _ in range(100):  # the gateway notices the close as soon as the handshake ends
        _, stats = await get(http, setup.api + "/stats")
        if stats["connections"] == 2:
            break
        await asyncio.sleep(0.01)
    assert (stats["connections"], stats["rooms"], stats["users"]) == (2, 1, 2)
    for ws, _ in clients:
        await ws.close()


async def test_a_room_pages_through_every_member_once(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    """GET /rooms/{id} pages through the members, ordered by node and wsId, with a
    cursor; every member appears once with its user, node and time of connection."""
    clients = [await open_client(as_user(spread(setup, i), f"u{i}")) for i in range(7)]
    for _, ws_id in clients:
        await post(http, setup.api + "/room/join", json={"id": "r", "wsId": ws_id})
    listed: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        url = setup.api + "/rooms/r?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page = await get(http, url)
        assert status == 200, page
        assert page["count"] == 7
        listed += page["members"]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(m["wsId"] for m in listed) == sorted(ws_id for _, ws_id in clients)
    assert [(m["node"], m["wsId"]) for m in listed] == sorted(
        (m["node"], m["wsId"]) for m in listed
    )
    users = {ws_id: f"u{i}" for i, (_, ws_id) in enumerate(clients)}
    for member in listed:
        assert member["user"] == users[member["wsId"]]
        assert datetime.fromisoformat(member["connectedSince"]).tzinfo is not None

    await post(http, setup.api + "/room/leave", json={"id": "r", "wsId": clients[0][1]})
    _, page = await get(http, setup.api + "/rooms/r?limit=1000")
    assert (page["count"], len(page["members"]), page["nextCursor"]) == (6, 6, None)
    _, empty = await get(http, setup.api + "/rooms/nobody-here")
    assert (empty["count"], empty["members"], empty["nextCursor"]) == (0, [], None)
    for ws, _ in clients:
        await ws.close()


async def test_presence_refuses_bad_parameters(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """A bad limit, cursor, room id or wsId is a 400 naming the field."""
    for path, field in [
        ("/rooms/r?limit=0", "limit"),
        ("/rooms/r?limit=1001", "limit"),
        ("/rooms/r?cursor=nonsense", "cursor"),
        ("/rooms/bad%20room", "id"),
        ("/connections/not-a-uuid", "wsId"),
    ]:
        status, body = await get(http, server.api_url + path)
        assert (status, body["ok"], body.get("field")) == (400, False, field), path


async def test_a_connection_is_connected_then_detached_then_gone(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    """GET /connections/{wsId} tells where a connection is, and after it dropped,
    that its session waits for a resume, in the same rooms; an ended session is 404."""
    ws, ws_id = await open_client(as_user(spread(setup, 1), "carol"))
    await post(http, setup.api + "/room/join", json={"id": "a", "wsId": ws_id})
    await post(http, setup.api + "/room/join", json={"id": "b", "wsId": ws_id})
    status, found = await get(http, setup.api + f"/connections/{ws_id}")
    assert status == 200
    assert (found["state"], found["user"], found["rooms"]) == ("connected", "carol", ["a", "b"])
    assert found["node"]
    _, user = await get(http, setup.api + "/users/carol")
    assert user["online"] is True
    assert [(c["wsId"], c["rooms"]) for c in user["connections"]] == [(ws_id, ["a", "b"])]

    await ws.close(1001)  # going away: the session waits (a 1000 would end it at once)
    for _ in range(100):
        status, found = await get(http, setup.api + f"/connections/{ws_id}")
        if found["state"] == "detached":
            break
        await asyncio.sleep(0.01)
    assert (found["state"], found["node"], found["rooms"]) == ("detached", None, ["a", "b"])
    _, user = await get(http, setup.api + "/users/carol")
    assert (user["online"], user["connections"]) == (False, [])

    status, _ = await post(
        http, setup.api + "/disconnect", json={"wsId": ws_id, "endSession": True}
    )
    assert status == 200
    status, body = await get(http, setup.api + f"/connections/{ws_id}")
    assert (status, body["field"]) == (404, "wsId")
    status, _ = await get(http, setup.api + f"/connections/{OTHER_WSID}")
    assert status == 404


# The operator's actions


async def test_push_conn_reaches_that_connection_only(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    """POST /push/conn reaches the one wsId, on whichever gateway holds it."""
    target, target_id = await open_client(spread(setup, 1))
    other, _ = await open_client(spread(setup, 0))
    status, body = await post(
        http, setup.api + "/push/conn", json={"wsId": target_id, "val": {"n": 1}, "tag": 9}
    )
    assert (status, body) == (200, {"ok": True, "wsId": target_id, "delivered": 1})
    assert await recv_json(target) == {"type": 9, "data": {"n": 1}}
    await quiet(other)
    status, body = await post(
        http, setup.api + "/push/conn", data={"wsId": OTHER_WSID, "val": "x", "tag": "9"}
    )
    assert (status, body["field"]) == (404, "wsId")
    await target.close()
    await other.close()


async def test_disconnect_closes_with_the_operators_code_and_reason(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    """POST /disconnect closes a wsId, or every connection of a user, with the code
    and reason given; without endSession the session stays resumable."""
    one, one_id = await open_client(spread(setup, 1))
    status, body = await post(
        http, setup.api + "/disconnect", json={"wsId": one_id, "code": 4403, "reason": "banned"}
    )
    assert (status, body["disconnected"], body["sessionEnded"]) == (200, [one_id], False)
    assert await close_code_of(one) == 4403
    assert one.close_reason == "banned"
    for _ in range(100):
        status, found = await get(http, setup.api + f"/connections/{one_id}")
        if found.get("state") == "detached":
            break
        await asyncio.sleep(0.01)
    assert found["state"] == "detached"

    dave = [await open_client(as_user(spread(setup, i), "dave")) for i in range(2)]
    bystander, _ = await open_client(as_user(spread(setup, 0), "erin"))
    status, body = await post(
        http, setup.api + "/disconnect", data={"uid": "dave", "endSession": "true"}
    )
    assert status == 200
    assert sorted(body["disconnected"]) == sorted(ws_id for _, ws_id in dave)
    for ws, ws_id in dave:
        assert await close_code_of(ws) == 4410  # session ended: the SDKs stay away
        status, _ = await get(http, setup.api + f"/connections/{ws_id}")
        assert status == 404  # ended: it cannot resume
    await quiet(bystander)
    await bystander.close()


async def test_disconnect_refuses_what_it_cannot_do(
    server: Running, http: aiohttp.ClientSession
) -> None:
    """A code outside 4000-4999, no target, both targets, an unknown wsId: 4xx."""
    ws, ws_id = await open_client(server.ws_url)
    for fields, expected in [
        ({"wsId": ws_id, "code": 1000}, (400, "code")),
        ({"wsId": ws_id, "reason": "x" * 124}, (400, "reason")),
        ({"wsId": ws_id, "endSession": "perhaps"}, (400, "endSession")),
        ({}, (400, "wsId")),
        ({"wsId": ws_id, "uid": "u"}, (400, "wsId")),
        ({"wsId": OTHER_WSID}, (404, "wsId")),
    ]:
        status, body = await post(http, server.api_url + "/disconnect", json=fields)
        assert (status, body.get("field")) == expected, fields
    await quiet(ws)  # still open
    await ws.close()


async def test_join_and_leave_by_uid_move_every_connection_of_the_user(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    """/room/join and /room/leave with uid act on each of the user's connections,
    on every gateway; pushes to the room then reach them all."""
    frank = [await open_client(as_user(spread(setup, i), "frank")) for i in range(2)]
    ids = sorted(ws_id for _, ws_id in frank)
    status, body = await post(http, setup.api + "/room/join", json={"id": "vip", "uid": "frank"})
    assert status == 200
    assert (sorted(body["joined"]), body["unchanged"]) == (ids, [])
    _, body = await post(http, setup.api + "/room/join", data={"id": "vip", "uid": "frank"})
    assert (body["joined"], sorted(body["unchanged"])) == ([], ids)
    await post(http, setup.api + "/push/room", json={"id": "vip", "val": "in", "tag": 3})
    for ws, _ in frank:
        assert await recv_json(ws) == {"type": 3, "data": "in", "room": "vip"}
    status, body = await post(http, setup.api + "/room/leave", json={"id": "vip", "uid": "frank"})
    assert (status, sorted(body["left"])) == (200, ids)
    _, page = await get(http, setup.api + "/rooms/vip")
    assert page["count"] == 0
    status, body = await post(
        http, setup.api + "/room/join", json={"id": "vip", "uid": "frank", "wsId": ids[0]}
    )
    assert (status, body["field"]) == (400, "uid")
    for ws, _ in frank:
        await ws.close()


async def test_push_batch_answers_each_push_in_order(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    """POST /push/batch does each push in order and answers each; a bad one gets its
    error and does not stop the others."""
    ws, ws_id = await open_client(as_user(spread(setup, 1), "gina"))
    await post(http, setup.api + "/room/join", json={"id": "g", "wsId": ws_id})
    batch = [
        {"target": "all", "val": 1, "tag": 2},
        {"target": "room", "id": "g", "val": 2, "tag": 2},
        {"target": "nowhere", "val": 0, "tag": 2},
        {"target": "user", "uid": "gina", "val": 3, "tag": 2},
        {"target": "conn", "wsId": OTHER_WSID, "val": 0, "tag": 2},
        {"target": "conn", "wsId": ws_id, "val": 4, "tag": 2},
        {"target": "room", "id": "g", "tag": 2},
    ]
    status, body = await post(http, setup.api + "/push/batch", json=batch)
    assert status == 200
    results = body["results"]
    assert [r["ok"] for r in results] == [True, True, False, True, False, True, False]
    assert [r.get("status") for r in results] == [None, None, 400, None, 404, None, 400]
    assert (results[2]["field"], results[6]["field"]) == ("target", "val")
    assert results[5] == {"ok": True, "wsId": ws_id, "delivered": 1}
    assert [(await recv_json(ws))["data"] for _ in range(4)] == [1, 2, 3, 4]
    await quiet(ws)
    await ws.close()


async def test_push_batch_refuses_a_body_that_is_not_a_batch(
    server: Running, http: aiohttp.ClientSession
) -> None:
    url = server.api_url + "/push/batch"
    for body, expected in [
        ([], 400),
        ([{"target": "all", "val": 1, "tag": 2}] * 1001, 400),
        ({"target": "all", "val": 1, "tag": 2}, 400),
    ]:
        status, answer = await post(http, url, data=json.dumps(body), headers=JSON)
        assert (status, answer["ok"]) == (expected, False)
    status, _ = await post(http, url, data="val=1&tag=2", headers=FORM)
    assert status == 415
    async with http.get(url) as response:
        assert response.status == 405


JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_presence_answers_503_when_a_gateway_does_not_answer(
    redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    """A gateway that is announced but does not answer makes a count 503 naming it,
    not a wrong number."""
    settings = {**FAST_TIMERS, "broker": redis.url, "prefix": "q:", "control_timeout": 0.3}
    async with (
        running_server("gateway", **settings) as gateway,
        running_server("logic", **settings) as logic,
    ):
        await gateway.server.node.broker.unsubscribe("node:" + gateway.server.node.node_id)
        status, body = await get(http, logic.api_url + "/stats")
        assert status == 503
        assert gateway.server.node.node_id in body["error"]
