"""GET /metrics on live servers: the counts follow what clients and the API do; a
gateway-only node serves them on --metrics-address; the Grafana dashboard names only
metrics that exist."""

import asyncio
import gc
import json
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pushgate.meters import Histogram, Meters
from pushgate.metrics import FrozenCount
from tests.helpers import (
    FAST_TIMERS,
    LOOPBACK,
    UNIT,
    RawClient,
    close_code_of,
    free_port,
    open_client,
    post,
    recv_json,
    running_server,
)
from tests.redis_server import RedisServer

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "pushgate.json"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    """Every sample of GET /metrics, by (name, sorted labels)."""
    async with http.get(url) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_counts_follow_connections_pushes_and_closes(
    http: aiohttp.ClientSession,
) -> None:
    """Connections, pushes by kind, deliveries, writes (the frames a turn has for a
    connection in one), the latency histogram and closes by code move as clients
    connect, get pushes and go."""
    async with running_server() as server:  # default timers: no heartbeat frame meanwhile
        url = server.api_url + "/metrics"
        before = await scrape(http, url)
        assert before[("pushgate_connections", ())] == 0
        clients = [await open_client(server.ws_url) for _ in range(3)]
        await post(http, server.api_url + "/room/join", json={"id": "r", "wsId": clients[0][1]})
        await post(http, server.api_url + "/push/all", json={"val": 1, "tag": 2})
        await post(http, server.api_url + "/push/room", json={"id": "r", "val": 2, "tag": 2})
        for ws, _ in clients:
            assert (await recv_json(ws))["data"] == 1
        assert (await recv_json(clients[0][0]))["data"] == 2

        after = await scrape(http, url)
        assert after[("pushgate_connections", ())] == 3
        assert after[("pushgate_rooms", ())] == 1
        assert after[("pushgate_pushes_total", (("kind", "all"),))] == 1
        assert after[("pushgate_pushes_total", (("kind", "room"),))] == 1
        assert after[("pushgate_deliveries_total", ())] == 4
        latency = ("pushgate_delivery_latency_seconds_count", ())
        assert after[latency] - before[latency] == 4  # once per delivery, in one pass
        # 3 handshake responses, 3 welcomes and 4 pushes, each in a turn of its own.
        frames = after[("pushgate_frames_written_total", ())]
        assert frames == 10
        assert after[("pushgate_publish_duration_seconds_count", ())] == 2

        # Three pushes in one request reach each connection in one turn: one write
        # carries its three frames (one write per frame would be 9 here).
        status, body = await post(
            http,
            server.api_url + "/push/batch",
            json=[{"target": "all", "val": i, "tag": 2} for i in range(3)],
        )
        assert status == 200, body
        for ws, _ in clients:
            assert [(await recv_json(ws))["data"] for _ in range(3)] == [0, 1, 2]
        batched = await scrape(http, url)
        written = batched[("pushgate_frames_written_total", ())] - frames
        writes = batched[("pushgate_writes_total", ())] - after[("pushgate_writes_total", ())]
        assert (written, writes) == (9, 3)

        await clients[0][0].close()
        raw = RawClient(server.ws_url)
        await raw.connect()
        await raw.next_message()
        raw.send_text(b"not json")
        assert (await raw.close_frame()).code == 1007
        await raw.aclose()
        await clients[1][0].close()
        assert await close_code_of(clients[1][0]) == 1000
        await asyncio.wait_for(_until_count(http, url, "pushgate_connections", 1), 5 * UNIT)
        closed = await scrape(http, url)
        assert closed[("pushgate_closes_total", (("code", "1000"),))] == 2
        assert closed[("pushgate_closes_total", (("code", "1007"),))] == 1
        await clients[2][0].close()


async def _until_count(http: aiohttp.ClientSession, url: str, name: str, value: float) -> None:
    """Scrape until ``name`` reads ``value`` (a close ends after its handshake)."""
    while (await scrape(http, url))[(name, ())] != value:  # noqa: ASYNC110 - no event to await
        await asyncio.sleep(0.02)


async def test_refusals_and_limits_are_counted(http: aiohttp.ClientSession) -> None:
    async with running_server(**FAST_TIMERS, max_connections=1, max_body_bytes=1024) as server:
        ws, _ = await open_client(server.ws_url)
        status, _ = await post(http, server.api_url + "/push/all", data="val=" + "x" * 2000)
        assert status == 413
        async with http.get(server.ws_url.replace("ws://", "http://"), headers=_UPGRADE) as refused:
            assert refused.status == 503
        samples = await scrape(http, server.api_url + "/metrics")
        assert samples[("pushgate_handshakes_refused_total", (("reason", "server_full"),))] == 1
        assert samples[("pushgate_limits_tripped_total", (("limit", "max_connections"),))] == 1
        assert samples[("pushgate_limits_tripped_total", (("limit", "max_body_bytes"),))] == 1
        await ws.close()


_UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def test_the_api_key_guards_metrics_and_no_metrics_turns_them_off(
    http: aiohttp.ClientSession,
) -> None:
    async with running_server(**FAST_TIMERS, api_key="k") as server:
        async with http.get(server.api_url + "/metrics") as response:
            assert response.status == 401
        async with http.get(
            server.api_url + "/metrics", headers={"Authorization": "Bearer k"}
        ) as response:
            assert response.status == 200
    async with (
        running_server(**FAST_TIMERS, no_metrics=True) as server,
        http.get(server.api_url + "/metrics") as response,
    ):
        assert response.status == 404


async def test_a_gateway_node_serves_metrics_on_its_own_address(
    redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    """A gateway-only node has no logic API: --metrics-address serves /metrics; the
    delivery latency spans the logic node's acceptance to the gateway's write."""
    settings = {**FAST_TIMERS, "broker": redis.url, "prefix": "m:"}
    address = f"{LOOPBACK}:{free_port()}"
    async with (
        running_server("gateway", **settings, metrics_address=address) as gateway,
        running_server("logic", **settings) as logic,
    ):
        ws, _ = await open_client(gateway.ws_url)
        await post(http, logic.api_url + "/push/all", json={"val": "x", "tag": 2})
        assert (await recv_json(ws))["data"] == "x"
        samples = await scrape(http, f"http://{address}/metrics")
        assert samples[("pushgate_connections", ())] == 1
        assert samples[("pushgate_deliveries_total", ())] == 1
        assert samples[("pushgate_delivery_latency_seconds_count", ())] == 1
        assert samples[("pushgate_broker_ready", ())] == 1
        assert (await scrape(http, logic.api_url + "/metrics"))[
            ("pushgate_pushes_total", (("kind", "all"),))
        ] == 1
        await ws.close()


async def test_every_metric_the_dashboard_uses_is_exported(http: aiohttp.ClientSession) -> None:
    """docs/grafana/pushgate.json names only metrics a live server exports."""
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    used = {name for expr in expressions for name in re.findall(r"\bpushgate_[a-z_]+", expr)}
    assert len(used) >= 10
    async with (
        running_server(**FAST_TIMERS) as server,
        http.get(server.api_url + "/metrics") as response,
    ):
        text = await response.text()
    exported = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        if family.type == "counter":  # labelled counters may have no sample yet
            exported.add(family.name + "_total")
        exported.update(sample.name for sample in family.samples)
    assert used <= exported, used - exported


def test_latency_is_spread_over_the_write_pass_like_the_sockets() -> None:
    """A push accepted at t=0 and written to 300 sockets, 256 by t=0.01 and 44 more by
    t=0.02: 256 observations near 10 ms and 44 near 20 ms, none lost."""
    meters = Meters()
    meters.handed(1000.0, 300)
    meters.handed(0.0, 5)  # accepted at an unknown time: counted, not timed
    assert meters.unwritten
    meters.written([(1000.01, 256), (1000.02, 44)])
    assert not meters.unwritten
    assert meters.deliveries == 305
    latency = meters.delivery_latency
    assert latency.count == 300
    cumulative = dict(latency.cumulative())
    assert cumulative["0.01"] == 256
    assert cumulative["0.02"] == 300


def test_histogram_buckets_weights_and_quantiles() -> None:
    histogram = Histogram((0.01, 0.1, 1.0))
    histogram.observe(0.005, 3)
    histogram.observe(0.5)
    histogram.observe(7.0)
    assert histogram.cumulative() == [("0.01", 3), ("0.1", 3), ("1.0", 4), ("+Inf", 5)]
    assert histogram.count == 5
    assert abs(histogram.total - (0.015 + 0.5 + 7.0)) < 1e-9
    assert histogram.quantile(0.5) == 0.01
    assert histogram.quantile(0.8) == 1.0
    assert histogram.quantile(1.0) == float("inf")
    assert Histogram((1.0,)).quantile(0.5) is None


def test_a_large_frozen_count_is_recounted_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting frozen objects walks them all (about 20 ms at 19,900 connections): a
    small count is fresh at every scrape, a large one at most every 60 s."""
    frozen = [50_000]
    counted = []

    def count() -> int:
        counted.append(frozen[0])
        return frozen[0]

    monkeypatch.setattr(gc, "get_freeze_count", count)
    now = [1000.0]
    counter = FrozenCount(clock=lambda: now[0])
    assert counter.count() == 50_000
    frozen[0] = 600_000
    assert counter.count() == 600_000  # was small: counted again
    frozen[0] = 650_000
    now[0] += 59
    assert counter.count() == 600_000  # large and 59 s old: not counted
    now[0] += 1
    assert counter.count() == 650_000
    assert len(counted) == 3
