"""One pub/sub connection to one Redis server, kept subscribed whatever happens.

The Redis broker has one :class:`Subscriber` (classic pub/sub, ``SUBSCRIBE``); the
Redis Cluster broker has one per master it needs (sharded pub/sub, ``SSUBSCRIBE``, on
the master that owns each channel's slot).

A task owns the connection. It subscribes to every wanted channel, then reads
messages and hands each to ``on_message``. Three things can go wrong, and each is
handled by the same recovery (drop the connection, reconnect with jittered backoff of
at most ``MAX_BACKOFF``, subscribe to every wanted channel again):

- Redis is unreachable: :attr:`Subscriber.ready` is false.
- The connection breaks: the reader sees the error.
- The subscription dies silently (the connection looks alive but no message comes;
  python-socketio's "deaf worker"): every ``probe_interval`` the subscriber publishes
  a probe on its own probe channel; if none has come back within ``probe_timeout``,
  the subscription is declared deaf and rebuilt.

When the connection fails, ``on_cut`` is told which channels it carried, and for
each whether it was closed under a confirmed, delivering subscription (an end of
file or a reset while the probes came back: every message written on it was read
first) or not (silence, a timeout, anything else); and told again, not closed, if
an attempt to reconnect then fails otherwise than refused (the server may be up,
publishing what the node cannot see). After every rebuild
``on_rebuilt`` is called: what was published meanwhile never arrived, and the node
reads it from history. Before each attempt to reconnect, ``on_failure`` is awaited:
the cluster broker uses it to move channels whose slot now belongs to another
master.
"""

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushgate.broker.redis_errors import REDIS_ERRORS

log = logging.getLogger("pushgate.broker")

MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0
CONNECT_TIMEOUT = 1.0
SUBSCRIBE_TIMEOUT = 2.0
CLOSE_WAIT = 0.5  # seconds between cancels of a closing reader


class DeafSubscription(Exception):
    """Our own probes stopped coming back: the subscription is not delivering."""


class ConnectionEnded(Exception):
    """The connection ended under the reader (an end of file or a reset): every
    message the server had written on it was read before."""


# What makes a sync fail, and what makes the reader start over.
_SYNC_FAILS_ON: tuple[type[Exception], ...] = (*REDIS_ERRORS, TimeoutError)
_RESUBSCRIBE_ON: tuple[type[Exception], ...] = (
    *_SYNC_FAILS_ON,
    DeafSubscription,
    ConnectionEnded,
)
# What a read raises when the connection ends: redis-py's error, or the socket's.
_ENDED_ON: tuple[type[Exception], ...] = (RedisConnectionError, ConnectionError)


def _ended(exc: BaseException) -> bool:
    """Whether a read failed because the connection ended, not because it went
    silent. redis-py tries to reconnect after a failed read and, if that fails too,
    raises the attempt's error, with the read's own as its context: none of them
    may be a timeout."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (RedisTimeoutError, TimeoutError)):
            return False
        seen = seen.__context__
    return isinstance(exc, _ENDED_ON)


def _refused(exc: BaseException) -> bool:
    """Whether an attempt to connect was refused (nothing listens there: the server
    is down), as its error or one it was raised from says."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _nothing() -> None:
    return None


class Subscriber:
    """Keeps one pub/sub connection subscribed to the wanted channels.

    ``sharded`` uses SSUBSCRIBE and SPUBLISH (Redis ≥ 7; every channel, the probe
    channel included, must hash to a slot of the server ``client`` talks to). When
    the server answers that a slot moved (``MOVED``: a resharding or a failover), its
    channels are handed to ``on_lost`` and the connection goes on with the others;
    if the probe channel was there, the probe moves to the hash tag of a channel
    still here (``<probe_prefix>{<tag>}``).
    """

    def __init__(
        self,
        client: Redis,
        *,
        where: str,
        probe_channel: str,
        on_message: Callable[[str, bytes], None],
        on_rebuilt: Callable[[], None],
        on_cut: Callable[[dict[str, bool]], None] = lambda channels: None,
        on_failure: Callable[[], Awaitable[None]] = _nothing,
        on_lost: Callable[[str], None] = lambda channel: None,
        sharded: bool = False,
        probe_prefix: str = "",
        probe_interval: float = 1.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self.client = client
        self.where = where
        self.probe_channel = probe_channel
        self._on_message = on_message
        self._on_rebuilt = on_rebuilt
        self._on_cut = on_cut
        self._on_failure = on_failure
        self._on_lost = on_lost
        self._sharded = sharded
        self._probe_prefix = probe_prefix
        self._kind = "smessage" if sharded else "message"
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self.channels: set[str] = set()  # wanted
        self._confirmed: set[str] = set()  # confirmed by Redis on this connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._probe_seen = 0.0
        self._syncs: dict[bytes, asyncio.Future[None]] = {}
        self._next_sync: asyncio.Future[None] | None = None
        self._sync_sends: set[asyncio.Task[None]] = set()
        self.reconnects = 0  # subscriptions rebuilt after Redis came back (for /metrics)
        self._closing = False

    def start(self) -> None:
        if self._reader is not None:
            return
        self._reader = asyncio.create_task(self._run(), name=f"pushgate-redis-sub-{self.where}")

    async def close(self) -> None:
        # Cancelled again until it ends, and its loops look at _closing: on Python 3.11
        # a cancel that lands as a wait_for (the subscribe, the probe) or redis-py's
        # own read timeout expires can come out as that timeout, which the reader
        # takes for a lost Redis and reconnects: the task would never end.
        self._closing = True
        task = self._reader
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=CLOSE_WAIT)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("Redis subscriber for %s ended with %r", self.where, task.exception())
        for task in self._sync_sends:
            task.cancel()

    @property
    def running(self) -> bool:
        """Started and not closed."""
        return self._reader is not None and not self._reader.done()

    @property
    def ready(self) -> bool:
        """Connected, every wanted channel confirmed, and our probes coming back."""
        wanted = self.channels | {self.probe_channel}
        return self._pubsub is not None and wanted <= self._confirmed and not self._deaf()

    async def subscribe(self, channel: str) -> None:
        """Want ``channel``; return once Redis confirmed it (BrokerUnavailable-worthy
        TimeoutError after ``SUBSCRIBE_TIMEOUT``: the caller words the error)."""
        self.channels.add(channel)
        if channel in self._confirmed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        if self._pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._send_subscribe(self._pubsub, [channel])  # confirmed by the reader
        try:
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            waiter.cancel()
            waiters = self._waiters.get(channel, [])
            if waiter in waiters:
                waiters.remove(waiter)
            raise

    async def unsubscribe(self, channel: str) -> None:
        """Stop wanting ``channel``."""
        self.channels.discard(channel)
        self._confirmed.discard(channel)
        if self._pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._send_unsubscribe(self._pubsub, [channel])

    async def sync(self) -> None:
        """Return once everything published before this call on our channels has been
        handed to ``on_message`` (a marker sent through our own subscription has come
        back). Raises one of REDIS_ERRORS, or TimeoutError, when it cannot.

        The calls of one turn of the loop share one marker, sent at the end of it:
        after every one of them, which is all each needs.
        """
        if self._next_sync is None:
            self._next_sync = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._send_sync)
        await asyncio.wait_for(asyncio.shield(self._next_sync), SUBSCRIBE_TIMEOUT)

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
            await self._publish_probe(token)
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT)
        except _SYNC_FAILS_ON as exc:
            if not waiter.done():
                waiter.set_exception(exc)
        finally:
            self._syncs.pop(token, None)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: its waiters may all have gone

    # The commands that differ between classic and sharded pub/sub

    async def _publish_probe(self, data: bytes) -> None:
        if self._sharded:
            await self.client.spublish(self.probe_channel, data)
        else:
            await self.client.publish(self.probe_channel, data)

    async def _send_subscribe(self, pubsub: PubSub, channels: list[str]) -> None:
        if self._sharded:
            for same_slot in _by_slot(channels):  # SSUBSCRIBE takes one slot's channels
                await pubsub.ssubscribe(*same_slot)
        else:
            await pubsub.subscribe(*channels)

    async def _send_unsubscribe(self, pubsub: PubSub, channels: list[str]) -> None:
        if self._sharded:
            for same_slot in _by_slot(channels):
                await pubsub.sunsubscribe(*same_slot)
        else:
            await pubsub.unsubscribe(*channels)

    # The reader task

    async def _run(self) -> None:
        backoff = MIN_BACKOFF
        failing_since: float | None = None
        closed = False  # the outage began with the connection closed, and nothing since answered
        loop = asyncio.get_running_loop()
        while not self._closing:
            pubsub = self.client.pubsub()
            try:
                channels = {self.probe_channel, *self.channels}
                await asyncio.wait_for(
                    self._send_subscribe(pubsub, sorted(channels)), CONNECT_TIMEOUT * 2
                )
                self._probe_seen = loop.time()
                self._pubsub = pubsub
                # Channels wanted, or dropped, while that subscription was in flight.
                wanted = self.channels | {self.probe_channel}
                if wanted - channels:
                    await self._send_subscribe(pubsub, sorted(wanted - channels))
                if channels - wanted:
                    await self._send_unsubscribe(pubsub, sorted(channels - wanted))
                if failing_since is not None:
                    log.info(
                        "Redis at %s is back after %.1f s; resubscribed to %d topics",
                        self.where,
                        loop.time() - failing_since,
                        len(self.channels),
                    )
                    self.reconnects += 1
                    self._on_rebuilt()
                failing_since = None
                await self._read(pubsub)
            except _RESUBSCRIBE_ON as exc:
                if failing_since is None:
                    failing_since = loop.time()
                    backoff = MIN_BACKOFF
                    log.warning(
                        "Redis at %s: %s; reconnecting", self.where, exc or type(exc).__name__
                    )
                    closed = isinstance(exc, ConnectionEnded) and not self._deaf()
                    self._cut(closed=closed)
                elif closed and not _refused(exc):
                    # Something answered, or nothing did in time: Redis may be up and
                    # publishing what this node cannot see. The cut was not its end.
                    closed = False
                    self._cut(closed=False)
            except Exception:
                # A bug must not end the subscriber for good: say so, and start over.
                log.exception("Redis subscriber for %s failed; reconnecting", self.where)
                if failing_since is None or closed:
                    failing_since = failing_since or loop.time()
                    closed = False
                    self._cut(closed=False)
            finally:
                self._pubsub = None
                self._confirmed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis 8
            if self._closing:
                return
            try:
                await self._on_failure()
            except Exception:
                log.exception("Redis subscriber for %s: re-routing failed", self.where)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _read(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        next_probe = loop.time()
        while not self._closing:
            now = loop.time()
            if now >= next_probe:
                next_probe = now + self._probe_interval
                if self._deaf():
                    raise DeafSubscription(f"no probe came back for {now - self._probe_seen:.1f} s")
                # Bounded: on a frozen connection the publish itself may never return.
                try:
                    await asyncio.wait_for(self._publish_probe(b""), self._probe_timeout)
                except MovedError as moved:
                    await self._slot_moved(pubsub, moved)
            try:
                message = await pubsub.get_message(timeout=max(0.0, next_probe - loop.time()))
            except MovedError as moved:  # an SSUBSCRIBE refused: the slot is elsewhere now
                await self._slot_moved(pubsub, moved)
                continue
            except _ENDED_ON as exc:
                if _ended(exc):  # read up to its end: nothing written on it was lost
                    raise ConnectionEnded(str(exc) or type(exc).__name__) from exc
                raise
            if message is not None:
                self._on_redis_message(message)

    async def _slot_moved(self, pubsub: PubSub, moved: MovedError) -> None:
        """Give up the channels of the slot that moved (``on_lost``), and move the
        probe off it."""
        if not self._sharded:
            raise moved  # not a cluster: nothing here moves; start over
        slot = moved.slot_id
        for channel in [c for c in self.channels if key_slot(c.encode()) == slot]:
            self.channels.discard(channel)
            self._confirmed.discard(channel)
            for waiter in self._waiters.pop(channel, ()):
                if not waiter.done():  # its subscribe() fails now, not at its timeout
                    waiter.set_exception(moved)
            self._on_lost(channel)
        if key_slot(self.probe_channel.encode()) == slot and self.channels:
            self._confirmed.discard(self.probe_channel)
            self.probe_channel = f"{self._probe_prefix}{{{hash_tag(min(self.channels))}}}"
            self._probe_seen = asyncio.get_running_loop().time()
            await self._send_subscribe(pubsub, [self.probe_channel])

    def _on_redis_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"].decode()
        if kind == self._kind:
            if channel == self.probe_channel:
                self._probe_seen = asyncio.get_running_loop().time()
                waiter = self._syncs.get(message["data"])
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                return
            try:
                self._on_message(channel, message["data"])
            except Exception:
                log.exception("dropped a message on %s that its handler could not take", channel)
        elif kind in ("subscribe", "ssubscribe"):
            self._confirmed.add(channel)
            if channel == self.probe_channel:
                self._probe_seen = asyncio.get_running_loop().time()
            for waiter in self._waiters.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind in ("unsubscribe", "sunsubscribe"):
            was_confirmed = channel in self._confirmed
            self._confirmed.discard(channel)
            if kind == "sunsubscribe" and was_confirmed and channel in self.channels:
                # Not asked for: Redis moved the channel's slot to another master.
                self.channels.discard(channel)
                self._on_lost(channel)

    def _cut(self, *, closed: bool) -> None:
        """Tell ``on_cut`` the channels the failed connection carried, each closed
        under it only if its subscription was confirmed (a channel whose subscribe
        Redis never answered may have missed what was published meanwhile)."""
        if self._closing or not self.channels:
            return
        confirmed = self._confirmed
        self._on_cut({channel: closed and channel in confirmed for channel in self.channels})

    def _deaf(self) -> bool:
        return asyncio.get_running_loop().time() - self._probe_seen > self._probe_timeout


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes of ``key``: the text in its first ``{…}``, if any."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key


def _by_slot(channels: list[str]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for channel in channels:
        groups.setdefault(key_slot(channel.encode()), []).append(channel)
    return list(groups.values())
