"""The directory: which node holds which connection, so that any logic node can
route a join or leave to the gateway that holds the wsId.

The :class:`Directory` Protocol has two implementations: :class:`LocalDirectory`
for a single process (every connection is local, so there is nothing to look up),
and ``pushgate.broker.redis_directory.RedisDirectory`` for a cluster.
"""

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pushgate.ids import ConnId


class Directory(Protocol):
    """Where each connection of the cluster is held.

    A gateway announces itself (:meth:`start`) and the connections it holds
    (:meth:`add`, :meth:`discard`); a node that only looks things up (a logic node)
    is never started. A gateway that stops without :meth:`close` (killed) is
    forgotten, with its connections, once the directory's TTL (``--node-ttl``) has
    passed; one that lives on is announced again within the TTL if the store lost
    its entries (a Redis restarted empty).

    :class:`LocalDirectory`, a cluster of one, announces nothing: there is no other
    node to find anything, so it locates nothing and lists no node (callers look in
    their own hub first, and count their own node themselves).
    """

    async def start(self, node_id: str) -> None:
        """Begin announcing this node as alive."""
        ...

    def add(self, conn: ConnId) -> "asyncio.Future[None] | None":
        """Record that this node holds ``conn``. Returns a future that completes once
        other nodes can find it (never while the directory cannot reach its store),
        or None when that is already so. Never raises.

        Adds and discards reach the other nodes in the order they were made: of an
        add and a discard of one connection, the later wins."""
        ...

    def discard(self, conn: ConnId) -> None:
        """Record that this node no longer holds ``conn``: other nodes find it nowhere
        by the time the future of an add made after this has completed. Never raises."""
        ...

    async def locate(self, conn: ConnId) -> str | None:
        """The id of the live node that announced ``conn`` (this one included), or None.

        Raises :class:`pushgate.errors.BrokerUnavailable` when it cannot tell.
        """
        ...

    async def nodes(self) -> list[str]:
        """The ids of the live nodes that announced themselves (gateways), this one
        included once it has (by the time its first add's future has completed).

        Raises :class:`pushgate.errors.BrokerUnavailable` when it cannot tell.
        """
        ...

    async def verify(self) -> bool:
        """Whether the store had lost this node's entries (a Redis restarted empty),
        found out now rather than at the next refresh; they have been written again
        by the time this returns True. Waits while the store cannot be reached."""
        ...

    def watch(self, lost: Callable[[], None]) -> None:
        """Call ``lost`` whenever a refresh finds this node's entries gone from the
        store (and writes them again), but for those :meth:`verify` reports: what
        else the node kept there is likely gone too."""
        ...

    async def close(self) -> None:
        """Stop announcing and remove this node's entries: no node finds its
        connections or lists it any more (if the store cannot be reached now, they
        expire after the TTL instead)."""
        ...


class LocalDirectory:
    """A single process: nothing is held anywhere else."""

    async def start(self, node_id: str) -> None:
        pass

    def add(self, conn: ConnId) -> "asyncio.Future[None] | None":
        return None

    def discard(self, conn: ConnId) -> None:
        pass

    async def locate(self, conn: ConnId) -> str | None:
        return None

    async def nodes(self) -> list[str]:
        return []

    async def verify(self) -> bool:
        return False  # nothing is kept anywhere that could lose it

    def watch(self, lost: Callable[[], None]) -> None:
        pass

    async def close(self) -> None:
        pass


if TYPE_CHECKING:
    _: type[Directory] = LocalDirectory
