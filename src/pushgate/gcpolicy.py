"""Garbage collection without long stops of the event loop.

CPython's full (generation 2) collection walks every object it tracks. A gateway
holding 20,000 connections tracks over 600,000, and walking them stopped the loop for
160-190 ms: a latency spike every client felt (docs/benchmarks.md).

What makes those objects safe to skip: a connection, its session, a push or an API
request leaves no reference cycle behind when it ends (tests/test_gc.py checks it),
so reference counting alone frees them, and a full collection would find nothing
among them. :class:`FreezeSurvivors` therefore moves every object that survived a
generation-1 collection (two young collections in all) into the permanent generation
(:func:`gc.freeze`, a constant-time list splice), which collections skip. Young
collections still free every cycle among new objects; a full collection walks only
the few objects promoted since the last freeze. Reference counting frees frozen
objects as usual; what freezing would keep is a cycle that forms in an object after
it was frozen, which is why this is only switched on where the tests show there is
none: on uvloop. asyncio's own selector transport keeps a bound method of itself
(``_read_ready``), a cycle per connection that only a full collection would free.

The number of frozen objects is exported (``pushgate_gc_frozen_objects``): it follows
the connections held, and one that only grows would be a leak.
"""

import gc
import logging
from typing import Any

log = logging.getLogger("pushgate.gc")


# Freeze after collections of this generation or an older one: what survived two
# young collections is frozen at once, so no full collection ever walks the objects of
# a burst of new connections. Freezing only after full collections (2) left the first
# walk of 20,000 connections' objects, which stopped the loop for about 130 ms.
FREEZE_AFTER_GENERATION = 1


class FreezeSurvivors:
    """Freeze the survivors of every collection of generation 1 or 2, from
    :meth:`start` to :meth:`stop`."""

    def __init__(self) -> None:
        self.active = False

    def start(self) -> None:
        """Collect once, freeze what is left (modules, the server's own objects),
        then freeze the survivors of the collections to come."""
        if self.active:
            return
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._on_gc)
        self.active = True
        log.debug("garbage collection: %d objects frozen at start", gc.get_freeze_count())

    def stop(self) -> None:
        """Stop freezing, and give the frozen objects back to the oldest generation."""
        if not self.active:
            return
        self.active = False
        gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] >= FREEZE_AFTER_GENERATION:
            gc.freeze()


def runs_on_uvloop(loop: object) -> bool:
    """Whether ``loop`` is uvloop's, whose transports hold no reference cycle."""
    return type(loop).__module__.startswith("uvloop")
