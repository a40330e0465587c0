"""Sessions survive a Redis restarted empty (issue 22, part 1): the gateways write
back the sessions of their live connections, so that clients cut afterwards resume
with their wsIds and rooms, on either gateway, and miss no push that was accepted;
and a client that missed nothing is not told otherwise, where its gateway can tell
(epochends.py).

On a real redis-server, SIGKILLed and started again empty on the same port."""

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import aiohttp

from pushgate.client import Connection, Push, PushAPI, ServiceUnavailableError, State, connect
from pushgate.ids import ConnId, RoomId
from pushgate.presence import Roster
from tests.dropping_proxy import DroppingProxy
from tests.helpers import FAST_TIMERS, LOOPBACK, UNIT, Running, running_server
from tests.redis_server import RedisServer
from tests.tcp_proxy import FreezableProxy
from tests.test_presence_events import NAMESPACES, SECRET, token
from tests.test_subscriptions import client

ROOMS = ("r0", "r1", "r2")
CLIENTS_PER_GATEWAY = 3
# Sessions must outlive the cut and the resume, and connections the outage: on a
# loaded machine this one process (gateways, logic node and clients) can stall past
# FAST_TIMERS' 0.6 s idle timeout while Redis restarts, and a connection closed then
# resumes into the empty Redis, a new session. The rest as fast as the tests go.
SETTINGS = {
    **FAST_TIMERS,
    "heartbeat": 1.0,
    "idle_timeout": 10.0 * UNIT,
    "session_ttl": 10.0,
    "node_ttl": 3.0,
    "prefix": "restart:",
}


@dataclass
class Client:
    """A client of one gateway (through a proxy a test can close), the rooms the back
    end put it in, and every push it received, by stream."""

    conn: Connection
    rooms: tuple[str, ...]
    elsewhere: str  # the other gateway's URL, which it resumes on
    ws_id: str = ""
    got: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def streams(self) -> tuple[str, ...]:
        return ("all", *(f"room:{room}" for room in self.rooms))

    async def read(self) -> None:
        async for push in self.conn:
            assert isinstance(push.data, int), push
            self.got[stream_of(push)].append(push.data)
            self.arrived.set()

    async def until(self, enough: Callable[[str, list[int]], bool]) -> None:
        """Return once what it got on each of its streams is ``enough``."""
        while not all(enough(stream, self.got[stream]) for stream in self.streams):
            self.arrived.clear()
            await self.arrived.wait()


def stream_of(push: Push) -> str:
    return "all" if push.room is None else f"room:{push.room}"


@dataclass
class Pusher:
    """Pushes to each of ``streams`` in turn (every room and all, unless changed on
    the way), through the logic API: what was accepted (200), and what was refused
    (503: Redis away), by stream."""

    api: PushAPI
    streams: list[str] = field(default_factory=lambda: ["all", *(f"room:{r}" for r in ROOMS)])
    accepted: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    refused: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    a_refusal: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        for value in itertools.count():
            stream = self.streams[value % len(self.streams)]
            try:
                if stream == "all":
                    await self.api.push_all(value, tag=2)
                else:
                    await self.api.push_room(stream.removeprefix("room:"), value, tag=2)
            except ServiceUnavailableError:
                self.refused[stream].append(value)
                self.a_refusal.set()
                await asyncio.sleep(0.01)  # Redis is away: no event tells when it is back
                continue
            self.accepted[stream].append(value)
            await asyncio.sleep(0.005)  # about a hundred pushes a second


async def ready(http: aiohttp.ClientSession, gateway: Running) -> None:
    """Return once the gateway's /readyz answers 200."""
    url = f"http://{LOOPBACK}:{gateway.ws_port}/readyz"
    async with asyncio.timeout(15 * UNIT):
        while True:
            async with http.get(url) as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.05)  # polled, as a load balancer does


@asynccontextmanager
async def cluster(redis: RedisServer) -> AsyncIterator[tuple[list[Running], Running]]:
    """Two gateways and a logic node on ``redis``."""
    async with (
        running_server("gateway", **SETTINGS, broker=redis.url) as a,
        running_server("gateway", **SETTINGS, broker=redis.url) as b,
        running_server("logic", **SETTINGS, broker=redis.url) as logic,
    ):
        yield [a, b], logic


async def test_sessions_survive_a_redis_restarted_empty(redis: RedisServer) -> None:
    """Clients of two gateways are in rooms (the back end put them there, so their
    SDK does not rejoin them); Redis is SIGKILLed and started again empty while
    pushes flow; once the gateways are ready again, every client is cut and resumes
    on the other gateway: with its wsId and its rooms, and every push that was
    accepted arrives, once and in order; only pushes refused with 503 may be missing."""
    async with AsyncExitStack() as stack:
        gateways, logic = await stack.enter_async_context(cluster(redis))
        api = await stack.enter_async_context(PushAPI(logic.api_url))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        proxies = [FreezableProxy(LOOPBACK, gateway.ws_port) for gateway in gateways]
        clients: list[tuple[Client, int]] = []
        for index, (proxy, other) in enumerate(zip(proxies, reversed(gateways), strict=True)):
            await proxy.start()
            stack.push_async_callback(proxy.close)
            for n in range(CLIENTS_PER_GATEWAY):
                # Through the proxy; once it is gone, to the other gateway directly.
                urls = [f"ws://{LOOPBACK}:{proxy.port}/connect", other.ws_url]
                conn = connect(urls, api=api, backoff_initial=0.05, backoff_max=0.2)
                opened = await stack.enter_async_context(conn)
                client = Client(opened, (ROOMS[n], ROOMS[n - 1]), other.ws_url)
                client.ws_id = client.conn.ws_id
                for room in client.rooms:
                    await api.join(room, client.ws_id)  # the back end's join: the SDK knows nothing
                clients.append((client, index))
        readers = [asyncio.create_task(client.read()) for client, _ in clients]
        pusher = Pusher(api)
        pushing = asyncio.create_task(pusher.run())
        try:
            async with asyncio.timeout(10 * UNIT):  # pushes of the first epoch, on every stream
                for client, _ in clients:
                    await client.until(lambda _, got: len(got) >= 10)
            redis.kill()
            async with asyncio.timeout(5 * UNIT):
                await pusher.a_refusal.wait()
            await redis.start()  # empty: no persistence
            for gateway in gateways:
                await ready(http, gateway)  # then at once:
            for proxy in proxies:
                await proxy.close()  # every client cut; they resume on the other gateway
            cut = {stream: len(accepted) for stream, accepted in pusher.accepted.items()}
            async with asyncio.timeout(10 * UNIT):  # and pushes flow again after the resume
                for client, _ in clients:
                    await client.until(lambda s, got: s != "all" or len(got) >= cut[s] + 5)
        finally:
            pushing.cancel()
            await asyncio.gather(pushing, return_exceptions=True)

        for client, index in clients:
            assert (client.conn.state, client.conn.url) == (State.OPEN, client.elsewhere)
            assert client.conn.ws_id == client.ws_id, "a new session: not resumed"
            assert client.conn.resumed
            now_on = gateways[1 - index].server.node.hub
            assert now_on.rooms_of(ConnId(client.ws_id)) == set(map(RoomId, client.rooms))
        for gateway in gateways:
            assert gateway.server.node.restorer.restored == CLIENTS_PER_GATEWAY
        async with asyncio.timeout(10 * UNIT):
            for client, _ in clients:
                await client.until(lambda s, got: pusher.accepted[s][-1] in got)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    for client, _ in clients:
        for stream in client.streams:
            got, accepted = client.got[stream], pusher.accepted[stream]
            assert len(got) == len(set(got)), f"{stream}: a push twice"
            assert got == sorted(got), f"{stream}: out of order"
            missing = set(accepted) - set(got)
            assert not missing, f"{client.ws_id} {stream}: accepted pushes missing: {missing}"
            # A 503 may come from a push Redis ran before it died: it may arrive.
            assert set(got) <= set(accepted) | set(pusher.refused[stream])


@dataclass
class Told:
    """What a client was told: what could not be recovered (each ``on_recovery``
    report), and its states, in order."""

    reports: list[dict[str, bool]] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def recovery(self, _: Connection, report: dict[str, bool]) -> None:
        self.reports.append(report)

    def state(self, _: Connection, state: State) -> None:
        self.states.append(state)
        self.changed.set()

    async def until_open_again(self) -> None:
        """Return once it is open again after a drop."""
        while State.RECONNECTING not in self.states or self.states[-1] is not State.OPEN:
            self.changed.clear()
            await self.changed.wait()


async def test_a_client_that_missed_nothing_is_told_so_after_a_redis_restarted_empty(
    redis: RedisServer,
) -> None:
    """Clients of two gateways are in rooms (one, solo, only on the first gateway);
    Redis is SIGKILLed under pushes and started again empty. Each gateway had all a
    stream's pushes when Redis closed its connection, so its clients are told of no
    loss: no notice while connected, and, cut once the gateways are ready, a resume
    on their own gateway or on the other that is recovered, from the new epoch on the
    streams that had pushes since and from the old epoch's end on those that had not
    (r2, solo). Solo's client resumes on the gateway that never followed solo, which
    cannot tell: only that stream is not recovered. Every accepted push arrives once."""
    async with AsyncExitStack() as stack:
        gateways, logic = await stack.enter_async_context(cluster(redis))
        api = await stack.enter_async_context(PushAPI(logic.api_url))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        # Closed at the cut (its clients go to the other gateway), or dropped (they stay).
        moving: list[DroppingProxy] = []
        staying: list[DroppingProxy] = []
        for gateway in gateways:
            for proxies in (moving, staying):
                proxy = DroppingProxy(LOOPBACK, gateway.ws_port)
                await proxy.start()
                stack.push_async_callback(proxy.close)
                proxies.append(proxy)
        clients: list[Client] = []
        told: list[Told] = []
        # (its gateway, its rooms, whether it resumes there: else on the other one)
        plan = [(0, ("r0", "r1"), False), (0, ("r2",), True), (0, ("solo",), False)]
        plan += [(1, ("r0", "r2"), False), (1, ("r1",), True)]
        for index, rooms, stays in plan:
            proxy_url = f"ws://{LOOPBACK}:{(staying if stays else moving)[index].port}/connect"
            urls = [proxy_url] if stays else [proxy_url, gateways[1 - index].ws_url]
            told.append(Told())
            conn = connect(
                urls,
                api=api,
                backoff_initial=0.05,
                backoff_max=0.2,
                on_recovery=told[-1].recovery,
                on_state_change=told[-1].state,
            )
            client = Client(await stack.enter_async_context(conn), rooms, urls[-1])
            client.ws_id = client.conn.ws_id
            for room in rooms:
                await api.join(room, client.ws_id)
            clients.append(client)
        readers = [asyncio.create_task(client.read()) for client in clients]
        pusher = Pusher(api, ["all", "room:r0", "room:r1", "room:r2", "room:solo"])
        pushing = asyncio.create_task(pusher.run())
        try:
            async with asyncio.timeout(10 * UNIT):  # the old epoch, on every stream
                for client in clients:
                    await client.until(lambda _, got: len(got) >= 5)
            redis.kill()
            async with asyncio.timeout(5 * UNIT):
                await pusher.a_refusal.wait()
            # r2 and solo stay quiet until the cut: their clients resume from the old
            # epoch's end; the others from the new epoch, which goes on meanwhile.
            pusher.streams = ["all", "room:r0", "room:r1"]
            old = len(pusher.accepted["all"])
            await redis.start()  # empty: no persistence
            for gateway in gateways:
                await ready(http, gateway)
            async with asyncio.timeout(10 * UNIT):  # the new epoch reaches everyone live
                for client in clients:
                    await client.until(
                        lambda s, got: s != "all" or len(set(got) & {*pusher.accepted[s][old:]}) > 0
                    )
            for proxy in moving:
                await proxy.close()  # refused from now on: to the other gateway
            for proxy in staying:
                await proxy.drop()  # back through the same proxy: the same gateway
            async with asyncio.timeout(10 * UNIT):
                for each in told:
                    await each.until_open_again()
            pusher.streams = ["all", "room:r0", "room:r1", "room:r2", "room:solo"]
            cut = {stream: len(pusher.accepted[stream]) for stream in pusher.streams}
            async with asyncio.timeout(10 * UNIT):  # every stream flows after the resumes
                for client in clients:
                    await client.until(
                        lambda s, got: len(set(got) & {*pusher.accepted[s][cut[s] :]}) >= 3
                    )
        finally:
            pushing.cancel()
            await asyncio.gather(pushing, return_exceptions=True)
        async with asyncio.timeout(10 * UNIT):
            for client in clients:
                await client.until(lambda s, got: pusher.accepted[s][-1] in got)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

        assert [gateway.server.node.restorer.restored for gateway in gateways] == [3, 2]
        for client, each in zip(clients, told, strict=True):
            assert (client.conn.state, client.conn.url) == (State.OPEN, client.elsewhere)
            assert (client.conn.ws_id, client.conn.resumed) == (client.ws_id, True)
            if client.rooms == ("solo",):  # on the gateway that never followed solo
                assert each.reports == [{"all": True, "room:solo": False}]
                assert client.conn.recovered is False
            else:
                assert each.reports == [], f"{client.rooms}: told of a loss"
                assert client.conn.recovered is True

    for client in clients:
        for stream in client.streams:
            got, accepted = client.got[stream], pusher.accepted[stream]
            assert len(got) == len(set(got)), f"{stream}: a push twice"
            assert got == sorted(got), f"{stream}: out of order"
            missing = set(accepted) - set(got)
            assert not missing, f"{client.ws_id} {stream}: accepted pushes missing: {missing}"
            assert set(got) <= set(accepted) | set(pusher.refused[stream])


async def test_presence_entries_come_back_after_a_redis_restarted_empty(
    redis: RedisServer,
) -> None:
    """Ann on one gateway and Bob on the other are in a presence room; Redis restarts
    empty (the roster is gone with it); once the gateways are ready, the roster has
    both of them again."""
    settings = {**SETTINGS, "namespaces": NAMESPACES, "token_secret": SECRET}
    async with AsyncExitStack() as stack:
        gateways = [
            await stack.enter_async_context(running_server("gateway", **settings, broker=redis.url))
            for _ in range(2)
        ]
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for gateway, user in zip(gateways, ("ann", "bob"), strict=True):
            member = await stack.enter_async_context(
                client(f"{gateway.ws_url}?token={token(user)}")
            )
            assert (await member.op("subscribe", "chat:1"))["ok"]
        node = gateways[0].server.node
        assert users_in(await node.roster(RoomId("chat:1"))) == {"ann", "bob"}
        redis.kill()
        await redis.start()  # empty: no persistence
        for gateway in gateways:
            await ready(http, gateway)
        assert users_in(await node.roster(RoomId("chat:1"))) == {"ann", "bob"}


def users_in(roster: Roster | None) -> set[str | None]:
    assert roster is not None
    return {member.user for member in roster.members}
