"""One process's presence keeper shares the event loop: renewing thousands of
entries, it lets other work run between slices of about KEEP_SLICE_ENTRIES members,
however they are spread over rooms (a few rooms of thousands each were one turn).
No sockets: a MemoryPresence on a MemoryBroker, and a task counting the loop's turns."""

import asyncio
import itertools

from pushgate.broker.memory import MemoryBroker
from pushgate.ids import ConnId, RoomId
from pushgate.presence import KEEP_SLICE_ENTRIES, Identity
from pushgate.presencestore import MemoryPresence
from pushgate.slices import in_slices


async def test_renewing_big_rooms_lets_the_loop_turn_between_slices() -> None:
    store = MemoryPresence(MemoryBroker(), ttl=60.0, announces=lambda room: False)
    held: dict[RoomId, list[tuple[ConnId, str]]] = {}
    for r in range(5):  # 5 rooms of 2 slices' worth each
        room = RoomId(f"chat:{r}")
        held[room] = []
        for n in range(2 * KEEP_SLICE_ENTRIES):
            conn = ConnId(f"{r}-{n}")
            await store.enter(room, Identity(conn, f"user{n}"), f"h{conn}")
            held[room].append((conn, f"h{conn}"))
    turns = 0
    keeping = True

    async def count_turns() -> None:
        nonlocal turns
        while keeping:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    before = turns
    assert await store.keep(held) == []
    keeping = False
    await counter
    assert turns - before >= 9  # 10,005 entries: a turn for others every ~1,000
    assert len(store.table) == 5 * 2 * KEEP_SLICE_ENTRIES


async def test_slices_hand_out_every_item_in_order_a_big_group_in_chunks() -> None:
    """in_slices: every item once, in order, with its group's key; a group bigger than
    a slice in several chunks; an empty group nothing; a turn for others once a
    slice's worth (a group counting one more) went out."""
    groups = [("a", list(range(5))), ("empty", []), ("b", list(range(3))), ("c", [9])]
    turns = 0
    out: list[tuple[str, list[int], int]] = []

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    async for key, chunk in in_slices(groups, 2):
        out.append((key, list(chunk), turns))
    counter.cancel()
    assert [(key, chunk) for key, chunk, _ in out] == [
        ("a", [0, 1]),
        ("a", [2, 3]),
        ("a", [4]),
        ("b", [0, 1]),
        ("b", [2]),
        ("c", [9]),
    ]
    # Each chunk here brings the count to a slice or more: a turn before every next one.
    seen = [at for _, _, at in out]
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))
