"""The Redis Cluster broker (``--broker redis+cluster://host:port,host:port``).

:class:`RedisClusterBroker` (``--broker redis+cluster://host:port,host:port``) puts
each topic on the master that owns its hash slot: the channel ``<prefix>{<topic>}``
and the keys ``<prefix>meta:{<topic>}`` and ``<prefix>hist:{<topic>}`` share the
hash tag ``<topic>``, so the publish script runs on one master and ends with
``SPUBLISH`` (sharded pub/sub, Redis ≥ 7): a push crosses one shard, not the whole
cluster. The node keeps one subscriber per master it needs. A master that is down
makes its topics fail (503) while every other topic keeps flowing; when it is back,
its subscriber reconnects within ``MAX_BACKOFF``. When a subscriber fails, or Redis
says a channel's slot moved, the broker reads the cluster's slot map again and moves
the channel to its new master.
"""

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from pushgate.broker.base import Broker, BrokerHandler
from pushgate.broker.redis import MAX_CONNECTIONS, RedisBroker
from pushgate.broker.redis_errors import REDIS_ERRORS
from pushgate.broker.redis_subscriber import (
    CONNECT_TIMEOUT,
    MAX_BACKOFF,
    MIN_BACKOFF,
    Subscriber,
    hash_tag,
)
from pushgate.broker.urls import parse_cluster_url
from pushgate.errors import BrokerUnavailable

log = logging.getLogger("pushgate.broker")


class RedisClusterBroker(RedisBroker):
    """A Broker on a Redis Cluster's sharded pub/sub (Redis ≥ 7): each topic on the
    master of its slot. See the module docstring."""

    publish_command = "SPUBLISH"

    def __init__(self, url: str, **options: Any) -> None:
        self._masters, self._node_options = parse_cluster_url(url)  # before the client
        super().__init__(url, **options)
        self._wanted: set[str] = set()  # topics subscribed, or to be once routed
        self._moving: set[str] = set()  # wanted topics to subscribe (again) on their master
        self._mover: asyncio.Future[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()

    def _make_client(self) -> Any:
        return _BoundedRedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self._masters],
            # Commands wait for one of MAX_CONNECTIONS slots (below); the rest is for
            # the pipelines, which take at most one connection per master each.
            max_connections=2 * MAX_CONNECTIONS,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=None,
            # Fail fast: a master that is down answers 503 for its topics at once.
            retry=Retry(NoBackoff(), 1, (RedisError,)),
            **self._node_options,
        )

    @property
    def _probe_prefix(self) -> str:
        return f"{self.prefix}probe:{self.node_id}:"

    def channel(self, topic: str) -> str:
        # The topic is the hash tag, as in its stream's keys: one slot for all three.
        return f"{self.prefix}{{{topic}}}"

    def _topic_of(self, channel: str) -> str:
        return channel[len(self.prefix) + 1 : -1]

    async def _subscriber_for(self, channel: str) -> Subscriber:
        cluster: RedisCluster = self.client
        await cluster.initialize()  # a no-op once the slot map is known
        node = cluster.get_node_from_key(channel)
        if node is None:
            raise BrokerUnavailable(f"no Redis Cluster master serves {channel!r}")
        subscriber = self._subscribers.get(node.name)
        if subscriber is None:
            client = Redis(
                host=node.host,
                port=int(node.port),
                socket_connect_timeout=CONNECT_TIMEOUT,
                # No retry of any error: redis-py's reconnect would subscribe again to
                # every channel in one SSUBSCRIBE, which a cluster refuses when they
                # span slots (CROSSSLOT). The Subscriber rebuilds, channel by slot.
                retry=Retry(NoBackoff(), 0, ()),
                **self._node_options,
            )
            # Our probe channel must hash to a slot this master owns: the channel's.
            probe = f"{self._probe_prefix}{{{hash_tag(channel)}}}"
            subscriber = self._new_subscriber(client, node.name, probe)
            self._subscribers[node.name] = subscriber
        return subscriber

    def _subscriber_options(self, name: str) -> dict[str, Any]:
        return {
            "sharded": True,
            "probe_prefix": self._probe_prefix,
            "on_failure": self._reroute,
            "on_lost": self._on_slot_moved,
        }

    async def start(self, handler: BrokerHandler) -> None:
        # Subscribers are made per master as topics need them; until then nothing is
        # delivered, and readiness waits for the first.
        self._handler = handler
        with contextlib.suppress(*REDIS_ERRORS):
            await self.client.initialize()
        self._start_refresher()

    @property
    def running(self) -> bool:
        return self._handler is not None

    async def close(self) -> None:
        await self._stop_refresher()
        if self._mover is not None:
            self._mover.cancel()
        for subscriber in self._subscribers.values():
            await self._close_subscriber(subscriber)
        await asyncio.gather(*self._closing, return_exceptions=True)
        self._subscribers.clear()
        self._handler = None
        await self._batch.close()
        await self.client.aclose()

    async def _reroute(self) -> None:
        """A subscriber failed: read the slot map again (a failover or a resharding
        may have moved slots) and move every topic whose master changed."""
        cluster: RedisCluster = self.client
        with contextlib.suppress(*REDIS_ERRORS):
            await cluster.nodes_manager.initialize()
        for topic, subscriber in list(self._topics.items()):
            node = cluster.get_node_from_key(self.channel(topic))
            if node is not None and node.name != subscriber.where:
                self._move(topic)

    def _on_slot_moved(self, channel: str) -> None:
        topic = self._topic_of(channel)
        if topic in self._topics:
            self._move(topic)

    async def subscribe(self, topic: str) -> None:
        self._wanted.add(topic)
        try:
            await super().subscribe(topic)
        except BrokerUnavailable:
            self._move(topic)  # wanted all the same: subscribed in the background
            raise

    def _move(self, topic: str) -> None:
        self._moving.add(topic)
        if self._mover is None or self._mover.done():
            self._mover = asyncio.ensure_future(self._run_moves())

    async def _run_moves(self) -> None:
        """Subscribe every moved topic on its master, reading the slot map once for
        all the topics that moved together (a failover moves thousands at once), and
        again, with backoff, for those that could not be subscribed yet (no master
        reachable, as when the cluster was down when this node started)."""
        cluster: RedisCluster = self.client
        backoff = MIN_BACKOFF
        failed: set[str] = set()
        while self._moving:
            with contextlib.suppress(*REDIS_ERRORS):
                await cluster.nodes_manager.initialize()
            moving, self._moving = self._moving & self._wanted, set()
            if not failed:  # once per outage, not every retry
                log.info("subscribing %d topics on their Redis Cluster masters", len(moving))
            results = await asyncio.gather(
                *(RedisBroker.subscribe(self, topic) for topic in moving), return_exceptions=True
            )
            failed = {t for t, r in zip(moving, results, strict=True) if isinstance(r, Exception)}
            self._retire_idle()
            self._on_rebuilt()  # what was published meanwhile is read from history
            if failed:
                if backoff == MIN_BACKOFF:
                    log.warning("%d topics not subscribed yet; trying again", len(failed))
                self._moving |= failed
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _retire_idle(self) -> None:
        """Close the subscriptions left with no topic (on a master that lost its
        slots): they would probe a server that is no longer theirs."""
        for name, subscriber in list(self._subscribers.items()):
            if not subscriber.channels:
                del self._subscribers[name]
                task = asyncio.ensure_future(self._close_subscriber(subscriber))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_subscriber(subscriber: Subscriber) -> None:
        await subscriber.close()
        await subscriber.client.aclose()

    async def unsubscribe(self, topic: str) -> None:
        self._wanted.discard(topic)
        await super().unsubscribe(topic)
        self._retire_idle()

    @property
    def ready(self) -> bool:
        return super().ready and self._wanted <= self._topics.keys()

    @property
    def _where(self) -> str:
        return "the Redis Cluster " + ",".join(f"{h}:{p}" for h, p in self._masters)


class _BoundedRedisCluster(RedisCluster):
    """A RedisCluster whose commands wait for a free connection, as the single-server
    broker's BlockingConnectionPool makes them: redis-py's cluster pool raises
    MaxConnectionsError at once instead, so a burst of pushes would answer 503."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(MAX_CONNECTIONS)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._in_flight:
            return await super().execute_command(*args, **kwargs)


if TYPE_CHECKING:
    _: type[Broker] = RedisClusterBroker
