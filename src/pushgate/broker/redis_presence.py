"""The presence of a cluster's rooms in Redis (presence.py; one process's is
presencestore.py), decided and published once, whichever nodes ask at once.

Each room has three keys, in the slot of its stream (hash tag ``{room:<id>}``, as the
broker's ``meta:`` and ``hist:`` keys and, on a Redis Cluster, its channel)::

    <prefix>presence:{room:<id>}            hash   wsId -> [holder, user key, order]
    <prefix>presence-users:{room:<id>}      hash   user key -> [sessions, order, info, leave]
                                                   "#" -> the last order given
    <prefix>presence-deadlines:{room:<id>}  zset   wsId -> deadline (ms, Redis's clock)

Values are MessagePack arrays (``cmsgpack``, binary-safe). A user key is
:attr:`~pushgate.presence.Identity.key` (``u:<user>``, or ``c:<wsId>`` for an anonymous
member); ``order`` numbers entries as they enter, so a user's order is its join's;
``info`` is its first session's ("" for none) and ``leave`` the bytes of its leave
event, encoded when it joined, so that a sweep in Lua can publish it.

Every operation is one Lua script on the room's slot that decides as
:class:`~pushgate.presence.PresenceTable` does and publishes the events it decides on
in the room's stream as the broker's publish script does (its ``_ENSURE_META`` and
``_PUBLISH_FUNCTION``: next seq, position spliced in, kept in history, published on the
channel), or with history off as a push without history is (``0 - <accepted> <msg>``).
So two nodes entering one user's sessions at once make one join, and two nodes
sweeping one room at once publish each leave once.

A held entry's deadline is ``ttl + 2 * refresh`` ahead (its holder's node pushes it on
every ``refresh`` seconds: a node that dies without a word leaves its members there
as long as its sessions stay resumable, and a little more); a detached one's is the
session's end, ``ttl`` after its detach. After each write the room's keys expire
``2 * refresh`` after the last deadline in it (a room nobody touches any more is
gone then; a room with no entry left is deleted at once).

Sweeps run in the scripts of ``enter`` and ``keep``. A node keeps the rooms its
connections are in, and also, for a while, those it detached entries in: a room whose
last local connection ended is no longer among them, yet its detached entries must
leave when their session ends.
"""

import asyncio
import time
from collections.abc import Hashable
from itertools import islice
from typing import TYPE_CHECKING, Any

from pushgate.broker.redis import _ENSURE_META, _PUBLISH_FUNCTION, RedisBroker
from pushgate.broker.redis_batch import ScriptBatcher
from pushgate.broker.redis_errors import REDIS_ERRORS
from pushgate.errors import BrokerUnavailable
from pushgate.ids import ConnId, RoomId
from pushgate.presence import Change, Identity, PresenceStore, Present, Roster
from pushgate.streams import Position, new_epoch, room_topic
from pushgate.wire import encode_presence

# Rooms per batch of keep() calls (each batch is pipelined; batches one after another).
CHUNK = 500
# The longest time between keep() calls: a detached session's leave comes at most
# this long after its end.
MAX_REFRESH = 5.0

# Every script's KEYS: the stream's meta and history, then the room's three presence
# keys. ARGV[1..2] are _ENSURE_META's (a new epoch, the meta's lifetime in ms);
# ARGV[3..7] how an event is published: channel, history size, history TTL in ms,
# when it was accepted, PUBLISH or SPUBLISH; ARGV[8] how long the presence keys
# outlive their last deadline (ms). Each operation's own arguments follow.
_WITH_HISTORY = (
    _ENSURE_META
    + _PUBLISH_FUNCTION
    + """
local history = true
local function emit(msg)
  publish(msg, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
end
"""
)

_WITHOUT_HISTORY = """
local history = false
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function emit(msg)
  redis.call(ARGV[7], ARGV[3], '0 - ' .. ARGV[6] .. ' ' .. msg)
end
"""

_COMMON = """
local entries, users, deadlines = KEYS[3], KEYS[4], KEYS[5]

-- Take conn's entry out: its user's leave, if it was the user's last.
local function remove(conn)
  redis.call('ZREM', deadlines, conn)
  local packed = redis.call('HGET', entries, conn)
  if not packed then return end
  redis.call('HDEL', entries, conn)
  local key = cmsgpack.unpack(packed)[2]
  local had = redis.call('HGET', users, key)
  if not had then return end
  local user = cmsgpack.unpack(had)
  if user[1] > 1 then
    user[1] = user[1] - 1
    redis.call('HSET', users, key, cmsgpack.pack(user))
  else
    redis.call('HDEL', users, key)
    emit(user[4])
  end
end

-- Take out the entries past their deadline, in the order they entered.
local function sweep()
  local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now)
  if #due == 0 then return end
  local order = {}
  for _, conn in ipairs(due) do
    local packed = redis.call('HGET', entries, conn)
    order[conn] = packed and cmsgpack.unpack(packed)[3] or 0
  end
  table.sort(due, function(a, b) return order[a] < order[b] end)
  for _, conn in ipairs(due) do remove(conn) end
end

-- The room's keys last until its last deadline and the margin; none when it is empty.
local function expire()
  local last = redis.call('ZRANGE', deadlines, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', entries, users, deadlines)
    return
  end
  local ms = math.max(tonumber(last[2]) - now, 0) + tonumber(ARGV[8])
  redis.call('PEXPIRE', entries, ms)
  redis.call('PEXPIRE', users, ms)
  redis.call('PEXPIRE', deadlines, ms)
end
"""

# Entry ARGV[9] (user key ARGV[11], info ARGV[12] or "", join event ARGV[13], leave
# event ARGV[14]) held by ARGV[10] for ARGV[15] ms; due entries swept first.
_ENTER = """
sweep()
local conn, holder, key = ARGV[9], ARGV[10], ARGV[11]
local packed = redis.call('HGET', entries, conn)
if packed then
  local entry = cmsgpack.unpack(packed)
  entry[1] = holder
  redis.call('HSET', entries, conn, cmsgpack.pack(entry))
else
  local order = redis.call('HINCRBY', users, '#', 1)
  redis.call('HSET', entries, conn, cmsgpack.pack({holder, key, order}))
  local had = redis.call('HGET', users, key)
  if had then
    local user = cmsgpack.unpack(had)
    user[1] = user[1] + 1
    redis.call('HSET', users, key, cmsgpack.pack(user))
  else
    redis.call('HSET', users, key, cmsgpack.pack({1, order, ARGV[12], ARGV[14]}))
    emit(ARGV[13])
  end
end
redis.call('ZADD', deadlines, now + tonumber(ARGV[15]), conn)
expire()
"""

# Entry ARGV[9] leaves.
_LEAVE = """
remove(ARGV[9])
expire()
"""

# Entry ARGV[9], if holder ARGV[10] holds it, ends in ARGV[11] ms.
_DETACH = """
local packed = redis.call('HGET', entries, ARGV[9])
if packed and cmsgpack.unpack(packed)[1] == ARGV[10] then
  redis.call('ZADD', deadlines, now + tonumber(ARGV[11]), ARGV[9])
  expire()
end
"""

# The entries ARGV[10], ARGV[12]... that their holders ARGV[11], ARGV[13]... still
# hold last ARGV[9] ms more (at least); then due entries are swept.
_KEEP = """
local deadline = now + tonumber(ARGV[9])
for i = 10, #ARGV - 1, 2 do
  local packed = redis.call('HGET', entries, ARGV[i])
  if packed and cmsgpack.unpack(packed)[1] == ARGV[i + 1] then
    local current = redis.call('ZSCORE', deadlines, ARGV[i])
    if not current or tonumber(current) < deadline then
      redis.call('ZADD', deadlines, deadline, ARGV[i])
    end
  end
end
sweep()
expire()
"""

# The entries before their deadline {wsId, user key, order...}, their users {user
# key, order, info...}, and the stream's position (epoch "" without history).
_ROSTER = """
local found, people, seen = {}, {}, {}
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '(' .. now, '+inf')) do
  local packed = redis.call('HGET', entries, conn)
  if packed then
    local entry = cmsgpack.unpack(packed)
    local key = entry[2]
    found[#found + 1] = conn
    found[#found + 1] = key
    found[#found + 1] = entry[3]
    if not seen[key] then
      seen[key] = true
      local had = redis.call('HGET', users, key)
      if had then
        local user = cmsgpack.unpack(had)
        people[#people + 1] = key
        people[#people + 1] = user[2]
        people[#people + 1] = user[3]
      end
    end
  end
end
if history then
  return {epoch, tonumber(redis.call('HGET', KEYS[1], 's')), found, people}
end
return {'', 0, found, people}
"""


class RedisPresence:
    """Presence in Redis, on the client of the node's broker; see the module docstring."""

    def __init__(self, broker: RedisBroker, *, ttl: float) -> None:
        self._broker = broker
        self.ttl = ttl
        self.refresh = min(MAX_REFRESH, max(1.0, ttl / 3))
        self._ttl_ms = max(0, int(ttl * 1000))
        self._held_ms = int((ttl + 2 * self.refresh) * 1000)
        self._margin_ms = int(2 * self.refresh * 1000)
        client = broker.client
        prelude = (_WITH_HISTORY if broker.keeps_history else _WITHOUT_HISTORY) + _COMMON
        self._enter = client.register_script(prelude + _ENTER)
        self._leave = client.register_script(prelude + _LEAVE)
        self._detach = client.register_script(prelude + _DETACH)
        self._keep = client.register_script(prelude + _KEEP)
        self._roster = client.register_script(prelude + _ROSTER)
        self._batch = ScriptBatcher(client)
        # Rooms this node detached entries in, and until when (monotonic) its keep()
        # sweeps them even when none of its connections is left there.
        self._detached: dict[RoomId, float] = {}

    def keys(self, room: RoomId) -> list[str]:
        """The room's presence keys: its entries, its users, its entries' deadlines."""
        tag = "{" + room_topic(room) + "}"
        prefix = self._broker.prefix
        return [
            f"{prefix}presence:{tag}",
            f"{prefix}presence-users:{tag}",
            f"{prefix}presence-deadlines:{tag}",
        ]

    async def enter(self, room: RoomId, identity: Identity, holder: str) -> None:
        joined = encode_presence(Change(room, True, identity))
        left = encode_presence(Change(room, False, identity))
        info = identity.info or ""
        args = [identity.conn, holder, identity.key, info, joined, left, self._held_ms]
        await self._run(self._enter, room, args, f"enter {identity.conn} in the presence")

    async def leave(self, room: RoomId, conn: ConnId) -> None:
        await self._run(self._leave, room, [conn], f"take {conn} out of the presence")

    async def detach(self, conn: ConnId, holder: str, rooms: list[RoomId]) -> None:
        until = time.monotonic() + self.ttl + 3 * self.refresh
        for room in rooms:
            self._detached[room] = max(until, self._detached.get(room, 0.0))
        what = f"detach {conn} in the presence"
        await asyncio.gather(
            *(self._run(self._detach, room, [conn, holder, self._ttl_ms], what) for room in rooms)
        )

    async def keep(self, held: dict[RoomId, list[tuple[ConnId, str]]]) -> None:
        started = time.monotonic()
        rooms = dict(held)
        for room in self._detached:
            rooms.setdefault(room, [])
        calls = iter(rooms.items())
        failures: list[BaseException] = []
        # A batch of CHUNK rooms at a time, each one pipeline (per master); a failing
        # batch does not stop the others (on a Redis Cluster, one master down fails
        # only its rooms: the others' entries must not expire meanwhile).
        while chunk := list(islice(calls, CHUNK)):
            results = await asyncio.gather(
                *(
                    self._call(self._keep, room, self._keep_args(entries))
                    for room, entries in chunk
                ),
                return_exceptions=True,
            )
            for (room, _), result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    failures.append(result)
                elif self._detached.get(room, started) < started:
                    del self._detached[room]
        if failures:
            error = failures[0]
            if isinstance(error, REDIS_ERRORS):
                raise BrokerUnavailable(
                    f"cannot keep presence entries alive in Redis at {self._where}: {error}"
                )
            raise error

    def _keep_args(self, entries: list[tuple[ConnId, str]]) -> list[Any]:
        args: list[Any] = [self._held_ms]
        for conn, holder in entries:
            args += (conn, holder)
        return args

    async def roster(self, room: RoomId) -> Roster:
        try:
            reply = await asyncio.shield(self._call(self._roster, room, [], share=("roster", room)))
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(
                f"cannot read the presence of room {room} in Redis at {self._where}: {exc}"
            ) from None
        epoch, seq, found, people = reply
        by_key: dict[str, list[tuple[int, ConnId]]] = {}
        for conn, key, order in zip(found[::3], found[1::3], found[2::3], strict=True):
            by_key.setdefault(_text(key), []).append((int(order), ConnId(_text(conn))))
        users = sorted(
            (int(order), _text(key), _text(info))
            for key, order, info in zip(people[::3], people[1::3], people[2::3], strict=True)
        )
        members = [
            Present(
                key[2:] if key.startswith("u:") else None,
                info or None,
                tuple(conn for _, conn in sorted(by_key[key])),
            )
            for _, key, info in users
            if key in by_key
        ]
        position = Position(_text(epoch), int(seq)) if self._broker.keeps_history else None
        return Roster(members, position)

    async def close(self) -> None:
        """Wait for the calls already sent."""
        await self._batch.close()

    async def _run(self, script: Any, room: RoomId, args: list[Any], what: str) -> None:
        try:
            await self._call(script, room, args)
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(
                f"cannot {what} of room {room} in Redis at {self._where}: {exc}"
            ) from None

    def _call(
        self, script: Any, room: RoomId, args: list[Any], *, share: Hashable | None = None
    ) -> "asyncio.Future[Any]":
        # Batched: the calls made in one turn of the loop (a resume storm entering its
        # rooms again, a keep of many rooms) go in one pipeline.
        broker = self._broker
        topic = room_topic(room)
        head = [
            new_epoch(),
            broker._meta_ttl_ms,
            broker.channel(topic),
            broker.history_size,
            broker._history_ttl_ms,
            b"%.6f" % time.time(),
            broker.publish_command,
            self._margin_ms,
        ]
        keys = [*broker._stream_keys(topic), *self.keys(room)]
        return self._batch.call(script, keys, [*head, *args], share=share)

    @property
    def _where(self) -> str:
        return self._broker._where


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


if TYPE_CHECKING:
    _: type[PresenceStore] = RedisPresence
