"""A node's deliveries: each publication the broker hands it, checked against its
stream's position (recovery.py decides: deliver, hold, drop, repair), fanned out to
the local connections once per encoding (hub.Outgoing), and the gaps filled from
history. A part of :class:`~pushgate.node.Node`, over its state.
"""

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from pushgate.broker.base import Broker
from pushgate.errors import BrokerUnavailable
from pushgate.follow import Following
from pushgate.hub import Hub, Outgoing
from pushgate.ids import ConnId
from pushgate.meters import Meters
from pushgate.recovery import Action, StreamRecovery
from pushgate.streams import TOPIC_ALL, History, Publication, room_of, user_of
from pushgate.wire import StreamReport, encode_notice, excluded_conn

log = logging.getLogger("pushgate.node")

# A history read for a repair, while the broker cannot answer: retried after these
# (about 3 s in all, never more than 0.5 s between two reads).
REPAIR_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5)


class Delivery:
    """Publications in, fan-out and repairs out, over the node's state."""

    hub: Hub
    broker: Broker
    following: Following
    recovery: StreamRecovery
    meters: Meters
    gaps_filled: int
    gaps_lost: int

    if TYPE_CHECKING:  # the node's own (not stubs: they would come first)

        def _in_background(self, coro: Coroutine[Any, Any, None]) -> "asyncio.Task[None]": ...

    def on_publication(self, topic: str, pub: Publication) -> int:
        if not self.following.follows(topic):
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
        """Hand ``message`` to every local recipient of the stream (but the wsId it
        excludes), each encoding of it made once (hub.Outgoing); return how many."""
        excluded = excluded_conn(message)
        skip = None if excluded is None else self.hub.sink(ConnId(excluded))
        if topic == TOPIC_ALL:
            return self.hub.broadcast(Outgoing(message), skip)
        room = room_of(topic)
        if room is not None:
            if not self.hub.room_size(room):
                return 0
            return self.hub.send_room(room, Outgoing(message), skip)
        user = user_of(topic)
        if user is not None:
            if not self.hub.user_size(user):
                return 0
            return self.hub.send_user(user, Outgoing(message), skip)
        log.warning("dropped a push on unexpected topic %r", topic)
        return 0

    # Filling gaps

    def _start_repair(self, topic: str) -> "asyncio.Task[None] | None":
        """Repair ``topic``; the repair's task, unless one was under way already."""
        if self.recovery.start_repair(topic):
            return self._in_background(self._repair(topic))
        return None

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
        if outcome.carried_from:
            log.info(
                "stream %s: its history was lost (epoch %s), but this node had delivered "
                "all of it, as far as it can tell (epochends.py); %d pushes of the new "
                "epoch from history",
                topic,
                outcome.carried_from,
                outcome.filled,
            )
        if outcome.lost:
            self.gaps_lost += 1
            log.warning(
                "stream %s: a gap in its positions; %d pushes filled from history, the rest "
                "could not be%s; its clients were told",
                topic,
                outcome.filled,
                f" ({error})" if error else "",
            )
        elif outcome.filled and not outcome.carried_from:
            self.gaps_filled += 1
            log.warning("stream %s: gap of %d pushes filled from history", topic, outcome.filled)
