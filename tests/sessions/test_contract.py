"""The Sessions contract: one behaviour suite that every Sessions implementation must pass.

Each test gets ``sessions_factory``, parametrized over the implementations:
MemorySessions, and RedisSessions on one redis-server and on a three-master Redis
Cluster, each on the client app.py gives it. A factory makes the stores of the nodes
of one cluster (MemorySessions is one process: every node gets the same store), with
the TTL ``TTL`` unless a test asks for another, and lets time pass (``elapse``): a
clock of its own for the memory store, real time for Redis, whose keys expire by
themselves.

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
from pushgate.broker.redis_sessions import RedisSessions
from pushgate.ids import ConnId, new_conn_id
from pushgate.memorysessions import MemorySessions
from pushgate.sessions import (
    ANY_USER,
    HeldSession,
    NoSessions,
    Session,
    Sessions,
    new_token,
    token_hash,
)
from pushgate.streams import Position
from tests.helpers import UNIT

# How long a detached session waits for a resume, in every store made here.
TTL = 0.4 * UNIT

ALL = Position("9f2c1a7e", 12)
NEWS = Position("4b0e77d1", 5)
GAME = Position("c3a81f02", 0)
STREAMS = {"all": ALL, "room:news": NEWS, "user:alice": Position("77aa01c2", 2)}


class SessionsFactory(Protocol):
    """Makes the session stores of the nodes of one cluster, and cleans them up."""

    # How often a node keeps the sessions it holds alive (0: they need no refresh).
    refresh: float

    async def node(self, ttl: float = TTL) -> Sessions:
        """The cluster's sessions as one more node sees them, started; every node of
        a test has the same ``ttl``."""
        ...

    async def elapse(self, seconds: float) -> None:
        """Return once ``seconds`` have passed for the stores."""
        ...

    async def aclose(self) -> None:
        """Close every store this factory made."""
        ...


class Clock:
    """Time for a MemorySessions, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemorySessionsFactory:
    """One MemorySessions for every node, on a clock the test moves."""

    refresh = 0.0

    def __init__(self) -> None:
        self.clock = Clock()
        self.store: MemorySessions | None = None

    async def node(self, ttl: float = TTL) -> Sessions:
        if self.store is None:
            self.store = MemorySessions(ttl, clock=self.clock)
            await self.store.start()
        assert self.store.ttl == ttl
        return self.store

    async def elapse(self, seconds: float) -> None:
        self.clock.now += seconds
        await asyncio.sleep(0)

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.close()


class RedisSessionsFactory:
    """RedisSessions on the client of a node's broker, as app.py makes them, under a
    prefix of this test's own; each node has a client of its own."""

    prefixes = itertools.count()

    def __init__(self, url: str, kind: type[RedisBroker]) -> None:
        self.url = url
        self.kind = kind
        self.prefix = f"sessions{next(self.prefixes)}:"
        self.refresh = 0.0  # the stores' own, once one is made
        self.made: list[tuple[RedisSessions, RedisBroker]] = []

    async def node(self, ttl: float = TTL) -> Sessions:
        broker = self.kind(
            self.url, prefix=self.prefix, node_id=f"node{len(self.made)}", session_ttl=ttl
        )
        if isinstance(broker, RedisClusterBroker):
            await broker.client.initialize()  # as RedisClusterBroker.start does
        sessions = RedisSessions(broker.client, prefix=self.prefix, ttl=ttl)
        await sessions.start()
        self.refresh = sessions.refresh
        self.made.append((sessions, broker))
        return sessions

    async def elapse(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        for sessions, broker in self.made:
            await sessions.close()
            await broker.close()


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def sessions_factory(request: pytest.FixtureRequest) -> AsyncIterator[SessionsFactory]:
    """A factory of the session stores of one cluster's nodes, for each implementation."""
    factory: SessionsFactory
    if request.param == "memory":
        factory = MemorySessionsFactory()
    elif request.param == "redis":
        factory = RedisSessionsFactory(request.getfixturevalue("module_redis").url, RedisBroker)
    else:
        url = request.getfixturevalue("redis_cluster").url
        factory = RedisSessionsFactory(url, RedisClusterBroker)
    try:
        yield factory
    finally:
        await factory.aclose()


async def created(
    store: Sessions,
    holder: str = "node0.first",
    *,
    user: str | None = "alice",
    streams: dict[str, Position] | None = None,
) -> tuple[ConnId, str]:
    """A new session's wsId and token."""
    ws_id, token = new_conn_id(), new_token()
    await store.create(ws_id, token, user, dict(STREAMS if streams is None else streams), holder)
    return ws_id, token


def took_from(session: Session | None) -> str:
    """The holder a claim took the session from ("" when it was detached)."""
    assert session is not None
    return session.previous_holder


# Creating and claiming


async def test_a_claim_finds_the_session_as_created(sessions_factory: SessionsFactory) -> None:
    """A claim with the session's token gets its wsId, user, streams with their
    positions, and the holder it was created for; on any node."""
    first, second = await sessions_factory.node(), await sessions_factory.node()
    ws_id, token = await created(first, "node0.first")
    session = await second.claim(ws_id, token, "node1.second")
    assert session == Session(ws_id, "alice", STREAMS, "node0.first")
    assert session.rooms == ["news"]


async def test_each_claim_reports_the_holder_it_took_over(
    sessions_factory: SessionsFactory,
) -> None:
    """Claims one after another each take the session from the one before."""
    nodes = [await sessions_factory.node() for _ in range(3)]
    ws_id, token = await created(nodes[0], "node0.a")
    holders = ["node0.a", "node1.b", "node2.c", "node0.d"]
    for n, holder in enumerate(holders[1:], start=1):
        session = await nodes[n % 3].claim(ws_id, token, holder)
        assert took_from(session) == holders[n - 1]


async def test_a_wrong_token_claims_nothing_and_changes_nothing(
    sessions_factory: SessionsFactory,
) -> None:
    """A claim with another token, another session's included, is None, and the
    session keeps its holder."""
    store = await sessions_factory.node()
    ws_id, token = await created(store, "node0.first")
    _, other_token = await created(store, "node0.other")
    assert await store.claim(ws_id, new_token(), "node0.thief") is None
    assert await store.claim(ws_id, other_token, "node0.thief") is None
    assert await store.claim(ws_id, "", "node0.thief") is None
    assert took_from(await store.claim(ws_id, token, "node0.next")) == "node0.first"


async def test_an_unknown_session_claims_nothing_and_is_not_made(
    sessions_factory: SessionsFactory,
) -> None:
    """Claiming a wsId that never had a session is None, and leaves none behind."""
    store = await sessions_factory.node()
    ws_id = new_conn_id()
    assert await store.claim(ws_id, new_token(), "node0.first") is None
    assert await store.describe(ws_id) is None


async def test_a_claim_holds_a_session_of_a_user_to_that_user(
    sessions_factory: SessionsFactory,
) -> None:
    """A session of alice is claimed for alice, or with the user not checked (the
    default, ANY_USER); not for bob, nor as a session of no user, and those failed
    claims change nothing."""
    store = await sessions_factory.node()
    ws_id, token = await created(store, "node0.a", user="alice")
    assert await store.claim(ws_id, token, "node0.bob", user="bob") is None
    assert await store.claim(ws_id, token, "node0.nobody", user=None) is None
    session = await store.claim(ws_id, token, "node0.b", user="alice")
    assert session is not None
    assert (session.user, session.previous_holder) == ("alice", "node0.a")
    assert took_from(await store.claim(ws_id, token, "node0.c", user=ANY_USER)) == "node0.b"
    assert took_from(await store.claim(ws_id, token, "node0.d")) == "node0.c"


async def test_a_claim_holds_a_session_of_no_user_to_no_user(
    sessions_factory: SessionsFactory,
) -> None:
    """A session of no user is claimed as one (user None), or with the user not
    checked; not for a user, and that failed claim changes nothing."""
    store = await sessions_factory.node()
    ws_id, token = await created(store, "node0.a", user=None, streams={"all": ALL})
    assert await store.claim(ws_id, token, "node0.alice", user="alice") is None
    session = await store.claim(ws_id, token, "node0.b", user=None)
    assert session == Session(ws_id, None, {"all": ALL}, "node0.a")
    assert took_from(await store.claim(ws_id, token, "node0.c", user=ANY_USER)) == "node0.b"


# Streams


async def test_add_stream_makes_the_session_follow_it_from_a_position(
    sessions_factory: SessionsFactory,
) -> None:
    """``added``: a claim then finds the stream with the position it was added with;
    a room among the session's rooms, another stream not."""
    store = await sessions_factory.node()
    ws_id, token = await created(store)
    assert await store.add_stream(ws_id, "room:game", GAME, max_rooms=10) == "added"
    assert await store.add_stream(ws_id, "user:bob", NEWS, max_rooms=10) == "added"
    info = await store.describe(ws_id)
    assert info is not None
    assert info.rooms == ["game", "news"]
    session = await store.claim(ws_id, token, "node0.next")
    assert session is not None
    assert session.streams == {**STREAMS, "room:game": GAME, "user:bob": NEWS}


async def test_adding_a_stream_followed_already_keeps_its_position(
    sessions_factory: SessionsFactory,
) -> None:
    """``already``: the stream keeps the position it was first followed from."""
    store = await sessions_factory.node()
    ws_id, token = await created(store)
    assert await store.add_stream(ws_id, "room:news", GAME, max_rooms=10) == "already"
    assert await store.add_stream(ws_id, "all", GAME, max_rooms=10) == "already"
    session = await store.claim(ws_id, token, "node0.next")
    assert session is not None
    assert session.streams == STREAMS


async def test_a_stream_with_an_end_keeps_it_and_a_later_add_replaces_it(
    sessions_factory: SessionsFactory,
) -> None:
    """A stream a subscription token opened ends when the token does: the store
    keeps that end (a resume must end it on time), a later add gives it the new end
    (a renewed token) or none (a grant that lasts), and removing it forgets it."""
    store = await sessions_factory.node()
    ws_id, token = await created(store)
    end = 1_900_000_000.0
    assert await store.add_stream(ws_id, "room:chat", GAME, max_rooms=10, expires_at=end) == "added"
    session = await store.claim(ws_id, token, "node0.a")
    assert session is not None
    assert session.expires == {"room:chat": end}
    assert session.streams["room:chat"] == GAME
    later = end + 600
    assert (
        await store.add_stream(ws_id, "room:chat", NEWS, max_rooms=10, expires_at=later)
        == "already"
    )
    session = await store.claim(ws_id, token, "node0.b")
    assert session is not None
    assert (session.expires, session.streams["room:chat"]) == ({"room:chat": later}, GAME)
    assert await store.add_stream(ws_id, "room:chat", NEWS, max_rooms=10) == "already"
    session = await store.claim(ws_id, token, "node0.c")
    assert session is not None
    assert session.expires == {}
    await store.add_stream(ws_id, "room:chat", NEWS, max_rooms=10, expires_at=end)
    assert await store.remove_stream(ws_id, "room:chat") == "removed"
    await store.add_stream(ws_id, "room:chat", NEWS, max_rooms=10)
    session = await store.claim(ws_id, token, "node0.d")
    assert session is not None
    assert session.expires == {}


async def test_streams_of_an_unknown_session_are_unknown(sessions_factory: SessionsFactory) -> None:
    """Adding or removing a stream of no session is ``unknown``, and makes none."""
    store = await sessions_factory.node()
    ws_id = new_conn_id()
    assert await store.add_stream(ws_id, "room:news", NEWS, max_rooms=10) == "unknown"
    assert await store.remove_stream(ws_id, "room:news") == "unknown"
    assert await store.describe(ws_id) is None


async def test_remove_stream_stops_following_it(sessions_factory: SessionsFactory) -> None:
    """``removed``, and a claim no longer finds it; ``absent`` for a stream the
    session does not follow (any more)."""
    store = await sessions_factory.node()
    ws_id, token = await created(store)
    assert await store.remove_stream(ws_id, "room:news") == "removed"
    assert await store.remove_stream(ws_id, "room:news") == "absent"
    assert await store.remove_stream(ws_id, "room:never") == "absent"
    assert await store.remove_stream(ws_id, "user:alice") == "removed"
    info = await store.describe(ws_id)
    assert info is not None
    assert info.rooms == []
    session = await store.claim(ws_id, token, "node0.next")
    assert session is not None
    assert session.streams == {"all": ALL}


async def test_the_room_cap_counts_rooms_only(sessions_factory: SessionsFactory) -> None:
    """``limit``, and nothing done, when the session would follow more than
    ``max_rooms`` rooms, those it was created in included; other streams are not
    counted, a room it follows already is ``already``, and a room removed frees its
    place."""
    store = await sessions_factory.node()
    streams = {"all": ALL, "room:a": NEWS, "room:b": NEWS}
    ws_id, token = await created(store, streams=streams)
    assert await store.add_stream(ws_id, "room:c", GAME, max_rooms=3) == "added"
    assert await store.add_stream(ws_id, "room:d", GAME, max_rooms=3) == "limit"
    assert await store.add_stream(ws_id, "room:a", GAME, max_rooms=3) == "already"
    assert await store.add_stream(ws_id, "user:bob", GAME, max_rooms=3) == "added"
    info = await store.describe(ws_id)
    assert info is not None
    assert info.rooms == ["a", "b", "c"]
    assert await store.add_stream(ws_id, "room:d", GAME, max_rooms=2) == "limit"
    assert await store.remove_stream(ws_id, "room:a") == "removed"
    assert await store.add_stream(ws_id, "room:d", GAME, max_rooms=3) == "added"
    session = await store.claim(ws_id, token, "node0.next")
    assert session is not None
    assert sorted(session.rooms) == ["b", "c", "d"]
    assert "room:a" not in session.streams


async def test_a_room_cap_of_zero_refuses_every_room(sessions_factory: SessionsFactory) -> None:
    store = await sessions_factory.node()
    ws_id, _ = await created(store, streams={"all": ALL})
    assert await store.add_stream(ws_id, "room:a", GAME, max_rooms=0) == "limit"
    assert await store.add_stream(ws_id, "user:alice", GAME, max_rooms=0) == "added"


async def test_streams_of_a_detached_session_change_in_the_store(
    sessions_factory: SessionsFactory,
) -> None:
    """Joins and leaves apply to a session whether a connection holds it or not: a
    resume finds them."""
    first, second = await sessions_factory.node(), await sessions_factory.node()
    ws_id, token = await created(first, "node0.first")
    await first.detach(ws_id, "node0.first")
    assert await second.add_stream(ws_id, "room:game", GAME, max_rooms=10) == "added"
    assert await second.remove_stream(ws_id, "room:news") == "removed"
    session = await second.claim(ws_id, token, "node1.resumed")
    assert session is not None
    assert session.streams == {"all": ALL, "user:alice": STREAMS["user:alice"], "room:game": GAME}
    assert session.previous_holder == ""


# Holding, detaching, ending


async def test_describe_tells_user_rooms_and_whether_held(
    sessions_factory: SessionsFactory,
) -> None:
    """The user (None for none), the rooms sorted by id, and ``held`` until the
    holder detaches; None for no session."""
    store = await sessions_factory.node()
    streams = {"all": ALL, "room:zoo": NEWS, "room:ant": NEWS, "user:alice": GAME}
    ws_id, _ = await created(store, "node0.first", streams=streams)
    info = await store.describe(ws_id)
    assert info is not None
    assert (info.user, info.rooms, info.held) == ("alice", ["ant", "zoo"], True)
    await store.detach(ws_id, "node0.first")
    info = await store.describe(ws_id)
    assert info is not None
    assert (info.user, info.rooms, info.held) == ("alice", ["ant", "zoo"], False)
    anonymous, _ = await created(store, user=None, streams={"all": ALL})
    info = await store.describe(anonymous)
    assert info is not None
    assert (info.user, info.rooms, info.held) == (None, [], True)
    assert await store.describe(new_conn_id()) is None


async def test_only_the_current_holder_detaches(sessions_factory: SessionsFactory) -> None:
    """A detach by a holder that was claimed from changes nothing; the current
    holder's detaches the session, and a claim then reports no previous holder.
    Detaching a session that does not exist is harmless."""
    first, second = await sessions_factory.node(), await sessions_factory.node()
    ws_id, token = await created(first, "node0.first")
    await second.claim(ws_id, token, "node1.second")
    await first.detach(ws_id, "node0.first")
    info = await first.describe(ws_id)
    assert info is not None
    assert info.held
    await first.detach(ws_id, "node9.stranger")
    assert took_from(await first.claim(ws_id, token, "node0.third")) == "node1.second"
    await first.detach(ws_id, "node0.third")
    info = await second.describe(ws_id)
    assert info is not None
    assert not info.held
    assert took_from(await second.claim(ws_id, token, "node1.fourth")) == ""
    nobody = new_conn_id()
    await first.detach(nobody, "node0.first")
    assert await first.describe(nobody) is None


async def test_detached_sessions_end_after_the_ttl_held_ones_do_not(
    sessions_factory: SessionsFactory,
) -> None:
    """A detached session waits ``ttl`` for a resume, then ends: each operation
    finds it ended (even the first to ask), and claims that fail meanwhile do not
    keep it. A session held all along, one resumed within its TTL, and one whose
    earlier holder detached after a later one claimed it are still held more than
    twice the TTL plus the holders' refresh period later."""
    first, second = await sessions_factory.node(), await sessions_factory.node()
    held, held_token = await created(first, "node0.held")
    resumed, resumed_token = await created(first, "node0.resumed")
    taken, taken_token = await created(first, "node0.taken")
    ended = [await created(first, f"node0.ended{n}") for n in range(5)]
    await second.claim(taken, taken_token, "node1.taken")
    await first.detach(taken, "node0.taken")
    await first.detach(resumed, "node0.resumed")
    for n, (ws_id, _) in enumerate(ended):
        await first.detach(ws_id, f"node0.ended{n}")

    await sessions_factory.elapse(TTL / 2)
    assert took_from(await second.claim(resumed, resumed_token, "node1.resumed")) == ""
    for ws_id, token in ended:
        assert await second.claim(ws_id, new_token(), "node1.thief") is None
        assert await second.claim(ws_id, token, "node1.bob", user="bob") is None
    info = await second.describe(ended[0][0])
    assert info is not None
    assert not info.held

    await sessions_factory.elapse(TTL * 3 / 4)  # 1.25 TTL after the detaches
    (described, _), (claimed, token), (joined, _), (left, _), (gone, _) = ended
    assert await second.end(gone) is False
    assert await second.claim(claimed, token, "node1.late") is None
    assert await second.add_stream(joined, "room:game", GAME, max_rooms=10) == "unknown"
    assert await second.remove_stream(left, "room:news") == "unknown"
    assert await second.describe(described) is None

    await sessions_factory.elapse(TTL + sessions_factory.refresh)
    for ws_id, token, holder in [
        (held, held_token, "node0.held"),
        (resumed, resumed_token, "node1.resumed"),
        (taken, taken_token, "node1.taken"),
    ]:
        info = await second.describe(ws_id)
        assert info is not None, holder
        assert info.held
        assert took_from(await second.claim(ws_id, token, "node1.check")) == holder


async def test_a_detached_session_ends_after_its_ttl_whatever_its_earlier_holders_do(
    sessions_factory: SessionsFactory,
) -> None:
    """The holder that a session was claimed from may not have detached yet (its
    connection is still closing): once the current holder detaches, the session
    ends after the TTL all the same. (A TTL longer than a Redis node's refresh
    period, so that the earlier holder's node refreshes meanwhile.)"""
    ttl = 1.2 * UNIT
    first, second = await sessions_factory.node(ttl), await sessions_factory.node(ttl)
    ws_id, token = await created(first, "node0.old")
    await second.claim(ws_id, token, "node1.new")
    await second.detach(ws_id, "node1.new")
    await sessions_factory.elapse(1.25 * ttl)
    assert await second.describe(ws_id) is None
    assert await first.claim(ws_id, token, "node0.late") is None


async def test_end_ends_a_session_at_once(sessions_factory: SessionsFactory) -> None:
    """True, and nobody can claim, describe, join or end it any more; False when
    there was no session. Held or detached alike."""
    first, second = await sessions_factory.node(), await sessions_factory.node()
    held, held_token = await created(first, "node0.held")
    detached, detached_token = await created(first, "node0.detached")
    await first.detach(detached, "node0.detached")
    for ws_id, token in [(held, held_token), (detached, detached_token)]:
        assert await second.end(ws_id) is True
        assert await second.claim(ws_id, token, "node1.late") is None
        assert await first.describe(ws_id) is None
        assert await first.add_stream(ws_id, "room:game", GAME, max_rooms=10) == "unknown"
        assert await first.end(ws_id) is False
    assert await first.end(new_conn_id()) is False


# Concurrent callers on several nodes


async def test_concurrent_claims_leave_one_holder_the_latest(
    sessions_factory: SessionsFactory,
) -> None:
    """Claims of one session at once, on three nodes, are put in one order: each
    reports the holder before it, from the creator on, and only the last holds the
    session (an earlier one's detach changes nothing, the last one's does)."""
    nodes = [await sessions_factory.node() for _ in range(3)]
    ws_id, token = await created(nodes[0], "node0.first")
    node_of = {"node0.first": nodes[0]} | {f"node{n % 3}.claim{n}": nodes[n % 3] for n in range(9)}
    claimers = list(node_of)[1:]
    sessions = await asyncio.gather(
        *(node_of[holder].claim(ws_id, token, holder) for holder in claimers)
    )
    next_holder = {took_from(s): holder for s, holder in zip(sessions, claimers, strict=True)}
    assert len(next_holder) == len(claimers)  # no two claims took it from the same holder
    order = ["node0.first"]
    while order[-1] in next_holder:
        order.append(next_holder[order[-1]])
    assert sorted(order[1:]) == sorted(claimers)
    for holder in order[:-1]:
        await node_of[holder].detach(ws_id, holder)
    info = await nodes[0].describe(ws_id)
    assert info is not None
    assert info.held
    last = order[-1]
    await node_of[last].detach(ws_id, last)
    info = await nodes[0].describe(ws_id)
    assert info is not None
    assert not info.held


async def test_a_detach_racing_a_claim_never_undoes_it(sessions_factory: SessionsFactory) -> None:
    """The old connection's detach and a resume's claim, at once on two nodes, in
    either order: the claim holds the session, having taken it from the old holder
    or from nobody."""
    first, second = await sessions_factory.node(), await sessions_factory.node()
    for detach_first in (True, False):
        ws_id, token = await created(first, "node0.old")
        detach = first.detach(ws_id, "node0.old")
        claim = second.claim(ws_id, token, "node1.new")
        if detach_first:
            _, session = await asyncio.gather(detach, claim)
        else:
            session, _ = await asyncio.gather(claim, detach)
        assert took_from(session) in ("node0.old", "")
        info = await first.describe(ws_id)
        assert info is not None
        assert info.held
        await second.detach(ws_id, "node1.new")
        info = await first.describe(ws_id)
        assert info is not None
        assert not info.held


async def test_concurrent_joins_never_exceed_the_room_cap(
    sessions_factory: SessionsFactory,
) -> None:
    """Twelve joins at once on three nodes, with room for four more: four are
    added, the rest refused, and the session follows exactly those four."""
    nodes = [await sessions_factory.node() for _ in range(3)]
    ws_id, token = await created(nodes[0], streams={"all": ALL, "room:news": NEWS})
    rooms = [f"room:r{n}" for n in range(12)]
    results = await asyncio.gather(
        *(nodes[n % 3].add_stream(ws_id, room, GAME, max_rooms=5) for n, room in enumerate(rooms))
    )
    assert sorted(results) == ["added"] * 4 + ["limit"] * 8
    added = {room for room, result in zip(rooms, results, strict=True) if result == "added"}
    session = await nodes[1].claim(ws_id, token, "node1.next")
    assert session is not None
    assert set(session.streams) == {"all", "room:news", *added}


async def test_a_join_racing_a_claim_is_kept(sessions_factory: SessionsFactory) -> None:
    """A join of a session while another node claims it is neither lost nor undone."""
    first, second = await sessions_factory.node(), await sessions_factory.node()
    ws_id, token = await created(first, "node0.old")
    await first.detach(ws_id, "node0.old")
    added, session = await asyncio.gather(
        first.add_stream(ws_id, "room:game", GAME, max_rooms=10),
        second.claim(ws_id, token, "node1.new"),
    )
    assert added == "added"
    assert took_from(session) == ""
    info = await first.describe(ws_id)
    assert info is not None
    assert (info.rooms, info.held) == (["game", "news"], True)


# Writing back what a store lost


async def test_restore_writes_back_only_the_sessions_the_store_lost(
    sessions_factory: SessionsFactory,
) -> None:
    """A session the store lost (as a Redis restarted empty loses it) is written
    back as its node holds it: token, user, streams with their ends, holder; one the
    store still has stays as it is."""
    store = await sessions_factory.node()
    kept, kept_token = await created(store, "node0.kept")
    lost, lost_token = await created(store, "node0.lost")
    assert await store.end(lost)  # gone from the store
    end = 2_000_000_000.0
    streams = {"all": ALL, "room:news": NEWS}
    held = [
        HeldSession(
            lost, token_hash(lost_token), "alice", streams, "node0.lost", {"room:news": end}
        ),
        HeldSession(kept, token_hash(kept_token), "bob", {"all": GAME}, "node0.other"),
    ]
    assert await store.restore(held) == 1
    assert await store.claim(lost, new_token(), "node1.thief") is None
    resumed = await store.claim(lost, lost_token, "node1.next", user="alice")
    assert resumed == Session(lost, "alice", streams, "node0.lost", {"room:news": end})
    again = await store.claim(kept, kept_token, "node1.other", user="alice")
    assert again is not None
    assert (again.previous_holder, again.streams) == ("node0.kept", STREAMS)


async def test_a_restored_session_is_held_until_its_holder_detaches_it(
    sessions_factory: SessionsFactory,
) -> None:
    """Written back, a session is held as a new one is: it outlasts the TTL, and
    ends a TTL after its holder detaches it."""
    store = await sessions_factory.node()
    ws_id, token = await created(store, "node0.first")
    assert await store.end(ws_id)
    held = HeldSession(ws_id, token_hash(token), "alice", dict(STREAMS), "node0.first")
    assert await store.restore([held]) == 1
    await sessions_factory.elapse(TTL * 1.5)
    assert await store.describe(ws_id) is not None
    await store.detach(ws_id, "node0.first")
    await sessions_factory.elapse(TTL * 1.5)
    assert await store.describe(ws_id) is None


async def test_no_sessions_restore_nothing() -> None:
    """Sessions off: nothing was kept, nothing is written back."""
    held = HeldSession(new_conn_id(), token_hash(new_token()), None, {}, "node0.first")
    assert await NoSessions().restore([held]) == 0
