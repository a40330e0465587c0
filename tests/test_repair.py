"""Filling a stream's gap while the broker cannot answer yet (node.py ``_repair``):
the node reads history again, a few times over about three seconds and once more at
the end of them (``REPAIR_RETRY_DELAYS``), while the stream's pushes wait; what it
still cannot read, its clients are told (docs/recovery.md).

A node on a real MemoryBroker, whose ``history`` refuses its first reads as a
reconnecting Redis does (BrokerUnavailable), and a gap made by handing the node a
stream's pushes with some left out, as tests/test_recovery.py does.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pushgate.broker.memory import MemoryBroker, MemoryBus
from pushgate.errors import BrokerUnavailable
from pushgate.hub import Hub
from pushgate.ids import ConnId, RoomId
from pushgate.node import Node
from pushgate.nodedelivery import REPAIR_RETRY_DELAYS
from pushgate.streams import TOPIC_ALL, History, Position, Publication
from pushgate.wshandshake import PUSHGATE_OVER_WEBSOCKET
from tests.helpers import UNIT

# Every read the repair makes: the retries, and the one at the end of them.
READS = len(REPAIR_RETRY_DELAYS) + 1


class RefusingHistory:
    """Wraps a broker's ``history``: of the reads since a position (a repair's; the
    node's read of where a stream is, since None, goes through), the first
    ``refusals`` raise BrokerUnavailable and the later ones read the real history.
    Counts those reads and notes when each was made."""

    def __init__(self, broker: MemoryBroker, refusals: int) -> None:
        self._read = broker.history
        self.refusals = refusals
        self.times: list[float] = []
        self.refused = asyncio.Event()
        broker.history = self  # type: ignore[method-assign]

    async def __call__(self, topic: str, since: Position | None) -> History:
        if since is None:
            return await self._read(topic, since)
        self.times.append(asyncio.get_running_loop().time())
        if len(self.times) <= self.refusals:
            self.refused.set()
            raise BrokerUnavailable("Redis is not answering yet (refused by the test)")
        return await self._read(topic, since)


class Client:
    """A connection as the node sees one: it keeps the messages it is handed."""

    connected_at = 0.0
    encoding = PUSHGATE_OVER_WEBSOCKET

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._arrived = asyncio.Event()

    def send(self, frame: bytes) -> None:
        self.messages.append(json.loads(frame[2:]))  # a text frame under 126 bytes
        self._arrived.set()

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed with {code}: {reason}")

    def member(self, room: RoomId, joined: bool, reason: str) -> None:
        raise AssertionError(f"no join or leave here, yet told of {room}")

    async def wait_for(self, count: int) -> list[Any]:
        """The messages, once there are ``count`` (bounded)."""
        async with asyncio.timeout(10 * UNIT):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages


@asynccontextmanager
async def a_gap(refusals: int) -> AsyncIterator[tuple[Node, RefusingHistory, Client]]:
    """A node with one client on ``all``, handed push 1, then 4 (2 and 3 lost on
    their way), then, once the repair's first read was refused, 5; history holds
    all five and refuses ``refusals`` reads."""
    bus = MemoryBus(history_size=100, history_ttl=60)
    broker = MemoryBroker(bus)
    reads = RefusingHistory(broker, refusals)
    node = Node(Hub(max_rooms_per_conn=10), broker)
    await node.start()
    try:
        client = Client()
        node.connection_opened(ConnId("c"), client)
        pubs: list[Publication] = [
            bus.publish(TOPIC_ALL, b'{"type":2,"data":%d}\n' % i)[0] for i in range(1, 6)
        ]
        node.on_publication(TOPIC_ALL, pubs[0])
        node.on_publication(TOPIC_ALL, pubs[3])  # a gap: the repair starts
        await asyncio.wait_for(reads.refused.wait(), 5 * UNIT)
        node.on_publication(TOPIC_ALL, pubs[4])  # live, while the repair waits to retry
        assert [m["data"] for m in client.messages] == [1]  # 4 and 5 wait for the repair
        yield node, reads, client
    finally:
        await node.close()


async def test_a_gap_is_filled_once_history_answers_within_the_retries() -> None:
    """History refuses the repair's first three reads: the node asks again, and
    fills the gap from the fourth; the client gets 1 to 5, each once, in order, and
    is told nothing was lost."""
    async with a_gap(refusals=3) as (node, reads, client):
        messages = await client.wait_for(5)
        assert [m["data"] for m in messages] == [1, 2, 3, 4, 5]
        assert len(reads.times) == 4
        assert (node.gaps_filled, node.gaps_lost) == (1, 0)


async def test_a_gap_history_never_answers_for_is_told_after_about_3_s() -> None:
    """History refuses every read: the node asks ``READS`` times, spread over the
    retry delays (about 3 s in all), then tells the client that the stream was not
    recovered (a notice, recovered false) and hands it the pushes that waited, in
    order."""
    assert 2.5 <= sum(REPAIR_RETRY_DELAYS) <= 4.0  # "about 3 s", never 0.5 s idle
    assert max(REPAIR_RETRY_DELAYS) <= 0.5
    async with a_gap(refusals=READS) as (node, reads, client):
        messages = await client.wait_for(4)
        assert messages[0]["data"] == 1
        assert messages[1]["type"] == 0  # a notice
        assert messages[1]["data"]["recovered"] is False
        assert messages[1]["data"]["streams"]["all"]["recovered"] is False
        assert [m["data"] for m in messages[2:]] == [4, 5]
        assert len(reads.times) == READS
        # Each wait is at least its delay (a sleep never ends early); no upper bound,
        # which would only measure how loaded the machine is.
        assert reads.times[-1] - reads.times[0] >= 0.99 * sum(REPAIR_RETRY_DELAYS)
        assert (node.gaps_filled, node.gaps_lost) == (0, 1)
