"""A node: this process's hub of connections, joined to the others by a broker.

The node turns the logic API's requests into broker traffic and broker traffic into
fan-out. A push is encoded to JSON once by the node that accepts it, published on a
topic (``all`` or ``room:<id>``), framed once by each node that receives it, and the
same frame bytes are handed to every local recipient.

A node subscribes to a room's topic while it has at least one local member in that
room, and only then; :meth:`Node._sync` keeps the subscription in step with
membership even when joins, leaves and disconnects interleave.

In a cluster a join or leave may name a wsId held by another node. The node then
finds the holder in the :class:`~pushgate.directory.Directory`, sends it a
:class:`~pushgate.messages.Command` on its topic ``node:<id>``, and waits up to
``control_timeout`` for the :class:`~pushgate.messages.Reply` on ``reply:<own id>``.

Streams and sessions (docs/recovery.md)
---------------------------------------

With history on, every push arrives as a :class:`~pushgate.streams.Publication` with
its stream position. What to do with each (deliver, hold, drop, repair a gap), what
a repair hands out once history is read, and what a resuming connection is given,
:class:`~pushgate.recovery.StreamRecovery` decides, without I/O; the node does the
I/O: it reads history (retrying while the broker is away, :meth:`Node._repair`),
waits for ``Broker.sync``, and hands frames and notices to the hub.

With sessions on, a connection's wsId names a session kept in
:class:`~pushgate.sessions.Sessions`. A resume (:meth:`Node.resume`) claims the
session, puts the connection back in its rooms with its output held, subscribes,
reads each stream's history after the client's position, waits until every push
published before that read has reached this node (``Broker.sync``), and then, in one
synchronous step, hands the connection the pushes it missed followed by those that
arrived live meanwhile (captured per stream by the recovery), each once, and lets
live fan-out reach it from the next push on.
"""

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from pushgate.broker.base import Broker
from pushgate.commands import Membership, PushAll, PushRoom, PushUser
from pushgate.directory import Directory, LocalDirectory
from pushgate.errors import (
    BrokerUnavailable,
    RoomLimitExceeded,
    SessionTaken,
    UnknownConnection,
)
from pushgate.framing import text_frame
from pushgate.hub import Hub, MembershipChange, Sink
from pushgate.ids import ConnId, RoomId
from pushgate.localanswers import answer_calls
from pushgate.messages import Command, Op
from pushgate.meters import Meters
from pushgate.nodecalls import Answer, NodeCalls
from pushgate.recovery import Action, StreamRecovery
from pushgate.sessions import ANY_USER, AnyUser, Session, Sessions, holder_node, new_token
from pushgate.streams import (
    ROOM_TOPIC_PREFIX,
    TOPIC_ALL,
    USER_TOPIC_PREFIX,
    History,
    Position,
    Publication,
    room_topic,
    user_topic,
)
from pushgate.wire import (
    CLOSE_SESSION_TAKEN,
    StreamReport,
    encode_notice,
    encode_push,
)

log = logging.getLogger(__name__)

# How long a session write (a detach) may hold up a stop.
SESSION_FLUSH_TIMEOUT = 2.0
# An eviction that finds no connection of its holder here is remembered this long
# (seconds), at most EVICTED_MAX of them: the resume it is meant for may not have
# learned its holder yet (its claim's answer and the eviction travel apart).
EVICTED_TTL = 30.0
EVICTED_MAX = 10_000
# Waits between reads of a stream's history to fill a gap, while the broker is away:
# about 3 s in all, never more than 0.5 s between two reads.
REPAIR_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5)


@dataclass(frozen=True, slots=True)
class Opened:
    """A new connection's session token (None: sessions off), and a future that
    completes once its welcome may go out (None: at once)."""

    token: str | None
    ready: "asyncio.Future[None] | None"


@dataclass(frozen=True, slots=True)
class Resumed:
    """A resume that succeeded: the session, each stream's report, and the frames
    the client missed, in order per stream, to send right after the welcome."""

    session: Session
    streams: dict[str, StreamReport]
    frames: list[bytes]


class Node:
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
        history: bool = True,
    ) -> None:
        self.hub = hub
        self.broker = broker
        self.sessions = sessions  # None: sessions are off
        self.history = history
        self.draining = False
        self.directory: Directory = directory if directory is not None else LocalDirectory()
        self.node_id = node_id or os.urandom(6).hex()
        self.has_gateway = has_gateway
        # Calls to and from the other nodes: joins, leaves, evictions, presence.
        self.calls = NodeCalls(self.node_id, broker, control_timeout, self._in_background)
        self.calls.handle("join", self._answer_membership)
        self.calls.handle("leave", self._answer_membership)
        self.calls.handle("evict", self._answer_evict, reply=False)
        answer_calls(self.calls, self)
        self._subscribed: set[str] = set()
        self._topic_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Session writes a stop waits for (a detach must reach the store).
        self._session_writes: set[asyncio.Task[None]] = set()
        # Streams: positions, repairs and resume captures (decisions; the I/O is here).
        self.recovery = StreamRecovery()
        # The holder (<node id>.<nonce>) of each session a local connection holds.
        self._holders: dict[ConnId, str] = {}
        # Holders evicted before they were known here (holder -> when), for resumes
        # whose claim has not come back yet: see _evict.
        self._evicted: dict[str, float] = {}
        self._position_queries: dict[str, asyncio.Future[History]] = {}
        self.gaps_filled = 0
        self.gaps_lost = 0
        self.meters = Meters()

    async def start(self) -> None:
        """Connect the broker and subscribe to what this node's roles need.

        Raises BrokerUnavailable when the broker does not confirm the subscriptions.
        """
        await self.broker.start(self)
        if self.has_gateway:  # only a node that holds connections announces itself
            await self.directory.start(self.node_id)
        if self.sessions is not None:
            await self.sessions.start()
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
        if self.has_gateway and self.history:
            self._in_background(self._learn_position(TOPIC_ALL))

    async def close(self) -> None:
        if self._session_writes:  # detaches: the sessions must stay resumable
            await asyncio.wait(list(self._session_writes), timeout=SESSION_FLUSH_TIMEOUT)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.sessions is not None:
            await self.sessions.close()
        await self.directory.close()
        await self.broker.close()

    @property
    def ready(self) -> bool:
        """The broker is connected, every subscription confirmed, and not draining."""
        return self.broker.ready and not self.draining

    # The logic API's side

    async def push_all(self, request: PushAll) -> int | None:
        """Publish a push to every connection in the cluster; see Broker.publish_push."""
        payload = encode_push(request.tag, request.val)
        return await self._publish_push("all", TOPIC_ALL, payload)

    async def push_room(self, request: PushRoom) -> int | None:
        """Publish a push to every member of a room, wherever it is connected."""
        payload = encode_push(request.tag, request.val, request.room)
        return await self._publish_push("room", room_topic(request.room), payload)

    async def push_user(self, request: PushUser) -> int | None:
        """Publish a push to every connection of a user, wherever it is connected."""
        payload = encode_push(request.tag, request.val, user=request.user)
        return await self._publish_push("user", user_topic(request.user), payload)

    async def _publish_push(self, kind: str, topic: str, payload: bytes) -> int | None:
        started = time.perf_counter()
        delivered = await self.broker.publish_push(topic, payload)
        meters = self.meters
        meters.publish_seconds.observe(time.perf_counter() - started)
        meters.pushes[kind] += 1
        return delivered

    async def join(self, request: Membership) -> MembershipChange:
        """Put a connection, wherever it is held, in a room, or a detached session in
        it; returns once pushes to the room reach it (or wait in history for it).
        Raises UnknownConnection, RoomLimitExceeded, BrokerUnavailable."""
        if request.conn not in self.hub:
            return await self._elsewhere("join", request)
        change = self.hub.join(request.room, request.conn)
        topic = room_topic(request.room)
        try:
            await self._sync(topic)
            if change.changed and self.sessions is not None:
                position = await self._position(topic)
                await self.sessions.add_stream(
                    request.conn,
                    topic,
                    position,
                    max_rooms=self.hub.max_rooms_per_conn,
                )
        except BrokerUnavailable:
            if change.changed:  # undo: the caller is told it failed
                with contextlib.suppress(UnknownConnection):  # it may have gone meanwhile
                    self.hub.leave(request.room, request.conn)
                self._in_background(self._sync(topic))  # and let go of the topic
            raise
        return change

    async def leave(self, request: Membership) -> MembershipChange:
        """Take a connection, wherever it is held, or a detached session, out of a room."""
        if request.conn not in self.hub:
            return await self._elsewhere("leave", request)
        change = self.hub.leave(request.room, request.conn)
        if change.room_boundary:
            await self._sync(room_topic(request.room))
        if change.changed and self.sessions is not None:
            await self.sessions.remove_stream(request.conn, room_topic(request.room))
        return change

    async def _elsewhere(self, op: Op, request: Membership) -> MembershipChange:
        """A join or leave for a wsId not held here: its holder's, or its session's."""
        holder = await self.directory.locate(request.conn)
        if holder is not None and holder != self.node_id:
            return await self._ask(op, request, holder)
        if self.sessions is None:
            raise UnknownConnection(request.conn)
        topic = room_topic(request.room)
        if op == "join":
            position = await self._position(topic)
            # No live node holds the connection: the session is detached, or its holder
            # died (its entry then outlives it by up to the session TTL), or it is being
            # resumed right now and not yet findable (the one case a join can miss).
            added = await self.sessions.add_stream(
                request.conn,
                topic,
                position,
                max_rooms=self.hub.max_rooms_per_conn,
            )
            if added == "limit":
                raise RoomLimitExceeded(request.conn, self.hub.max_rooms_per_conn)
            result: str = added
        else:
            result = await self.sessions.remove_stream(request.conn, topic)
        if result == "unknown":
            raise UnknownConnection(request.conn)
        return MembershipChange(result in ("added", "removed"), False)

    async def _position(self, topic: str) -> Position:
        """Where a stream is now, as far as pushes delivered here go. Callers that ask
        at the same time share one read (a burst of connections, one query)."""
        last = self.recovery.last(topic)
        if last is not None:
            return last
        query = self._position_queries.get(topic)
        if query is None:
            query = asyncio.ensure_future(self.broker.history(topic, None))
            self._position_queries[topic] = query
            query.add_done_callback(lambda _: self._position_queries.pop(topic, None))
        return (await asyncio.shield(query)).position

    def connection_count(self) -> int:
        return len(self.hub)

    def held_sessions(self) -> int:
        """Sessions held by connections of this node."""
        return len(self._holders)

    def room_sizes(self) -> dict[RoomId, int]:
        return self.hub.room_sizes()

    def room_count(self) -> int:
        return self.hub.room_count()

    # The gateway's side

    def connection_opened(
        self,
        conn: ConnId,
        sink: Sink,
        *,
        user: str | None = None,
        rooms: Iterable[RoomId] = (),
    ) -> Opened:
        """Register a new connection, of ``user`` and in ``rooms`` if its token says
        so, and start its session.

        The returned future completes once other nodes can find it, pushes to its
        user and rooms reach it, and its session can be resumed: the gateway holds
        the welcome frame until then, so a wsId a client learns resolves.
        """
        self.hub.register(conn, sink, user)
        joined = [room_topic(room) for room in rooms if self.hub.join(room, conn).changed]
        streams = [TOPIC_ALL, *joined]
        if user is not None:
            streams.append(user_topic(user))
        registered = self.directory.add(conn)
        token = None
        if self.sessions is not None:
            token = new_token()
            self._holders[conn] = holder = self._new_holder()
            ready = self._in_background(
                self._settle_new(registered, streams, (conn, token, user, holder))
            )
            return Opened(token, ready)
        if len(streams) == 1:
            return Opened(None, registered)
        return Opened(None, self._in_background(self._settle_new(registered, streams, None)))

    async def _settle_new(
        self,
        registered: "asyncio.Future[None] | None",
        streams: list[str],
        session: tuple[ConnId, str, str | None, str] | None,
    ) -> None:
        if registered is not None:
            await registered
        results = await asyncio.gather(
            *(self._sync(t) for t in streams if t != TOPIC_ALL), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("could not subscribe a new connection's topics: %s", result)
        if session is None or self.sessions is None:
            return
        conn, token, user, holder = session
        try:
            positions = await asyncio.gather(*(self._position(t) for t in streams))
            await self.sessions.create(
                conn, token, user, dict(zip(streams, positions, strict=True)), holder
            )
        except BrokerUnavailable as exc:
            log.warning("session %s cannot be resumed: %s", conn, exc)

    def connection_closed(self, conn: ConnId, sink: Sink | None = None) -> None:
        """Forget a connection and every room membership it had, at once; its session
        (if any) waits for a resume."""
        if sink is not None and self.hub.sink(conn) is not sink:
            return  # another connection has its session now
        self.directory.discard(conn)
        user = self.hub.user_of(conn)
        topics = [room_topic(room) for room in self.hub.unregister(conn)]
        if user is not None and self.hub.user_size(user) == 0:
            topics.append(user_topic(user))
        for topic in topics:
            self._in_background(self._sync(topic))
        holder = self._holders.pop(conn, None)
        if holder is not None and self.sessions is not None:
            task = self._in_background(self._detach(conn, holder))
            self._session_writes.add(task)
            task.add_done_callback(self._session_writes.discard)

    async def _detach(self, conn: ConnId, holder: str) -> None:
        assert self.sessions is not None
        try:
            await self.sessions.detach(conn, holder)
        except BrokerUnavailable as exc:
            log.warning("session %s: %s", conn, exc)

    def _new_holder(self) -> str:
        return f"{self.node_id}.{os.urandom(4).hex()}"

    # Resuming a session

    async def resume(
        self,
        conn: ConnId,
        token: str,
        since: dict[str, Position],
        sink: Sink,
        user: str | AnyUser | None = ANY_USER,
    ) -> Resumed | None:
        """Take session ``conn`` over for ``sink`` if ``token`` is its token and
        ``user`` its user (None: no user; ANY_USER when this server verifies no
        tokens); None if it cannot be resumed. The sink receives nothing until this
        returns: the caller queues the welcome, then ``Resumed.frames``, then opens
        it to fan-out. Whatever happens, nothing of the attempt is left behind but
        the connection it registered, and only when it returns a Resumed.

        Raises BrokerUnavailable when the session or history cannot be read now, and
        SessionTaken when a later resume of the session (on any node) won.
        """
        resumed = await self._resume(conn, token, since, sink, user)
        if resumed is None:
            self.meters.resumes["failed"] += 1
        elif all(report.recovered for report in resumed.streams.values()):
            self.meters.resumes["recovered"] += 1
        else:
            self.meters.resumes["not_recovered"] += 1
        return resumed

    async def _resume(
        self,
        conn: ConnId,
        token: str,
        since: dict[str, Position],
        sink: Sink,
        user: str | AnyUser | None,
    ) -> Resumed | None:
        if self.sessions is None:
            return None
        holder = self._new_holder()
        session = await self.sessions.claim(conn, token, holder, user=user)
        if session is None:
            return None
        # The previous holder goes even if this claim has lost already: it is not
        # the session's holder any more either way.
        self._evict(conn, session.previous_holder)
        if self._evicted.pop(holder, None) is not None:
            # A later claim evicted this one before its answer got here: it lost.
            raise SessionTaken(conn)
        # Our claim is the latest this node knows of (a later one would have evicted
        # it, above or from now on): a connection still registered here under this
        # wsId held an earlier claim, whose eviction may still be on its way.
        self._take_over(conn)
        topics = list(session.streams)
        self.recovery.capture(topics)
        try:
            self._holders[conn] = holder
            self.hub.register(conn, sink, session.user)
            for room in session.rooms:
                with contextlib.suppress(RoomLimitExceeded):
                    self.hub.join(RoomId(room), conn)
            registered = self.directory.add(conn)
            if registered is not None:
                await registered
            # A topic already subscribed, with no change under way, needs no call.
            unsettled = [
                t
                for t in topics
                if t != TOPIC_ALL and (t not in self._subscribed or t in self._topic_locks)
            ]
            if unsettled:
                await asyncio.gather(*map(self._sync, unsettled))
            starts = {t: since.get(t, session.streams[t]) for t in topics}
            histories = await self.broker.histories(starts)
            await self.broker.sync(topics)  # every push read above has reached us, or is captured
            if self.hub.sink(conn) is not sink or self._holders.get(conn) != holder:
                raise SessionTaken(conn)  # evicted meanwhile by a later claim
            return self._caught_up(session, starts, histories)
        except BaseException:
            self.connection_closed(conn, sink)
            if self._holders.get(conn) == holder:  # never registered: nothing else undoes it
                del self._holders[conn]
            raise
        finally:
            self.recovery.release(topics)

    def _take_over(self, conn: ConnId) -> None:
        """Close (4001) the connection registered here under ``conn``, if any."""
        sink = self.hub.sink(conn)
        if sink is None:
            return
        log.info("session %s resumed by another connection; closing the old one", conn)
        sink.close(CLOSE_SESSION_TAKEN, "session resumed by another connection")
        if self.hub.sink(conn) is sink:  # still registered: it was resuming
            self.connection_closed(conn, sink)

    def _caught_up(
        self, session: Session, starts: dict[str, Position], histories: dict[str, History]
    ) -> Resumed:
        """History, then what was captured live, each push once (synchronous, so no
        push can slip between this and live fan-out); streams this node is behind
        on are repaired for every member at once."""
        catch_up = self.recovery.catch_up(starts, histories, self.history)
        for topic in catch_up.repair:
            self._start_repair(topic)
        return Resumed(session, catch_up.reports, catch_up.frames)

    def _evict(self, conn: ConnId, previous: str) -> None:
        """Close the connection that held a session before it was resumed (4001):
        here, or by a command to the node that holds it.

        A holder not found here may belong to a resume whose claim has not come
        back yet (the claim's answer and this eviction travel apart): it is
        remembered for a while, and that resume gives up when it learns its holder.
        """
        if not previous:
            return
        node = holder_node(previous)
        if node != self.node_id:
            self.calls.tell(node, "evict", conn=conn, reply_to=previous)
            return
        if self._holders.get(conn) == previous:
            self._take_over(conn)
        else:
            self._remember_evicted(previous)

    def _remember_evicted(self, holder: str) -> None:
        now = time.monotonic()
        evicted = self._evicted
        if len(evicted) >= EVICTED_MAX or (evicted and now - next(iter(evicted.values())) > 1):
            # Oldest first (insertion order): drop what is too old, then over the cap.
            for old, when in list(evicted.items()):
                if now - when < EVICTED_TTL and len(evicted) < EVICTED_MAX:
                    break
                del evicted[old]
        evicted[holder] = now

    # The broker's side (BrokerHandler)

    def on_message(self, topic: str, payload: bytes) -> int:
        if not self.calls.on_message(topic, payload):
            log.warning("dropped a message on unexpected topic %r", topic)
        return 0

    def on_publication(self, topic: str, pub: Publication) -> int:
        if not self._follows(topic):
            # Arrived after this node let go of the topic: nobody here wants it, and it
            # must not become the position a later subscription is checked against.
            return 0
        arrival = self.recovery.arrive(topic, pub)
        if arrival.action is Action.REPAIR:
            self._in_background(self._repair(topic))
        if arrival.action is not Action.DELIVER:
            return 0
        if arrival.notice is not None:
            log.warning(
                "stream %s: new epoch %s (was %s): its history was lost; telling its clients",
                topic,
                pub.epoch,
                arrival.was,
            )
            self.gaps_lost += 1
            self._notify(topic, arrival.notice)
        return self._fan_out(topic, pub)

    def on_reconnected(self) -> None:
        """The broker lost messages while it reconnected: catch every stream up."""
        for topic in self.recovery.topics():
            self._start_repair(topic)

    def _fan_out(self, topic: str, pub: Publication) -> int:
        self.recovery.fanned_out(topic, pub)
        recipients = self._send(topic, pub.data)
        if recipients:
            self.meters.handed(pub.accepted_at, recipients)
        return recipients

    def _notify(self, topic: str, report: StreamReport) -> None:
        """Tell the clients on a stream that pushes of it were lost."""
        self._send(topic, encode_notice({topic: report}))

    def _send(self, topic: str, message: bytes) -> int:
        """Frame ``message`` once (if anyone here is on ``topic``) and hand it to
        every local recipient of the stream; return how many."""
        if topic == TOPIC_ALL:
            return self.hub.broadcast(text_frame(message))
        if topic.startswith(ROOM_TOPIC_PREFIX):
            room = RoomId(topic[len(ROOM_TOPIC_PREFIX) :])
            return self.hub.send_room(room, text_frame(message)) if self.hub.room_size(room) else 0
        if topic.startswith(USER_TOPIC_PREFIX):
            user = topic[len(USER_TOPIC_PREFIX) :]
            return self.hub.send_user(user, text_frame(message)) if self.hub.user_size(user) else 0
        log.warning("dropped a push on unexpected topic %r", topic)
        return 0

    # Filling gaps

    def _start_repair(self, topic: str) -> None:
        if self.recovery.start_repair(topic):
            self._in_background(self._repair(topic))

    async def _repair(self, topic: str) -> None:
        """Deliver what a stream is missing from history, then what waited meanwhile.

        A broker that cannot answer yet (it is reconnecting; a restarted Redis
        Cluster master refuses for its first 2 s) is asked again, a few times over
        about three seconds and once more at the end of them, while the stream's
        pushes wait."""
        history: History | None = None
        error = ""
        try:
            for delay in (*REPAIR_RETRY_DELAYS, None):
                try:
                    history = await self.broker.history(topic, self.recovery.last(topic))
                    error = ""
                    break
                except BrokerUnavailable as exc:
                    error = str(exc)
                    if delay is None:
                        break
                    await asyncio.sleep(delay)
        finally:
            self._finish_repair(topic, history, error)

    def _finish_repair(self, topic: str, history: History | None, error: str) -> None:
        outcome = self.recovery.finish_repair(topic, history)
        for step in outcome.steps:
            if isinstance(step, Publication):
                self._fan_out(topic, step)
            else:
                self._notify(topic, step)
        if outcome.lost:
            self.gaps_lost += 1
            log.warning(
                "stream %s: a gap in its positions; %d pushes filled from history, the rest "
                "could not be%s; its clients were told",
                topic,
                outcome.filled,
                f" ({error})" if error else "",
            )
        elif outcome.filled:
            self.gaps_filled += 1
            log.warning("stream %s: gap of %d pushes filled from history", topic, outcome.filled)

    # Joins and leaves for connections held by other nodes

    async def _ask(self, op: Op, request: Membership, holder: str) -> MembershipChange:
        reply = await self.calls.call(
            holder,
            op,
            room=request.room,
            conn=request.conn,
            about=f", which holds wsId {request.conn},",
        )
        return MembershipChange(reply.changed, False)

    async def _answer_membership(self, command: Command) -> Answer:
        """Another node's join or leave of a connection held here."""
        if command.conn not in self.hub:
            raise UnknownConnection(command.conn)
        request = Membership(command.room, command.conn)
        change = await (self.join(request) if command.op == "join" else self.leave(request))
        return Answer(changed=change.changed)

    async def _answer_evict(self, command: Command) -> Answer:
        """Another node resumed a session held here by ``reply_to`` (a holder)."""
        self._evict(command.conn, command.reply_to)
        return Answer()

    # Subscriptions follow membership

    def _wanted(self, topic: str) -> bool:
        """Whether this node should be subscribed to a room's or a user's topic now."""
        if topic.startswith(ROOM_TOPIC_PREFIX):
            return self.hub.room_size(RoomId(topic[len(ROOM_TOPIC_PREFIX) :])) > 0
        return self.hub.user_size(topic[len(USER_TOPIC_PREFIX) :]) > 0

    async def _sync(self, topic: str) -> None:
        """Subscribe to a room's or user's topic if it has local members, else unsubscribe.

        Each call reads the wanted state under the topic's lock, so whatever order
        concurrent calls run in, the last one leaves the subscription matching the
        membership.
        """
        entry = self._topic_locks.get(topic)
        lock, users = entry if entry is not None else (asyncio.Lock(), 0)
        self._topic_locks[topic] = (lock, users + 1)
        try:
            async with lock:
                wanted = self._wanted(topic)
                if wanted and topic not in self._subscribed:
                    # Recorded first: a broker that could not confirm still wants the
                    # topic, so a later call must be able to unsubscribe it.
                    self._subscribed.add(topic)
                    await self.broker.subscribe(topic)
                    if self.history:
                        self._in_background(self._learn_position(topic))
                elif not wanted and topic in self._subscribed:
                    self._subscribed.discard(topic)
                    self.recovery.forget(topic)
                    await self.broker.unsubscribe(topic)
        finally:
            lock, users = self._topic_locks[topic]
            if users == 1:
                del self._topic_locks[topic]
            else:
                self._topic_locks[topic] = (lock, users - 1)

    async def _learn_position(self, topic: str) -> None:
        """Note where a stream is when this node starts following it, so that pushes
        lost before the first one arrives (a broker reconnecting, a Redis Cluster
        slot moving) are found and filled like any later gap. The position is read,
        then a sync: if no push arrived meanwhile, none was published since the
        subscription, and the position read is the last one published before it."""
        try:
            history = await self.broker.history(topic, None)
            await self.broker.sync([topic])
        except BrokerUnavailable:
            return  # the first push to arrive sets the position instead
        if self._follows(topic):
            self.recovery.noted(topic, history.position)

    def _follows(self, topic: str) -> bool:
        return topic == TOPIC_ALL or topic in self._subscribed

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
