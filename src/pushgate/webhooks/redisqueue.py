"""The webhook queue of a cluster: the WebhookQueue contract (queue.py) in Redis.

Made from the node's :class:`~pushgate.broker.redis.RedisBroker` (or its Redis
Cluster subclass): its client, its key prefix, and its way with errors (any of
REDIS_ERRORS becomes :class:`~pushgate.errors.BrokerUnavailable`). Like the broker's
``redis_*`` modules, it is one of the few that import ``redis``.

The keys share the hash tag ``{webhooks}``, so that on a Redis Cluster they live in
one slot and every script runs on one master::

    <prefix>webhooks:{webhooks}                     stream  "<ms>-<n>" -> n: name,
                                                    e: JSON, r: namespace (room events)
    <prefix>webhooks-state:{webhooks}               hash    n: last count, t: last ms
    <prefix>webhooks-cursors:{webhooks}             hash    receiver -> "<id> <touched ms>"
                                                    (id "-": none yet)
    <prefix>webhooks-lease:{webhooks}:<receiver>    string  its holder, expiring (PX)
    <prefix>webhooks-added:{webhooks}:<adder>       string  the adder's last batch

Stream ids are given by the add script, not by Redis (``XADD *``), so that the count
``n`` of every event ever queued is in its id: a sender sees a trimmed gap, and how
large it is. ``ms`` is Redis's clock, never going back (``t``); ``n`` is kept in the
state hash, which never expires (if it is lost, the last id in the stream restores
it; if both are, ids start again at a later ``ms``, and a sender reports a reset).

The whole stream expires ``keep`` after the last add (everything in it would be past
the retry window); each add trims what is older than ``keep``, and each commit what
every live cursor (touched within ``keep``) has passed. A cursor nobody touched for
``FORGET_CURSOR`` is deleted.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pushgate.broker.redis import RedisBroker
from pushgate.broker.redis_batch import run_script
from pushgate.broker.redis_errors import REDIS_ERRORS
from pushgate.errors import BrokerUnavailable
from pushgate.webhooks.events import Entry, Queued
from pushgate.webhooks.memqueue import FORGET_CURSOR
from pushgate.webhooks.queue import Claim, WebhookQueue

_NOW = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
"""

# KEYS: stream, state, the adder's key. ARGV: batch, keep (ms), then for each entry
# its name, "" (no room) or "." .. namespace, and its JSON. Returns the last count,
# or 0 when this batch was added before.
_ADD = (
    _NOW
    + """
local done = redis.call('GET', KEYS[3])
if done and tonumber(done) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
local ms, n = tonumber(redis.call('HGET', KEYS[2], 't')), tonumber(redis.call('HGET', KEYS[2], 'n'))
if not n then
  ms, n = 0, 0
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  if last then
    local a, b = string.match(last[1], '^(%d+)-(%d+)$')
    ms, n = tonumber(a), tonumber(b)
  end
end
ms = math.max(ms, now)
for i = 3, #ARGV, 3 do
  n = n + 1
  local id = string.format('%.0f-%.0f', ms, n)
  if ARGV[i + 1] == '' then
    redis.call('XADD', KEYS[1], id, 'n', ARGV[i], 'e', ARGV[i + 2])
  else
    redis.call('XADD', KEYS[1], id, 'n', ARGV[i], 'e', ARGV[i + 2], 'r', string.sub(ARGV[i + 1], 2))
  end
end
redis.call('HSET', KEYS[2], 't', string.format('%.0f', ms), 'n', string.format('%.0f', n))
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', now - tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
"""
)

# KEYS: lease, cursors. ARGV: holder, lease (ms), receiver. Returns the cursor ("-":
# none yet), or nil when another holder has the lease.
_CLAIM = (
    _NOW
    + """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local cursor = redis.call('HGET', KEYS[2], ARGV[3])
local id = cursor and string.match(cursor, '^(%S+) ') or '-'
redis.call('HSET', KEYS[2], ARGV[3], id .. ' ' .. now)
return id
"""
)

# KEYS: lease, cursors, stream. ARGV: holder, receiver, id, keep (ms), forget (ms).
# Returns 1 when the cursor moved, 0 when the lease is not the holder's.
_COMMIT = (
    _NOW
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ' ' .. now)
local floor_ms, floor_n, unmoved = nil, nil, false
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local id, touched = string.match(all[i + 1], '^(%S+) (%d+)$')
  touched = tonumber(touched)
  if touched < now - tonumber(ARGV[5]) then
    redis.call('HDEL', KEYS[2], all[i])
  elseif touched >= now - tonumber(ARGV[4]) then
    if id == '-' then
      unmoved = true
    else
      local a, b = string.match(id, '^(%d+)-(%d+)$')
      a, b = tonumber(a), tonumber(b)
      if not floor_ms or a < floor_ms or (a == floor_ms and b < floor_n) then
        floor_ms, floor_n = a, b
      end
    end
  end
end
if floor_ms and not unmoved then
  redis.call('XTRIM', KEYS[3], 'MINID', string.format('%.0f-%.0f', floor_ms, floor_n))
end
return 1
"""
)

# KEYS: lease. ARGV: holder.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisWebhookQueue:
    """The webhook queue in the Redis of ``broker``. See the module docstring."""

    def __init__(self, broker: RedisBroker) -> None:
        self._client = broker.client
        self._where = broker.url.rsplit("@", 1)[-1]  # never log a password
        base = f"{broker.prefix}webhooks"
        self.stream = f"{base}:{{webhooks}}"
        self._state = f"{base}-state:{{webhooks}}"
        self._cursors = f"{base}-cursors:{{webhooks}}"
        self._lease = f"{base}-lease:{{webhooks}}:"
        self._added = f"{base}-added:{{webhooks}}:"
        register = self._client.register_script
        self._add, self._claim, self._commit, self._release = (
            register(_ADD),
            register(_CLAIM),
            register(_COMMIT),
            register(_RELEASE),
        )

    async def add(self, entries: Sequence[Entry], *, adder: str, batch: int, keep: float) -> None:
        args: list[Any] = [batch, _ms(keep)]
        for entry in entries:
            room = "" if entry.namespace is None else "." + entry.namespace
            args += (entry.name, room, entry.payload)
        await self._run(self._add, [self.stream, self._state, self._added + adder], args, "add to")

    async def read(self, after: str | None, count: int) -> list[Queued]:
        start = "-" if after is None else "(" + after
        try:
            replies = await self._client.xrange(self.stream, min=start, max="+", count=count)
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(
                f"cannot read the webhook queue in Redis at {self._where}: {exc}"
            ) from None
        return [_queued(bytes(id_), fields) for id_, fields in replies]

    async def claim(self, receiver: str, holder: str, lease: float) -> Claim | None:
        keys = [self._lease + receiver, self._cursors]
        reply = await self._run(self._claim, keys, [holder, _ms(lease), receiver], "claim in")
        if reply is None:
            return None
        cursor = bytes(reply).decode()
        return Claim(None if cursor == "-" else cursor)

    async def commit(self, receiver: str, holder: str, last: str, *, keep: float) -> bool:
        keys = [self._lease + receiver, self._cursors, self.stream]
        args = [holder, receiver, last, _ms(keep), _ms(FORGET_CURSOR)]
        return bool(await self._run(self._commit, keys, args, "commit in"))

    async def release(self, receiver: str, holder: str) -> None:
        await self._run(self._release, [self._lease + receiver], [holder], "release in")

    async def close(self) -> None:
        pass  # the broker owns the client

    async def _run(self, script: Any, keys: list[str], args: list[Any], doing: str) -> Any:
        try:
            return await run_script(script, keys, args)
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(
                f"cannot {doing} the webhook queue in Redis at {self._where}: {exc}"
            ) from None


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _queued(event_id: bytes, fields: dict[bytes, bytes]) -> Queued:
    room = fields.get(b"r")
    entry = Entry(
        fields[b"n"].decode(), None if room is None else room.decode(), bytes(fields[b"e"])
    )
    return Queued(event_id.decode(), entry)


if TYPE_CHECKING:
    _: type[WebhookQueue] = RedisWebhookQueue
