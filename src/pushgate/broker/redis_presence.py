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
in the room's stream as the broker's publish script does (redis_streams.py's
``ENSURE_META`` and ``PUBLISH_FUNCTION``: next seq, position spliced in, kept in
history, published on the channel), or with history off as a push without history is
(``0 - <accepted> <msg>``). So two nodes entering one user's sessions at once make one
join, and two nodes sweeping one room at once publish each leave once.

A held entry's deadline is ``ttl + 2 * refresh`` ahead (its holder's node pushes it on
every ``refresh`` seconds: a node that dies without a word leaves its members there
as long as its sessions stay resumable, and a little more); a detached one's is the
session's end, ``ttl`` after its detach. After each write the room's keys expire
``2 * refresh`` after the last deadline in it (a room nobody touches any more is
gone then; a room with no entry left is deleted at once).

One more key, for the whole cluster, in a slot of its own: ``<prefix>presence-rooms:{presence}``,
a sorted set of rooms by when (ms) one of their entries may be past its deadline,
written by each node for the rooms it enters, detaches in and keeps. Each keep()
also sweeps the rooms due there: a room whose members were all on a node that died
still gets their leaves (and the webhooks its room_vacated).

Sweeps run in the scripts of ``enter`` and ``keep``. A node keeps the rooms its
connections are in, and also, for a while, those it detached entries in: a room whose
last local connection ended is no longer among them, yet its detached entries must
leave when their session ends.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from itertools import islice
from typing import TYPE_CHECKING, Any

from pushgate.broker.redis import RedisBroker
from pushgate.broker.redis_batch import ScriptBatcher
from pushgate.broker.redis_errors import REDIS_ERRORS
from pushgate.broker.redis_streams import ENSURE_META, PUBLISH_FUNCTION
from pushgate.errors import BrokerUnavailable
from pushgate.ids import ConnId, RoomId
from pushgate.presence import Change, Identity, PresenceStore, Present, Roster
from pushgate.streams import Position, new_epoch, room_topic
from pushgate.wireops import encode_presence

log = logging.getLogger("pushgate.presence")

# How much later than its deadline, by this node's clock, an entry is looked for:
# the clocks of Redis and the nodes differ a little.
CLOCK_MARGIN_MS = 250
# Seconds a call of the index (below) may take before it is given up, and how it fails.
INDEX_TIMEOUT = 2.0
INDEX_ERRORS: tuple[type[Exception], ...] = (TimeoutError, *REDIS_ERRORS)
# Rooms per batch of keep() calls (each batch is pipelined; batches one after another).
CHUNK = 500
# The longest time between keep() calls: a detached session's leave comes at most
# this long after its end.
MAX_REFRESH = 5.0

# Every script's KEYS: the stream's meta and history, then the room's three presence
# keys. ARGV[1..2] are ENSURE_META's (a new epoch, the meta's lifetime in ms);
# ARGV[3..7] how an event is published: channel, history size, history TTL in ms,
# when it was accepted, PUBLISH or SPUBLISH; ARGV[8] how long the presence keys
# outlive their last deadline (ms); ARGV[9] "1" when the room announces its changes
# (publishes them in its stream: a presence room), else "0" (a room kept for webhooks
# only). Each operation's own arguments follow; each returns the changes it made.
_WITH_HISTORY = (
    ENSURE_META
    + PUBLISH_FUNCTION
    + """
local history = true
local function emit(msg)
  if ARGV[9] == '1' then publish(msg, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]) end
end
"""
)

_WITHOUT_HISTORY = """
local history = false
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function emit(msg)
  if ARGV[9] == '1' then redis.call(ARGV[7], ARGV[3], '0 - ' .. ARGV[6] .. ' ' .. msg) end
end
"""

_COMMON = """
local entries, users, deadlines = KEYS[3], KEYS[4], KEYS[5]
-- The changes made, returned to the caller: {joined 1/0, user key, info, edge 1/0}
-- (edge: the room's first user came, or its last went).
local changes = {}
local function changed(joined, key, info)
  local edge = redis.call('HLEN', users) == (joined == 1 and 2 or 1)
  changes[#changes + 1] = {joined, key, info, edge and 1 or 0}
end

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
    changed(0, key, user[3])
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

-- The room's keys last until its last deadline and the margin; none when it is empty
-- (then it returns true).
local function expire()
  local last = redis.call('ZRANGE', deadlines, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', entries, users, deadlines)
    return true
  end
  local ms = math.max(tonumber(last[2]) - now, 0) + tonumber(ARGV[8])
  redis.call('PEXPIRE', entries, ms)
  redis.call('PEXPIRE', users, ms)
  redis.call('PEXPIRE', deadlines, ms)
  return false
end
"""

# Entry ARGV[10] (user key ARGV[12], info ARGV[13] or "", join event ARGV[14], leave
# event ARGV[15]) held by ARGV[11] for ARGV[16] ms; due entries swept first.
_ENTER = """
sweep()
local conn, holder, key = ARGV[10], ARGV[11], ARGV[12]
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
    redis.call('HSET', users, key, cmsgpack.pack({1, order, ARGV[13], ARGV[15]}))
    emit(ARGV[14])
    changed(1, key, ARGV[13])
  end
end
redis.call('ZADD', deadlines, now + tonumber(ARGV[16]), conn)
expire()
return changes
"""

# Entry ARGV[10] leaves.
_LEAVE = """
remove(ARGV[10])
expire()
return changes
"""

# Entry ARGV[10], if holder ARGV[11] holds it, ends in ARGV[12] ms.
_DETACH = """
local packed = redis.call('HGET', entries, ARGV[10])
if packed and cmsgpack.unpack(packed)[1] == ARGV[11] then
  redis.call('ZADD', deadlines, now + tonumber(ARGV[12]), ARGV[10])
  expire()
end
"""

# The entries ARGV[11], ARGV[13]... that their holders ARGV[12], ARGV[14]... still
# hold last ARGV[10] ms more (at least); then due entries are swept. Returns the
# changes, and 1 when the room is empty now.
_KEEP = """
local deadline = now + tonumber(ARGV[10])
for i = 11, #ARGV - 1, 2 do
  local packed = redis.call('HGET', entries, ARGV[i])
  if packed and cmsgpack.unpack(packed)[1] == ARGV[i + 1] then
    local current = redis.call('ZSCORE', deadlines, ARGV[i])
    if not current or tonumber(current) < deadline then
      redis.call('ZADD', deadlines, deadline, ARGV[i])
    end
  end
end
sweep()
local empty = expire()
return {changes, empty and 1 or 0}
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

    def __init__(
        self,
        broker: RedisBroker,
        *,
        ttl: float,
        announces: Callable[[RoomId], bool] = lambda room: True,
        quiet_to_joiner: Callable[[RoomId], bool] = lambda room: False,
    ) -> None:
        self._broker = broker
        self._announces = announces
        self._quiet_to_joiner = quiet_to_joiner  # see wireops.encode_presence
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
        # Every node's rooms, for sweeps by any node: see _index.
        self._index_key = f"{broker.prefix}presence-rooms:{{presence}}"
        self._to_index: dict[RoomId, float] = {}
        self._indexing: asyncio.Task[None] | None = None

    def keys(self, room: RoomId) -> list[str]:
        """The room's presence keys: its entries, its users, its entries' deadlines."""
        tag = "{" + room_topic(room) + "}"
        prefix = self._broker.prefix
        return [
            f"{prefix}presence:{tag}",
            f"{prefix}presence-users:{tag}",
            f"{prefix}presence-deadlines:{tag}",
        ]

    async def enter(self, room: RoomId, identity: Identity, holder: str) -> list[Change]:
        self._index(room, self._held_ms)
        joined = encode_presence(
            Change(room, True, identity), quiet_to_joiner=self._quiet_to_joiner(room)
        )
        left = encode_presence(Change(room, False, identity))
        info = identity.info or ""
        args = [identity.conn, holder, identity.key, info, joined, left, self._held_ms]
        made = await self._run(self._enter, room, args, f"enter {identity.conn} in the presence")
        return _changes(room, made)

    async def leave(self, room: RoomId, conn: ConnId) -> list[Change]:
        made = await self._run(self._leave, room, [conn], f"take {conn} out of the presence")
        return _changes(room, made)

    async def detach(self, conn: ConnId, holder: str, rooms: list[RoomId]) -> None:
        until = time.monotonic() + self.ttl + 3 * self.refresh
        for room in rooms:
            self._detached[room] = max(until, self._detached.get(room, 0.0))
            self._index(room, self._ttl_ms)
        what = f"detach {conn} in the presence"
        await asyncio.gather(
            *(self._run(self._detach, room, [conn, holder, self._ttl_ms], what) for room in rooms)
        )

    async def keep(self, held: dict[RoomId, list[tuple[ConnId, str]]]) -> list[Change]:
        started = time.monotonic()
        swept: list[Change] = []
        vacated: list[RoomId] = []
        rooms = dict(held)
        for room in held:
            self._index(room, self._held_ms)
        for room in self._detached:
            rooms.setdefault(room, [])
        # Rooms nobody kept for a while (their nodes died, or left them detached):
        # whoever keeps next sweeps them, so their leaves come even with no member
        # left on a live node.
        due = await self._due()
        for room in due:
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
                    continue
                made, empty = result
                swept += _changes(room, made)
                if self._detached.get(room, started) < started:
                    del self._detached[room]
                if empty:
                    vacated.append(room)
                elif room in due:  # others' entries: their holders index it again
                    self._index(room, self._held_ms)
        await self._unindex(vacated)
        if failures:
            error = failures[0]
            if isinstance(error, REDIS_ERRORS):
                raise BrokerUnavailable(
                    f"cannot keep presence entries alive in Redis at {self._where}: {error}"
                )
            raise error
        return swept

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
        """Wait for the calls already sent (an index write is dropped: the index is
        written again by every keep)."""
        if self._indexing is not None:
            self._indexing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexing
        await self._batch.close()

    # The index of rooms to sweep: room -> when (ms, this node's wall clock) it may
    # have an entry past its deadline. One write at a time, of all the rooms given
    # meanwhile; each Redis call of the index is bounded by INDEX_TIMEOUT, so that an
    # unreachable Redis holds up neither keep() nor close().

    def _index(self, room: RoomId, after_ms: int) -> None:
        when = time.time() * 1000 + after_ms + CLOCK_MARGIN_MS
        pending = self._to_index
        pending[room] = max(when, pending.get(room, 0.0))
        if self._indexing is None:
            self._indexing = asyncio.get_running_loop().create_task(self._write_index())

    async def _write_index(self) -> None:
        try:
            await asyncio.sleep(0)  # the rest of this turn's rooms
            while pending := self._to_index:
                self._to_index = {}
                try:
                    async with asyncio.timeout(INDEX_TIMEOUT):
                        await self._broker.client.zadd(self._index_key, pending, gt=True)
                except INDEX_ERRORS as exc:  # the next keep writes them again
                    log.warning("cannot index presence rooms in Redis at %s: %s", self._where, exc)
                    return
        finally:
            self._indexing = None

    async def _due(self) -> set[RoomId]:
        now = time.time() * 1000
        try:
            async with asyncio.timeout(INDEX_TIMEOUT):
                due = await self._broker.client.zrangebyscore(
                    self._index_key, "-inf", now, start=0, num=CHUNK
                )
        except INDEX_ERRORS:
            return set()  # keep() itself says Redis is away
        return {RoomId(_text(room)) for room in due}

    async def _unindex(self, rooms: list[RoomId]) -> None:
        # An entry added since (an enter's index write is later) is written again.
        if rooms:
            with contextlib.suppress(*INDEX_ERRORS):
                async with asyncio.timeout(INDEX_TIMEOUT):
                    await self._broker.client.zrem(self._index_key, *rooms)

    async def _run(self, script: Any, room: RoomId, args: list[Any], what: str) -> Any:
        try:
            return await self._call(script, room, args)
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
            "1" if self._announces(room) else "0",
        ]
        keys = [*broker._stream_keys(topic), *self.keys(room)]
        return self._batch.call(script, keys, [*head, *args], share=share)

    @property
    def _where(self) -> str:
        return self._broker._where


def _changes(room: RoomId, made: Any) -> list[Change]:
    """The changes a script returned: {joined, user key, info, edge} each. A leave's
    identity is its user's (an anonymous member's key holds its wsId)."""
    changes = []
    for joined, key, info, edge in made or ():
        key, info = _text(key), _text(info)
        user = key[2:] if key.startswith("u:") else None
        conn = ConnId("" if user is not None else key[2:])
        changes.append(Change(room, bool(joined), Identity(conn, user, info or None), bool(edge)))
    return changes


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


if TYPE_CHECKING:
    _: type[PresenceStore] = RedisPresence
