"""Fan-out under stress: a client that does not read never holds up the others."""

import asyncio

import aiohttp
import pytest

from tests.helpers import (
    FAST_TIMERS,
    UNIT,
    RawClient,
    open_client,
    post,
    running_server,
    without_position,
)

# Each test runs on both fan-out paths, compiled and pure Python (conftest.py).
pytestmark = pytest.mark.usefixtures("fanout")


async def test_a_client_that_does_not_read_is_closed_with_1008_and_stalls_nobody(
    http: aiohttp.ClientSession,
) -> None:
    """A non-reading client is dropped from fan-out with 1008 once too many bytes wait
    for it; a reading client gets every push, in order, and the API never hangs."""
    limit = 256 * 1024
    async with running_server(
        **{**FAST_TIMERS, "close_timeout": 10.0, "session_ttl": 0},  # 404 once let go
        max_output_bytes=limit,
    ) as server:
        fast, _ = await open_client(server.ws_url, max_size=None)
        slow = RawClient(server.ws_url, answer_pings=True)
        await slow.connect()  # and then reads nothing
        slow_id = (await slow.next_message())["data"]["wsId"]
        val = "x" * 64 * 1024
        sent = 0
        async with asyncio.timeout(30 * UNIT):  # the original hung forever here
            while True:
                status, _ = await post(
                    http, server.api_url + "/push/all", json={"val": [sent, val], "tag": 2}
                )
                assert status == 200
                sent += 1
                status, _ = await post(
                    http, server.api_url + "/room/join", data={"id": "probe", "wsId": slow_id}
                )
                if status == 404:  # the server has let go of the slow client
                    break
                assert sent < 1000, "the slow client was never closed"
            for i in range(sent):
                message = await asyncio.wait_for(fast.recv(decode=True), 5 * UNIT)
                assert isinstance(message, str)
                assert message.startswith(f'{{"type":2,"data":[{i},'), message[:40]
        # The slow client, reading at last, finds its backlog and then the reason.
        close = await slow.close_frame(timeout=10 * UNIT)
        assert close.code == 1008
        assert "slow consumer" in close.reason
        await slow.aclose()
        await fast.close()


async def test_a_push_reaches_hundreds_of_connections_once_each(
    http: aiohttp.ClientSession,
) -> None:
    """Every one of 300 connections gets exactly one copy of each of 5 pushes."""
    async with running_server(**FAST_TIMERS) as server:
        clients = await asyncio.gather(*(open_client(server.ws_url) for _ in range(300)))
        for i in range(5):
            status, body = await post(http, server.api_url + "/push/all", json={"val": i, "tag": 9})
            assert (status, body["delivered"]) == (200, 300)
        for ws, _ in clients:
            got = [without_position(await asyncio.wait_for(ws.recv(), 5 * UNIT)) for _ in range(5)]
            assert got == [f'{{"type":9,"data":{i}}}\n' for i in range(5)]
        await asyncio.gather(*(ws.close() for ws, _ in clients))
