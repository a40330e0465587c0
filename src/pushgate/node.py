"""A node: this process's hub of connections, joined to the others by a broker.

The node turns the logic API's requests into broker traffic and broker traffic into
fan-out. A push is encoded to JSON once by the node that accepts it, published on a
topic (``all`` or ``room:<id>``), framed once by each node that receives it, and the
same frame bytes are handed to every local recipient. Its parts, each a module over
its state: pushes published (nodepublish.py), joins and leaves of the connections it
holds (nodejoins.py) and of those held elsewhere (nodeelsewhere.py), deliveries and
gap repairs (nodedelivery.py).

Around it (each its own module): :class:`~pushgate.follow.Following` subscribes a
room's or user's topic while the room or user has local members, and only then;
:class:`~pushgate.nodecalls.NodeCalls` carries joins, leaves, evictions and presence
queries to the node that holds a wsId; :class:`~pushgate.sessioncore.SessionCore`
opens, closes and resumes connections and their sessions; and
:class:`~pushgate.recovery.StreamRecovery` decides, without I/O, what to do with each
push of a stream (deliver, hold, drop, repair a gap) and what a resume is given. The
node does the I/O: it reads history (retrying while the broker is away,
:meth:`Node._repair`) and hands frames and notices to the hub (docs/recovery.md).
"""

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol

from pushgate.broker.base import Broker
from pushgate.directory import Directory, LocalDirectory
from pushgate.follow import Following
from pushgate.hub import Hub, Sink
from pushgate.ids import ConnId, RoomId
from pushgate.localanswers import answer_calls
from pushgate.meters import Meters
from pushgate.nodecalls import NodeCalls
from pushgate.nodedelivery import Delivery
from pushgate.nodeelsewhere import Elsewhere
from pushgate.nodejoins import Joins
from pushgate.nodepublish import Publishing
from pushgate.presence import PresenceStore, Roster
from pushgate.presencerooms import PresenceRooms, Reports
from pushgate.recent import BUDGET, PER_STREAM, Recent
from pushgate.recovery import StreamRecovery
from pushgate.restore import Restorer
from pushgate.sessioncore import Opened, SessionCore
from pushgate.sessionresume import Resumed
from pushgate.sessions import ANY_USER, AnyUser, NoSessions, Sessions
from pushgate.streams import (
    TOPIC_ALL,
    History,
    Position,
    room_of,
    room_topic,
    user_topic,
)

log = logging.getLogger(__name__)


class Service(Protocol):
    """Something the node starts with it and closes before its broker: the webhooks."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


class Node(Publishing, Joins, Delivery, Elsewhere):
    """Owns the hub and the broker; the logic API and the gateway both talk to it."""

    def __init__(
        self,
        hub: Hub,
        broker: Broker,
        *,
        directory: Directory | None = None,
        node_id: str | None = None,
        has_gateway: bool = True,
        control_timeout: float = 2.0,
        sessions: Sessions | None = None,
        presence: PresenceStore | None = None,
        has_presence: Callable[[RoomId], bool] | None = None,
        reports: Reports | None = None,
        webhooks: "Service | None" = None,
        unfollow_after: float = 0.0,
    ) -> None:
        """``presence``: where the presence of the rooms ``has_presence`` names is kept
        (presence.py), and the sessions and rooms ``reports`` wants told to the
        webhooks; without it no room keeps presence and nothing is reported but
        client messages. ``unfollow_after``: seconds a room stays followed after its
        last local member left, with a broker whose history is a round trip away
        (follow.py)."""
        self.hub = hub
        self.broker = broker
        self.sessions: Sessions = sessions if sessions is not None else NoSessions()
        self.draining = False
        self.directory: Directory = directory if directory is not None else LocalDirectory()
        self.node_id = node_id or os.urandom(6).hex()
        self.has_gateway = has_gateway
        # Calls to and from the other nodes: joins, leaves, evictions, presence.
        self.calls = NodeCalls(self.node_id, broker, control_timeout, self._in_background)
        self.calls.handle("join", self._answer_membership)
        self.calls.handle("leave", self._answer_membership)
        answer_calls(self.calls, self)
        self._background: set[asyncio.Task[None]] = set()
        self.meters = Meters()
        # Streams: positions, repairs and resume captures (decisions; the I/O is here).
        # Where a lost epoch ended stays known a session's TTL after the node lets go
        # of the stream: its members, cut at once, resume within it.
        # A broker whose history is a round trip away: resumes are caught up from
        # what the node fanned out last, where that reaches back far enough.
        remote_history = broker.keeps_history and not broker.answers_at_once
        self.recovery = StreamRecovery(
            linger=self.sessions.ttl,
            recent=Recent(PER_STREAM, BUDGET) if remote_history else None,
        )
        self.following = Following(
            broker,
            hub,
            self.recovery,
            self._in_background,
            unfollow_after=unfollow_after if remote_history else 0.0,
        )
        # Opening, closing and resuming connections and their sessions.
        self.core = SessionCore(
            node_id=self.node_id,
            hub=hub,
            directory=self.directory,
            sessions=self.sessions,
            broker=broker,
            recovery=self.recovery,
            following=self.following,
            calls=self.calls,
            meters=self.meters,
            spawn=self._in_background,
            position=self._position,
            start_repair=self._start_repair,
        )
        self.calls.handle("evict", self.core.answer_evict, reply=False)
        # The sessions held here, written back into a Redis that restarted empty.
        self.restorer = Restorer(core=self.core, directory=self.directory, sessions=self.sessions)
        if has_gateway and self.sessions.enabled:
            self.directory.watch(self.restorer.lost)
        self.presence: PresenceRooms | None = None
        if presence is not None and has_presence is not None:
            self.presence = self.core.presence = PresenceRooms(
                presence,
                has_presence,
                hub,
                self._in_background,
                holder_of=self.core.holder_of,
                sessions_kept=self.sessions.enabled,
                reports=reports,
            )
        self._reports = reports
        self.webhooks = webhooks
        self._position_queries: dict[str, asyncio.Future[History]] = {}
        self.gaps_filled = 0
        self.gaps_lost = 0

    async def start(self) -> None:
        """Connect the broker and subscribe to what this node's roles need.

        Raises BrokerUnavailable when the broker does not confirm the subscriptions.
        """
        await self.broker.start(self)
        if self.has_gateway:  # only a node that holds connections announces itself
            await self.directory.start(self.node_id)
        await self.sessions.start()
        if self.presence is not None and self.has_gateway:
            self.presence.start()
        if self.webhooks is not None:
            self.webhooks.start()
        commands, replies = self.calls.topics
        topics = [replies]
        if self.has_gateway:
            topics += [TOPIC_ALL, commands]
        # All at once: each is wanted even if the broker cannot confirm it yet.
        results = await asyncio.gather(
            *(self.broker.subscribe(topic) for topic in topics), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if self.has_gateway and self.broker.keeps_history:
            self._in_background(self.following.learn_position(TOPIC_ALL))

    async def close(self) -> None:
        self.following.close()
        await self.restorer.close()
        await self.core.flush()  # detaches: the sessions must stay resumable
        if self.presence is not None:
            await self.presence.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.webhooks is not None:  # what was emitted is queued before the broker goes
            await self.webhooks.close()
        await self.sessions.close()
        await self.directory.close()
        await self.broker.close()

    @property
    def ready(self) -> bool:
        """The broker is connected, every subscription confirmed, not draining, and
        the sessions held here are in the store (restore.py)."""
        return self.broker.ready and not self.draining and not self.restorer.holding

    # The logic API's side (pushes: nodepublish.py; joins and leaves: nodejoins.py)

    async def sign_in(self, conn: ConnId, user: str) -> bool:
        """A connection held here authenticated as ``user`` after it opened; returns
        once pushes to the user reach it. False when it cannot (not here, or it has a
        user already). Raises BrokerUnavailable."""
        if not self.hub.sign_in(conn, user):
            return False
        await self.following.sync(user_topic(user))
        return True

    def report(self, name: str, data: dict[str, object]) -> None:
        """Tell the webhooks of something a protocol saw (a Pusher cache miss), where
        some receiver may want it."""
        if self._reports is not None:
            self._reports.emit(name, data)

    async def end_session(self, conn: ConnId) -> bool:
        """End ``conn``'s session now (held here or detached): nobody can resume it,
        and it leaves its presence rooms. False when there was no such session."""
        rooms: Iterable[RoomId] = self.hub.rooms_of(conn) if conn in self.hub else ()
        if not rooms and self.presence is not None:
            described = await self.sessions.describe(conn)
            rooms = map(RoomId, described.rooms) if described is not None else ()
        ended = await self.sessions.end(conn)
        if ended and self.presence is not None:
            await self.presence.ended(conn, rooms)
        return ended

    async def roster(self, room: RoomId) -> Roster | None:
        """Who is in ``room``, when it keeps presence. Raises BrokerUnavailable."""
        return await self.presence.roster(room) if self.presence is not None else None

    async def position_of(self, room: RoomId) -> Position:
        """Where a room's stream is now, as far as pushes delivered here go."""
        return await self._position(room_topic(room))

    async def _position(self, topic: str) -> Position:
        """Where a stream is now, as far as pushes delivered here go. Callers that ask
        at the same time share one read (a burst of connections, one query)."""
        last = self.recovery.last(topic)
        if last is not None:
            return last
        if self.broker.answers_at_once:
            # Read in this turn: a shared read in a task of its own would make the
            # caller wait a turn for it (a client's subscribe to a room without a
            # push yet could no longer be answered in the turn that read it).
            return (await self.broker.history(topic, None)).position
        query = self._position_queries.get(topic)
        if query is None:
            query = asyncio.ensure_future(self.broker.history(topic, None))
            self._position_queries[topic] = query
            query.add_done_callback(lambda _: self._position_queries.pop(topic, None))
        return (await asyncio.shield(query)).position

    def room_sizes(self) -> dict[RoomId, int]:
        return self.hub.room_sizes()

    # The gateway's side: connections and sessions (sessioncore.py)

    def connection_opened(
        self,
        conn: ConnId,
        sink: Sink,
        *,
        user: str | None = None,
        rooms: Iterable[RoomId] = (),
        info: str | None = None,
        resumable: bool = True,
    ) -> Opened:
        """See :meth:`SessionCore.opened`."""
        return self.core.opened(conn, sink, user=user, rooms=rooms, info=info, resumable=resumable)

    def connection_closed(
        self, conn: ConnId, sink: Sink | None = None, *, ended: bool = False
    ) -> None:
        """See :meth:`SessionCore.closed`."""
        self.core.closed(conn, sink, ended=ended)

    async def resume(
        self,
        conn: ConnId,
        token: str,
        since: dict[str, Position],
        sink: Sink,
        user: str | AnyUser | None = ANY_USER,
        info: str | None = None,
    ) -> Resumed | None:
        """See :meth:`SessionCore.resume`."""
        return await self.core.resume(conn, token, since, sink, user, info)

    def held_sessions(self) -> int:
        """Sessions held by connections of this node."""
        return self.core.held_sessions()

    # The broker's side (BrokerHandler)

    def on_message(self, topic: str, payload: bytes) -> int:
        if not self.calls.on_message(topic, payload):
            log.warning("dropped a message on unexpected topic %r", topic)
        return 0

    def on_interrupted(self, topics: Mapping[str, bool]) -> None:
        """A subscription broke: note where its streams stood, which may be where their
        epochs end if the broker comes back without their history (epochends.py). A
        presence room's stream never counts as closed: a store that lost its history
        lost its members too, without a leave, and its clients must ask again."""
        presence = self.presence
        if presence is not None:
            topics = {
                topic: closed and not _announces(presence, topic)
                for topic, closed in topics.items()
            }
        self.recovery.interrupted(topics)

    def on_reconnected(self) -> None:
        """The broker lost messages while it reconnected: catch every stream up. It
        may have lost its data too (a Redis restarted empty): write back what this
        node holds; it is ready again once that is done and its streams are caught up
        (so that a client cut then is told what this node can tell)."""
        repairs = [self._start_repair(topic) for topic in self.recovery.topics()]
        if self.has_gateway and self.sessions.enabled:
            self.restorer.reconnected([task for task in repairs if task is not None])

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> "asyncio.Task[None]":
        """Run ``coro`` as a task that close() cancels and whose failure is logged."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: "asyncio.Task[None]") -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_coro(), exc_info=task.exception())


def _announces(presence: PresenceRooms, topic: str) -> bool:
    """Whether ``topic`` is the stream of a room whose members are told of each other."""
    room = room_of(topic)
    return room is not None and presence.announces(room)
