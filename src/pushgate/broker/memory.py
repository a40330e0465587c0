"""The in-process broker: publishing calls the subscribers' handlers directly.

Several :class:`MemoryBroker` instances may share one :class:`MemoryBus`, which is
how tests run several nodes in one process. Delivery is synchronous, so it is
trivially ordered and gap-free, and the delivered count is exact. The bus holds
the streams' history (:class:`~pushgate.streams.MemoryHistory`): it lives as long
as the process, and a new process starts every stream in a new epoch.
"""

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pushgate.broker.base import Broker, BrokerHandler
from pushgate.streams import History, MemoryHistory, Position, Publication

# An idle stream's position is forgotten after this long (its epoch then changes).
META_TTL = 3600.0


class MemoryBus:
    """The topics and the history shared by every MemoryBroker built on it."""

    def __init__(self, *, history_size: int = 100, history_ttl: float = 300.0) -> None:
        self.subscribers: dict[str, dict[int, BrokerHandler]] = {}
        self.history = MemoryHistory(size=history_size, ttl=history_ttl, meta_ttl=META_TTL)
        self._next_expiry = 0.0

    def publish(self, topic: str, message: bytes) -> tuple[Publication, dict[int, BrokerHandler]]:
        now = time.monotonic()
        if now >= self._next_expiry:  # idle streams go, at most once a minute
            self._next_expiry = now + 60.0
            self.history.expire(now)
        accepted_at = time.time()
        if self.history.enabled:
            pub = self.history.publish(topic, message, now, accepted_at)
        else:
            pub = Publication(0, "", message, accepted_at)
        return pub, self.subscribers.get(topic) or {}


class MemoryBroker:
    """A Broker whose bus is a dict in this process."""

    def __init__(self, bus: MemoryBus | None = None) -> None:
        self._bus = bus if bus is not None else MemoryBus()
        self._handler: BrokerHandler | None = None
        self._topics: set[str] = set()

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def publish(self, topic: str, payload: bytes) -> int | None:
        handlers = self._bus.subscribers.get(topic)
        if not handlers:
            return 0
        return sum(handler.on_message(topic, payload) for handler in list(handlers.values()))

    async def publish_push(self, topic: str, message: bytes) -> int | None:
        pub, handlers = self._bus.publish(topic, message)
        return sum(handler.on_publication(topic, pub) for handler in list(handlers.values()))

    async def history(self, topic: str, since: Position | None) -> History:
        return self._bus.history.read(topic, since, time.monotonic())

    async def histories(self, since: Mapping[str, Position | None]) -> dict[str, History]:
        now = time.monotonic()
        return {topic: self._bus.history.read(topic, start, now) for topic, start in since.items()}

    async def sync(self, topics: Iterable[str] | None = None) -> None:
        pass  # delivery is synchronous: everything published has been delivered

    async def subscribe(self, topic: str) -> None:
        if self._handler is None:
            raise RuntimeError("MemoryBroker.subscribe() called before start()")
        self._topics.add(topic)
        self._bus.subscribers.setdefault(topic, {})[id(self)] = self._handler

    async def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)
        handlers = self._bus.subscribers.get(topic)
        if handlers is not None:
            handlers.pop(id(self), None)
            if not handlers:
                del self._bus.subscribers[topic]

    @property
    def ready(self) -> bool:
        return self._handler is not None

    async def close(self) -> None:
        for topic in list(self._topics):
            await self.unsubscribe(topic)
        self._handler = None


if TYPE_CHECKING:
    _: type[Broker] = MemoryBroker
