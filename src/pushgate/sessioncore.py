"""The session core of a node's connections: opening one (its session recorded,
its welcome held until other nodes can find it), closing one (its session then waits
for a resume), and resuming a session, here or from another node, so that exactly
one live connection holds it (docs/recovery.md).

It is protocol-free: a connection hands it a :class:`~pushgate.hub.Sink` and gets
back what to send first (a token, the frames a resume missed); the wire protocol
decides how those are written. Resuming, and evicting the connection that held a
session before, is sessionresume.py, a part of the core over its state.
"""

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pushgate import eager
from pushgate.broker.base import Broker
from pushgate.directory import Directory
from pushgate.errors import BrokerUnavailable
from pushgate.follow import Following
from pushgate.hub import Hub, Sink
from pushgate.ids import ConnId, RoomId
from pushgate.meters import Meters
from pushgate.nodecalls import NodeCalls
from pushgate.presencerooms import PresenceRooms
from pushgate.recovery import StreamRecovery
from pushgate.sessionresume import Resuming
from pushgate.sessions import (
    UNKNOWN_START,
    HeldSession,
    Sessions,
    new_token,
    token_digest,
)
from pushgate.streams import TOPIC_ALL, Position, room_of, room_topic, user_topic

log = logging.getLogger("pushgate.node")

# How long a session write (a detach) may hold up a stop.
SESSION_FLUSH_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Opened:
    """A new connection's session token (None: sessions off), and a future that
    completes once its welcome may go out (None: at once)."""

    token: str | None
    ready: "asyncio.Future[None] | None"


Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


@runtime_checkable
class TimedRooms(Protocol):
    """A sink whose protocol has subscriptions that end (a token's grant)."""

    def subscription_ends(self) -> dict[RoomId, float]:
        """Each room a subscription token opened for it, and when it ends (Unix s)."""
        ...


class SessionCore(Resuming):
    """Opens, closes and resumes the connections of one node, and their sessions."""

    def __init__(
        self,
        *,
        node_id: str,
        hub: Hub,
        directory: Directory,
        sessions: Sessions,
        broker: Broker,
        recovery: StreamRecovery,
        following: Following,
        calls: NodeCalls,
        meters: Meters,
        spawn: Spawn,
        position: Callable[[str], Awaitable[Position]],
        start_repair: Callable[[str], object],
    ) -> None:
        # Presence (set by the node when a namespace keeps it): told of every entry,
        # close and resume of a session in a presence room.
        self.presence: PresenceRooms | None = None
        self.node_id = node_id
        self.hub = hub
        self.directory = directory
        self.sessions = sessions  # NoSessions: sessions are off
        self.broker = broker
        self.recovery = recovery
        self.calls = calls
        self.meters = meters
        self._following = following
        self._spawn = spawn
        self._position = position
        self._start_repair = start_repair
        # The holder (<node id>.<nonce>) of each session a local connection holds.
        self._holders: dict[ConnId, str] = {}
        # And its token's SHA-256 (32 bytes: what a session costs here beyond its
        # holder), to write it back into a store that lost it (held()): only where the
        # store can lose it (Sessions.kept_elsewhere).
        self._digests: dict[ConnId, bytes] = {}
        self._keep_digests = sessions.kept_elsewhere
        # Holders evicted before they were known here (holder -> when), for resumes
        # whose claim has not come back yet: see _evict.
        self._evicted: dict[str, float] = {}
        # Session writes a stop waits for (a detach must reach the store).
        self._session_writes: set[asyncio.Future[None]] = set()

    async def flush(self) -> None:
        """Wait (a while) for the detaches under way: the sessions must stay resumable."""
        if self._session_writes:
            await asyncio.wait(list(self._session_writes), timeout=SESSION_FLUSH_TIMEOUT)

    def opened(
        self,
        conn: ConnId,
        sink: Sink,
        *,
        user: str | None = None,
        rooms: Iterable[RoomId] = (),
        info: str | None = None,
        resumable: bool = True,
    ) -> Opened:
        """Register a new connection, of ``user`` and in ``rooms`` if its token says
        so (with ``info`` for presence rooms), and start its session: one that can be
        resumed where sessions are on, unless its protocol has no resume
        (``resumable`` False: Pusher's); such a session ends with its connection.

        The returned future completes once other nodes can find it, pushes to its
        user and rooms reach it, and its session can be resumed: the gateway holds
        the welcome frame until then, so a wsId a client learns resolves.
        """
        self.hub.register(conn, sink, user)
        joined = [room for room in rooms if self.hub.join(room, conn).changed]
        presence = self.presence
        if presence is not None:
            presence.identify(conn, info)
            if not presence.wanted(joined):
                presence = None
        streams = [TOPIC_ALL, *map(room_topic, joined)]
        if user is not None:
            streams.append(user_topic(user))
        registered = self.directory.add(conn)
        token = None
        if self.sessions.enabled and resumable:
            token = new_token()
            self._holders[conn] = holder = self._new_holder()
            if self._keep_digests:
                self._digests[conn] = token_digest(token)
            settle = self._settle_new(registered, streams, (conn, token, user, holder))
            return Opened(token, self._start(settle))
        if len(streams) == 1:
            return Opened(None, registered)
        entered = (conn, joined) if presence is not None else None
        return Opened(None, self._start(self._settle_new(registered, streams, None, entered)))

    def _start(self, work: Coroutine[Any, Any, None]) -> "asyncio.Future[None] | None":
        """Start ``work``: on a broker in this process, now, up to its end or its first
        wait (eager.py: a new connection is settled before its welcome would wait, so
        the 101 and the welcome leave in one write; a client that says goodbye costs
        no task); elsewhere in a task. What is left to wait for, if anything."""
        if self.broker.answers_at_once:
            return eager.start(work, self._spawn)
        return self._spawn(work)

    async def _settle_new(
        self,
        registered: "asyncio.Future[None] | None",
        streams: list[str],
        session: tuple[ConnId, str, str | None, str] | None,
        entered: tuple[ConnId, list[RoomId]] | None = None,
    ) -> None:
        if registered is not None:
            await registered
        # In this process each call completes at once: one after another, no task each.
        at_once = self.broker.answers_at_once
        topics = [topic for topic in streams if topic != TOPIC_ALL]
        failures: list[BaseException] = []
        if at_once:
            for topic in topics:
                try:
                    await self._following.sync(topic)
                except Exception as exc:
                    failures.append(exc)
        else:
            results = await asyncio.gather(
                *(self._following.sync(t) for t in topics), return_exceptions=True
            )
            failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            log.warning("could not subscribe a new connection's topics: %s", failure)
        if session is not None:
            entered = (session[0], [r for r in map(room_of, streams) if r is not None])
        if entered is not None and self.presence is not None:
            conn, rooms = entered
            try:
                await self.presence.enter_all(rooms, conn)
            except BrokerUnavailable as exc:  # it enters when it resumes, or never
                log.warning("%s is not in its rooms' presence: %s", conn, exc)
        if session is None:
            return
        conn, token, user, holder = session
        try:
            if at_once:
                positions = [await self._position(t) for t in streams]
            else:
                positions = await asyncio.gather(*(self._position(t) for t in streams))
            await self.sessions.create(
                conn, token, user, dict(zip(streams, positions, strict=True)), holder
            )
        except BrokerUnavailable as exc:
            log.warning("session %s cannot be resumed: %s", conn, exc)

    def closed(self, conn: ConnId, sink: Sink | None = None, *, ended: bool = False) -> None:
        """Forget a connection and every room membership it had, at once; its session
        (if any) waits for a resume, unless it ``ended`` with its connection (its
        protocol has no resume): then it ends now, and so do its presence entries."""
        if sink is not None and self.hub.sink(conn) is not sink:
            return  # another connection has its session now
        self.directory.discard(conn)
        user = self.hub.user_of(conn)
        rooms = self.hub.rooms_of(conn) if self.presence is not None else frozenset()
        topics = [room_topic(room) for room in self.hub.unregister(conn)]
        if user is not None and self.hub.user_size(user) == 0:
            topics.append(user_topic(user))
        for topic in topics:
            self._spawn(self._following.sync(topic))
        holder = self._holders.pop(conn, None)
        self._digests.pop(conn, None)
        if self.presence is not None:
            self.presence.closed(conn, holder or conn, rooms, ended=ended or holder is None)
        if holder is not None:
            self._write_session(self._end(conn) if ended else self._detach(conn, holder))

    def _write_session(self, write: Coroutine[Any, Any, None]) -> None:
        """Detach or end a session (:meth:`_start`); what is left waiting is a write a
        stop waits for (:meth:`flush`)."""
        try:
            pending = self._start(write)
        except Exception:  # as a task's failure is: logged, and the close goes on
            log.exception("a session write failed")
            return
        if pending is not None:
            self._session_writes.add(pending)
            pending.add_done_callback(self._session_writes.discard)

    async def _detach(self, conn: ConnId, holder: str) -> None:
        try:
            await self.sessions.detach(conn, holder)
        except BrokerUnavailable as exc:
            log.warning("session %s: %s", conn, exc)

    async def _end(self, conn: ConnId) -> None:
        try:
            await self.sessions.end(conn)
        except BrokerUnavailable as exc:  # it ends at its TTL instead
            log.warning("session %s: %s", conn, exc)

    def _new_holder(self) -> str:
        return f"{self.node_id}.{os.urandom(4).hex()}"

    def held_sessions(self) -> int:
        """Sessions held by connections of this node."""
        return len(self._holders)

    def holding(self) -> list[ConnId]:
        """The wsIds of the sessions held here."""
        return list(self._holders)

    def held(self, conns: Iterable[ConnId]) -> list[HeldSession]:
        """The sessions of ``conns`` still held here, as this node knows them (for a
        store that lost them): user, rooms, and for each stream the position to
        resume from when the client names none, where the node can tell it (no push
        has been handed out on it since it began to follow it), else UNKNOWN_START
        (such a resume is then told it was not recovered, never silently short)."""
        held = []
        recovery = self.recovery
        for conn in conns:
            holder, digest = self._holders.get(conn), self._digests.get(conn)
            sink = self.hub.sink(conn)
            if holder is None or digest is None or sink is None:
                continue  # gone meanwhile, or a resume not registered yet: it writes its own
            user = self.hub.user_of(conn)
            topics = [TOPIC_ALL, *map(room_topic, self.hub.rooms_of(conn))]
            if user is not None:
                topics.append(user_topic(user))
            streams = {t: recovery.clean_start(t) or UNKNOWN_START for t in topics}
            ends = {}
            if isinstance(sink, TimedRooms):
                ends = {room_topic(room): end for room, end in sink.subscription_ends().items()}
            held.append(HeldSession(conn, digest.hex(), user, streams, holder, ends))
        return held

    def holder_of(self, conn: ConnId) -> str:
        """Who holds ``conn``'s session here (without sessions: the wsId itself)."""
        return self._holders.get(conn, conn)
