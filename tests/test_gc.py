"""Garbage collection (pushgate.gcpolicy): what a connection, a close of any kind and
the logic API's calls leave behind is freed by reference counting alone, so freezing
the survivors of full collections leaks nothing; and a live ``pushgate serve`` stays
flat in memory and in frozen objects over 100,000 connections opened and closed."""

import asyncio
import collections
import gc
import subprocess
import sys

import aiohttp
import uvloop

from pushgate.bench.procstat import rss_bytes
from pushgate.gcpolicy import FreezeSurvivors, runs_on_uvloop
from tests.helpers import FAST_TIMERS, LOOPBACK, UNIT, running_server, server_process
from tests.test_metrics import Samples, scrape

# Opens COUNT connections to ws://127.0.0.1:PORT/connect in waves of WAVE: a wave's
# connections are opened (up to their welcome frame) and held until all are open, so
# that they live through the server's garbage collections as real ones do, then every
# one is ended: with a close frame (1000), with a bad frame (invalid UTF-8: the server
# closes with 1007), or by dropping the TCP connection.
CHURN = r"""
import asyncio, base64, os, sys

PORT, COUNT, WAVE = map(int, sys.argv[1:4])
MASK = b"\x00\x00\x00\x00"

async def open_one(opening):
    async with opening:
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /connect HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)  # the welcome frame's header
        return reader, writer

async def end_one(index, reader, writer):
    ending = index % 3
    if ending == 0:
        writer.write(b"\x88\x82" + MASK + b"\x03\xe8")  # close, 1000
    elif ending == 1:
        writer.write(b"\x81\x81" + MASK + b"\xff")  # text that is not UTF-8
    if ending != 2:
        await reader.read()  # until the server has closed
    writer.close()

async def main():
    opening = asyncio.Semaphore(100)
    for _ in range(COUNT // WAVE):
        held = await asyncio.gather(*(open_one(opening) for _ in range(WAVE)))
        await asyncio.gather(*(end_one(i, r, w) for i, (r, w) in enumerate(held)))
    print("done", COUNT, flush=True)

asyncio.run(main())
"""

# Modules whose objects are the server's: none of them may be left in a reference cycle.
SERVER_MODULES = ("pushgate", "websockets", "asyncio", "uvloop", "aiohttp.web")


async def churn(port: int, count: int, wave: int = 2_000) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHURN,
        str(port),
        str(count),
        str(min(wave, count)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 300 * UNIT)
    assert process.returncode == 0, out.decode()
    assert out.startswith(b"done"), out.decode()


async def sessions_ended(http: aiohttp.ClientSession, metrics_url: str) -> Samples:
    """The server's metrics once it holds no session. Polls: sessions end by the
    passing of their TTL, which no event announces."""
    async with asyncio.timeout(10 * UNIT):
        while True:
            samples = await scrape(http, metrics_url)
            if samples[("pushgate_sessions", ())] == 0:
                return samples
            await asyncio.sleep(0.05)


def test_connections_and_api_calls_leave_no_reference_cycles() -> None:
    """Every kind of close, sessions ending, and the API's joins, pushes, leaves and
    refusals leave no cyclic garbage among the server's objects (on uvloop, as
    ``pushgate serve`` runs)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        cyclic = runner.run(cyclic_garbage_of_a_working_server())
    assert not cyclic, cyclic.most_common(10)


async def cyclic_garbage_of_a_working_server() -> collections.Counter[str]:
    assert runs_on_uvloop(asyncio.get_running_loop())
    async with (
        # Not frozen here: frozen cyclic garbage would be invisible to gc.collect().
        running_server(**{**FAST_TIMERS, "session_ttl": 0.2}, no_gc_freeze=True) as server,
        aiohttp.ClientSession() as http,
    ):
        port = server.server.ws_port

        async def api_work(rounds: int) -> None:
            for _ in range(rounds):
                for path, form in (
                    ("/push/all", {"val": "hello", "tag": "1"}),
                    ("/push/room", {"id": "r1", "val": "x" * 300, "tag": "2"}),
                    ("/push/room", {"id": "", "val": "refused"}),
                    ("/room/join", {"id": "r1", "wsId": "nobody"}),
                ):
                    async with http.post(server.api_url + path, data=form) as response:
                        await response.read()
                async with (
                    aiohttp.ClientSession() as once,  # its HTTP connection closes after
                    once.get(server.api_url + "/stats") as response,
                ):
                    await response.read()

        await churn(port, 60)  # first of everything: caches and lazy imports
        await api_work(5)
        await sessions_ended(http, server.api_url + "/metrics")
        gc.collect()
        # Every object alive now, held until the count is made: none of them can
        # become garbage meanwhile, so what the count finds was made by this run.
        # An object an earlier test leaked, freed (or collected) in the middle of
        # it, would otherwise be counted as this run's.
        before = gc.get_objects()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await churn(port, 300)
            await api_work(50)
            await sessions_ended(http, server.api_url + "/metrics")
            gc.collect()
            cyclic = collections.Counter(
                f"{type(obj).__module__}.{type(obj).__qualname__}"
                for obj in gc.garbage
                if type(obj).__module__.startswith(SERVER_MODULES)
            )
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            del before
    return cyclic


def test_freezing_keeps_survivors_of_full_collections_out_of_the_next() -> None:
    """After a full collection, what survived is frozen; stop gives it back."""
    policy = FreezeSurvivors()
    policy.start()
    try:
        frozen_at_start = gc.get_freeze_count()
        kept = [[index] for index in range(10_000)]  # 10,001 tracked objects
        gc.collect()
        assert gc.get_freeze_count() >= frozen_at_start + len(kept)
        assert all(not gc.is_finalized(obj) for obj in kept[:1])
    finally:
        policy.stop()
    assert gc.get_freeze_count() == 0
    assert not policy.active


async def test_memory_stays_flat_over_60000_connections() -> None:
    """A live ``pushgate serve`` (uvloop, freezing on) over 60,000 connections opened
    and closed: once their sessions ended, its resident memory and its frozen objects
    are where they were after the first 10,000."""
    async with (
        server_process("--session-ttl", "0.5", "--heartbeat", "5") as server,
        aiohttp.ClientSession() as http,
    ):
        metrics_url = f"http://{LOOPBACK}:{server.api_port}/metrics"

        async def frozen() -> float:
            samples = await scrape(http, metrics_url)
            return samples[("pushgate_gc_frozen_objects", ())]

        await churn(server.ws_port, 10_000)
        await sessions_ended(http, metrics_url)
        rss_before, frozen_before = rss_bytes(server.process.pid), await frozen()
        assert frozen_before > 10_000  # freezing is on: the modules at least
        await churn(server.ws_port, 50_000)
        await sessions_ended(http, metrics_url)
        # The last connections' objects may outlive their sessions by a moment: the
        # count must come back to where it was (a leak never does; the parser cycle
        # this guards against left 40,000 more per 10,000 connections).
        frozen_after = await frozen()
        deadline = asyncio.get_running_loop().time() + 10 * UNIT
        while frozen_after - frozen_before >= 5_000:
            assert asyncio.get_running_loop().time() < deadline, (
                f"frozen objects stayed at {frozen_after:.0f}, from {frozen_before:.0f}"
            )
            await asyncio.sleep(0.2)
            frozen_after = await frozen()
        rss_after = rss_bytes(server.process.pid)
    growth = rss_after - rss_before
    # Allocator noise is a few MB; a leak of 250 bytes per connection would be 12.5 MB
    # (the parser cycle this guards against leaked 650 bytes a connection).
    assert growth < 12 * 1024 * 1024, f"RSS grew {growth / 1e6:.1f} MB over 50,000 connections"
