"""The PresenceStore contract: one behaviour suite that every presence store must pass.

Each test gets ``cluster`` (or ``make_cluster``, for one without history),
parametrized over the implementations: MemoryPresence on a MemoryBroker, and
RedisPresence on a RedisBroker (one redis-server) and on a RedisClusterBroker (a
three-master Redis Cluster), each made as app.py makes it. A cluster makes the stores
of its nodes (MemoryPresence is one process: every node gets the same store), all with
the session TTL ``TTL``, lets time pass (``elapse``: a clock of its own for the memory
store, real time for Redis), and shows what a node subscribed to a room's stream
receives (``events``), as its subscribers would be told. A node keeps the entries its
connections hold every ``refresh`` seconds (:func:`live`); an entry nobody keeps ends.

The Redis servers are one per module (``module_redis`` and ``redis_cluster`` in
tests/conftest.py); each cluster keeps to a key prefix of its own. The last tests are
the Redis store's own: the keys' lifetime, an unreachable Redis.
"""

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol

import pytest

from pushgate.broker.memory import MemoryBroker, MemoryBus
from pushgate.broker.redis import RedisBroker
from pushgate.broker.redis_cluster import RedisClusterBroker
from pushgate.broker.redis_presence import CHUNK, RedisPresence
from pushgate.errors import BrokerUnavailable
from pushgate.ids import ConnId, RoomId, new_conn_id
from pushgate.presence import Change, Identity, PresenceStore, Present, Roster, encode_info
from pushgate.presencestore import MemoryPresence
from pushgate.streams import History, Position, Publication, room_topic
from pushgate.wireops import encode_presence
from tests.helpers import LOOPBACK, UNIT, free_port

# How long a detached session waits for a resume, in every store made here.
TTL = 0.4 * UNIT

ROOM = RoomId("lobby")
# A room kept for webhooks only: its changes are returned, never published.
QUIET = RoomId("quiet:lobby")


def announces(room: RoomId) -> bool:
    return not room.startswith("quiet:")


ALICE = encode_info({"name": "Alice", "colour": "#e0457b"})
BOB = encode_info({"name": "Bob"})


class Recorder:
    """A node's broker handler that keeps every push it receives, by topic."""

    def __init__(self) -> None:
        self.received: dict[str, list[Publication]] = {}

    def on_message(self, topic: str, payload: bytes) -> int:
        return 0

    def on_publication(self, topic: str, pub: Publication) -> int:
        self.received.setdefault(topic, []).append(pub)
        return 1

    def on_interrupted(self, topics: Mapping[str, bool]) -> None:
        raise AssertionError("the watcher's subscriptions broke: events may be lost")

    def on_reconnected(self) -> None:
        raise AssertionError("the watcher's subscriptions were rebuilt: events may be lost")


class PresenceCluster(Protocol):
    """The presence stores of the nodes of one cluster, and a node watching rooms."""

    # How often a node calls keep() (the stores' ``refresh``), once one is made.
    refresh: float

    async def node(self) -> PresenceStore:
        """The cluster's presence as one more node sees it."""
        ...

    async def watch(self, *rooms: RoomId) -> None:
        """From now on, record what is published in the streams of ``rooms``."""
        ...

    async def events(self, room: RoomId) -> list[Publication]:
        """What was published in ``room``'s stream since the last call (everything
        published before this call)."""
        ...

    async def histories(self, since: Mapping[str, Position | None]) -> dict[str, History]:
        """The streams' history, as a resume reads it."""
        ...

    async def elapse(self, seconds: float) -> None:
        """Return once ``seconds`` have passed for the stores."""
        ...

    async def aclose(self) -> None: ...


class Clock:
    """Time for a MemoryPresence, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryCluster:
    """One MemoryPresence for every node, on a clock the test moves."""

    def __init__(self, history: bool) -> None:
        self.clock = Clock()
        self.bus = MemoryBus(history_size=100 if history else 0, session_ttl=TTL)
        self.store: MemoryPresence | None = None
        self.refresh = 0.0
        self.recorder = Recorder()
        self.watcher = MemoryBroker(self.bus)

    async def start(self) -> None:
        await self.watcher.start(self.recorder)

    async def node(self) -> PresenceStore:
        if self.store is None:
            self.store = MemoryPresence(
                MemoryBroker(self.bus), TTL, clock=self.clock, announces=announces
            )
            self.refresh = self.store.refresh
        return self.store

    async def watch(self, *rooms: RoomId) -> None:
        for room in rooms:
            await self.watcher.subscribe(room_topic(room))

    async def events(self, room: RoomId) -> list[Publication]:
        return self.recorder.received.pop(room_topic(room), [])

    async def histories(self, since: Mapping[str, Position | None]) -> dict[str, History]:
        return await self.watcher.histories(since)

    async def elapse(self, seconds: float) -> None:
        self.clock.now += seconds
        await asyncio.sleep(0)

    async def aclose(self) -> None:
        await self.watcher.close()


class RedisCluster:
    """RedisPresence on the broker of each node, as app.py makes it, under a prefix of
    this cluster's own; each node has a client of its own, and so has the watcher."""

    prefixes = itertools.count()

    def __init__(self, url: str, kind: type[RedisBroker], history: bool) -> None:
        self.url = url
        self.kind = kind
        self.history_size = 100 if history else 0
        self.prefix = f"presence{next(self.prefixes)}:"
        self.refresh = 0.0
        self.stores: list[RedisPresence] = []
        self.brokers: list[RedisBroker] = []
        self.recorder = Recorder()
        self.watcher = self._broker("watcher")

    def _broker(self, node_id: str, url: str | None = None) -> RedisBroker:
        broker = self.kind(
            url or self.url,
            prefix=self.prefix,
            node_id=node_id,
            history_size=self.history_size,
            session_ttl=TTL,
        )
        self.brokers.append(broker)
        return broker

    async def start(self) -> None:
        await self.watcher.start(self.recorder)

    async def node(self, url: str | None = None) -> RedisPresence:
        broker = self._broker(f"node{len(self.stores)}", url)
        if isinstance(broker, RedisClusterBroker) and url is None:
            await broker.client.initialize()  # as RedisClusterBroker.start does
        store = RedisPresence(broker, ttl=TTL, announces=announces)
        self.refresh = store.refresh
        self.stores.append(store)
        return store

    async def watch(self, *rooms: RoomId) -> None:
        for room in rooms:
            await self.watcher.subscribe(room_topic(room))

    async def events(self, room: RoomId) -> list[Publication]:
        topic = room_topic(room)
        await self.watcher.sync([topic])
        return self.recorder.received.pop(topic, [])

    async def histories(self, since: Mapping[str, Position | None]) -> dict[str, History]:
        return await self.watcher.histories(since)

    async def elapse(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        for store in self.stores:
            await store.close()
        for broker in self.brokers:
            await broker.close()


MakeCluster = Callable[..., Awaitable[PresenceCluster]]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def make_cluster(request: pytest.FixtureRequest) -> AsyncIterator[MakeCluster]:
    """Makes clusters (``history=False``: the brokers keep no history) of each
    implementation; closes them after the test."""
    made: list[MemoryCluster | RedisCluster] = []

    async def make(*, history: bool = True) -> PresenceCluster:
        cluster: MemoryCluster | RedisCluster
        if request.param == "memory":
            cluster = MemoryCluster(history)
        elif request.param == "redis":
            url = request.getfixturevalue("module_redis").url
            cluster = RedisCluster(url, RedisBroker, history)
        else:
            url = request.getfixturevalue("redis_cluster").url
            cluster = RedisCluster(url, RedisClusterBroker, history)
        made.append(cluster)
        await cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            await cluster.aclose()


@pytest.fixture
async def cluster(make_cluster: MakeCluster) -> PresenceCluster:
    return await make_cluster()


def joined(identity: Identity, room: RoomId = ROOM) -> bytes:
    return encode_presence(Change(room, True, identity))


def left(identity: Identity, room: RoomId = ROOM) -> bytes:
    return encode_presence(Change(room, False, identity))


def message(pub: Publication) -> bytes:
    """An event as published, its position (when it has one) taken off: exactly what
    encode_presence made."""
    if not pub.epoch:
        assert pub.seq == 0
        return pub.data
    spliced = b',"seq":%d,"epoch":"%s"}\n' % (pub.seq, pub.epoch.encode())
    assert pub.data.endswith(spliced), pub.data
    return pub.data[: -len(spliced)] + b"}\n"


async def told(cluster: PresenceCluster, room: RoomId = ROOM) -> list[bytes]:
    """The events published in ``room`` since the last call; with history, each at the
    position after the one before, in one epoch."""
    pubs = await cluster.events(room)
    for before, after in itertools.pairwise(pubs):
        if after.epoch:
            assert (after.epoch, after.seq) == (before.epoch, before.seq + 1)
    return [message(pub) for pub in pubs]


def person(user: str | None = "alice", info: str | None = None) -> Identity:
    """A new session's identity."""
    return Identity(new_conn_id(), user, info)


Held = dict[RoomId, list[tuple[ConnId, str]]]


async def live(
    cluster: PresenceCluster, seconds: float, nodes: list[tuple[PresenceStore, Held]]
) -> None:
    """Let ``seconds`` pass as live nodes do: every ``refresh`` seconds each node
    keeps the entries its connections hold (and sweeps), all at once."""
    while seconds > 0:
        step = min(cluster.refresh, seconds)
        await cluster.elapse(step)
        seconds -= step
        await asyncio.gather(*(store.keep(held) for store, held in nodes))


# Joins and leaves, by user


async def test_a_users_first_session_joins_and_its_last_one_leaves(
    cluster: PresenceCluster,
) -> None:
    """The first session of a user to enter makes a join, with the user's info; a
    second session of that user, on another node, makes none, nor does the leave of
    either but the last, which makes the user's leave (from whichever node)."""
    first, second = await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    tab1, tab2 = person("alice", ALICE), person("alice")
    await first.enter(ROOM, tab1, "node0.tab1")
    assert await told(cluster) == [joined(tab1)]
    assert json.loads(joined(tab1))["data"] == {
        "op": "presence",
        "room": ROOM,
        "event": "join",
        "user": "alice",
        "info": {"name": "Alice", "colour": "#e0457b"},
    }
    await second.enter(ROOM, tab2, "node1.tab2")
    assert await told(cluster) == []
    await second.leave(ROOM, tab1.conn)
    assert await told(cluster) == []
    await first.leave(ROOM, tab2.conn)
    assert await told(cluster) == [left(tab1)]
    await first.leave(ROOM, tab2.conn)
    await second.leave(RoomId("elsewhere"), tab1.conn)
    assert await told(cluster) == []
    assert (await first.roster(ROOM)).members == []


def seen(changes: list[Change]) -> list[tuple[bool, str | None, str | None, bool]]:
    """What the webhooks are told of changes: joined, user, info, edge."""
    return [(c.joined, c.identity.user, c.identity.info, c.edge) for c in changes]


async def test_each_change_is_returned_to_the_caller_that_made_it(
    cluster: PresenceCluster,
) -> None:
    """enter, leave and keep return the changes they made (for the webhooks), once:
    the room's first user occupies it (edge), its last vacates it."""
    first, second = await cluster.node(), await cluster.node()
    tab1, tab2, bob = person("alice", ALICE), person("alice"), person("bob")
    assert seen(await first.enter(ROOM, tab1, "node0.tab1")) == [(True, "alice", ALICE, True)]
    assert await second.enter(ROOM, tab2, "node1.tab2") == []
    assert seen(await second.enter(ROOM, bob, "node1.bob")) == [(True, "bob", None, False)]
    assert await first.leave(ROOM, tab1.conn) == []
    assert seen(await second.leave(ROOM, tab2.conn)) == [(False, "alice", ALICE, False)]
    assert seen(await first.leave(ROOM, bob.conn)) == [(False, "bob", None, True)]
    assert await first.leave(ROOM, bob.conn) == []


async def test_concurrent_enters_return_one_join_between_them(cluster: PresenceCluster) -> None:
    first, second = await cluster.node(), await cluster.node()
    tabs = [person("alice") for _ in range(6)]
    results = await asyncio.gather(
        *(
            (first if n % 2 else second).enter(ROOM, tab, f"node{n % 2}.{n}")
            for n, tab in enumerate(tabs)
        )
    )
    assert [seen(changes) for changes in results if changes] == [[(True, "alice", None, True)]]


async def test_a_sweep_returns_the_leaves_once(cluster: PresenceCluster) -> None:
    """A detached session past its TTL leaves in the keep (or enter) that sweeps it,
    returned to that one node."""
    first, second = await cluster.node(), await cluster.node()
    alice, bob = person("alice"), person("bob")
    await first.enter(ROOM, alice, "node0.alice")
    await second.enter(ROOM, bob, "node1.bob")
    await first.detach(alice.conn, "node0.alice", [ROOM])
    # Past alice's TTL, before bob's held entry needs keeping.
    await cluster.elapse(TTL + cluster.refresh / 2)
    held = {ROOM: [(bob.conn, "node1.bob")]}
    swept = await asyncio.gather(first.keep({}), second.keep(held), second.keep(held))
    assert sorted(seen(changes) for changes in swept) == [[], [], [(False, "alice", None, False)]]
    assert [m.user for m in (await second.roster(ROOM)).members] == ["bob"]


async def test_a_room_whose_only_node_died_is_swept_by_another(cluster: PresenceCluster) -> None:
    """Alice's node enters her and dies (never keeps, never detaches); a node with
    no member in the room, keeping nothing, sweeps her out once her held entry is
    past its time, and gets her leave."""
    dead, alive = await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    alice = person("alice")
    await dead.enter(ROOM, alice, "node0.alice")
    assert await told(cluster) == [joined(alice)]
    changes: list[Change] = []
    async with asyncio.timeout(TTL + 10 * cluster.refresh + 5):
        while not changes:
            await cluster.elapse(cluster.refresh)
            changes = await alive.keep({})
    assert seen(changes) == [(False, "alice", None, True)]
    assert await told(cluster) == [left(alice)]


async def test_a_room_kept_for_webhooks_publishes_nothing(cluster: PresenceCluster) -> None:
    """A room the store does not announce (kept for its webhooks only) returns its
    changes and publishes no event in its stream."""
    node = await cluster.node()
    await cluster.watch(QUIET)
    alice = person("alice")
    assert seen(await node.enter(QUIET, alice, "node0.alice")) == [(True, "alice", None, True)]
    assert seen(await node.leave(QUIET, alice.conn)) == [(False, "alice", None, True)]
    await node.enter(ROOM, person("bob"), "node0.bob")  # a fence: published after
    await cluster.watch(ROOM)
    assert await told(cluster, QUIET) == []


async def test_anonymous_members_are_users_of_their_own(cluster: PresenceCluster) -> None:
    """A session without a user is a user of its own, named by its wsId: each joins
    and leaves, none joins as another's second session."""
    first, second = await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    one, two, alice = person(None), person(None, BOB), person("alice")
    await first.enter(ROOM, one, "node0.one")
    await second.enter(ROOM, two, "node1.two")
    await second.enter(ROOM, alice, "node1.alice")
    assert await told(cluster) == [joined(one), joined(two), joined(alice)]
    assert json.loads(joined(one))["data"]["wsId"] == one.conn
    assert (await first.roster(ROOM)).members == [
        Present(None, None, (one.conn,)),
        Present(None, BOB, (two.conn,)),
        Present("alice", None, (alice.conn,)),
    ]
    await second.leave(ROOM, one.conn)
    assert await told(cluster) == [left(one)]


async def test_concurrent_enters_of_one_user_make_one_join(cluster: PresenceCluster) -> None:
    """Six sessions of one user entering at once on three nodes make one join, whose
    info the roster tells; their leaves at once make one leave."""
    nodes = [await cluster.node() for _ in range(3)]
    await cluster.watch(ROOM)
    tabs = [person("alice", encode_info({"tab": n})) for n in range(6)]
    await asyncio.gather(
        *(nodes[n % 3].enter(ROOM, tab, f"node{n % 3}.tab{n}") for n, tab in enumerate(tabs))
    )
    events = await told(cluster)
    assert len(events) == 1
    first = next(tab for tab in tabs if joined(tab) == events[0])
    (member,) = (await nodes[1].roster(ROOM)).members
    assert (member.user, member.info) == ("alice", first.info)
    assert sorted(member.ws_ids) == sorted(tab.conn for tab in tabs)
    await asyncio.gather(*(nodes[n % 3].leave(ROOM, tab.conn) for n, tab in enumerate(tabs)))
    assert await told(cluster) == [left(first)]


# Holders, detaches and the session TTL


async def test_a_resume_by_a_new_holder_makes_no_event(cluster: PresenceCluster) -> None:
    """A session that enters again (resumed on another node, after its connection
    ended) stays a member throughout, with the identity it entered with: no event,
    and it does not end with its old connection's TTL (it is still there past it,
    though nobody kept it meanwhile; and while its new node keeps it)."""
    first, second = await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    alice = person("alice", ALICE)
    await first.enter(ROOM, alice, "node0.old")
    assert await told(cluster) == [joined(alice)]
    await first.detach(alice.conn, "node0.old", [ROOM])
    await second.enter(ROOM, Identity(alice.conn, "alice", BOB), "node1.new")
    await cluster.elapse(1.25 * TTL)  # within a held entry's deadline (TTL + 2 refreshes)
    assert (await first.roster(ROOM)).members == [Present("alice", ALICE, (alice.conn,))]
    held: Held = {ROOM: [(alice.conn, "node1.new")]}
    await second.keep(held)
    await live(cluster, 1.5 * TTL, [(first, {}), (second, held)])
    assert await told(cluster) == []
    assert (await first.roster(ROOM)).members == [Present("alice", ALICE, (alice.conn,))]


async def test_a_stale_holders_detach_does_not_end_the_session(cluster: PresenceCluster) -> None:
    """The old connection of a session resumed elsewhere may close after the resume:
    its detach does not start the countdown of the new one (the entry is still there
    past the TTL, though nobody kept it meanwhile), whose own detach does, and which
    the old connection's node, keeping it meanwhile, does not stop."""
    first, second = await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    alice = person("alice")
    await first.enter(ROOM, alice, "node0.old")
    await second.enter(ROOM, alice, "node1.new")
    await first.detach(alice.conn, "node0.old", [ROOM])
    await first.detach(alice.conn, "node9.stranger", [ROOM])
    await cluster.elapse(1.25 * TTL)  # within a held entry's deadline (TTL + 2 refreshes)
    assert (await second.roster(ROOM)).members == [Present("alice", None, (alice.conn,))]
    await asyncio.gather(first.keep({}), second.keep({ROOM: [(alice.conn, "node1.new")]}))
    assert await told(cluster) == [joined(alice)]
    await second.detach(alice.conn, "node1.new", [ROOM])
    await cluster.elapse(TTL / 2)
    await first.keep({ROOM: [(alice.conn, "node0.old")]})  # its old connection, closing
    await cluster.elapse(TTL)
    await second.keep({})
    assert await told(cluster) == [left(alice)]


async def test_a_detached_session_leaves_after_the_ttl_once(cluster: PresenceCluster) -> None:
    """A detached session is a member until the TTL has passed (the roster leaves it
    out from then on, even before it is swept); then the keep() of any node sweeps it,
    and three nodes sweeping the room at once publish its user's leave once."""
    nodes = [await cluster.node() for _ in range(3)]
    await cluster.watch(ROOM)
    alice, bob = person("alice", ALICE), person("bob")
    await nodes[0].enter(ROOM, alice, "node0.alice")
    await nodes[1].enter(ROOM, bob, "node1.bob")
    assert await told(cluster) == [joined(alice), joined(bob)]
    detached = time.monotonic()
    await nodes[0].detach(alice.conn, "node0.alice", [ROOM])

    def keep_all() -> Awaitable[object]:
        return asyncio.gather(
            nodes[0].keep({}),
            nodes[1].keep({ROOM: [(bob.conn, "node1.bob")]}),
            nodes[2].keep({ROOM: []}),
        )

    await cluster.elapse(TTL / 2)
    await keep_all()
    # Redis stores keep real time: where a loaded machine stalled this test past the
    # TTL already, a sweep now is right, and only the rest can be checked.
    if time.monotonic() - detached < TTL:
        assert await told(cluster) == []
        assert len((await nodes[2].roster(ROOM)).members) == 2
    await cluster.elapse(TTL * 3 / 4)
    assert (await nodes[2].roster(ROOM)).members == [Present("bob", None, (bob.conn,))]
    await keep_all()
    assert await told(cluster) == [left(alice)]
    await keep_all()
    assert await told(cluster) == []


async def test_an_enter_sweeps_first(cluster: PresenceCluster) -> None:
    """An entry past its deadline leaves before an enter in its room is decided: its
    leave is published before the join, and the session, entering again, joins anew."""
    first, second = await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    alice, bob = person("alice", ALICE), person("bob", BOB)
    await first.enter(ROOM, alice, "node0.alice")
    await first.detach(alice.conn, "node0.alice", [ROOM])
    await cluster.elapse(1.5 * TTL)
    await second.enter(ROOM, bob, "node1.bob")
    assert await told(cluster) == [joined(alice), left(alice), joined(bob)]
    await second.enter(ROOM, alice, "node1.alice")
    assert await told(cluster) == [joined(alice)]


async def test_kept_entries_stay_and_a_dead_nodes_leave(cluster: PresenceCluster) -> None:
    """Entries their holders' nodes keep stay, however long, with no event. Those of
    a node that stopped keeping them (it died) stay while their sessions may still be
    resumed elsewhere (the TTL, and a refresh), then leave, swept by a node still
    there, once the TTL and two refreshes have passed."""
    first, second, dead = await cluster.node(), await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    await first.enter(ROOM, alice, "node0.alice")
    await second.enter(ROOM, bob, "node1.bob")
    await dead.enter(ROOM, carol, "node2.carol")
    assert await told(cluster) == [joined(alice), joined(bob), joined(carol)]
    alive: list[tuple[PresenceStore, Held]] = [
        (first, {ROOM: [(alice.conn, "node0.alice")]}),
        (second, {ROOM: [(bob.conn, "node1.bob")]}),
    ]
    await live(cluster, TTL + cluster.refresh, alive)
    assert await told(cluster) == []
    assert len((await first.roster(ROOM)).members) == 3
    await live(cluster, 2 * cluster.refresh, alive)
    assert await told(cluster) == [left(carol)]
    assert (await first.roster(ROOM)).members == [
        Present("alice", None, (alice.conn,)),
        Present("bob", None, (bob.conn,)),
    ]


async def test_keep_sweeps_the_rooms_a_node_detached_entries_in(
    cluster: PresenceCluster,
) -> None:
    """A node whose connection was the last it had in its rooms (so it holds nothing
    there any more) still sweeps them: the session's leave comes in every room, more
    rooms than one batch of keep() holds."""
    first = await cluster.node()
    alice = person("alice")
    rooms = [RoomId(f"room{n}") for n in range(2 * CHUNK + 1)]
    await asyncio.gather(*(first.enter(room, alice, "node0.alice") for room in rooms))
    await first.detach(alice.conn, "node0.alice", rooms)
    await cluster.elapse(1.5 * TTL)
    await first.keep({})
    topics = {room_topic(room): room for room in rooms}
    tops = await cluster.histories(dict.fromkeys(topics))
    after_joins = {topic: Position(history.position.epoch, 1) for topic, history in tops.items()}
    for topic, history in (await cluster.histories(after_joins)).items():
        assert [message(pub) for pub in history.publications] == [left(alice, topics[topic])]


# The roster


async def test_the_roster_groups_sessions_by_user_in_join_order(cluster: PresenceCluster) -> None:
    """Users in the order they joined, each with the info of the session it joined
    with and the wsIds of its sessions in the order they entered; a session that
    left and entered again comes last among its user's."""
    first, second = await cluster.node(), await cluster.node()
    bob, anonymous = person("bob", BOB), person(None)
    # wsIds whose order is not the order they enter in
    tab1 = Identity(ConnId("00000000-0000-4000-8000-000000000000"), "alice", ALICE)
    tab2 = Identity(ConnId("ffffffff-ffff-4fff-bfff-ffffffffffff"), "alice")
    await first.enter(ROOM, bob, "node0.bob")
    await second.enter(ROOM, tab1, "node1.tab1")
    await first.enter(ROOM, anonymous, "node0.anonymous")
    await first.enter(ROOM, tab2, "node0.tab2")
    await second.leave(ROOM, tab1.conn)
    await second.enter(ROOM, tab1, "node1.tab1")
    expected = [
        Present("bob", BOB, (bob.conn,)),
        Present("alice", ALICE, (tab2.conn, tab1.conn)),
        Present(None, None, (anonymous.conn,)),
    ]
    assert (await first.roster(ROOM)).members == expected
    assert (await second.roster(ROOM)).members == expected
    assert (await first.roster(RoomId("empty"))).members == []


async def test_the_roster_is_as_of_the_streams_position(cluster: PresenceCluster) -> None:
    """A roster's position is the stream's when it was read: its members are those
    the events up to that position made, and the events after it have higher seqs."""
    first, second = await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    await first.enter(ROOM, alice, "node0.alice")
    await second.enter(ROOM, bob, "node1.bob")
    roster = await second.roster(ROOM)
    events = await cluster.events(ROOM)
    topic = room_topic(ROOM)
    assert roster.position == Position(events[-1].epoch, events[-1].seq)
    assert roster.position == (await cluster.histories({topic: None}))[topic].position
    await first.enter(ROOM, carol, "node0.carol")
    (event,) = await cluster.events(ROOM)
    assert (event.epoch, event.seq) == (roster.position.epoch, roster.position.seq + 1)


async def test_rosters_read_while_members_enter_match_their_positions(
    cluster: PresenceCluster,
) -> None:
    """Rosters read on one node while users enter on another: each has exactly the
    users whose joins are at or before its position."""
    first, second = await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    people = [person(f"user{n}") for n in range(8)]
    calls: list[Awaitable[object]] = []
    for n, someone in enumerate(people):
        calls.append(second.enter(ROOM, someone, f"node1.{n}"))
        if n % 2:
            calls.append(first.roster(ROOM))
    results = await asyncio.gather(*calls)
    rosters = [result for result in results if isinstance(result, Roster)]
    seq_of = {message(pub): pub.seq for pub in await cluster.events(ROOM)}
    for roster in rosters:
        assert roster.position is not None
        expected = [str(p.user) for p in people if seq_of[joined(p)] <= roster.position.seq]
        assert sorted(m.user or "" for m in roster.members) == sorted(expected)


async def test_without_history_events_are_published_and_rosters_have_no_position(
    make_cluster: MakeCluster,
) -> None:
    """With history off, joins and leaves (a sweep's too) are still published, with
    no position; a roster has none."""
    cluster = await make_cluster(history=False)
    first, second = await cluster.node(), await cluster.node()
    await cluster.watch(ROOM)
    alice, bob = person("alice", ALICE), person(None)
    await first.enter(ROOM, alice, "node0.alice")
    await second.enter(ROOM, bob, "node1.bob")
    pubs = await cluster.events(ROOM)
    assert [(pub.data, pub.seq, pub.epoch) for pub in pubs] == [
        (joined(alice), 0, ""),
        (joined(bob), 0, ""),
    ]
    roster = await first.roster(ROOM)
    assert roster.position is None
    assert len(roster.members) == 2
    await second.leave(ROOM, bob.conn)
    await first.detach(alice.conn, "node0.alice", [ROOM])
    await cluster.elapse(1.5 * TTL)
    await first.keep({})
    assert [pub.data for pub in await cluster.events(ROOM)] == [left(bob), left(alice)]


# The Redis store's own


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_cluster_of_nodes(request: pytest.FixtureRequest) -> AsyncIterator[RedisCluster]:
    """A cluster of RedisPresence stores, on one redis-server or a Redis Cluster."""
    if request.param == "redis":
        cluster = RedisCluster(request.getfixturevalue("module_redis").url, RedisBroker, True)
    else:
        url = request.getfixturevalue("redis_cluster").url
        cluster = RedisCluster(url, RedisClusterBroker, True)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.aclose()


async def test_presence_keys_expire_with_their_last_entry(
    redis_cluster_of_nodes: RedisCluster,
) -> None:
    """Every presence key has a lifetime: those of a room nobody touches any more are
    gone after its last deadline and a margin; those of a room whose last member left
    are gone at once."""
    cluster = redis_cluster_of_nodes
    store, gone = await cluster.node(), await cluster.node()
    quiet = RoomId("quiet")
    alice, carol = person("alice"), person("carol")
    await store.enter(ROOM, alice, "node0.alice")
    await gone.enter(quiet, carol, "node1.carol")
    await gone.detach(carol.conn, "node1.carol", [quiet])
    client = store._broker.client
    margin = 2 * store.refresh
    for key in store.keys(ROOM):
        assert 0 < await client.pttl(key) <= (TTL + 2 * store.refresh + margin) * 1000, key
    for key in store.keys(quiet):
        assert 0 < await client.pttl(key) <= (TTL + margin) * 1000, key
    await store.leave(ROOM, alice.conn)
    for key in store.keys(ROOM):
        assert await client.exists(key) == 0, key
    await cluster.elapse(TTL + margin + 0.1 * UNIT)
    for key in store.keys(quiet):
        assert await client.exists(key) == 0, key


async def test_an_unreachable_redis_raises_broker_unavailable(
    redis_cluster_of_nodes: RedisCluster,
) -> None:
    """Every operation on a Redis nobody answers at raises BrokerUnavailable, saying
    what could not be done and where."""
    where = f"{LOOPBACK}:{free_port()}"
    cluster_kind = redis_cluster_of_nodes.kind is RedisClusterBroker
    url = f"redis+cluster://{where}" if cluster_kind else f"redis://{where}/0"
    store = await redis_cluster_of_nodes.node(url)
    alice = person("alice")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.enter(ROOM, alice, "node0.alice"),
        lambda: store.leave(ROOM, alice.conn),
        lambda: store.detach(alice.conn, "node0.alice", [ROOM]),
        lambda: store.keep({ROOM: [(alice.conn, "node0.alice")]}),
        lambda: store.roster(ROOM),
    ]
    for call in calls:
        with pytest.raises(BrokerUnavailable, match=f"cannot .* in Redis at .*{where}"):
            await call()
    # Nor does it hold up the store's close (its index writes are dropped).
    async with asyncio.timeout(5 * UNIT):
        await store.close()
