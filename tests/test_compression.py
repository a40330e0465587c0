"""permessage-deflate on live servers: a client that offers it (as browsers and the
websockets library do) gets pushes compressed; one that does not, in the same fan-out,
gets them plain; --no-compression declines it."""

import json

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.frames import Opcode

from tests.helpers import (
    FAST_TIMERS,
    UNIT,
    RawClient,
    close_code_of,
    post,
    recv_json,
    running_server,
)

# Each test runs on both fan-out paths, compiled and pure Python (conftest.py).
pytestmark = pytest.mark.usefixtures("fanout")

BIG = {"items": [{"id": i, "name": f"item number {i}", "price": i + 0.5} for i in range(40)]}


async def test_offered_deflate_is_used_and_a_plain_client_still_reads_plain(
    http: aiohttp.ClientSession,
) -> None:
    async with (
        running_server(**FAST_TIMERS) as server,
        connect(server.ws_url, open_timeout=5 * UNIT) as deflating,
    ):
        assert deflating.response is not None
        negotiated = deflating.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in negotiated
        assert "server_no_context_takeover" in negotiated
        assert "client_no_context_takeover" in negotiated
        await deflating.recv()  # welcome
        plain = RawClient(server.ws_url)
        await plain.connect()
        await plain.next_message()  # welcome
        written = server.server.node.meters.bytes_written

        status, _ = await post(http, server.api_url + "/push/all", json={"val": BIG, "tag": 3})
        assert status == 200
        assert (await recv_json(deflating))["data"] == BIG
        frame = await plain.next_frame()
        assert frame is not None
        assert (frame.opcode, frame.rsv1) == (Opcode.TEXT, False)
        assert json.loads(bytes(frame.data))["data"] == BIG
        # Two recipients: one plain copy, and one at most a third of its size.
        size = len(frame.data)
        assert server.server.node.meters.bytes_written - written < size + size / 3 + 20
        # Short pushes are not worth compressing, and still arrive.
        await post(http, server.api_url + "/push/all", json={"val": "hi", "tag": 4})
        assert (await recv_json(deflating))["data"] == "hi"
        await plain.aclose()


async def test_no_compression_declines_deflate() -> None:
    async with (
        running_server(**FAST_TIMERS, no_compression=True) as server,
        connect(server.ws_url, open_timeout=5 * UNIT) as ws,
    ):
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


async def test_a_compressed_client_message_is_read(http: aiohttp.ClientSession) -> None:
    """A client may compress what it sends too: a compressed PING gets its PONG."""
    async with (
        running_server(**FAST_TIMERS) as server,
        connect(server.ws_url, open_timeout=5 * UNIT, compression="deflate") as ws,
    ):
        await ws.recv()
        await ws.send(json.dumps({"type": 1, "data": "PING", "pad": "x" * 500}))
        assert await recv_json(ws) == {"type": 1, "data": "PONG"}


async def test_a_compressed_message_that_inflates_past_the_limit_is_refused() -> None:
    """A few hundred compressed bytes that inflate past --max-message-bytes close that
    connection with 1009, as the same message sent plain would: no "zip bomb"."""
    async with (
        running_server(**FAST_TIMERS, max_message_bytes=4096) as server,
        connect(server.ws_url, open_timeout=5 * UNIT, compression="deflate") as ws,
    ):
        await ws.recv()
        await ws.send(json.dumps({"type": 1, "data": "PING", "pad": "x" * 1_000_000}))
        assert await close_code_of(ws) == 1009
