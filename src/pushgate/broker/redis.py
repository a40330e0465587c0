"""The Redis broker: nodes of a cluster share one Redis (or Valkey) server's pub/sub.

This module and ``redis_directory.py`` are the only ones that import ``redis``.
Redis carries opaque bytes; every channel name starts with a configurable prefix,
so several clusters can share one server.

Theory of operation
-------------------

One task owns a dedicated pub/sub connection. It subscribes to every wanted topic,
then reads messages and hands each to the node's handler. Publishing uses the
client's ordinary connections.

Three things can go wrong, and each is handled by the same recovery (drop the
pub/sub connection, reconnect with jittered backoff of at most ``MAX_BACKOFF``,
resubscribe to every wanted topic):

- Redis is unreachable: publishing raises :class:`BrokerUnavailable` at once (the
  API answers 503, never a silent 200), and :attr:`RedisBroker.ready` is false.
- The connection breaks: the reader sees the error.
- The subscription dies silently (the connection looks alive but no message comes;
  python-socketio's "deaf worker"): every ``probe_interval`` the broker publishes a
  probe on its own probe channel; if none has come back within ``probe_timeout``,
  the subscription is declared deaf and rebuilt.
"""

import asyncio
import contextlib
import logging
import os
import random
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from pushgate.broker.base import Broker, BrokerHandler
from pushgate.errors import BrokerUnavailable

log = logging.getLogger("pushgate.broker")

MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0
CONNECT_TIMEOUT = 1.0
SUBSCRIBE_TIMEOUT = 2.0


class DeafSubscription(Exception):
    """Our own probes stopped coming back: the subscription is not delivering."""


class RedisBroker:
    """A Broker on Redis pub/sub. See the module docstring for failure handling."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        node_id: str,
        probe_interval: float = 1.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._probe_channel = f"{prefix}probe:{node_id}"
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self.client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0, (RedisError,)),
        )
        self._handler: BrokerHandler | None = None
        self._topics: set[str] = set()  # wanted, by topic (without prefix)
        self._confirmed: set[str] = set()  # channels Redis confirmed on this connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._probe_seen = 0.0
        self._syncs: dict[bytes, asyncio.Future[None]] = {}

    # Broker

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self._reader = asyncio.create_task(self._run(), name="pushgate-redis-subscriber")

    async def publish(self, topic: str, payload: bytes) -> int | None:
        try:
            await self.client.publish(self.prefix + topic, payload)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot publish to Redis at {self._where}: {exc}") from None
        return None  # Redis knows how many nodes, not how many connections

    async def subscribe(self, topic: str) -> None:
        channel = self.prefix + topic
        self._topics.add(topic)
        if channel in self._confirmed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.subscribe(channel)  # confirmed by the reader
        try:
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            waiter.cancel()
            waiters = self._waiters.get(channel, [])
            if waiter in waiters:
                waiters.remove(waiter)
            raise BrokerUnavailable(
                f"Redis at {self._where} did not confirm a subscription within "
                f"{SUBSCRIBE_TIMEOUT:g} s"
            ) from None

    async def unsubscribe(self, topic: str) -> None:
        channel = self.prefix + topic
        self._topics.discard(topic)
        self._confirmed.discard(channel)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(channel)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.client.aclose()

    async def sync(self) -> None:
        """Return once everything published before this call, on topics this node is
        subscribed to, has been handed to the handler (a marker sent through our own
        subscription has come back). Raises BrokerUnavailable when it cannot."""
        token = os.urandom(8).hex().encode()
        waiter = asyncio.get_running_loop().create_future()
        self._syncs[token] = waiter
        try:
            await self.client.publish(self._probe_channel, token)
            await asyncio.wait_for(waiter, SUBSCRIBE_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"Redis at {self._where}: no sync: {exc}") from None
        finally:
            self._syncs.pop(token, None)

    @property
    def running(self) -> bool:
        """Started and not closed."""
        return self._reader is not None and not self._reader.done()

    @property
    def ready(self) -> bool:
        """Connected, every wanted topic confirmed, and our probes coming back."""
        wanted = {self.prefix + t for t in self._topics} | {self._probe_channel}
        return self._pubsub is not None and wanted <= self._confirmed and not self._deaf()

    # The subscriber task

    async def _run(self) -> None:
        backoff = MIN_BACKOFF
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            pubsub = self.client.pubsub()
            try:
                channels = await self._subscribe_all(pubsub)
                self._pubsub = pubsub
                # Topics wanted, or dropped, while that SUBSCRIBE was in flight.
                wanted = {self.prefix + t for t in self._topics} | {self._probe_channel}
                if wanted - channels:
                    await pubsub.subscribe(*(wanted - channels))
                if channels - wanted:
                    await pubsub.unsubscribe(*(channels - wanted))
                if failing_since is not None:
                    log.info(
                        "Redis at %s is back after %.1f s; resubscribed to %d topics",
                        self._where,
                        loop.time() - failing_since,
                        len(self._topics),
                    )
                failing_since = None
                await self._read(pubsub)
            except (RedisError, OSError, TimeoutError, DeafSubscription) as exc:
                if failing_since is None:
                    failing_since = loop.time()
                    backoff = MIN_BACKOFF
                    log.warning(
                        "Redis at %s: %s; reconnecting", self._where, exc or type(exc).__name__
                    )
            except Exception:
                # A bug must not end the subscriber for good: say so, and start over.
                log.exception("Redis subscriber failed; reconnecting")
                failing_since = failing_since or loop.time()
            finally:
                self._pubsub = None
                self._confirmed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _subscribe_all(self, pubsub: PubSub) -> set[str]:
        """Subscribe a new connection to every wanted topic; return the channels sent."""
        channels = {self._probe_channel, *(self.prefix + t for t in self._topics)}
        await asyncio.wait_for(pubsub.subscribe(*channels), CONNECT_TIMEOUT * 2)
        self._probe_seen = asyncio.get_running_loop().time()
        return channels

    async def _read(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        next_probe = loop.time()
        while True:
            now = loop.time()
            if now >= next_probe:
                next_probe = now + self._probe_interval
                if self._deaf():
                    raise DeafSubscription(f"no probe came back for {now - self._probe_seen:.1f} s")
                # Bounded: on a frozen connection the publish itself may never return.
                await asyncio.wait_for(
                    self.client.publish(self._probe_channel, b""), self._probe_timeout
                )
            message = await pubsub.get_message(timeout=max(0.0, next_probe - loop.time()))
            if message is not None:
                self._on_redis_message(message)

    def _on_redis_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"].decode()
        if kind == "message":
            if channel == self._probe_channel:
                self._probe_seen = asyncio.get_running_loop().time()
                waiter = self._syncs.get(message["data"])
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif self._handler is not None:
                try:
                    self._handler.on_message(channel[len(self.prefix) :], message["data"])
                except Exception:
                    log.exception(
                        "dropped a message on %s that its handler could not take", channel
                    )
        elif kind == "subscribe":
            self._confirmed.add(channel)
            if channel == self._probe_channel:
                self._probe_seen = asyncio.get_running_loop().time()
            for waiter in self._waiters.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == "unsubscribe":
            self._confirmed.discard(channel)

    def _deaf(self) -> bool:
        return asyncio.get_running_loop().time() - self._probe_seen > self._probe_timeout

    @property
    def _where(self) -> str:
        return self.url.rsplit("@", 1)[-1]  # never log a password


if TYPE_CHECKING:
    _: type[Broker] = RedisBroker
