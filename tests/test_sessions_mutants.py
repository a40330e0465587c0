"""What the Sessions contract (tests/sessions/test_contract.py) leaves to each store,
for MemorySessions and NoSessions: the sweep that ends detached sessions, the counts
the metrics read, the room limit after a leave, a session's secret, and a store
that keeps nothing. Pure: a clock the test moves, no sockets."""

import asyncio
import base64

from pushgate.ids import ConnId, new_conn_id
from pushgate.memorysessions import MemorySessions
from pushgate.sessions import NoSessions, holder_node, new_token
from pushgate.streams import Position
from tests.helpers import UNIT

P = Position("9f2c1a7e", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def detached_session(store: MemorySessions, holder: str = "node0.a") -> ConnId:
    ws_id = new_conn_id()
    await store.create(ws_id, new_token(), None, {"all": P}, holder)
    await store.detach(ws_id, holder)
    return ws_id


def test_a_session_token_is_144_random_bits_url_safe() -> None:
    """What docs/security.md promises: 144 bits (24 URL-safe characters), new each time."""
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert len(base64.urlsafe_b64decode(token)) == 18


def test_a_holder_names_its_node() -> None:
    assert holder_node("a1b2c3.9f00ba11") == "a1b2c3"
    assert holder_node("gateway-1.0042") == "gateway-1"


async def test_a_detached_session_ends_at_its_ttl_to_the_second() -> None:
    """At its TTL a detached session is over: it cannot be claimed, and expire()
    ends it and counts it; a held one never ends by time."""
    clock = Clock()
    store = MemorySessions(10.0, clock=clock)
    held_id, held_token = new_conn_id(), new_token()
    await store.create(held_id, held_token, None, {"all": P}, "node0.h")
    ws_ids = [await detached_session(store) for _ in range(2)]
    assert (len(store), store.detached()) == (3, 2)
    clock.now += 9.9
    assert store.expire() == 0
    clock.now += 0.1
    assert await store.describe(ws_ids[0]) is None
    assert store.expire() == 1
    assert (len(store), store.detached()) == (1, 0)
    clock.now += 1000.0
    assert store.expire() == 0
    assert await store.claim(held_id, held_token, "node0.i") is not None


async def test_a_resumed_session_ends_at_its_last_detach_and_others_on_time() -> None:
    """A session resumed and detached again ends one TTL after its last detach, not
    its first; one detached between the two still ends at its own time."""
    clock = Clock()
    store = MemorySessions(10.0, clock=clock)
    again, token = new_conn_id(), new_token()
    await store.create(again, token, None, {"all": P}, "node0.a")
    await store.detach(again, "node0.a")  # t=0: would end at 10
    clock.now += 1
    assert await store.claim(again, token, "node0.b") is not None  # resumed
    clock.now += 1
    between = await detached_session(store)  # t=2: ends at 12
    clock.now += 3
    await store.detach(again, "node0.b")  # t=5: ends at 15
    clock.now += 5  # t=10: the first detach's time
    assert store.expire() == 0
    clock.now += 2  # t=12
    assert store.expire() == 1
    assert await store.describe(between) is None
    assert await store.describe(again) is not None
    clock.now += 3  # t=15
    assert store.expire() == 1
    assert len(store) == 0


async def test_the_sweeper_ends_detached_sessions_by_itself() -> None:
    """Started, the store ends detached sessions whose TTL passed with nobody asking
    (every TTL/4, at most a second apart), and stops when closed."""
    clock = Clock()
    store = MemorySessions(0.2 * UNIT, clock=clock)
    await store.start()
    try:
        await detached_session(store)
        clock.now += 1.0
        await asyncio.sleep(0.15 * UNIT)  # three sweeps or so
        assert len(store) == 0
    finally:
        await store.close()
    await detached_session(store)
    clock.now += 1.0
    await asyncio.sleep(0.2 * UNIT)
    assert len(store) == 1


async def test_a_room_left_makes_room_for_one_more() -> None:
    """The room limit counts the rooms a session follows now: after leaving one of
    three (at a limit of three), one more may be joined, not two."""
    store = MemorySessions(10.0, clock=Clock())
    ws_id = new_conn_id()
    rooms = {f"room:{n}": P for n in range(3)}
    await store.create(ws_id, new_token(), None, {"all": P, **rooms}, "node0.a")
    assert await store.add_stream(ws_id, "room:x", P, max_rooms=3) == "limit"
    assert await store.remove_stream(ws_id, "all") == "removed"
    assert await store.add_stream(ws_id, "room:x", P, max_rooms=3) == "limit"
    assert await store.remove_stream(ws_id, "room:0") == "removed"
    assert await store.add_stream(ws_id, "room:x", P, max_rooms=3) == "added"
    assert await store.add_stream(ws_id, "room:y", P, max_rooms=3) == "limit"


async def test_without_sessions_every_answer_is_that_of_a_store_that_keeps_nothing() -> None:
    """--session-ttl 0: nothing is recorded, so there is nothing to claim, follow,
    leave, describe or end."""
    store = NoSessions()
    ws_id = new_conn_id()
    await store.start()
    await store.create(ws_id, "token", "alice", {"all": P}, "node0.a")
    assert await store.claim(ws_id, "token", "node0.b") is None
    assert await store.add_stream(ws_id, "room:r", P, max_rooms=10) == "unknown"
    assert await store.remove_stream(ws_id, "all") == "unknown"
    await store.detach(ws_id, "node0.a")
    assert await store.describe(ws_id) is None
    assert await store.end(ws_id) is False
    assert (store.enabled, store.ttl) == (False, 0.0)
    await store.close()
