"""Sessions: a wsId names a session, which outlives one TCP connection.

A session has a secret token (given to the client in its welcome), a user, and the
streams it follows (``all``, ``user:<uid>``, ``room:<id>``), each with the position
it had when the session started following it: a resuming client that received
nothing from a stream resumes from there.

A session is **held** by one connection (its ``holder``: the node's id and a nonce
of that connection) or **detached**: its connection ended, and it waits
``session_ttl`` seconds for a resume, then ends. Joins and leaves of a detached
session change its streams in the store; those of a held session go to its holder,
which writes them through.

The :class:`Sessions` Protocol has two implementations:
``pushgate.memorysessions.MemorySessions`` (one process) and
``pushgate.broker.redis_sessions.RedisSessions`` (a cluster: any gateway can resume
any session). Every method of both is safe against concurrent callers on
other nodes: a claim, a detach and a join never undo each other.

A store may lose what it keeps (a Redis restarted empty). The node holds every
live connection's session in memory, all but its token, of which it keeps the
hash (32 bytes a connection) where the store is kept elsewhere
(``Sessions.kept_elsewhere``): :meth:`Sessions.restore` writes those sessions back.
"""

import enum
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pushgate.ids import ConnId
from pushgate.streams import Position, room_of

AddResult = Literal["added", "already", "unknown", "limit"]
RemoveResult = Literal["removed", "absent", "unknown"]


class AnyUser(enum.Enum):
    """A claim whose user is not checked: this server verifies no tokens, so a
    connection has no user it could be held to."""

    ANY = "any"


ANY_USER = AnyUser.ANY

# The start of a stream a session was written back with where its node could not
# tell it: a resume that names no position of the stream gets what history has and
# is told it was not recovered (an epoch no stream has).
UNKNOWN_START = Position("", 0)


def new_token() -> str:
    """A session's secret: 144 random bits, URL-safe."""
    return secrets.token_urlsafe(18)


def token_digest(token: str) -> bytes:
    """The token's SHA-256: what a node keeps of the sessions it holds."""
    return hashlib.sha256(token.encode()).digest()


def token_hash(token: str) -> str:
    """What the store keeps instead of the token itself (the digest, in hex)."""
    return token_digest(token).hex()


def holder_node(holder: str) -> str:
    """The node id in a holder (``<node id>.<nonce>``)."""
    return holder.partition(".")[0]


@dataclass(frozen=True, slots=True)
class Session:
    """A session as a claim finds it: its user, its streams with their start
    positions, who held it before the claim ("" when it was detached), and when the
    streams a subscription token opened end (Unix seconds)."""

    ws_id: ConnId
    user: str | None
    streams: dict[str, Position]
    previous_holder: str = ""
    expires: dict[str, float] = field(default_factory=dict)

    @property
    def rooms(self) -> list[str]:
        return [room for room in map(room_of, self.streams) if room is not None]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What presence tells of a session: its user, its rooms, and whether a
    connection holds it (else it is detached, waiting for a resume)."""

    user: str | None
    rooms: list[str]
    held: bool


@dataclass(frozen=True, slots=True)
class HeldSession:
    """A session as the node that holds it knows it, to write back into a store that
    lost it: ``token_hash`` as :func:`token_hash` gives it, the position each
    stream is to be resumed from when the client names none, and the ends of the
    streams a subscription token opened (Unix seconds)."""

    ws_id: ConnId
    token_hash: str
    user: str | None
    streams: dict[str, Position]
    holder: str
    ends: dict[str, float] = field(default_factory=dict)


def rooms_of(streams: Iterable[str]) -> list[str]:
    """The room ids among stream names, sorted."""
    return sorted(room for room in map(room_of, streams) if room is not None)


class Sessions(Protocol):
    """Where the sessions of a cluster are kept."""

    ttl: float
    # False for NoSessions (--session-ttl 0): nothing is kept, so a connection gets no
    # session token and nobody needs a stream's position to record it.
    enabled: bool
    # True where the store is outside the process (Redis) and may lose what it keeps
    # while its nodes run: a node then keeps each held session's token hash, to write
    # the session back (restore.py). One in this process loses nothing its node holds.
    kept_elsewhere: bool

    async def start(self) -> None: ...

    async def create(
        self, ws_id: ConnId, token: str, user: str | None, streams: dict[str, Position], holder: str
    ) -> None:
        """Record a new session, held by ``holder``, of ``user`` (a non-empty string; None
        for a session of no user), following ``streams`` from their positions."""
        ...

    async def claim(
        self, ws_id: ConnId, token: str, holder: str, *, user: str | AnyUser | None = ANY_USER
    ) -> Session | None:
        """Take the session over for ``holder`` if ``token`` is its token and ``user``
        its user (None: a session of no user; ANY_USER: not checked); None, and
        nothing changed, when there is no such session (never was, or ended), or the
        token or the user is wrong.

        Claims of one session are ordered, on every node alike: each reports the
        holder it took the session from (``previous_holder``, "" when it was
        detached), and the last one holds it: the session then waits for no TTL
        until that holder detaches it (or its node stops keeping it alive)."""
        ...

    async def add_stream(
        self,
        ws_id: ConnId,
        stream: str,
        position: Position,
        *,
        max_rooms: int,
        expires_at: float | None = None,
    ) -> AddResult:
        """Make the session follow ``stream`` from ``position``, whether a connection
        holds it or not, until ``expires_at`` (Unix seconds; None: for as long as the
        session lasts): ``added``; ``already`` when it follows it (from the position
        it had then, unchanged; its end becomes ``expires_at``); ``unknown`` when
        there is no such session; ``limit`` (and nothing done) when it would follow
        more than ``max_rooms`` rooms (only ``room:`` streams count, those it was
        created with included)."""
        ...

    async def remove_stream(self, ws_id: ConnId, stream: str) -> RemoveResult:
        """Stop following ``stream``, whether a connection holds the session or not:
        ``removed``; ``absent`` when it did not follow it; ``unknown`` when there is no
        such session."""
        ...

    async def detach(self, ws_id: ConnId, holder: str) -> None:
        """The connection of ``holder`` ended: the session waits ``ttl`` for a resume,
        then ends (nothing happens if another holder has claimed it since, or if there
        is no such session)."""
        ...

    async def describe(self, ws_id: ConnId) -> SessionInfo | None:
        """The session's user, rooms and state; None when there is no such session."""
        ...

    async def end(self, ws_id: ConnId) -> bool:
        """End the session now: nobody can resume it. False if there was none (never
        was, or it had ended)."""
        ...

    async def restore(self, held: Sequence[HeldSession]) -> int:
        """Write back the sessions of ``held`` that the store no longer has (it
        restarted empty), each as :meth:`create` would have, held by its holder;
        one the store has is left as it is (whoever holds it now). Returns how many
        were written. Raises BrokerUnavailable (some may have been written)."""
        ...

    async def close(self) -> None: ...


class NoSessions:
    """Sessions off (``--session-ttl 0``): a connection's end is its session's end.
    Every method is the answer a store that keeps nothing gives."""

    ttl = 0.0
    enabled = False
    kept_elsewhere = False

    async def start(self) -> None:
        pass

    async def create(
        self, ws_id: ConnId, token: str, user: str | None, streams: dict[str, Position], holder: str
    ) -> None:
        pass

    async def claim(
        self, ws_id: ConnId, token: str, holder: str, *, user: str | AnyUser | None = ANY_USER
    ) -> Session | None:
        return None

    async def add_stream(
        self,
        ws_id: ConnId,
        stream: str,
        position: Position,
        *,
        max_rooms: int,
        expires_at: float | None = None,
    ) -> AddResult:
        return "unknown"

    async def remove_stream(self, ws_id: ConnId, stream: str) -> RemoveResult:
        return "unknown"

    async def detach(self, ws_id: ConnId, holder: str) -> None:
        pass

    async def describe(self, ws_id: ConnId) -> SessionInfo | None:
        return None

    async def end(self, ws_id: ConnId) -> bool:
        return False

    async def restore(self, held: Sequence[HeldSession]) -> int:
        return 0

    async def close(self) -> None:
        pass


if TYPE_CHECKING:
    _: type[Sessions] = NoSessions
