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

After every rebuild the handler's ``on_reconnected`` is called: what was published
meanwhile never arrived, and the node reads it from history.

Streams and history
-------------------

A push is published by one Lua script (:data:`_PUBLISH`) that, atomically, takes the
stream's next ``seq`` from its metadata hash (``<prefix>meta:{<topic>}``: epoch ``e``
and last seq ``s``, a new epoch when the hash is gone), splices the position into
the message, appends it to the stream's history (the Redis stream
``<prefix>history:{<topic>}``, entry ids ``<seq>-0``, capped at ``history_size``,
expiring ``history_ttl`` after the last push) and publishes it. So a push is in
history if and only if it was published. On the channel a push travels as
``b"<seq> <epoch> " + message`` (``b"0 - " + message`` with history off, when nothing
is kept); a control message as ``b"!" + payload``: the first byte tells them apart.
"""

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from pushgate.broker.base import Broker, BrokerHandler
from pushgate.broker.redis_batch import ScriptBatcher
from pushgate.errors import BrokerUnavailable
from pushgate.streams import History, Position, Publication, history_after, new_epoch

log = logging.getLogger("pushgate.broker")

MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0
CONNECT_TIMEOUT = 1.0
SUBSCRIBE_TIMEOUT = 2.0
# Connections to Redis per node (the subscriber's included), and how long a command
# may wait for a free one before it fails (503, or 1013 for a resume).
MAX_CONNECTIONS = 32
POOL_TIMEOUT = 10.0
CONTROL_MARK = b"!"  # starts a control message on a channel; a push starts with a digit
# An idle stream's position is kept this long (forgetting it changes its epoch).
META_TTL_MS = 24 * 3600 * 1000

# Take a stream's metadata (KEYS[1]), making it in epoch ARGV[1] if it is gone (a
# stream never used, idle past META_TTL, or a Redis that restarted empty): then any
# history left over (KEYS[2]) is of a lost epoch, and goes.
_ENSURE_META = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# Publish ARGV[3] on channel ARGV[4] at the stream's next position, kept in history
# (ARGV[5] entries at most, for ARGV[6] ms); ARGV[7] is when it was accepted (wall
# clock, for the delivery-latency metric). Returns {seq, epoch}.
_PUBLISH = (
    _ENSURE_META
    + """
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
local msg = ARGV[3]
local data = string.sub(msg, 1, -3) .. ',"seq":' .. seq .. ',"epoch":"' .. epoch .. '"}\\n'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], seq .. '-0', 'd', data)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[4], seq .. ' ' .. epoch .. ' ' .. ARGV[7] .. ' ' .. data)
return {seq, epoch}
"""
)

# The stream's position, and its history after seq ARGV[4] if ARGV[3] is its epoch
# (all of it otherwise; ARGV[4] = -1: none). Returns {epoch, seq, {id, {'d', data}}...}.
_HISTORY = (
    _ENSURE_META
    + """
local seq = tonumber(redis.call('HGET', KEYS[1], 's'))
local since = tonumber(ARGV[4])
local entries = {}
if since >= 0 and (ARGV[3] ~= epoch or since < seq) then
  local start = '-'
  if ARGV[3] == epoch then start = (since + 1) .. '-0' end
  entries = redis.call('XRANGE', KEYS[2], start, '+')
end
return {epoch, seq, entries}
"""
)


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
        history_size: int = 100,
        history_ttl: float = 300.0,
        probe_interval: float = 1.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.history_size = history_size
        self._history_ttl_ms = max(1, int(history_ttl * 1000))
        self._probe_channel = f"{prefix}probe:{node_id}"
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        # A bounded pool: a burst of work (thousands of resumes at once) waits for one
        # of its connections instead of opening a Redis connection per command.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0, (RedisError,)),
        )
        self.client: Redis = Redis.from_pool(pool)
        self._handler: BrokerHandler | None = None
        self._topics: set[str] = set()  # wanted, by topic (without prefix)
        self._confirmed: set[str] = set()  # channels Redis confirmed on this connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._probe_seen = 0.0
        self._syncs: dict[bytes, asyncio.Future[None]] = {}
        self._next_sync: asyncio.Future[None] | None = None
        self._sync_sends: set[asyncio.Task[None]] = set()
        self._batch = ScriptBatcher(self.client)
        self._publish_script = self.client.register_script(_PUBLISH)
        self.reconnects = 0  # subscriptions rebuilt after Redis came back (for /metrics)
        self._history_script = self.client.register_script(_HISTORY)

    # Broker

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self._reader = asyncio.create_task(self._run(), name="pushgate-redis-subscriber")

    async def publish(self, topic: str, payload: bytes) -> int | None:
        return await self._publish(topic, CONTROL_MARK + payload)

    async def _publish(self, topic: str, data: bytes) -> int | None:
        try:
            await self.client.publish(self.prefix + topic, data)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot publish to Redis at {self._where}: {exc}") from None
        return None  # Redis knows how many nodes received it, not how many connections

    async def publish_push(self, topic: str, message: bytes) -> int | None:
        accepted = b"%.6f" % time.time()
        if self.history_size <= 0:
            return await self._publish(topic, b"0 - " + accepted + b" " + message)
        try:
            await self._publish_script(
                keys=self._stream_keys(topic),
                args=[
                    new_epoch(),
                    META_TTL_MS,
                    message,
                    self.prefix + topic,
                    self.history_size,
                    self._history_ttl_ms,
                    accepted,
                ],
            )
        except (RedisError, OSError) as exc:
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
            if isinstance(answer, RedisError | OSError):
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
            kept = tuple(
                Publication(int(bytes(entry_id).split(b"-")[0]), epoch, bytes(fields[1]))
                for entry_id, fields in entries
            )
            return history_after(Position(epoch, int(seq)), kept, since)

        return self._batch.call(
            self._history_script,
            self._stream_keys(topic),
            [new_epoch(), META_TTL_MS, *since_args],
            share=(topic, since),  # a storm of resumes asks the same, in the same turn
            parse=parse,
        )

    def _stream_keys(self, topic: str) -> list[str]:
        # The hash tag keeps a stream's keys in one slot of a Redis Cluster.
        return [f"{self.prefix}meta:{{{topic}}}", f"{self.prefix}history:{{{topic}}}"]

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
        for task in self._sync_sends:
            task.cancel()
        await self._batch.close()
        await self.client.aclose()

    async def sync(self) -> None:
        """Return once everything published before this call, on topics this node is
        subscribed to, has been handed to the handler (a marker sent through our own
        subscription has come back). Raises BrokerUnavailable when it cannot.

        The calls of one turn of the loop share one marker, sent at the end of it:
        after every one of them, which is all each needs.
        """
        if self._next_sync is None:
            self._next_sync = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._send_sync)
        try:
            await asyncio.wait_for(asyncio.shield(self._next_sync), SUBSCRIBE_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"Redis at {self._where}: no sync: {exc}") from None

    def _send_sync(self) -> None:
        waiter, self._next_sync = self._next_sync, None
        assert waiter is not None
        token = os.urandom(8).hex().encode()
        self._syncs[token] = waiter
        task = asyncio.ensure_future(self._publish_sync(token, waiter))
        self._sync_sends.add(task)
        task.add_done_callback(self._sync_sends.discard)

    async def _publish_sync(self, token: bytes, waiter: "asyncio.Future[None]") -> None:
        try:
            await self.client.publish(self._probe_channel, token)
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            if not waiter.done():
                waiter.set_exception(exc)
        finally:
            self._syncs.pop(token, None)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: its waiters may all have gone

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
                    self.reconnects += 1
                    if self._handler is not None:
                        self._handler.on_reconnected()
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
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis 8
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
                    self._deliver(channel[len(self.prefix) :], message["data"])
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

    def _deliver(self, topic: str, data: bytes) -> None:
        handler = self._handler
        assert handler is not None
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

    def _deaf(self) -> bool:
        return asyncio.get_running_loop().time() - self._probe_seen > self._probe_timeout

    @property
    def _where(self) -> str:
        return self.url.rsplit("@", 1)[-1]  # never log a password


if TYPE_CHECKING:
    _: type[Broker] = RedisBroker
