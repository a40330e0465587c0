"""Resuming a session, here or from another node, so that exactly one live connection
holds it: the claim, the eviction of the connection that held it before (here, or by a
command to its node), the connection registered in the session's rooms with nothing
sent to it yet, and its catch-up: history, then what was captured live, each push
once (docs/recovery.md). A part of :class:`~pushgate.sessioncore.SessionCore`, over
its state.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pushgate.broker.base import Broker
from pushgate.directory import Directory
from pushgate.errors import RoomLimitExceeded, SessionTaken
from pushgate.follow import Following
from pushgate.hub import Hub, Sink
from pushgate.ids import ConnId, RoomId
from pushgate.messages import Command
from pushgate.meters import Meters
from pushgate.nodecalls import Answer, NodeCalls
from pushgate.presencerooms import PresenceRooms
from pushgate.recovery import StreamRecovery
from pushgate.sessions import ANY_USER, AnyUser, Session, Sessions, holder_node, token_digest
from pushgate.streams import History, Position
from pushgate.wire import CLOSE_SESSION_TAKEN, StreamReport

log = logging.getLogger("pushgate.node")

# An eviction that finds no connection of its holder here is remembered this long
# (seconds), at most EVICTED_MAX of them: the resume it is meant for may not have
# learned its holder yet (its claim's answer and the eviction travel apart).
EVICTED_TTL = 30.0
EVICTED_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Resumed:
    """A resume that succeeded: the session, each stream's report, and the frames
    the client missed, in order per stream, to send right after the welcome."""

    session: Session
    streams: dict[str, StreamReport]
    frames: list[bytes]


async def missed_histories(
    recovery: StreamRecovery, broker: Broker, starts: Mapping[str, Position | None]
) -> tuple[dict[str, History], int]:
    """Each stream's history after its start (None: only its position): from what
    this node fanned out itself where it can vouch for it (recent.py), the others
    read in one batch; and how many were read. The streams must be captured."""
    histories = recovery.recent_histories(starts)
    unread = {topic: start for topic, start in starts.items() if topic not in histories}
    if unread:
        histories.update(await broker.histories(unread))
    return histories, len(unread)


class Resuming:
    """Resumes and evictions of the sessions of one node, over the core's state."""

    node_id: str
    hub: Hub
    directory: Directory
    sessions: Sessions
    broker: Broker
    recovery: StreamRecovery
    calls: NodeCalls
    meters: Meters
    presence: PresenceRooms | None
    _following: Following
    _start_repair: Callable[[str], object]
    _holders: dict[ConnId, str]
    _digests: dict[ConnId, bytes]
    _keep_digests: bool
    _evicted: dict[str, float]

    if TYPE_CHECKING:  # the core's own

        def closed(
            self, conn: ConnId, sink: Sink | None = None, *, ended: bool = False
        ) -> None: ...

        def _new_holder(self) -> str: ...

    async def resume(
        self,
        conn: ConnId,
        token: str,
        since: dict[str, Position],
        sink: Sink,
        user: str | AnyUser | None = ANY_USER,
        info: str | None = None,
    ) -> Resumed | None:
        """Take session ``conn`` over for ``sink`` if ``token`` is its token and
        ``user`` its user (None: no user; ANY_USER when this server verifies no
        tokens); None if it cannot be resumed (``info``: the resuming connection's
        token's, for a presence room that has forgotten the session). The sink
        receives nothing until this returns: the caller queues the welcome, then
        ``Resumed.frames``, then opens it to fan-out. Whatever happens, nothing of
        the attempt is left behind but the connection it registered, and only when
        it returns a Resumed.

        Raises BrokerUnavailable when the session or history cannot be read now, and
        SessionTaken when a later resume of the session (on any node) won.
        """
        resumed = await self._resume(conn, token, since, sink, user, info)
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
        info: str | None,
    ) -> Resumed | None:
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
            if self._keep_digests:
                self._digests[conn] = token_digest(token)
            self.hub.register(conn, sink, session.user)
            for room in session.rooms:
                with contextlib.suppress(RoomLimitExceeded):
                    self.hub.join(RoomId(room), conn)
            registered = self.directory.add(conn)
            if self.presence is not None:  # held here now: no event, unless it was swept
                self.presence.identify(conn, info)
                await self.presence.enter_all(map(RoomId, session.rooms), conn)
            if registered is not None:
                await registered
            # A topic already subscribed, with no change under way, needs no call.
            unsettled = [t for t in topics if not self._following.settled(t)]
            if unsettled:
                await asyncio.gather(*map(self._following.sync, unsettled))
            starts = {t: since.get(t, session.streams[t]) for t in topics}
            histories, read = await missed_histories(self.recovery, self.broker, starts)
            await self.broker.sync(topics)  # every push read above has reached us, or is captured
            if self.hub.sink(conn) is not sink or self._holders.get(conn) != holder:
                raise SessionTaken(conn)  # evicted meanwhile by a later claim
            self.meters.caught_up(len(starts), read)
            return self._caught_up(session, starts, histories)
        except BaseException:
            self.closed(conn, sink)
            if self._holders.get(conn) == holder:  # never registered: nothing else undoes it
                del self._holders[conn]
                self._digests.pop(conn, None)
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
            self.closed(conn, sink)

    def _caught_up(
        self, session: Session, starts: dict[str, Position], histories: dict[str, History]
    ) -> Resumed:
        """History, then what was captured live, each push once (synchronous, so no
        push can slip between this and live fan-out); streams this node is behind
        on are repaired for every member at once."""
        catch_up = self.recovery.catch_up(
            starts, histories, self.broker.keeps_history, session.ws_id
        )
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

    async def answer_evict(self, command: Command) -> Answer:
        """Another node resumed a session held here by ``reply_to`` (a holder)."""
        self._evict(command.conn, command.reply_to)
        return Answer()
