"""The Directory contract: one behaviour suite that every Directory implementation must pass.

Each test gets ``directory_factory``, parametrized over the implementations:
LocalDirectory, and RedisDirectory on one redis-server and on a three-master Redis
Cluster, each made as app.py makes it (on a Redis Cluster the prefix is a hash tag and
writes are plain pipelines). A factory makes the directories of the nodes of one
cluster, all with the TTL ``TTL``: gateways, started, each announcing the
connections of a set the test keeps as its hub would; and logic nodes, never started,
that only look things up.

LocalDirectory is a cluster of one, which announces nothing: the tests that need a
second node to find what a first one announced take ``shared_factory``, the Redis
implementations only, and :func:`test_local_directory_is_a_cluster_of_one` says
what a LocalDirectory does instead.

The Redis servers are one per module (``module_redis`` and ``redis_cluster`` in
tests/conftest.py); each test keeps to a key prefix of its own.
"""

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from pushgate.broker.redis import RedisBroker
from pushgate.broker.redis_cluster import RedisClusterBroker
from pushgate.broker.redis_directory import RedisDirectory
from pushgate.directory import Directory, LocalDirectory
from pushgate.errors import BrokerUnavailable
from pushgate.ids import ConnId, new_conn_id
from tests.helpers import LOOPBACK, UNIT, free_port

# How long a silent node's entries last, in every directory made here.
TTL = 0.3 * UNIT
# Upper bound on waiting for an add to be findable; never reached when it works.
ADD_TIMEOUT = 5.0 * UNIT


class DirectoryFactory(Protocol):
    """Makes the directories of the nodes of one cluster, and cleans them up."""

    # Whether a gateway announces itself and its connections (LocalDirectory does not).
    announces: bool

    async def gateway(self, node_id: str, conns: set[ConnId]) -> Directory:
        """A gateway's directory, started, announcing ``conns`` (its hub's)."""
        ...

    async def logic(self) -> Directory:
        """A logic node's directory: never started, it only looks things up."""
        ...

    async def unreachable(self) -> Directory:
        """A gateway's directory, started, on a store nobody answers at."""
        ...

    async def crash(self, directory: Directory) -> None:
        """Stop ``directory`` as a killed process stops: nothing more is written,
        nothing removed."""
        ...

    async def lose_everything(self) -> None:
        """Make the store lose every entry of this cluster, as a Redis restarted
        without persistence does."""
        ...

    async def aclose(self) -> None:
        """Close every directory this factory made."""
        ...


class LocalDirectoryFactory:
    announces = False

    async def gateway(self, node_id: str, conns: set[ConnId]) -> Directory:
        directory = LocalDirectory()
        await directory.start(node_id)
        return directory

    async def logic(self) -> Directory:
        return LocalDirectory()

    async def unreachable(self) -> Directory:
        return await self.gateway("gw-unreachable", set())

    async def crash(self, directory: Directory) -> None:
        pass

    async def lose_everything(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class RedisDirectoryFactory:
    """RedisDirectories on the client of a node's broker, as app.py makes them, under
    a prefix of this test's own; each node has a client of its own."""

    announces = True
    prefixes = itertools.count()

    def __init__(self, url: str, kind: type[RedisBroker]) -> None:
        self.url = url
        self.kind = kind
        self.cluster = kind is RedisClusterBroker
        prefix = f"directory{next(self.prefixes)}:"
        # On a Redis Cluster the prefix is the hash tag (app.py).
        self.prefix = f"{{{prefix}}}" if self.cluster else prefix
        self.made: list[tuple[RedisDirectory, RedisBroker]] = []
        self.crashed: set[int] = set()

    async def gateway(self, node_id: str, conns: set[ConnId]) -> Directory:
        directory = self._make(self.url, conns)
        await directory.start(node_id)
        return directory

    async def logic(self) -> Directory:
        return self._make(self.url, set())

    async def unreachable(self) -> Directory:
        where = f"{LOOPBACK}:{free_port()}"
        url = f"redis+cluster://{where}" if self.cluster else f"redis://{where}/0"
        directory = self._make(url, set())
        await directory.start("gw-unreachable")
        return directory

    def _make(self, url: str, conns: set[ConnId]) -> RedisDirectory:
        broker = self.kind(url, prefix=self.prefix, node_id=f"node{len(self.made)}")
        directory = RedisDirectory(
            broker.client,
            prefix=self.prefix,
            ttl=TTL,
            local_conns=lambda: conns,
            transactions=not self.cluster,
        )
        self.made.append((directory, broker))
        return directory

    async def crash(self, directory: Directory) -> None:
        assert isinstance(directory, RedisDirectory)
        assert directory._task is not None
        directory._task.cancel()  # its writer, which refreshes and removes
        await asyncio.gather(directory._task, return_exceptions=True)
        self.crashed.add(id(directory))

    async def lose_everything(self) -> None:
        client = self.kind(self.url, prefix=self.prefix, node_id="flusher").client
        try:
            keys = [key async for key in client.scan_iter(match=self.prefix + "*")]
            assert keys
            await client.delete(*keys)  # one hash tag on a cluster: one slot
        finally:
            await client.aclose()

    async def aclose(self) -> None:
        for directory, broker in self.made:
            if id(directory) not in self.crashed:
                await directory.close()
            await broker.close()


async def _factory(request: pytest.FixtureRequest) -> AsyncIterator[DirectoryFactory]:
    factory: DirectoryFactory
    if request.param == "local":
        factory = LocalDirectoryFactory()
    elif request.param == "redis":
        factory = RedisDirectoryFactory(request.getfixturevalue("module_redis").url, RedisBroker)
    else:
        url = request.getfixturevalue("redis_cluster").url
        factory = RedisDirectoryFactory(url, RedisClusterBroker)
    try:
        yield factory
    finally:
        await factory.aclose()


@pytest.fixture(params=["local", "redis", "redis-cluster"])
async def directory_factory(request: pytest.FixtureRequest) -> AsyncIterator[DirectoryFactory]:
    """A factory of the directories of one cluster's nodes, for each implementation."""
    async for factory in _factory(request):
        yield factory


@pytest.fixture(params=["redis", "redis-cluster"])
async def shared_factory(request: pytest.FixtureRequest) -> AsyncIterator[DirectoryFactory]:
    """The same, for the implementations that other nodes read (a LocalDirectory is
    a cluster of one: it announces nothing, test_local_directory_is_a_cluster_of_one)."""
    async for factory in _factory(request):
        yield factory


async def added(directory: Directory, conns: set[ConnId], *new: ConnId) -> None:
    """Add ``new`` to a gateway's hub and directory; return once others can find them."""
    conns.update(new)
    futures = [f for f in map(directory.add, new) if f is not None]
    async with asyncio.timeout(ADD_TIMEOUT):
        await asyncio.gather(*futures)


def discarded(directory: Directory, conns: set[ConnId], *gone: ConnId) -> None:
    """Take ``gone`` out of a gateway's hub and directory, as a connection's end does."""
    conns.difference_update(gone)
    for conn in gone:
        directory.discard(conn)


# What every directory does


async def test_an_unknown_conn_is_held_nowhere(directory_factory: DirectoryFactory) -> None:
    """A wsId no node announced is located nowhere, on a gateway or a logic node."""
    conns: set[ConnId] = set()
    gateway = await directory_factory.gateway("gw0", conns)
    await added(gateway, conns, new_conn_id())
    logic = await directory_factory.logic()
    stranger = new_conn_id()
    assert await logic.locate(stranger) is None
    assert await gateway.locate(stranger) is None


async def test_add_and_discard_never_raise(directory_factory: DirectoryFactory) -> None:
    """Even when the store cannot be reached: an add's future then does not complete
    (nobody can find the connection), and close still returns."""
    directory = await directory_factory.unreachable()
    conn = new_conn_id()
    future = directory.add(conn)
    directory.discard(new_conn_id())
    if future is not None:
        done, _ = await asyncio.wait([future], timeout=TTL)
        assert not done
    directory.discard(conn)
    await directory.close()


async def test_local_directory_is_a_cluster_of_one() -> None:
    """A single process: every connection is local, so an add needs no wait, there
    is nothing to locate, and no node to list (the caller adds its own)."""
    directory = LocalDirectory()
    await directory.start("solo")
    conn = new_conn_id()
    assert directory.add(conn) is None
    assert await directory.locate(conn) is None
    assert await directory.nodes() == []
    directory.discard(conn)
    await directory.close()


# Finding what other nodes announced


async def test_a_conn_is_found_on_its_gateway_once_its_add_completes(
    shared_factory: DirectoryFactory,
) -> None:
    """Once an add's future has completed, every node, the gateway itself included,
    finds the connection on that gateway; each on its own."""
    conns0: set[ConnId] = set()
    conns1: set[ConnId] = set()
    gw0 = await shared_factory.gateway("gw0", conns0)
    gw1 = await shared_factory.gateway("gw1", conns1)
    logic = await shared_factory.logic()
    a, b, c = new_conn_id(), new_conn_id(), new_conn_id()
    await added(gw0, conns0, a, b)
    await added(gw1, conns1, c)
    for directory in (logic, gw0, gw1):
        assert [await directory.locate(conn) for conn in (a, b, c)] == ["gw0", "gw0", "gw1"]


async def test_nodes_lists_the_gateways_that_announced_themselves(
    shared_factory: DirectoryFactory,
) -> None:
    """Every live gateway, the asking one included, once it has announced itself
    (by the time its first add has completed); a logic node is not one."""
    logic = await shared_factory.logic()
    assert await logic.nodes() == []
    conns0: set[ConnId] = set()
    conns1: set[ConnId] = set()
    gw0 = await shared_factory.gateway("gw0", conns0)
    gw1 = await shared_factory.gateway("gw1", conns1)
    await added(gw0, conns0, new_conn_id())
    await added(gw1, conns1, new_conn_id())
    for directory in (logic, gw0, gw1):
        assert sorted(await directory.nodes()) == ["gw0", "gw1"]


async def test_a_discarded_conn_is_not_found_once_a_later_add_completes(
    shared_factory: DirectoryFactory,
) -> None:
    """Discards and adds reach the other nodes in the order they were made: once an
    add made after a discard has completed, the discarded connection is found
    nowhere, and the others still are."""
    conns: set[ConnId] = set()
    gateway = await shared_factory.gateway("gw0", conns)
    logic = await shared_factory.logic()
    a, b, c = new_conn_id(), new_conn_id(), new_conn_id()
    await added(gateway, conns, a, b)
    discarded(gateway, conns, a)
    await added(gateway, conns, c)
    assert [await logic.locate(conn) for conn in (a, b, c)] == [None, "gw0", "gw0"]


async def test_the_later_of_an_add_and_a_discard_wins(shared_factory: DirectoryFactory) -> None:
    """A connection added and discarded in one breath is not found; one discarded
    and added again (a resume on the same gateway) is."""
    conns: set[ConnId] = set()
    gateway = await shared_factory.gateway("gw0", conns)
    logic = await shared_factory.logic()
    gone, back = new_conn_id(), new_conn_id()
    await added(gateway, conns, back)
    conns.add(gone)
    pending = gateway.add(gone)
    discarded(gateway, conns, gone, back)
    await added(gateway, conns, back)
    if pending is not None:
        async with asyncio.timeout(ADD_TIMEOUT):
            await pending
    assert await logic.locate(gone) is None
    assert await logic.locate(back) == "gw0"


async def test_thousands_of_conns_added_at_once_are_all_found(
    shared_factory: DirectoryFactory,
) -> None:
    """A gateway whose clients all reconnect at once (more than one write's chunk)."""
    conns: set[ConnId] = set()
    gateway = await shared_factory.gateway("gw0", conns)
    logic = await shared_factory.logic()
    many = [new_conn_id() for _ in range(2500)]
    await added(gateway, conns, *many)
    found = await asyncio.gather(*(logic.locate(conn) for conn in many[::50]))
    assert found == ["gw0"] * len(many[::50])
    assert await logic.locate(many[-1]) == "gw0"


# When nodes go


async def test_a_closed_gateway_and_its_conns_are_forgotten_at_once(
    shared_factory: DirectoryFactory,
) -> None:
    """close() stops announcing and removes the gateway's entries: no node finds
    its connections or lists it any more; the other gateways stay."""
    conns0: set[ConnId] = set()
    conns1: set[ConnId] = set()
    gw0 = await shared_factory.gateway("gw0", conns0)
    gw1 = await shared_factory.gateway("gw1", conns1)
    logic = await shared_factory.logic()
    a, b = new_conn_id(), new_conn_id()
    await added(gw0, conns0, a)
    await added(gw1, conns1, b)
    await gw0.close()
    assert [await logic.locate(a), await logic.locate(b)] == [None, "gw1"]
    assert await logic.nodes() == ["gw1"]


async def test_a_gateway_that_stops_refreshing_is_forgotten_after_its_ttl(
    shared_factory: DirectoryFactory,
) -> None:
    """A gateway killed without a word: once its TTL has passed, its connections are
    found nowhere and it is not listed; a gateway that lives on, refreshing, is
    found and listed still."""
    conns0: set[ConnId] = set()
    conns1: set[ConnId] = set()
    gw0 = await shared_factory.gateway("gw0", conns0)
    gw1 = await shared_factory.gateway("gw1", conns1)
    logic = await shared_factory.logic()
    a, b = new_conn_id(), new_conn_id()
    await added(gw0, conns0, a)
    await added(gw1, conns1, b)
    await shared_factory.crash(gw0)
    await asyncio.sleep(1.5 * TTL)  # the TTL itself is what is waited for
    assert [await logic.locate(a), await logic.locate(b)] == [None, "gw1"]
    assert await logic.nodes() == ["gw1"]
    assert await gw1.nodes() == ["gw1"]


async def test_a_directory_that_cannot_reach_its_store_says_so(
    shared_factory: DirectoryFactory,
) -> None:
    """locate and nodes raise BrokerUnavailable when they cannot tell (a
    LocalDirectory always can)."""
    directory = await shared_factory.unreachable()
    with pytest.raises(BrokerUnavailable):
        await directory.locate(new_conn_id())
    with pytest.raises(BrokerUnavailable):
        await directory.nodes()


async def test_a_gateway_announces_itself_again_after_the_store_lost_it(
    shared_factory: DirectoryFactory,
) -> None:
    """A store that lost every entry (a Redis restarted empty): within the TTL every
    live gateway is listed again and its connections found again."""
    conns: set[ConnId] = set()
    gateway = await shared_factory.gateway("gw0", conns)
    logic = await shared_factory.logic()
    a, b = new_conn_id(), new_conn_id()
    await added(gateway, conns, a, b)
    await shared_factory.lose_everything()
    async with asyncio.timeout(TTL):
        while await logic.locate(b) != "gw0":  # noqa: ASYNC110
            await asyncio.sleep(TTL / 20)  # the gateway's own refresh: no event to await
    assert await logic.locate(a) == "gw0"
    assert await logic.nodes() == ["gw0"]


async def test_verify_tells_whether_the_store_lost_this_gateway(
    directory_factory: DirectoryFactory,
) -> None:
    """verify is False while the store keeps the gateway's entries; after the store
    lost them it is True, and they are found again by the time it returns (a
    LocalDirectory keeps nothing anywhere, and never lost anything)."""
    conns: set[ConnId] = set()
    gateway = await directory_factory.gateway("gw0", conns)
    logic = await directory_factory.logic()
    a = new_conn_id()
    await added(gateway, conns, a)
    async with asyncio.timeout(ADD_TIMEOUT):
        assert await gateway.verify() is False
        if not directory_factory.announces:
            return
        await directory_factory.lose_everything()
        assert await gateway.verify() is True
    assert await logic.locate(a) == "gw0"
    assert await gateway.verify() is False  # told once


async def test_a_refresh_that_finds_the_gateway_lost_tells_its_watcher(
    shared_factory: DirectoryFactory,
) -> None:
    """Without a verify, the refresh that finds the entries gone calls the watcher
    once, having written them again."""
    conns: set[ConnId] = set()
    gateway = await shared_factory.gateway("gw0", conns)
    logic = await shared_factory.logic()
    told = asyncio.Event()
    gateway.watch(told.set)
    a = new_conn_id()
    await added(gateway, conns, a)
    await shared_factory.lose_everything()
    async with asyncio.timeout(ADD_TIMEOUT):
        await told.wait()
    assert await logic.locate(a) == "gw0"
    told.clear()
    await asyncio.sleep(TTL)  # a refresh or more, with nothing lost: no event to await
    assert not told.is_set()
