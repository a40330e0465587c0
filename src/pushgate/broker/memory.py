"""The in-process broker: publishing calls the subscribers' handlers directly.

Several :class:`MemoryBroker` instances may share one :class:`MemoryBus`, which is
how tests run several nodes in one process. Delivery is synchronous, so it is
trivially ordered and gap-free, and the delivered count is exact. The bus holds
the streams' history (:class:`~pushgate.streams.MemoryHistory`): it lives as long
as the process, and a new process starts every stream in a new epoch. A timer of
the bus's own drops expired pushes and forgotten positions while nothing happens.
"""

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pushgate.broker.base import Broker, BrokerHandler
from pushgate.streams import History, MemoryHistory, Position, Publication

# A stream nobody follows keeps its position this much longer than any session may
# be away (and than its pushes live), then starts over in a new epoch.
POSITION_MARGIN = 60.0
# The expiry timer runs at most once a second (more often with a shorter history TTL):
# meanwhile every read and publish drops what expired before it looks.
TIMER_INTERVAL = 1.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class MemoryBus:
    """The topics and the history shared by every MemoryBroker built on it."""

    def __init__(
        self,
        *,
        history_size: int = 100,
        history_ttl: float = 300.0,
        session_ttl: float = 60.0,
        history_max_bytes: int = DEFAULT_MAX_BYTES,
        position_margin: float = POSITION_MARGIN,
    ) -> None:
        self.subscribers: dict[str, dict[int, BrokerHandler]] = {}
        self.history = MemoryHistory(
            size=history_size,
            ttl=history_ttl,
            position_ttl=max(history_ttl, session_ttl) + position_margin,
            max_bytes=history_max_bytes,
        )
        self._interval = min(TIMER_INTERVAL, history_ttl / 4)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def publish(self, topic: str, message: bytes) -> tuple[Publication, dict[int, BrokerHandler]]:
        accepted_at = time.time()
        if self.history.enabled:
            pub = self.history.publish(topic, message, time.monotonic(), accepted_at)
            self._arm()
        else:
            pub = Publication(0, "", message, accepted_at)
        return pub, self.subscribers.get(topic) or {}

    def read(self, since: Mapping[str, Position | None]) -> dict[str, History]:
        now = time.monotonic()
        read = {topic: self.history.read(topic, start, now) for topic, start in since.items()}
        self._arm()
        return read

    def unfollowed(self, topic: str) -> None:
        """No node follows ``topic`` any more: its position is kept from now on for
        as long as a session that was following it may stay away."""
        self.history.touch(topic, time.monotonic())

    def _arm(self) -> None:
        """Make sure the expiry timer runs when something is due (one timer a bus)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a loop (a test): reads still expire first
            return
        if self._timer is not None and self._timer_loop is loop:
            return
        due = self.history.next_due()
        if due is not None:
            delay = max(due - time.monotonic(), self._interval)
            self._timer, self._timer_loop = loop.call_later(delay, self._expire), loop

    def _expire(self) -> None:
        self._timer = None
        self.history.expire(time.monotonic(), self.subscribers)
        self._arm()


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
        return self._bus.read({topic: since})[topic]

    async def histories(self, since: Mapping[str, Position | None]) -> dict[str, History]:
        return self._bus.read(since)

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
                self._bus.unfollowed(topic)

    @property
    def ready(self) -> bool:
        return self._handler is not None

    @property
    def answers_at_once(self) -> bool:
        return True

    @property
    def keeps_history(self) -> bool:
        return self._bus.history.enabled

    async def close(self) -> None:
        for topic in list(self._topics):
            await self.unsubscribe(topic)
        self._handler = None


if TYPE_CHECKING:
    _: type[Broker] = MemoryBroker
