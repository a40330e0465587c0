"""The Redis broker: nodes of a cluster share one Redis (or Valkey) server's pub/sub,
or the sharded pub/sub of a Redis Cluster (``redis_cluster.RedisClusterBroker``).

This module and its ``redis_*`` siblings are the only ones that import ``redis``.
Redis carries opaque bytes; every channel name starts with a configurable prefix,
so several clusters can share one server.

Theory of operation
-------------------

A :class:`~pushgate.broker.redis_subscriber.Subscriber` owns a dedicated pub/sub
connection, keeps it subscribed to every wanted topic through outages and silent
deaths, and hands each message to the node's handler; publishing uses the client's
ordinary connections. When Redis is unreachable, publishing raises
:class:`BrokerUnavailable` at once (the API answers 503, never a silent 200), and
:attr:`RedisBroker.ready` is false. After every rebuild of a subscription the
handler's ``on_reconnected`` is called: what was published meanwhile never arrived,
and the node reads it from history. Before that, as the subscription fails,
``on_interrupted`` names its topics and whether the connection was closed under
them (how a Redis that stops looks) or went silent: only the first lets the node
tell that it saw all Redis published before it went (epochends.py).

Streams and history
-------------------

A push is published by one Lua script that, atomically, gives it the stream's next
position, keeps it in the stream's history and publishes it: so a push is in history
if and only if it was published. The scripts, the stream's keys and how long each
lives are described in ``redis_streams.py``; this module runs the scripts, and keeps
the metadata of the streams the node follows alive
(:meth:`RedisBroker._refresh_followed`).

On the channel a push travels as
``b"<seq> <epoch> " + message`` (``b"0 - " + message`` with history off, when nothing
is kept); a control message as ``b"!" + payload``: the first byte tells them apart.

The Redis Cluster broker (sharded pub/sub) is in ``redis_cluster.py``.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MovedError, RedisError

from pushgate.broker.base import Broker, BrokerHandler
from pushgate.broker.redis_batch import MAX_BATCH, ScriptBatcher, run_script
from pushgate.broker.redis_errors import REDIS_ERRORS
from pushgate.broker.redis_streams import HISTORY, PUBLISH, read_entry
from pushgate.broker.redis_subscriber import (
    CONNECT_TIMEOUT,
    SUBSCRIBE_TIMEOUT,
    Subscriber,
)
from pushgate.errors import BrokerUnavailable
from pushgate.streams import History, Position, Publication, history_after, new_epoch

log = logging.getLogger("pushgate.broker")

# Connections to Redis per node (the subscriber's included), and how long a command
# may wait for a free one before it fails (503, or 1013 for a resume).
MAX_CONNECTIONS = 32
POOL_TIMEOUT = 10.0
CONTROL_MARK = b"!"  # starts a control message on a channel; a push starts with a digit
# How much longer than any session may stay away (and than its pushes live) a
# stream's metadata is kept after its last publish or read; each node refreshes the
# metadata of the streams it follows three times within it (see redis_streams.py).
POSITION_MARGIN = 600.0


class RedisBroker:
    """A Broker on one Redis server's pub/sub. See the module docstring."""

    # How a push reaches subscribers; the cluster broker's is sharded.
    publish_command = "PUBLISH"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        node_id: str,
        history_size: int = 100,
        history_ttl: float = 300.0,
        session_ttl: float = 60.0,
        position_margin: float = POSITION_MARGIN,
        probe_interval: float = 1.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.node_id = node_id
        self.history_size = history_size
        self._history_ttl_ms = max(1, int(history_ttl * 1000))
        self._meta_ttl_ms = int((max(history_ttl, session_ttl) + position_margin) * 1000)
        self._meta_refresh_interval = position_margin / 3
        self._refresher: asyncio.Task[None] | None = None
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self.client = self._make_client()
        self._handler: BrokerHandler | None = None
        self._topics: dict[str, Subscriber] = {}  # wanted topic -> its subscriber
        self._subscribers: dict[str, Subscriber] = {}  # by the server it talks to
        self._batch = ScriptBatcher(self.client)
        self._publish_script = self.client.register_script(PUBLISH)
        self._history_script = self.client.register_script(HISTORY)

    def _make_client(self) -> Any:
        # A bounded pool: a burst of work (thousands of resumes at once) waits for one
        # of its connections instead of opening a Redis connection per command.
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0, (RedisError,)),
        )
        return Redis.from_pool(pool)

    # Where a topic lives; the cluster broker overrides these.

    def channel(self, topic: str) -> str:
        return self.prefix + topic

    def _topic_of(self, channel: str) -> str:
        return channel[len(self.prefix) :]

    async def _subscriber_for(self, channel: str) -> Subscriber:
        if not self._subscribers:
            self._subscribers[""] = self._new_subscriber(
                self.client, "", f"{self.prefix}probe:{self.node_id}"
            )
        return self._subscribers[""]

    def _new_subscriber(self, client: Redis, name: str, probe_channel: str) -> Subscriber:
        subscriber = Subscriber(
            client,
            where=name or self._where,
            probe_channel=probe_channel,
            on_message=self._on_channel_message,
            on_rebuilt=self._on_rebuilt,
            on_cut=self._on_cut,
            probe_interval=self._probe_interval,
            probe_timeout=self._probe_timeout,
            **self._subscriber_options(name),
        )
        if self._handler is not None:
            subscriber.start()
        return subscriber

    def _subscriber_options(self, name: str) -> dict[str, Any]:
        return {}

    # Broker

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        await self._subscriber_for("")  # from now on the probes say whether Redis is alive
        for subscriber in self._subscribers.values():
            subscriber.start()
        self._start_refresher()

    async def publish(self, topic: str, payload: bytes) -> int | None:
        return await self._publish(topic, CONTROL_MARK + payload)

    async def _publish(self, topic: str, data: bytes) -> int | None:
        try:
            await self.client.execute_command(self.publish_command, self.channel(topic), data)
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"cannot publish to Redis at {self._where}: {exc}") from None
        return None  # Redis knows how many nodes received it, not how many connections

    async def publish_push(self, topic: str, message: bytes) -> int | None:
        accepted = b"%.6f" % time.time()
        if self.history_size <= 0:
            return await self._publish(topic, b"0 - " + accepted + b" " + message)
        try:
            await run_script(
                self._publish_script,
                self._stream_keys(topic),
                [
                    new_epoch(),
                    self._meta_ttl_ms,
                    message,
                    self.channel(topic),
                    self.history_size,
                    self._history_ttl_ms,
                    accepted,
                    self.publish_command,
                ],
            )
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"cannot publish to Redis at {self._where}: {exc}") from None
        return None

    async def history(self, topic: str, since: Position | None) -> History:
        return (await self.histories({topic: since}))[topic]

    async def histories(self, since: Mapping[str, Position | None]) -> dict[str, History]:
        # Every read is queued before the first is awaited: they go in one pipeline.
        reads = {topic: self._read_history(topic, start) for topic, start in since.items()}
        # Shielded: a read may be shared with other resumes, which go on if this one stops.
        answers = await asyncio.gather(*map(asyncio.shield, reads.values()), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, REDIS_ERRORS):
                raise BrokerUnavailable(
                    f"cannot read history from Redis at {self._where}: {answer}"
                )
            if isinstance(answer, BaseException):
                raise answer
        return dict(zip(reads, answers, strict=True))  # type: ignore[arg-type]

    def _read_history(self, topic: str, since: Position | None) -> "asyncio.Future[History]":
        since_args: list[str | int] = ["", -1] if since is None else [since.epoch, since.seq]

        def parse(reply: Any) -> History:
            epoch_b, seq, entries = reply
            epoch = bytes(epoch_b).decode()
            kept = tuple(read_entry(bytes(entry), epoch) for entry in entries)
            return history_after(Position(epoch, int(seq)), kept, since)

        return self._batch.call(
            self._history_script,
            self._stream_keys(topic),
            [new_epoch(), self._meta_ttl_ms, *since_args, self._history_ttl_ms],
            share=(topic, since),  # a storm of resumes asks the same, in the same turn
            parse=parse,
        )

    def _stream_keys(self, topic: str) -> list[str]:
        # The hash tag keeps a stream's keys in one slot of a Redis Cluster.
        return [f"{self.prefix}meta:{{{topic}}}", f"{self.prefix}hist:{{{topic}}}"]

    def _start_refresher(self) -> None:
        if self.history_size > 0 and self._refresher is None:
            self._refresher = asyncio.ensure_future(self._refresh_followed())

    async def _stop_refresher(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    async def _refresh_followed(self) -> None:
        """Every third of POSITION_MARGIN, give the metadata of every stream this node
        follows its whole lifetime again: a session that followed it here may resume
        up to ``session_ttl`` after this node last refreshed it, or left it."""
        while True:
            await asyncio.sleep(self._meta_refresh_interval)
            keys = [self._stream_keys(topic)[0] for topic in self._topics]
            for start in range(0, len(keys), MAX_BATCH):
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for key in keys[start : start + MAX_BATCH]:
                            pipe.pexpire(key, self._meta_ttl_ms)  # never makes a key
                        await pipe.execute()
                except REDIS_ERRORS as exc:  # again next time; the margin allows it twice
                    log.debug("cannot refresh stream metadata in Redis at %s: %s", self._where, exc)
                    break

    async def subscribe(self, topic: str) -> None:
        channel = self.channel(topic)
        try:
            subscriber = await self._subscriber_for(channel)
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"cannot reach Redis at {self._where}: {exc}") from None
        previous = self._topics.get(topic)
        if previous is not None and previous is not subscriber:
            await previous.unsubscribe(channel)
        self._topics[topic] = subscriber
        try:
            await subscriber.subscribe(channel)
        except TimeoutError:
            raise BrokerUnavailable(
                f"Redis at {subscriber.where} did not confirm a subscription within "
                f"{SUBSCRIBE_TIMEOUT:g} s"
            ) from None
        except MovedError as exc:  # the slot map was stale: its new master will do
            raise BrokerUnavailable(f"Redis at {subscriber.where}: {topic} moved ({exc})") from None

    async def unsubscribe(self, topic: str) -> None:
        subscriber = self._topics.pop(topic, None)
        if subscriber is not None:
            await subscriber.unsubscribe(self.channel(topic))

    async def close(self) -> None:
        await self._stop_refresher()
        for subscriber in self._subscribers.values():
            await subscriber.close()
        await self._batch.close()
        await self.client.aclose()

    async def sync(self, topics: Iterable[str] | None = None) -> None:
        """Return once everything published before this call, on topics this node is
        subscribed to (of ``topics``, when given), has been handed to the handler: a
        marker sent through each subscription that carries them has come back (on a
        Redis Cluster, a master that is down fails only the syncs of its topics).
        Raises BrokerUnavailable when it cannot."""
        chosen = self._topics if topics is None else set(topics) & self._topics.keys()
        needed = {id(self._topics[t]): self._topics[t] for t in chosen} or {
            id(s): s for s in self._subscribers.values()
        }
        results = await asyncio.gather(*(s.sync() for s in needed.values()), return_exceptions=True)
        for subscriber, result in zip(needed.values(), results, strict=True):
            if isinstance(result, (*REDIS_ERRORS, TimeoutError)):
                raise BrokerUnavailable(f"Redis at {subscriber.where}: no sync: {result}")
            if isinstance(result, BaseException):
                raise result

    @property
    def running(self) -> bool:
        """Started and not closed."""
        return any(s.running for s in self._subscribers.values())

    @property
    def answers_at_once(self) -> bool:
        return False  # a Redis round trip, under redis-py's timeouts (a task's)

    @property
    def keeps_history(self) -> bool:
        return self.history_size > 0

    @property
    def ready(self) -> bool:
        """Connected, every wanted topic confirmed, and our probes coming back (on every
        server that carries a wanted topic)."""
        return bool(self._subscribers) and all(s.ready for s in self._subscribers.values())

    @property
    def reconnects(self) -> int:
        """Subscriptions rebuilt after Redis came back (for /metrics)."""
        return sum(s.reconnects for s in self._subscribers.values())

    # Delivery

    def _on_rebuilt(self) -> None:
        if self._handler is not None:
            self._handler.on_reconnected()

    def _on_cut(self, channels: dict[str, bool]) -> None:
        if self._handler is not None:
            self._handler.on_interrupted(
                {self._topic_of(channel): closed for channel, closed in channels.items()}
            )

    def _on_channel_message(self, channel: str, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        topic = self._topic_of(channel)
        if data[:1] == CONTROL_MARK:
            handler.on_message(topic, data[1:])
            return
        seq, epoch, message = data.split(b" ", 2)
        accepted = 0.0
        if message[:1] != b"{":  # "<accepted> <message>"; a node before 0.3 sends no time
            stamp, message = message.split(b" ", 1)
            accepted = float(stamp)
        if epoch == b"-":
            handler.on_publication(topic, Publication(0, "", message, accepted))
        else:
            handler.on_publication(topic, Publication(int(seq), epoch.decode(), message, accepted))

    @property
    def _where(self) -> str:
        return self.url.rsplit("@", 1)[-1]  # never log a password


if TYPE_CHECKING:
    _: type[Broker] = RedisBroker
