"""The directory: which node holds which connection, so that any logic node can
route a join or leave to the gateway that holds the wsId.

The :class:`Directory` Protocol has two implementations: :class:`LocalDirectory`
for a single process (every connection is local, so there is nothing to look up),
and ``pushgate.broker.redis_directory.RedisDirectory`` for a cluster.
"""

import asyncio
from typing import TYPE_CHECKING, Protocol

from pushgate.ids import ConnId


class Directory(Protocol):
    """Where each connection of the cluster is held."""

    async def start(self, node_id: str) -> None:
        """Begin announcing this node as alive."""
        ...

    def add(self, conn: ConnId) -> "asyncio.Future[None] | None":
        """Record that this node holds ``conn``. Returns a future that completes once
        other nodes can find it, or None when that is already so. Never raises."""
        ...

    def discard(self, conn: ConnId) -> None:
        """Record that this node no longer holds ``conn``. Never raises."""
        ...

    async def locate(self, conn: ConnId) -> str | None:
        """The id of the live node that holds ``conn``, or None.

        Raises :class:`pushgate.errors.BrokerUnavailable` when it cannot tell.
        """
        ...

    async def nodes(self) -> list[str]:
        """The ids of the live nodes that hold connections, this one included when
        it has announced itself.

        Raises :class:`pushgate.errors.BrokerUnavailable` when it cannot tell.
        """
        ...

    async def close(self) -> None:
        """Stop announcing; this node's entries expire (or are removed)."""
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

    async def close(self) -> None:
        pass


if TYPE_CHECKING:
    _: type[Directory] = LocalDirectory
