"""A loopback TCP proxy that can cut every connection through it at once, the way a
network failure or a restarting load balancer looks to a client: the socket just ends."""

import asyncio

from tests.tcp_proxy import FreezableProxy


class DroppingProxy(FreezableProxy):
    """Forwards 127.0.0.1:<port> to a target; ``drop()`` ends the open connections
    (new ones are still accepted)."""

    async def drop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
