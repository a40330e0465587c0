"""Long walks that share the event loop: a walk over thousands of items (a node's
presence entries, room by room) hands them out in chunks and gives the loop a turn
for its other work (pushes, subscribes) every ``per_turn`` items or so, however the
items are spread over their groups: counted by group, a few groups of thousands each
would all be one turn.
"""

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TypeVar

K = TypeVar("K")
T = TypeVar("T")


async def in_slices(
    groups: Iterable[tuple[K, Sequence[T]]], per_turn: int
) -> AsyncIterator[tuple[K, Sequence[T]]]:
    """Each group's items in chunks of at most ``per_turn``, with its key, in order; a
    turn of the loop before a chunk once ``per_turn`` items (a group counting one more)
    went out since the last. An empty group yields nothing."""
    walked = 0
    for key, items in groups:
        for start in range(0, len(items), per_turn):
            if walked >= per_turn:
                walked = 0
                await asyncio.sleep(0)
            chunk = items[start : start + per_turn]
            yield key, chunk
            walked += 1 + len(chunk)
