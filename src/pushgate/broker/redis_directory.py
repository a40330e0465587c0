"""The cluster's directory in Redis: which live node holds which wsId.

Keys (all under the configurable prefix)::

    nodes                 SET of node ids that have announced themselves
    node:<id>:alive       "1", expires after the node TTL unless refreshed
    node:<id>:conns       SET of the wsIds that node holds; expires with it

A node refreshes both expiries every third of the TTL, so the keys of a node that
dies without a word (SIGKILL, power loss) vanish within one TTL and its wsIds stop
resolving. If Redis lost our keys (a restart without persistence), the next refresh
notices the alive key was gone and writes the whole local set again, and says so
(``verify``, ``watch``): the node's sessions were lost with them, and are written
back too (restore.py).
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from itertools import islice
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from pushgate.broker.redis_batch import run_script
from pushgate.broker.redis_errors import REDIS_ERRORS
from pushgate.directory import Directory
from pushgate.errors import BrokerUnavailable
from pushgate.ids import ConnId

log = logging.getLogger("pushgate.directory")

CHUNK = 1000
RETRY_DELAY = 0.1
MAX_RETRY_DELAY = 1.0

# Find the live node holding ARGV[2]; forget dead nodes on the way.
_LOCATE = """
local nodes = redis.call('SMEMBERS', KEYS[1])
for _, n in ipairs(nodes) do
  if redis.call('EXISTS', ARGV[1] .. 'node:' .. n .. ':alive') == 1 then
    if redis.call('SISMEMBER', ARGV[1] .. 'node:' .. n .. ':conns', ARGV[2]) == 1 then
      return n
    end
  else
    redis.call('SREM', KEYS[1], n)
  end
end
return false
"""

# The freshly written set takes the old one's place at once, with its expiry.
_SWAP = """
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""

# The live nodes; forget dead ones on the way.
_NODES = """
local live = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'node:' .. n .. ':alive') == 1 then
    table.insert(live, n)
  else
    redis.call('SREM', KEYS[1], n)
  end
end
return live
"""


class RedisDirectory:
    """A Directory kept in Redis; writes are batched once per turn of the loop."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        ttl: float,
        local_conns: Callable[[], Iterable[ConnId]],
        transactions: bool = True,
    ) -> None:
        self._client = client
        # MULTI/EXEC keeps a rewrite of our set from being seen half done. redis-py runs
        # a Redis Cluster transaction on a thread and event loop of its own per command
        # (about half of a gateway's CPU while clients connect), so on a cluster the writes
        # are plain pipelines: still in order, on one connection.
        self._transactions = transactions
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl * 1000))
        self._refresh_every = ttl / 3
        self._local_conns = local_conns
        self._locate = client.register_script(_LOCATE)
        self._swap = client.register_script(_SWAP)
        self._nodes = client.register_script(_NODES)
        self._node_id = ""
        self._adds: set[ConnId] = set()
        self._removes: set[ConnId] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._verifies: list[asyncio.Future[bool]] = []
        self._on_lost: Callable[[], None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self, node_id: str) -> None:
        self._node_id = node_id
        self._task = asyncio.create_task(self._run(), name="pushgate-directory")

    def add(self, conn: ConnId) -> "asyncio.Future[None] | None":
        self._removes.discard(conn)
        self._adds.add(conn)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return waiter

    def discard(self, conn: ConnId) -> None:
        self._adds.discard(conn)
        self._removes.add(conn)
        self._wake.set()

    async def locate(self, conn: ConnId) -> str | None:
        try:
            node = await run_script(self._locate, [self._prefix + "nodes"], [self._prefix, conn])
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"cannot look up wsId {conn} in Redis: {exc}") from None
        return None if node is None else bytes(node).decode()

    async def nodes(self) -> list[str]:
        try:
            nodes = await run_script(self._nodes, [self._prefix + "nodes"], [self._prefix])
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"cannot list the cluster's nodes in Redis: {exc}") from None
        return sorted(bytes(node).decode() for node in nodes)

    async def verify(self) -> bool:
        verified: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._verifies.append(verified)
        self._wake.set()
        return await verified

    def watch(self, lost: Callable[[], None]) -> None:
        self._on_lost = lost

    async def close(self) -> None:
        # Cancelled again until it ends: on Python 3.11 a cancel that lands as its
        # wait_for times out can be lost; the loop also looks at _closing.
        self._closing = True
        task = self._task
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("the directory's writer ended with %r", task.exception())
        with contextlib.suppress(*REDIS_ERRORS):
            async with self._client.pipeline(transaction=self._transactions) as pipe:
                pipe.srem(self._prefix + "nodes", self._node_id)
                pipe.delete(self._key("alive"), self._key("conns"))
                await pipe.execute()
        for waiter in self._waiters:
            waiter.cancel()
        for verified in self._verifies:
            verified.cancel()

    # The writer task

    async def _run(self) -> None:
        full_sync = True
        announced = False  # the first write finds nothing of ours, and lost nothing
        lost = False  # our keys were found gone, and nobody was told yet
        failing = False
        delay = RETRY_DELAY
        while not self._closing:
            # Cleared before the snapshot, so a change made during the write wakes us.
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            verifies, self._verifies = self._verifies, []
            try:
                if full_sync:
                    found = await self._write_all()
                    full_sync = False
                else:
                    found = await self._write_changes()
                    full_sync = not found
            except Exception as exc:
                if not failing:  # once per outage, not every retry
                    log.warning("cannot update the directory in Redis: %s; retrying", exc)
                failing, full_sync = True, True
                self._waiters[:0] = waiters
                self._verifies[:0] = verifies
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            lost = lost or (announced and not found)
            announced = True
            if failing:
                log.info("the directory in Redis is up to date again")
            failing, delay = False, RETRY_DELAY
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if full_sync:
                log.info("node %s was missing from Redis; announcing it again", self._node_id)
                self._verifies[:0] = verifies  # answered once the set is written again
                continue
            self._tell(verifies, lost)
            lost = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._refresh_every)

    def _tell(self, verifies: list["asyncio.Future[bool]"], lost: bool) -> None:
        """Answer the verifies waiting, or, if none asked, tell the watcher of a loss."""
        for verified in verifies:
            if not verified.done():
                verified.set_result(lost)
        if lost and not verifies and self._on_lost is not None:
            self._on_lost()

    async def _write_all(self) -> bool:
        """Replace this node's entries with every connection it holds now; False if
        our keys were gone."""
        self._adds.clear()
        self._removes.clear()
        conns = iter(list(self._local_conns()))
        # Written beside, then renamed over the old set: the swap is one command, so a
        # locate never finds the set emptied and half refilled (a Redis Cluster runs
        # the pipeline without MULTI; both keys share the prefix's slot).
        writing = self._key("conns-writing")
        async with self._client.pipeline(transaction=self._transactions) as pipe:
            pipe.set(self._key("alive"), b"1", px=self._ttl_ms, get=True)
            pipe.delete(writing)
            filled = False
            while chunk := list(islice(conns, CHUNK)):
                pipe.sadd(writing, *chunk)
                filled = True
            if filled:  # a node that dies before the swap leaves nothing forever
                pipe.pexpire(writing, self._ttl_ms)
            else:
                pipe.delete(self._key("conns"))
            self._refresh(pipe)
            results = await pipe.execute()
        if filled:  # redis-py refuses RENAME in a cluster pipeline: a script swaps
            keys = [writing, self._key("conns")]
            await self._swap(keys=keys, args=[self._ttl_ms])
        return results[0] is not None

    async def _write_changes(self) -> bool:
        """Write adds and removes and refresh the expiries; False if our keys were gone."""
        adds, self._adds = self._adds, set()
        removes, self._removes = self._removes, set()
        async with self._client.pipeline(transaction=self._transactions) as pipe:
            pipe.set(self._key("alive"), b"1", px=self._ttl_ms, get=True)
            for chunk in _chunks(adds):
                pipe.sadd(self._key("conns"), *chunk)
            for chunk in _chunks(removes):
                pipe.srem(self._key("conns"), *chunk)
            self._refresh(pipe)
            results = await pipe.execute()
        return results[0] is not None

    def _refresh(self, pipe: "Redis") -> None:
        pipe.set(self._key("alive"), b"1", px=self._ttl_ms)
        pipe.pexpire(self._key("conns"), self._ttl_ms)
        pipe.sadd(self._prefix + "nodes", self._node_id)

    def _key(self, name: str) -> str:
        return f"{self._prefix}node:{self._node_id}:{name}"


def _chunks(items: set[ConnId]) -> Iterable[list[ConnId]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, CHUNK)):
        yield chunk


if TYPE_CHECKING:
    _: type[Directory] = RedisDirectory
