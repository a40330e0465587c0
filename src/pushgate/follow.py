"""Which topics a node subscribes to: a room's or a user's while it has local
members there (and ``unfollow_after`` seconds more), kept in step with membership
even when joins, leaves and disconnects interleave; and, once subscribed, where the
stream stood (so that even its first push is checked for a gap: recovery.py).

Why the grace after the last member left: a client whose connection was cut comes
back within seconds, most often to the same gateway; if the gateway still follows
its rooms, its resume is caught up from the pushes the gateway fanned out itself
(recent.py) instead of a history read, and its room needs no new subscription. A
gateway that loses every client at once (a network blip) would otherwise let go of
every room and follow it again a moment later.
"""

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pushgate.broker.base import Broker
from pushgate.errors import BrokerUnavailable
from pushgate.hub import Hub
from pushgate.recovery import StreamRecovery
from pushgate.streams import TOPIC_ALL, room_of, user_of

Spawn = Callable[[Coroutine[Any, Any, None]], Any]


class Following:
    """The room and user topics this node subscribes to, by its hub's membership."""

    def __init__(
        self,
        broker: Broker,
        hub: Hub,
        recovery: StreamRecovery,
        spawn: Spawn,
        *,
        unfollow_after: float = 0.0,
    ) -> None:
        """``unfollow_after``: seconds a topic stays subscribed after its last local
        member left (0: unsubscribed at once)."""
        self._broker = broker
        self._hub = hub
        self._recovery = recovery
        self._spawn = spawn
        self.unfollow_after = unfollow_after
        self.subscribed: set[str] = set()
        self._topic_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # Subscribed topics with no local member, each with the timer that lets go.
        self._lingering: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    def settled(self, topic: str) -> bool:
        """Subscribed, with no change under way: nothing to wait for."""
        return topic == TOPIC_ALL or (topic in self.subscribed and topic not in self._topic_locks)

    def wanted(self, topic: str) -> bool:
        """Whether this node should be subscribed to a room's or a user's topic now."""
        room = room_of(topic)
        if room is not None:
            return self._hub.room_size(room) > 0
        user = user_of(topic)
        return user is not None and self._hub.user_size(user) > 0

    async def sync(self, topic: str, *, now: bool = False) -> None:
        """Subscribe to a room's or user's topic if it has local members, else
        unsubscribe: at once if ``now`` (its grace is over, or the member never got
        in: a join undone) or there is no grace, else when ``unfollow_after`` has
        passed with no member back.

        Each call reads the wanted state under the topic's lock, so whatever order
        concurrent calls run in, the last one leaves the subscription matching the
        membership.
        """
        entry = self._topic_locks.get(topic)
        lock, users = entry if entry is not None else (asyncio.Lock(), 0)
        self._topic_locks[topic] = (lock, users + 1)
        try:
            async with lock:
                wanted = self.wanted(topic)
                if wanted:
                    self._stop_lingering(topic)
                if wanted and topic not in self.subscribed:
                    # Recorded first: a broker that could not confirm still wants the
                    # topic, so a later call must be able to unsubscribe it.
                    self.subscribed.add(topic)
                    await self._broker.subscribe(topic)
                    if self._broker.keeps_history:
                        self._spawn(self.learn_position(topic))
                elif not wanted and topic in self.subscribed:
                    # A grace armed since this call was made (a member came and went
                    # again) governs, even over a grace that ended.
                    if self.unfollow_after > 0 and (not now or topic in self._lingering):
                        self._linger(topic)
                        return
                    self._stop_lingering(topic)
                    self.subscribed.discard(topic)
                    self._recovery.forget(topic, time.monotonic())
                    await self._broker.unsubscribe(topic)
        finally:
            lock, users = self._topic_locks[topic]
            if users == 1:
                del self._topic_locks[topic]
            else:
                self._topic_locks[topic] = (lock, users - 1)

    def _linger(self, topic: str) -> None:
        """Let go of ``topic`` ``unfollow_after`` seconds after its last member left
        (the latest leave counts), unless one comes back before."""
        if self._closed:
            return  # the broker unsubscribes everything as it closes
        self._stop_lingering(topic)
        loop = asyncio.get_running_loop()
        self._lingering[topic] = loop.call_later(self.unfollow_after, self._expire, topic)

    def _stop_lingering(self, topic: str) -> None:
        timer = self._lingering.pop(topic, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, topic: str) -> None:
        if self._lingering.pop(topic, None) is not None:
            self._spawn(self.sync(topic, now=True))

    def close(self) -> None:
        """No more letting go: the node is closing (its broker unsubscribes all)."""
        self._closed = True
        for timer in self._lingering.values():
            timer.cancel()
        self._lingering.clear()

    async def learn_position(self, topic: str) -> None:
        """Note where a stream is when this node starts following it, so that pushes
        lost before the first one arrives (a broker reconnecting, a Redis Cluster
        slot moving) are found and filled like any later gap. The position is read,
        then a sync: if no push arrived meanwhile, none was published since the
        subscription, and the position read is the last one published before it."""
        try:
            history = await self._broker.history(topic, None)
            await self._broker.sync([topic])
        except BrokerUnavailable:
            return  # the first push to arrive sets the position instead
        if self.follows(topic):
            self._recovery.noted(topic, history.position)

    def follows(self, topic: str) -> bool:
        return topic == TOPIC_ALL or topic in self.subscribed
