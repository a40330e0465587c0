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
from pushgate.broker.redis_presence_scripts import (
    COMMON,
    DETACH,
    ENTER,
    KEEP,
    LEAVE,
    ROSTER,
    WITH_HISTORY,
    WITHOUT_HISTORY,
)
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
        # A node's held entries are its liveness here: handed over at every keep.
        self.keep_every = self.refresh
        self._ttl_ms = max(0, int(ttl * 1000))
        self._held_ms = int((ttl + 2 * self.refresh) * 1000)
        self._margin_ms = int(2 * self.refresh * 1000)
        client = broker.client
        prelude = (WITH_HISTORY if broker.keeps_history else WITHOUT_HISTORY) + COMMON
        self._enter = client.register_script(prelude + ENTER)
        self._leave = client.register_script(prelude + LEAVE)
        self._detach = client.register_script(prelude + DETACH)
        self._keep = client.register_script(prelude + KEEP)
        self._roster = client.register_script(prelude + ROSTER)
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
        # rooms again, a keep of many rooms) go in one pipeline. The KEYS and the first
        # ARGV every script takes are listed in redis_presence_scripts.py.
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
