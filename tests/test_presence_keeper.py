"""One process's presence keeper shares the event loop: renewing thousands of
entries, it lets other work run between slices of about KEEP_SLICE_ENTRIES members,
however they are spread over rooms (a few rooms of thousands each were one turn).
No sockets: a MemoryPresence on a MemoryBroker, and a task counting the loop's turns."""

import asyncio
import contextlib
import itertools
from typing import Any

from pushgate.broker.memory import MemoryBroker
from pushgate.ids import ConnId, RoomId
from pushgate.presence import KEEP_SLICE_ENTRIES, Identity
from pushgate.presencestore import MemoryPresence
from pushgate.slices import in_slices


class Turns:
    """While entered, counts the turns of the event loop: a task that adds one and
    yields, over and over."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "Turns":
        self._task = asyncio.create_task(self._count())
        await asyncio.sleep(0)  # it has started
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _count(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)


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
    async with Turns() as turns:
        before = turns.count
        assert await store.keep(held) == []
        assert turns.count - before >= 9  # 10,005 entries: a turn for others every ~1,000
    assert len(store.table) == 5 * 2 * KEEP_SLICE_ENTRIES


async def test_slices_hand_out_every_item_in_order_a_big_group_in_chunks() -> None:
    """in_slices: every item once, in order, with its group's key; a group bigger than
    a slice in several chunks; an empty group nothing; a turn for others once a
    slice's worth (a group counting one more) went out."""
    groups = [("a", list(range(5))), ("empty", []), ("b", list(range(3))), ("c", [9])]
    out: list[tuple[str, list[int], int]] = []
    async with Turns() as turns:
        async for key, chunk in in_slices(groups, 2):
            out.append((key, list(chunk), turns.count))
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
