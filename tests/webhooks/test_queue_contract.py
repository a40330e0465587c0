"""The WebhookQueue contract: one behaviour suite that every webhook queue must pass.

Each test gets ``node``, which makes the queue as one more node sees it,
parametrized over the implementations: MemoryWebhookQueue (one process: every node
gets the same queue), and RedisWebhookQueue on a RedisBroker (one redis-server) and
on a RedisClusterBroker (a three-master Redis Cluster), each node with a client of
its own. The Redis servers are one per module (``module_redis`` and
``redis_cluster`` in tests/conftest.py); each test keeps to a key prefix of its own.
"""

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pushgate.broker.redis import RedisBroker
from pushgate.broker.redis_cluster import RedisClusterBroker
from pushgate.errors import BrokerUnavailable
from pushgate.webhooks.events import Entry, Queued, id_count, lost_between
from pushgate.webhooks.memqueue import MemoryWebhookQueue
from pushgate.webhooks.queue import Claim, WebhookQueue
from pushgate.webhooks.redisqueue import RedisWebhookQueue
from tests.helpers import LOOPBACK, UNIT, free_port
from tests.webhooks.hookserver import id_key

KEEP = 60.0
LONG = 30.0  # a lease that does not run out during a test
PREFIXES = itertools.count()

MakeNode = Callable[[], Awaitable[WebhookQueue]]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def node(request: pytest.FixtureRequest) -> AsyncIterator[MakeNode]:
    """Makes the queue of one more node of a cluster; closes them after the test."""
    prefix = f"hooks{next(PREFIXES)}:"
    memory = MemoryWebhookQueue()
    brokers: list[RedisBroker] = []

    async def make() -> WebhookQueue:
        if request.param == "memory":
            return memory
        if request.param == "redis":
            broker = RedisBroker(
                request.getfixturevalue("module_redis").url, prefix=prefix, node_id="n"
            )
        else:
            broker = RedisClusterBroker(
                request.getfixturevalue("redis_cluster").url, prefix=prefix, node_id="n"
            )
            await broker.client.initialize()  # as RedisClusterBroker.start does
        brokers.append(broker)
        return RedisWebhookQueue(broker)

    try:
        yield make
    finally:
        for broker in brokers:
            await broker.close()


def entry(n: int, namespace: str | None = None) -> Entry:
    return Entry(f"e{n}", namespace, b'{"name":"e%d","time_ms":1,"data":{"n":%d}}' % (n, n))


async def add(queue: WebhookQueue, *entries: Entry, adder: str = "a", batch: int = 1) -> None:
    await queue.add(entries, adder=adder, batch=batch, keep=KEEP)


async def everything(queue: WebhookQueue) -> list[Queued]:
    return await queue.read(None, 1000)


# Adding and reading


async def test_entries_come_back_in_order_with_increasing_ids(node: MakeNode) -> None:
    """Entries added by two nodes come back in the order they were added, intact
    (no namespace, the default one "", another), with ids that increase and count
    every entry."""
    one, two = await node(), await node()
    await add(one, entry(1), entry(2, ""), adder="one")
    await add(two, entry(3, "chat"), adder="two")
    await add(one, entry(4), adder="one", batch=2)
    read = await everything(two)
    assert [q.entry for q in read] == [entry(1), entry(2, ""), entry(3, "chat"), entry(4)]
    keys = [id_key(q.id) for q in read]
    assert keys == sorted(keys)
    assert [id_count(q.id) - id_count(read[0].id) for q in read] == [0, 1, 2, 3]


async def test_a_read_starts_after_an_id_and_stops_at_a_count(node: MakeNode) -> None:
    """read(after, count) gives at most ``count`` entries after ``after``; none past
    the last."""
    queue = await node()
    await add(queue, *(entry(n) for n in range(5)))
    ids = [q.id for q in await everything(queue)]
    assert [q.id for q in await queue.read(ids[1], 2)] == ids[2:4]
    assert [q.id for q in await queue.read(ids[3], 10)] == ids[4:]
    assert await queue.read(ids[4], 10) == []


async def test_an_add_is_made_once_per_batch(node: MakeNode) -> None:
    """An add repeated with the batch number of one already made (its answer was
    lost) adds nothing; another adder's batch, or a later batch, is added."""
    queue = await node()
    await add(queue, entry(1), adder="a", batch=1)
    await add(queue, entry(1), adder="a", batch=1)
    await add(queue, entry(2), adder="b", batch=1)
    await add(queue, entry(3), adder="a", batch=2)
    await add(queue, entry(3), adder="a", batch=2)
    assert [q.entry for q in await everything(queue)] == [entry(1), entry(2), entry(3)]


# Leases and cursors


async def test_one_holder_at_a_time_moves_the_cursor(node: MakeNode) -> None:
    """A lease is one holder's, which renews it and alone moves the cursor; another
    holder's commit or release does nothing; once released, another holder claims it
    and finds the cursor."""
    one, two = await node(), await node()
    await add(one, entry(1), entry(2))
    first, second = [q.id for q in await everything(one)]
    assert await one.claim("r", "A", LONG) == Claim(None)
    assert await two.claim("r", "B", LONG) is None
    assert await one.claim("r", "A", LONG) == Claim(None)
    assert not await two.commit("r", "B", second, keep=KEEP)
    assert await one.commit("r", "A", first, keep=KEEP)
    assert await one.claim("r", "A", LONG) == Claim(first)
    await two.release("r", "B")
    assert await two.claim("r", "B", LONG) is None
    await one.release("r", "A")
    assert await two.claim("r", "B", LONG) == Claim(first)
    assert not await one.commit("r", "A", second, keep=KEEP)
    assert await two.claim("other", "A", LONG) == Claim(None)  # leases are per receiver


async def test_a_lease_that_runs_out_goes_to_another_holder(node: MakeNode) -> None:
    """A holder that stops renewing (a node killed) loses the lease when it runs out:
    another holder claims it, with the cursor, and the old holder's commit fails."""
    one, two = await node(), await node()
    await add(one, entry(1), entry(2))
    first, second = [q.id for q in await everything(one)]
    assert await one.claim("r", "A", 0.2 * UNIT) == Claim(None)
    assert await one.commit("r", "A", first, keep=KEEP)
    assert await two.claim("r", "B", LONG) is None
    await asyncio.sleep(0.3 * UNIT)  # the lease runs out: no event says so
    assert await two.claim("r", "B", LONG) == Claim(first)
    assert not await one.commit("r", "A", second, keep=KEEP)
    assert await two.claim("r", "B", LONG) == Claim(first)


# What is dropped


async def test_entries_every_live_cursor_passed_are_dropped(node: MakeNode) -> None:
    """An entry stays until every cursor touched within ``keep`` has passed it (a
    cursor claimed and not yet moved holds everything); a cursor nobody touched for
    longer holds nothing back."""
    queue = await node()
    await add(queue, *(entry(n) for n in range(4)))
    ids = [q.id for q in await everything(queue)]
    assert await queue.claim("r1", "A", LONG) == Claim(None)
    assert await queue.claim("r2", "A", LONG) == Claim(None)
    assert await queue.commit("r1", "A", ids[3], keep=KEEP)
    assert [q.id for q in await everything(queue)] == ids
    assert await queue.commit("r2", "A", ids[1], keep=KEEP)
    assert [q.id for q in await everything(queue)] == ids[1:]
    await asyncio.sleep(0.3 * UNIT)  # r2 goes stale: no event says so
    assert await queue.commit("r1", "A", ids[3], keep=0.2 * UNIT)
    assert [q.id for q in await everything(queue)] == ids[3:]


async def test_entries_older_than_keep_are_dropped_and_the_gap_is_seen(
    node: MakeNode,
) -> None:
    """An add drops the entries older than ``keep``, whoever has not read them; a
    reader after one of them sees, from the ids, how many it missed."""
    queue = await node()
    await add(queue, entry(1), entry(2), entry(3))
    ids = [q.id for q in await everything(queue)]
    await asyncio.sleep(0.3 * UNIT)  # they grow old: no event says so
    await queue.add([entry(4)], adder="a", batch=2, keep=0.2 * UNIT)
    read = await queue.read(ids[0], 10)
    assert [q.entry for q in read] == [entry(4)]
    assert lost_between(ids[0], read[0].id) == 2


# Failures (Redis only)


async def test_an_unreachable_redis_raises_broker_unavailable() -> None:
    """Every method of a RedisWebhookQueue whose Redis is down raises
    BrokerUnavailable, naming where it is."""
    broker = RedisBroker(f"redis://{LOOPBACK}:{free_port()}/0", prefix="x:", node_id="n")
    queue = RedisWebhookQueue(broker)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: queue.add([entry(1)], adder="a", batch=1, keep=KEEP),
        lambda: queue.read(None, 10),
        lambda: queue.claim("r", "A", LONG),
        lambda: queue.commit("r", "A", "1-1", keep=KEEP),
        lambda: queue.release("r", "A"),
    ]
    try:
        for call in calls:
            with pytest.raises(BrokerUnavailable, match=f"webhook queue in Redis at .*{LOOPBACK}"):
                await call()
    finally:
        await broker.close()
