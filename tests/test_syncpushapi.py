"""Both Python clients of the logic API, the asyncio PushAPI and the blocking
SyncPushAPI (called from a worker thread, as Django or Celery code would), against a
live server: the same methods give the same results and raise the same errors."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from pushgate.client import (
    APIConnectionError,
    BadRequestError,
    NotFoundError,
    PushAPI,
    SyncPushAPI,
    UnauthorizedError,
)
from tests.helpers import FAST_TIMERS, Running, close_code_of, free_port, open_client, recv_json
from tests.helpers import running_server as start_server

SECRET = "a-test-secret-of-at-least-32-bytes!!"
OTHER_WSID = "3cc97117-aa4d-45bb-86db-a1d77e51283b"


class Client:
    """One of the two clients, called the same way from a test."""

    def __init__(self, api: PushAPI | SyncPushAPI) -> None:
        self.api = api

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.api, method)
        if isinstance(self.api, SyncPushAPI):  # blocking: from a thread of its own
            return await asyncio.to_thread(bound, *args, **kwargs)
        return await bound(*args, **kwargs)

    async def close(self) -> None:
        if isinstance(self.api, SyncPushAPI):
            self.api.close()
        else:
            await self.api.close()


def make(kind: str, url: str, **kwargs: Any) -> Client:
    return Client(SyncPushAPI(url, **kwargs) if kind == "sync" else PushAPI(url, **kwargs))


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    async with start_server(**FAST_TIMERS, token_secret=SECRET) as running:
        yield running


@pytest.fixture(params=["async", "sync"])
async def api(request: pytest.FixtureRequest, server: Running) -> AsyncIterator[Client]:
    client = make(request.param, server.api_url)
    yield client
    await client.close()


def as_user(server: Running, user: str) -> str:
    return server.ws_url + "?token=" + jwt.encode({"sub": user}, SECRET, algorithm="HS256")


async def test_pushes_joins_and_presence(api: Client, server: Running) -> None:
    """Every push and presence method, on a live server."""
    ws, ws_id = await open_client(as_user(server, "alice"))
    assert (await api("join", "news", ws_id)).already_member is False
    assert (await api("push_room", "news", "hi", 3)).delivered == 1
    assert (await api("push_all", [1], 4)).delivered == 1
    assert (await api("push_user", "alice", {"u": 1}, 5)).user == "alice"
    result = await api("push_conn", ws_id, "only you", 6)
    assert (result.ws_id, result.delivered) == (ws_id, 1)
    results = await api(
        "push_batch",
        [
            {"target": "conn", "wsId": ws_id, "val": 7, "tag": 7},
            {"target": "x", "val": 0, "tag": 2},
        ],
    )
    assert [(r.ok, r.delivered, r.status, r.field) for r in results] == [
        (True, 1, None, None),
        (False, None, 400, "target"),
    ]
    assert [(await recv_json(ws))["data"] for _ in range(5)] == ["hi", [1], {"u": 1}, "only you", 7]

    stats = await api("stats")
    assert (stats.connections, stats.rooms, stats.users) == (1, 1, 1)
    assert await api("rooms") == {"news": 1}
    page = await api("room_members", "news", limit=10)
    assert (page.count, page.next_cursor) == (1, None)
    assert [(m.ws_id, m.user) for m in page.members] == [(ws_id, "alice")]
    info = await api("connection", ws_id)
    assert (info.state, info.user, info.rooms) == ("connected", "alice", ["news"])
    [mine] = await api("user_connections", "alice")
    assert (mine.ws_id, mine.rooms) == (ws_id, ["news"])

    moved = await api("join_user", "vip", "alice")
    assert (moved.changed, moved.unchanged) == ([ws_id], [])
    assert (await api("leave_user", "vip", "alice")).changed == [ws_id]
    assert (await api("leave", "news", ws_id)).was_member is True
    done = await api("disconnect", ws_id=ws_id, code=4100, reason="bye", end_session=True)
    assert (done.disconnected, done.session_ended) == ([ws_id], True)
    assert await close_code_of(ws) == 4100


async def test_a_push_without_a_tag_is_type_2_as_in_every_client(
    api: Client, server: Running
) -> None:
    """No tag given: type 2, as `pushgate push` and pushgate.js send it (the server
    itself requires one: without this the call could not be made)."""
    ws, ws_id = await open_client(server.ws_url)
    assert (await api("join", "news", ws_id)).already_member is False
    for method, target in (("push_all", ()), ("push_room", ("news",)), ("push_conn", (ws_id,))):
        assert (await api(method, *target, method)).delivered == 1
        assert (await recv_json(ws))["type"] == 2
    await ws.close()


async def test_errors_are_the_same_in_both(api: Client) -> None:
    with pytest.raises(NotFoundError) as not_found:
        await api("join", "news", OTHER_WSID)
    assert (not_found.value.status, not_found.value.field) == (404, "wsId")
    with pytest.raises(BadRequestError) as bad:
        await api("push_all", "x", 1)
    assert (bad.value.status, bad.value.field) == (400, "tag")
    with pytest.raises(NotFoundError):
        await api("connection", OTHER_WSID)
    with pytest.raises(ValueError, match="exactly one"):
        await api("disconnect", ws_id=OTHER_WSID, user="u")


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_an_api_key_is_sent_and_a_wrong_one_refused(kind: str) -> None:
    async with start_server(**FAST_TIMERS, api_key="the-key") as server:
        good = make(kind, server.api_url, api_key="the-key")
        bad = make(kind, server.api_url, api_key="not-the-key")
        try:
            assert (await good("stats")).connections == 0
            with pytest.raises(UnauthorizedError) as refused:
                await bad("stats")
            assert refused.value.status == 403
        finally:
            await good.close()
            await bad.close()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_server_that_is_not_there_is_a_connection_error(kind: str) -> None:
    client = make(kind, f"http://127.0.0.1:{free_port()}", timeout=2.0)
    try:
        with pytest.raises(APIConnectionError) as down:
            await client("healthz")
        assert down.value.status is None
    finally:
        await client.close()


def test_the_sync_client_is_a_context_manager_that_refuses_a_bad_url() -> None:
    with pytest.raises(ValueError, match="http://"):
        SyncPushAPI("127.0.0.1:9999")
    with SyncPushAPI("http://127.0.0.1:1") as api:
        assert api.base_url == "http://127.0.0.1:1"
