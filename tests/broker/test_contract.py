"""The Broker contract: one behaviour suite that every broker implementation must pass.

Each test gets ``broker_factory``, parametrized over the implementations. A factory
makes brokers that share one bus (each broker is one node of a cluster) and knows how
to wait until everything published so far has been delivered (``settle``), which is
what lets a test say that something was *not* delivered without sleeping.

To add an implementation, write a class with the :class:`BrokerFactory` methods and
add it to ``FACTORIES``. The Redis one runs against a real redis-server it starts;
the Redis Cluster one against a real three-master cluster, one for the whole module
(``redis_cluster`` in tests/conftest.py; each test has a prefix of its own, so no
test sees another's channels or keys). A test that needs other history settings than
the defaults sets them in the factory's ``history_options`` before it makes its first
broker.
"""

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import pytest

from pushgate.broker.base import Broker
from pushgate.broker.memory import MemoryBroker, MemoryBus
from pushgate.broker.redis import POSITION_MARGIN, RedisBroker
from pushgate.broker.redis_cluster import RedisClusterBroker
from pushgate.streams import Position, Publication
from tests.helpers import UNIT
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer

# Upper bound on waiting for a delivery that must happen; never reached when it works.
DELIVERY_TIMEOUT = 5.0
TOPIC = "room:lobby"
OTHER_TOPIC = "room:game"


class BrokerFactory(Protocol):
    """Makes broker nodes on one shared bus, and cleans them up."""

    # Keyword arguments of every broker (bus) made from now on: history_ttl,
    # session_ttl, position_margin.
    history_options: dict[str, Any]

    def __call__(self) -> Broker:
        """A new, not yet started broker: another node on the same bus."""
        ...

    async def settle(self) -> None:
        """Return once everything published so far has reached every subscriber it will."""
        ...

    async def aclose(self) -> None:
        """Close every broker this factory made (some may already be closed)."""
        ...


class MemoryBrokerFactory:
    """MemoryBrokers on one MemoryBus; delivery is synchronous, so settling is free."""

    def __init__(self) -> None:
        self.history_options: dict[str, Any] = {}
        self._bus: MemoryBus | None = None
        self.made: list[MemoryBroker] = []

    def __call__(self) -> Broker:
        if self._bus is None:
            self._bus = MemoryBus(**self.history_options)
        broker = MemoryBroker(self._bus)
        self.made.append(broker)
        return broker

    async def settle(self) -> None:
        return None

    async def aclose(self) -> None:
        for broker in self.made:
            await broker.close()


class RedisNodes:
    """Settling sends a marker through each running node's own subscriptions and
    waits for it to come back."""

    made: list[RedisBroker]
    history_options: dict[str, Any]

    async def settle(self) -> None:
        for broker in self.made:
            if broker.running:
                await broker.sync()

    async def aclose(self) -> None:
        for broker in self.made:
            await broker.close()


class RedisBrokerFactory(RedisNodes):
    """RedisBrokers on a redis-server of their own."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.made = []
        self.history_options = {}

    @classmethod
    async def create(cls) -> "RedisBrokerFactory":
        server = RedisServer()
        await server.start()
        return cls(server)

    def __call__(self) -> Broker:
        broker = RedisBroker(
            self.server.url,
            prefix="test:",
            node_id=f"node{len(self.made)}",
            **self.history_options,
        )
        self.made.append(broker)
        return broker

    async def aclose(self) -> None:
        await super().aclose()
        self.server.kill()


class RedisClusterBrokerFactory(RedisNodes):
    """RedisClusterBrokers on the module's cluster, under a prefix of this test's own."""

    prefixes = itertools.count()

    def __init__(self, cluster: RedisClusterServers) -> None:
        self.cluster = cluster
        self.prefix = f"test{next(self.prefixes)}:"
        self.made = []
        self.history_options = {}

    def __call__(self) -> Broker:
        broker = RedisClusterBroker(
            self.cluster.url,
            prefix=self.prefix,
            node_id=f"node{len(self.made)}",
            **self.history_options,
        )
        self.made.append(broker)
        return broker


async def _memory() -> BrokerFactory:
    return MemoryBrokerFactory()


async def _redis() -> BrokerFactory:
    return await RedisBrokerFactory.create()


FACTORIES: dict[str, Callable[[], Awaitable[BrokerFactory]]] = {
    "memory": _memory,
    "redis": _redis,
}


async def _factory(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    if request.param == "redis-cluster":
        factory: BrokerFactory = RedisClusterBrokerFactory(request.getfixturevalue("redis_cluster"))
    else:
        factory = await FACTORIES[request.param]()
    try:
        yield factory
    finally:
        await factory.aclose()


@pytest.fixture(params=[*sorted(FACTORIES), "redis-cluster"])
async def broker_factory(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    """A factory of broker nodes on a fresh shared bus, for each implementation."""
    async for factory in _factory(request):
        yield factory


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_factory(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    """The same, for the Redis implementations only (tests of their keys)."""
    async for factory in _factory(request):
        yield factory


class Recorder:
    """A BrokerHandler that records deliveries and reports ``reach`` connections each."""

    def __init__(self, reach: int = 1) -> None:
        self.reach = reach
        self.received: list[tuple[str, bytes]] = []
        self.publications: list[tuple[str, Publication]] = []
        self.reconnects = 0
        self.interruptions: list[dict[str, bool]] = []  # on_interrupted's, in order
        self._arrived = asyncio.Event()

    def on_message(self, topic: str, payload: bytes) -> int:
        self.received.append((topic, payload))
        self._arrived.set()
        return self.reach

    def on_publication(self, topic: str, pub: Publication) -> int:
        self.publications.append((topic, pub))
        return self.on_message(topic, pub.data)

    def on_interrupted(self, topics: Mapping[str, bool]) -> None:
        self.interruptions.append(dict(topics))

    def on_reconnected(self) -> None:
        self.reconnects += 1

    @property
    def payloads(self) -> list[bytes]:
        return [payload for _, payload in self.received]

    async def wait_for(self, count: int) -> None:
        """Return once at least ``count`` messages have arrived (or time out)."""
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()


async def started(factory: BrokerFactory, *topics: str, reach: int = 1) -> tuple[Broker, Recorder]:
    """A started broker node, subscribed to ``topics``, with its recording handler."""
    broker = factory()
    recorder = Recorder(reach)
    await broker.start(recorder)
    for topic in topics:
        await broker.subscribe(topic)
    return broker, recorder


async def test_subscriber_receives_a_payload_exactly_once(broker_factory: BrokerFactory) -> None:
    """A node subscribed to a topic receives a payload published there, once."""
    publisher, _ = await started(broker_factory)
    _, subscriber = await started(broker_factory, TOPIC)
    await publisher.publish(TOPIC, b"hello")
    await subscriber.wait_for(1)
    await broker_factory.settle()
    assert subscriber.received == [(TOPIC, b"hello")]


async def test_publisher_subscribed_to_its_own_topic_receives_it(
    broker_factory: BrokerFactory,
) -> None:
    """A single node that publishes on a topic it subscribes to gets its own push back."""
    broker, recorder = await started(broker_factory, TOPIC)
    await broker.publish(TOPIC, b"loop")
    await recorder.wait_for(1)
    await broker_factory.settle()
    assert recorder.received == [(TOPIC, b"loop")]


async def test_payload_bytes_arrive_unchanged(broker_factory: BrokerFactory) -> None:
    """Payloads are opaque: any bytes, not only UTF-8, arrive exactly as published."""
    publisher, _ = await started(broker_factory)
    _, subscriber = await started(broker_factory, TOPIC)
    payload = bytes(range(256)) + "中文".encode()
    await publisher.publish(TOPIC, payload)
    await subscriber.wait_for(1)
    assert subscriber.payloads == [payload]


async def test_node_not_subscribed_receives_nothing(broker_factory: BrokerFactory) -> None:
    """A node subscribed only to other topics receives nothing published on this one."""
    publisher, publisher_rec = await started(broker_factory)
    _, subscriber = await started(broker_factory, TOPIC)
    _, bystander = await started(broker_factory, OTHER_TOPIC)
    await publisher.publish(TOPIC, b"for the lobby")
    await subscriber.wait_for(1)
    await broker_factory.settle()
    assert bystander.received == []
    assert publisher_rec.received == []


async def test_nothing_arrives_after_unsubscribe(broker_factory: BrokerFactory) -> None:
    """Once a node unsubscribes from a topic it receives nothing more from it."""
    publisher, _ = await started(broker_factory)
    subscriber_broker, subscriber = await started(broker_factory, TOPIC)
    await publisher.publish(TOPIC, b"before")
    await subscriber.wait_for(1)
    await subscriber_broker.unsubscribe(TOPIC)
    delivered = await publisher.publish(TOPIC, b"after")
    await broker_factory.settle()
    assert subscriber.payloads == [b"before"]
    if delivered is not None:
        assert delivered == 0


async def test_unsubscribing_one_topic_keeps_the_others(broker_factory: BrokerFactory) -> None:
    """Unsubscribing from one topic leaves the node's other subscriptions working."""
    publisher, _ = await started(broker_factory)
    subscriber_broker, subscriber = await started(broker_factory, TOPIC, OTHER_TOPIC)
    await subscriber_broker.unsubscribe(TOPIC)
    await publisher.publish(TOPIC, b"lobby")
    await publisher.publish(OTHER_TOPIC, b"game")
    await subscriber.wait_for(1)
    await broker_factory.settle()
    assert subscriber.received == [(OTHER_TOPIC, b"game")]


async def test_unsubscribing_a_topic_never_subscribed_is_harmless(
    broker_factory: BrokerFactory,
) -> None:
    """Unsubscribing from a topic not subscribed raises nothing and changes nothing."""
    publisher, _ = await started(broker_factory)
    subscriber_broker, subscriber = await started(broker_factory, TOPIC)
    await subscriber_broker.unsubscribe(OTHER_TOPIC)
    await publisher.publish(TOPIC, b"still here")
    await subscriber.wait_for(1)
    assert subscriber.payloads == [b"still here"]


async def test_subscribing_twice_is_the_same_as_once(broker_factory: BrokerFactory) -> None:
    """A node subscribed twice to a topic still receives each payload once."""
    publisher, _ = await started(broker_factory)
    subscriber_broker, subscriber = await started(broker_factory, TOPIC, TOPIC)
    delivered = await publisher.publish(TOPIC, b"once")
    await subscriber.wait_for(1)
    await broker_factory.settle()
    assert subscriber.payloads == [b"once"]
    if delivered is not None:
        assert delivered == 1
    await subscriber_broker.unsubscribe(TOPIC)
    await publisher.publish(TOPIC, b"gone")
    await broker_factory.settle()
    assert subscriber.payloads == [b"once"]


async def test_two_subscribed_nodes_each_receive_it_once(broker_factory: BrokerFactory) -> None:
    """Every node subscribed to a topic receives the payload, each exactly once."""
    publisher, _ = await started(broker_factory)
    _, first = await started(broker_factory, TOPIC)
    _, second = await started(broker_factory, TOPIC)
    await publisher.publish(TOPIC, b"both")
    await first.wait_for(1)
    await second.wait_for(1)
    await broker_factory.settle()
    assert first.received == [(TOPIC, b"both")]
    assert second.received == [(TOPIC, b"both")]


async def test_payloads_from_one_publisher_arrive_in_publish_order(
    broker_factory: BrokerFactory,
) -> None:
    """Payloads one node publishes on a topic reach every subscriber in publish order."""
    publisher, _ = await started(broker_factory)
    _, first = await started(broker_factory, TOPIC)
    _, second = await started(broker_factory, TOPIC)
    payloads = [f"push {n}".encode() for n in range(100)]
    for payload in payloads:
        await publisher.publish(TOPIC, payload)
    await first.wait_for(len(payloads))
    await second.wait_for(len(payloads))
    await broker_factory.settle()
    assert first.payloads == payloads
    assert second.payloads == payloads


async def test_publish_reports_how_many_connections_it_reached(
    broker_factory: BrokerFactory,
) -> None:
    """Where a broker reports counts, publish returns the sum of every handler's reach."""
    publisher, _ = await started(broker_factory, OTHER_TOPIC, reach=100)
    _, first = await started(broker_factory, TOPIC, reach=3)
    _, second = await started(broker_factory, TOPIC, reach=4)
    delivered = await publisher.publish(TOPIC, b"count me")
    await first.wait_for(1)
    await second.wait_for(1)
    if delivered is not None:
        assert delivered == 7


async def test_publish_to_a_topic_nobody_subscribes_reaches_nobody(
    broker_factory: BrokerFactory,
) -> None:
    """Publishing where nobody listens succeeds, and counts zero where counts are reported."""
    publisher, publisher_rec = await started(broker_factory, OTHER_TOPIC)
    delivered = await publisher.publish(TOPIC, b"into the void")
    await broker_factory.settle()
    assert publisher_rec.received == []
    if delivered is not None:
        assert delivered == 0


async def test_memory_broker_reports_counts() -> None:
    """The memory broker always knows how many connections a publish reached."""
    bus = MemoryBus()
    publisher, subscriber = MemoryBroker(bus), MemoryBroker(bus)
    await publisher.start(Recorder())
    await subscriber.start(Recorder(reach=5))
    await subscriber.subscribe(TOPIC)
    assert await publisher.publish(TOPIC, b"x") == 5
    assert await publisher.publish(OTHER_TOPIC, b"x") == 0


async def test_close_stops_delivery(broker_factory: BrokerFactory) -> None:
    """A closed node receives nothing more, while other subscribers still do."""
    publisher, _ = await started(broker_factory)
    closing_broker, closing = await started(broker_factory, TOPIC, OTHER_TOPIC)
    _, staying = await started(broker_factory, TOPIC)
    await publisher.publish(TOPIC, b"before")
    await closing.wait_for(1)
    await closing_broker.close()
    await publisher.publish(TOPIC, b"after")
    await publisher.publish(OTHER_TOPIC, b"after")
    await staying.wait_for(2)
    await broker_factory.settle()
    assert closing.payloads == [b"before"]
    assert staying.payloads == [b"before", b"after"]


# History: what a resume reads


def push(n: int) -> bytes:
    return b'{"type":1,"data":"push %d"}\n' % n


async def test_history_gives_the_pushes_after_a_position_in_order(
    broker_factory: BrokerFactory,
) -> None:
    """Each push gets the next position of its stream; a read after a position gives
    the pushes after it, in order, with their positions in their frames."""
    broker, _ = await started(broker_factory)
    for n in range(1, 6):
        await broker.publish_push(TOPIC, push(n))
    now = await broker.history(TOPIC, None)
    assert now.position.seq == 5
    assert now.publications == ()
    after_two = await broker.history(TOPIC, Position(now.position.epoch, 2))
    assert [p.seq for p in after_two.publications] == [3, 4, 5]
    assert after_two.complete
    assert after_two.publications[0].data == (
        b'{"type":1,"data":"push 3","seq":3,"epoch":"%s"}\n' % now.position.epoch.encode()
    )
    # A position of another epoch (history lost since): all that is kept, not complete.
    elsewhere = await broker.history(TOPIC, Position("0" * 8, 2))
    assert [p.seq for p in elsewhere.publications] == [1, 2, 3, 4, 5]
    assert not elsewhere.complete


async def test_histories_reads_several_streams_at_once(broker_factory: BrokerFactory) -> None:
    broker, _ = await started(broker_factory)
    await broker.publish_push(TOPIC, push(1))
    await broker.publish_push(OTHER_TOPIC, push(1))
    await broker.publish_push(OTHER_TOPIC, push(2))
    top = await broker.histories({TOPIC: None, OTHER_TOPIC: None})
    assert (top[TOPIC].position.seq, top[OTHER_TOPIC].position.seq) == (1, 2)
    since = {TOPIC: Position(top[TOPIC].position.epoch, 0), OTHER_TOPIC: top[OTHER_TOPIC].position}
    read = await broker.histories(since)
    assert [p.seq for p in read[TOPIC].publications] == [1]
    assert read[OTHER_TOPIC].publications == ()
    assert read[OTHER_TOPIC].complete


async def test_a_storm_of_identical_reads_agrees_and_never_reads_the_past(
    broker_factory: BrokerFactory,
) -> None:
    """Many resumes reading the same stream at once (the Redis broker sends such reads
    once per batch) all get the same answer; a read made after a push sees it."""
    broker, _ = await started(broker_factory)
    for n in range(1, 4):
        await broker.publish_push(TOPIC, push(n))
    epoch = (await broker.history(TOPIC, None)).position.epoch
    since = Position(epoch, 1)
    answers = await asyncio.gather(*(broker.history(TOPIC, since) for _ in range(200)))
    assert {tuple(p.seq for p in a.publications) for a in answers} == {(2, 3)}

    first = asyncio.ensure_future(broker.history(TOPIC, since))
    await asyncio.sleep(0)  # its read is on its way
    await broker.publish_push(TOPIC, push(4))
    later = await broker.history(TOPIC, since)
    assert [p.seq for p in later.publications] == [2, 3, 4]
    assert [p.seq for p in (await first).publications] in ([2, 3], [2, 3, 4])


async def test_sync_returns_once_earlier_pushes_reached_the_node(
    broker_factory: BrokerFactory,
) -> None:
    """After sync(), every push published before it has been handed to the handler:
    a resume relies on this to know that nothing fell between history and live."""
    publisher, _ = await started(broker_factory)
    subscriber, recorder = await started(broker_factory, TOPIC)
    for n in range(1, 21):
        await publisher.publish_push(TOPIC, push(n))
    await asyncio.gather(*(subscriber.sync() for _ in range(50)))  # one marker serves all
    assert [pub.seq for _, pub in recorder.publications] == list(range(1, 21))


async def test_a_burst_of_concurrent_pushes_is_all_published(broker_factory: BrokerFactory) -> None:
    """300 pushes in flight at once, on 100 topics (an API under load): every one is
    published and numbered, none refused for want of a connection to the broker."""
    publisher, _ = await started(broker_factory)
    topics = [f"room:burst{i}" for i in range(100)]
    _, recorder = await started(broker_factory, *topics)
    await asyncio.gather(*(publisher.publish_push(topics[n % 100], push(n)) for n in range(300)))
    await recorder.wait_for(300)
    seqs: dict[str, list[int]] = {}
    for topic, pub in recorder.publications:
        seqs.setdefault(topic, []).append(pub.seq)
    if recorder.publications[0][1].seq:  # brokers with history number each stream
        assert all(sorted(s) == [1, 2, 3] for s in seqs.values()), seqs
    assert sum(map(len, seqs.values())) == 300


# History over time: pushes expire, positions outlive them (docs/recovery.md)


async def test_a_push_older_than_the_history_ttl_is_not_read_back(
    broker_factory: BrokerFactory,
) -> None:
    """Each push is kept ``history_ttl`` after it was published, even while later
    pushes keep the stream busy: a client that missed an expired push gets what is
    left and is told it was not recovered; one that missed only later pushes is."""
    broker_factory.history_options.update(history_ttl=0.5 * UNIT)
    broker, _ = await started(broker_factory)
    await broker.publish_push(TOPIC, push(1))
    epoch = (await broker.history(TOPIC, None)).position.epoch
    await asyncio.sleep(0.3 * UNIT)
    await broker.publish_push(TOPIC, push(2))
    await asyncio.sleep(0.3 * UNIT)  # push 1 is 0.6 s old, push 2 0.3 s
    from_start = await broker.history(TOPIC, Position(epoch, 0))
    assert [p.seq for p in from_start.publications] == [2]
    assert not from_start.complete
    assert from_start.position == Position(epoch, 2)
    after_one = await broker.history(TOPIC, Position(epoch, 1))
    assert [p.seq for p in after_one.publications] == [2]
    assert after_one.complete


async def test_a_position_outlives_its_pushes(broker_factory: BrokerFactory) -> None:
    """Once a stream's pushes expired, its position stays (as long as a session may
    be away): a client that had them all is recovered, in the same epoch; one that
    missed some is told it was not, in the same epoch too."""
    broker_factory.history_options.update(history_ttl=0.2 * UNIT, session_ttl=3 * UNIT)
    broker, _ = await started(broker_factory)
    await broker.publish_push(TOPIC, push(1))
    await broker.publish_push(TOPIC, push(2))
    top = (await broker.history(TOPIC, None)).position
    await asyncio.sleep(0.5 * UNIT)
    had_all = await broker.history(TOPIC, top)
    assert (had_all.position, had_all.publications, had_all.complete) == (top, (), True)
    missed_one = await broker.history(TOPIC, Position(top.epoch, 1))
    assert (missed_one.position, missed_one.publications) == (top, ())
    assert not missed_one.complete


async def test_a_stream_nobody_follows_is_forgotten_once_idle_a_followed_one_is_not(
    broker_factory: BrokerFactory,
) -> None:
    """A stream no node subscribes to, idle longer than its position's lifetime
    (max(history_ttl, session_ttl) + margin, here 0.5 s), starts over in a new epoch;
    one a node subscribes to keeps its position however long it is idle, so that its
    connected clients are never told, falsely, that pushes were lost."""
    broker_factory.history_options.update(
        history_ttl=0.2 * UNIT, session_ttl=0.2 * UNIT, position_margin=0.3 * UNIT
    )
    await started(broker_factory, TOPIC)
    publisher, _ = await started(broker_factory)
    await publisher.publish_push(TOPIC, push(1))
    await publisher.publish_push(OTHER_TOPIC, push(1))
    before = await publisher.histories({TOPIC: None, OTHER_TOPIC: None})
    await asyncio.sleep(1.5 * UNIT)  # the memory broker notices up to a lifetime late
    after = await publisher.histories({TOPIC: None, OTHER_TOPIC: None})
    assert (
        after[TOPIC].position == before[TOPIC].position == Position(after[TOPIC].position.epoch, 1)
    )
    assert after[OTHER_TOPIC].position.epoch != before[OTHER_TOPIC].position.epoch
    assert after[OTHER_TOPIC].position.seq == 0


async def test_a_stream_keeps_its_position_for_a_session_ttl_after_its_last_follower_left(
    broker_factory: BrokerFactory,
) -> None:
    """The last node following a stream leaves it (its last member went away, leaving
    a session behind): the stream keeps its position for as long as that session
    may resume, however long the stream had been idle before."""
    broker_factory.history_options.update(
        history_ttl=0.2 * UNIT, session_ttl=0.6 * UNIT, position_margin=0.3 * UNIT
    )
    follower, _ = await started(broker_factory, TOPIC)
    publisher, _ = await started(broker_factory)
    await publisher.publish_push(TOPIC, push(1))
    top = (await publisher.history(TOPIC, None)).position
    await asyncio.sleep(1.2 * UNIT)  # idle longer than the position's lifetime (0.9 s)
    await follower.unsubscribe(TOPIC)
    await asyncio.sleep(0.5 * UNIT)  # the session is still within its TTL
    assert (await publisher.history(TOPIC, top)).position == top


async def test_redis_keys_of_a_stream_expire_within_their_ttls(
    redis_factory: BrokerFactory,
) -> None:
    """On Redis a stream's metadata (its position) lives max(history_ttl,
    session_ttl) plus a margin after its last push, not a day; its history
    history_ttl."""
    redis_factory.history_options.update(history_ttl=300.0, session_ttl=1000.0)
    broker, _ = await started(redis_factory)
    assert isinstance(broker, RedisBroker)
    await broker.publish_push(TOPIC, push(1))
    meta, history = broker._stream_keys(TOPIC)
    assert 990_000 < await broker.client.pttl(meta) <= (1000 + POSITION_MARGIN) * 1000
    assert 290_000 < await broker.client.pttl(history) <= 300_000


async def test_redis_history_is_trimmed_by_time_at_each_publish(
    redis_factory: BrokerFactory,
) -> None:
    """On Redis a publish also drops the pushes of its stream older than
    history_ttl, so a busy stream holds no more than its last history_ttl."""
    redis_factory.history_options.update(history_ttl=0.3 * UNIT)
    broker, _ = await started(redis_factory)
    assert isinstance(broker, RedisBroker)
    _, history = broker._stream_keys(TOPIC)
    for n in (1, 2, 3):
        await broker.publish_push(TOPIC, push(n))
        await asyncio.sleep(0.2 * UNIT)
    assert await broker.client.llen(history) == 2  # push 1 was 0.4 s old at push 3
