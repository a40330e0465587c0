"""The in-process broker: publishing calls the subscribers' handlers directly.

Several :class:`MemoryBroker` instances may share one :class:`MemoryBus`, which is
how tests run several nodes in one process. Delivery is synchronous, so it is
trivially ordered, and the delivered count is exact.
"""

from typing import TYPE_CHECKING

from pushgate.broker.base import Broker, BrokerHandler


class MemoryBus:
    """The topics shared by every MemoryBroker built on it."""

    def __init__(self) -> None:
        self.subscribers: dict[str, dict[int, BrokerHandler]] = {}


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
