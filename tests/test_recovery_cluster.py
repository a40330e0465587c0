"""Recovery in a cluster on a real redis-server: a session resumes on another gateway
after its own was SIGKILLed, a rolling restart loses and duplicates nothing, pushes
lost between Redis and a gateway are filled from history, and a Redis restarted
empty is told to the clients."""

import asyncio
import contextlib
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest

from pushgate.client import Connection, PushAPI, ServiceUnavailableError, State, connect
from tests.dropping_proxy import DroppingProxy
from tests.helpers import (
    FAST_TIMERS,
    LOOPBACK,
    UNIT,
    Running,
    running_server,
    server_process,
)
from tests.redis_server import RedisServer

# Each role is given the options it reads (it refuses the others').
GATEWAY_ARGS = ("--node-ttl", "2", "--heartbeat", "1", "--idle-timeout", "3")
LOGIC_ARGS = ("--node-ttl", "2", "--control-timeout", "1")


async def recv_n(conn: Connection, count: int, timeout: float = 10 * UNIT) -> list[object]:
    async with asyncio.timeout(timeout):
        return [(await conn.recv()).data for _ in range(count)]


async def test_a_session_resumes_on_the_other_gateway_after_a_sigkill(
    redis: RedisServer,
) -> None:
    """The client's gateway is SIGKILLed; 20 pushes are sent; the client resumes on the
    other gateway with the same wsId, in the same room, and gets all 20."""
    args = ("--broker", redis.url, *GATEWAY_ARGS)
    async with AsyncExitStack() as stack:
        g1 = await stack.enter_async_context(server_process(*args, role="gateway"))
        g2 = await stack.enter_async_context(server_process(*args, role="gateway"))
        logic = await stack.enter_async_context(
            server_process("--broker", redis.url, *LOGIC_ARGS, role="logic")
        )
        api = await stack.enter_async_context(PushAPI(f"http://127.0.0.1:{logic.api_port}"))
        conn = await stack.enter_async_context(
            connect([g2.ws_url, g1.ws_url], api=api, backoff_initial=0.05, backoff_max=0.2)
        )
        ws_id = conn.ws_id
        await conn.join("r")
        g2.process.send_signal(signal.SIGKILL)
        for i in range(20):
            await api.push_room("r", i, tag=2)
        assert await recv_n(conn, 20) == list(range(20))
        assert (conn.ws_id, conn.resumed, conn.recovered) == (ws_id, True, True)
        assert conn.url == g1.ws_url
        await api.push_room("r", "live", tag=2)  # still in the room, on g1
        assert await recv_n(conn, 1) == ["live"]


@pytest.mark.parametrize("clients", [1000])
async def test_a_rolling_restart_loses_and_duplicates_nothing(
    redis: RedisServer, clients: int
) -> None:
    """1,000 clients over 2 gateways, pushes to all and to rooms at 20/s; SIGTERM one gateway
    (it drains with 1012), start it again, then the other: every client gets every
    push once, in order."""
    args = ("--broker", redis.url, *GATEWAY_ARGS, "--drain-seconds", "0.5")
    async with AsyncExitStack() as stack:
        gateways = [
            await stack.enter_async_context(server_process(*args, role="gateway")),
            await stack.enter_async_context(server_process(*args, role="gateway")),
        ]
        logic = await stack.enter_async_context(
            server_process("--broker", redis.url, *LOGIC_ARGS, role="logic")
        )
        api = await stack.enter_async_context(PushAPI(f"http://127.0.0.1:{logic.api_port}"))
        urls = [g.ws_url for g in gateways]
        # All at once (as an application's clients come): one after another, the
        # 1,000 connects were a third of this test's time.
        conns = await asyncio.gather(
            *(
                stack.enter_async_context(
                    connect(
                        urls[i % 2 :] + urls[: i % 2],
                        api=api,
                        backoff_initial=0.05,
                        backoff_max=0.5,
                    )
                )
                for i in range(clients)
            )
        )
        for i, conn in enumerate(conns):
            await conn.join(f"room{i % 4}")
        received: dict[int, list[tuple[str, object]]] = defaultdict(list)
        arrived = asyncio.Event()

        async def read(index: int, conn: Connection) -> None:
            async for push in conn:
                received[index].append((push.stream, push.data))
                arrived.set()

        readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(conns)]
        stop = asyncio.Event()
        sent: list[tuple[str, int]] = []

        async def pusher() -> None:
            n = 0
            while not stop.is_set():
                target = "all" if n % 2 else f"room:room{n % 4}"
                if target == "all":
                    await api.push_all(n, tag=2)
                else:
                    await api.push_room(target[5:], n, tag=2)
                sent.append((target, n))
                n += 1
                await asyncio.sleep(0.05)  # 20 pushes a second

        pushing = asyncio.create_task(pusher())
        for index in (0, 1):
            old = gateways[index]
            assert await old.stop(signal.SIGTERM) == 0
            await asyncio.sleep(0.5)  # pushes flow on while this gateway is down
            gateways[index] = await stack.enter_async_context(
                server_process(*args, "--ws-port", str(old.ws_port), role="gateway")
            )
        await asyncio.sleep(0.5)  # and a little after the last restart
        stop.set()
        await pushing
        wanted = {
            i: sum(1 for t, _ in sent if t in ("all", f"room:room{i % 4}")) for i in range(clients)
        }
        with contextlib.suppress(TimeoutError):  # the assertions below say who is short
            async with asyncio.timeout(30 * UNIT):
                while any(len(received[i]) < wanted[i] for i in range(clients)):
                    arrived.clear()
                    await arrived.wait()
        for task in readers:
            task.cancel()
        for i, conn in enumerate(conns):
            for stream in ("all", f"room:room{i % 4}"):  # order holds per stream
                expected = [n for t, n in sent if t == stream]
                got = [n for t, n in received[i] if t == stream]
                assert got == expected, (i, stream, conn.ws_id, conn.recovered)
            assert conn.state is State.OPEN


@dataclass
class CutOff:
    """A gateway that reaches Redis through a dropping proxy, a logic node that does
    not, and a client of the gateway."""

    proxy: DroppingProxy
    gateway: Running
    api: PushAPI
    conn: Connection


@asynccontextmanager
async def gateway_behind_proxy(redis: RedisServer, prefix: str) -> AsyncIterator[CutOff]:
    proxy = DroppingProxy(LOOPBACK, redis.port)
    await proxy.start()
    via_proxy = f"redis://{LOOPBACK}:{proxy.port}/0"
    settings = {**FAST_TIMERS, "prefix": prefix, "node_ttl": 30.0}
    try:
        async with (
            running_server("gateway", **settings, broker=via_proxy) as gateway,
            running_server("logic", **settings, broker=redis.url) as logic,
            PushAPI(logic.api_url) as api,
            connect(gateway.ws_url, api=api) as conn,
        ):
            yield CutOff(proxy, gateway, api, conn)
    finally:
        await proxy.close()


async def test_pubsub_messages_lost_on_the_way_to_a_gateway_are_filled_from_history(
    redis: RedisServer,
) -> None:
    """The connection between one gateway and Redis is cut (the dropping proxy) while
    the logic node publishes: when the gateway is back it reads what it missed from
    history; its client misses nothing and gets nothing twice."""
    async with gateway_behind_proxy(redis, "gap:") as cut:
        await cut.conn.join("r")
        await cut.api.push_room("r", "before", tag=2)
        assert await recv_n(cut.conn, 1) == ["before"]
        cut.proxy.freeze()  # its reconnects hang until thawed: these are surely missed
        await cut.proxy.drop()  # the gateway's subscription and publisher are cut
        for i in range(10):
            await cut.api.push_room("r", i, tag=2)
        cut.proxy.thaw()
        await cut.api.push_room("r", "after", tag=2)  # may come before or after the fill
        assert await recv_n(cut.conn, 11) == [*range(10), "after"]
        assert cut.gateway.server.node.gaps_filled >= 1


async def test_pushes_lost_before_a_rooms_first_one_arrived_are_filled_too(
    redis: RedisServer,
) -> None:
    """As above, but the room had no push yet when its gateway's subscription was
    cut: the gateway noted the stream's position when it subscribed, so it knows
    the pushes it missed are missing, and fills them from history."""
    async with gateway_behind_proxy(redis, "gap0:") as cut:
        await cut.conn.join("quiet")
        node = cut.gateway.server.node
        async with asyncio.timeout(5 * UNIT):
            while node.recovery.last("room:quiet") is None:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.01)
        cut.proxy.freeze()
        await cut.proxy.drop()
        for i in range(5):
            await cut.api.push_room("quiet", i, tag=2)
        cut.proxy.thaw()
        await cut.api.push_room("quiet", "after", tag=2)
        assert await recv_n(cut.conn, 6) == [*range(5), "after"]


async def test_a_redis_restarted_empty_tells_no_loss_where_nothing_was_lost(
    redis: RedisServer,
) -> None:
    """Redis is killed and restarts without its data: the stream's history (and its
    epoch) is gone, but the gateway had delivered all of it before Redis closed its
    connection and the new epoch's history is whole, so the client is not told of a
    loss that was not (epochends.py), and new pushes flow."""
    settings = {**FAST_TIMERS, "broker": redis.url, "prefix": "empty:"}
    async with running_server(**settings) as server, PushAPI(server.api_url) as api:
        reports: list[dict[str, bool]] = []

        def on_recovery(_: Connection, report: dict[str, bool]) -> None:
            reports.append(report)

        async with connect(server.ws_url, api=api, on_recovery=on_recovery) as conn:
            await conn.join("r")
            await api.push_room("r", "one", tag=2)
            assert await recv_n(conn, 1) == ["one"]
            await redis.restart()  # empty: no persistence
            async with asyncio.timeout(10 * UNIT):
                while True:  # 503 until the node is back on Redis
                    try:
                        await api.push_room("r", "two", tag=2)
                        break
                    except ServiceUnavailableError:
                        await asyncio.sleep(0.05)
            assert await recv_n(conn, 1) == ["two"]  # a notice would have come first
            assert reports == []
            assert conn.recovered is not False
