"""The cluster's sessions in Redis, so that any gateway can resume any session.

One hash per session, ``<prefix>session:{<wsId>}``::

    t            SHA-256 of the session's token
    u            its user ("" for none)
    h            its holder, <node id>.<nonce>, or "" while detached
    p:<stream>   "<epoch> <seq>": the stream's position when the session began to follow it
                 (and " <end>", Unix seconds, for a stream a subscription token opened)

A held session's key expires ``ttl + refresh`` after its holder last refreshed it
(every ``refresh`` seconds, for every session it holds), so the sessions of a node
that dies without a word (SIGKILL) stay resumable for at least ``ttl``. A detached
one expires ``ttl`` after its connection ended: a refresh only touches a session its
holder still holds, so a holder that was claimed from, and has not detached yet,
cannot keep alive a session its new holder detached. Every change that depends on the
holder is one Lua script, so a claim, a detach and a join never undo each other.
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from pushgate.broker.redis_batch import ScriptBatcher
from pushgate.broker.redis_errors import REDIS_ERRORS
from pushgate.errors import BrokerUnavailable
from pushgate.ids import ConnId
from pushgate.sessions import (
    ANY_USER,
    AddResult,
    AnyUser,
    HeldSession,
    RemoveResult,
    Session,
    SessionInfo,
    Sessions,
    rooms_of,
    token_hash,
)
from pushgate.streams import Position

log = logging.getLogger("pushgate.sessions")

CHUNK = 500

# Claim KEYS[1] for holder ARGV[2] if ARGV[1] is its token's hash (and, ARGV[4] being
# '1', ARGV[5] its user, "" for none); keep it ARGV[3] ms.
_CLAIM = """
local t = redis.call('HGET', KEYS[1], 't')
if not t or t ~= ARGV[1] then return false end
if ARGV[4] == '1' and redis.call('HGET', KEYS[1], 'u') ~= ARGV[5] then return false end
local previous = redis.call('HGET', KEYS[1], 'h')
redis.call('HSET', KEYS[1], 'h', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {previous, redis.call('HGETALL', KEYS[1])}
"""

# Add field ARGV[1] = ARGV[2] ("<epoch> <seq>"), with " <end>" when ARGV[4] (Unix seconds)
# is not empty, unless the session would follow more than ARGV[3] rooms; a field
# already there keeps its position and takes the new end (or none).
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
local had = redis.call('HGET', KEYS[1], ARGV[1])
if had then
  local epoch, seq = string.match(had, '^(%S*) (%d+)')
  local value = epoch .. ' ' .. seq
  if ARGV[4] ~= '' then value = value .. ' ' .. ARGV[4] end
  redis.call('HSET', KEYS[1], ARGV[1], value)
  return 'already'
end
if string.sub(ARGV[1], 1, 7) == 'p:room:' then
  local n = 0
  for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(k, 1, 7) == 'p:room:' then n = n + 1 end
  end
  if n >= tonumber(ARGV[3]) then return 'limit' end
end
local value = ARGV[2]
if ARGV[4] ~= '' then value = value .. ' ' .. ARGV[4] end
redis.call('HSET', KEYS[1], ARGV[1], value)
return 'added'
"""

_REMOVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then return 'removed' end
return 'absent'
"""

# Keep KEYS[1] ARGV[2] ms more if holder ARGV[1] still holds it.
_REFRESH = """
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Detach KEYS[1] if holder ARGV[1] still holds it; it then ends after ARGV[2] ms.
_DETACH = """
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'h', '')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


# Write session KEYS[1] back, with the fields ARGV[2], ARGV[3]... (name, value, ...),
# kept ARGV[1] ms, unless it exists (then it is someone's since, and stays as it is).
_RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class RedisSessions:
    """Sessions in Redis; see the module docstring."""

    enabled = True
    kept_elsewhere = True

    def __init__(self, client: Redis, *, prefix: str, ttl: float) -> None:
        self.ttl = ttl
        self._client = client
        self._prefix = prefix
        self.refresh = max(1.0, ttl / 3)
        self._ttl_ms = max(1, int(ttl * 1000))
        self._held_ttl_ms = int((ttl + self.refresh) * 1000)
        self._claim = client.register_script(_CLAIM)
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._detach = client.register_script(_DETACH)
        self._keep = client.register_script(_REFRESH)
        self._restore = client.register_script(_RESTORE)
        self._batch = ScriptBatcher(client)
        self._held: dict[ConnId, str] = {}  # the sessions this node keeps alive, by holder
        self._task: asyncio.Task[None] | None = None
        self._creates: list[tuple[ConnId, dict[str, str], asyncio.Future[None]]] = []
        self._writes: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_held(), name="pushgate-sessions")

    async def create(
        self, ws_id: ConnId, token: str, user: str | None, streams: dict[str, Position], holder: str
    ) -> None:
        mapping = _fields(token_hash(token), user, streams, holder)
        # Batched: the sessions created in one turn of the loop go in one pipeline.
        waiter = asyncio.get_running_loop().create_future()
        if not self._creates:
            asyncio.get_running_loop().call_soon(self._flush_creates)
        self._creates.append((ws_id, mapping, waiter))
        await waiter
        self._held[ws_id] = holder

    def _flush_creates(self) -> None:
        batch, self._creates = self._creates, []
        task = asyncio.ensure_future(self._write_creates(batch))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_creates(
        self, batch: list[tuple[ConnId, dict[str, str], "asyncio.Future[None]"]]
    ) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for ws_id, mapping, _ in batch:
                    key = self._key(ws_id)
                    pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                    pipe.pexpire(key, self._held_ttl_ms)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            error = BrokerUnavailable(f"cannot record sessions in Redis: {exc}")
            for _, _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        for _, _, waiter in batch:
            if not waiter.done():
                waiter.set_result(None)

    async def claim(
        self, ws_id: ConnId, token: str, holder: str, *, user: str | AnyUser | None = ANY_USER
    ) -> Session | None:
        if isinstance(user, AnyUser):
            check, claimant = "0", ""
        else:
            check, claimant = "1", user or ""  # a session of no user keeps u = ""
        args = [token_hash(token), holder, self._held_ttl_ms, check, claimant]
        found = await self._run(self._claim, ws_id, *args)
        if not found:
            return None
        previous, flat = found
        fields = {
            bytes(k).decode(): bytes(v).decode() for k, v in zip(flat[::2], flat[1::2], strict=True)
        }
        streams = {}
        ends = {}
        for name, value in fields.items():
            if name.startswith("p:"):
                epoch, seq, *end = value.split(" ")
                streams[name[2:]] = Position(epoch, int(seq))
                if end:
                    ends[name[2:]] = float(end[0])
        self._held[ws_id] = holder
        previous_holder = bytes(previous or b"").decode()
        return Session(ws_id, fields.get("u") or None, streams, previous_holder, ends)

    async def add_stream(
        self,
        ws_id: ConnId,
        stream: str,
        position: Position,
        *,
        max_rooms: int,
        expires_at: float | None = None,
    ) -> AddResult:
        value = f"{position.epoch} {position.seq}"
        end = "" if expires_at is None else f"{expires_at:.0f}"
        result = await self._run(self._add, ws_id, "p:" + stream, value, max_rooms, end)
        return _text(result)  # type: ignore[return-value]

    async def remove_stream(self, ws_id: ConnId, stream: str) -> RemoveResult:
        result = await self._run(self._remove, ws_id, "p:" + stream)
        return _text(result)  # type: ignore[return-value]

    async def detach(self, ws_id: ConnId, holder: str) -> None:
        if self._held.get(ws_id) == holder:
            del self._held[ws_id]
        await self._run(self._detach, ws_id, holder, self._ttl_ms)

    async def describe(self, ws_id: ConnId) -> SessionInfo | None:
        try:
            flat = await self._client.hgetall(self._key(ws_id))
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"cannot read session {ws_id} in Redis: {exc}") from None
        fields = {_text(k): _text(v) for k, v in flat.items()}
        if "t" not in fields:
            return None
        streams = [name[2:] for name in fields if name.startswith("p:")]
        return SessionInfo(fields.get("u") or None, rooms_of(streams), bool(fields.get("h")))

    async def end(self, ws_id: ConnId) -> bool:
        self._held.pop(ws_id, None)
        try:
            deleted = await self._client.delete(self._key(ws_id))
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"cannot end session {ws_id} in Redis: {exc}") from None
        return bool(deleted)

    async def restore(self, held: Sequence[HeldSession]) -> int:
        # A pipeline of script calls per chunk (ScriptBatcher), one chunk after
        # another: a gateway's whole set must not take every pooled connection at once.
        written = 0
        sessions = iter(held)
        while chunk := list(islice(sessions, CHUNK)):
            calls = []
            for s in chunk:
                fields = _fields(s.token_hash, s.user, s.streams, s.holder, s.ends)
                args = [self._held_ttl_ms, *(x for pair in fields.items() for x in pair)]
                calls.append(self._batch.call(self._restore, [self._key(s.ws_id)], args))
            try:
                written += sum(await asyncio.gather(*calls))
            except REDIS_ERRORS as exc:
                raise BrokerUnavailable(f"cannot write sessions back to Redis: {exc}") from None
        return written

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._batch.close()

    async def _run(self, script: Any, ws_id: ConnId, *args: object) -> Any:
        # Batched: a burst (every client of a gateway resuming, or dropping) costs a
        # pipeline per turn of the loop, not a round trip per session.
        try:
            return await self._batch.call(script, [self._key(ws_id)], args)
        except REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"cannot update session {ws_id} in Redis: {exc}") from None

    async def _refresh_held(self) -> None:
        """Keep every session this node holds from expiring, every ``refresh`` seconds
        (each while its holder here still holds it)."""
        failing = False
        while True:
            await asyncio.sleep(self.refresh)
            held = iter(list(self._held.items()))
            try:
                while chunk := list(islice(held, CHUNK)):
                    await asyncio.gather(
                        *(
                            self._batch.call(self._keep, [self._key(w)], [h, self._held_ttl_ms])
                            for w, h in chunk
                        )
                    )
            except REDIS_ERRORS as exc:
                if not failing:
                    log.warning("cannot refresh the sessions held here in Redis: %s", exc)
                failing = True
            else:
                failing = False

    def _key(self, ws_id: ConnId) -> str:
        return f"{self._prefix}session:{{{ws_id}}}"


def _fields(
    hashed: str,
    user: str | None,
    streams: dict[str, Position],
    holder: str,
    ends: dict[str, float] | None = None,
) -> dict[str, str]:
    """A session's hash, as the module docstring draws it."""
    fields = {"t": hashed, "u": user or "", "h": holder}
    for stream, position in streams.items():
        value = f"{position.epoch} {position.seq}"
        if ends and stream in ends:
            value += f" {ends[stream]:.0f}"
        fields["p:" + stream] = value
    return fields


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


if TYPE_CHECKING:
    _: type[Sessions] = RedisSessions
