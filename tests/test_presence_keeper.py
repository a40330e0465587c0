"""One process's presence keeper shares the event loop: renewing thousands of
entries, it lets other work run between slices of about KEEP_SLICE_ENTRIES members,
however they are spread over rooms (a few rooms of thousands each were one turn).
No sockets: a MemoryPresence on a MemoryBroker, and a task counting the loop's turns."""

import asyncio

from pushgate.broker.memory import MemoryBroker
from pushgate.ids import ConnId, RoomId
from pushgate.presence import KEEP_SLICE_ENTRIES, Identity
from pushgate.presencestore import MemoryPresence


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
