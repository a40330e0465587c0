"""Opening a Server-Sent Events stream on the node: its connection registered, its
topics followed, and what it missed caught up from history, with no session.

A WebSocket client resumes a session the server keeps (sessioncore.py). A stream
needs none: its Last-Event-ID holds its position in every stream (sse.py), and its
rooms and user come again from its URL. So opening and resuming are one path, the
one a session's resume takes for its streams: capture the live pushes of the
streams, register the connection (its output dropped meanwhile: the capture has
them), follow its topics, read the history after each position (a new stream: from
the stream's position now), wait until every push published before that read has
reached this node (``Broker.sync``), then hand out history and capture, each push
once, in one synchronous step with opening the stream to fan-out
(``StreamRecovery.catch_up``).

Not done for a stream: presence (a stream listens; it is no member anyone sees),
and the repair a resume starts when this node is itself behind on a stream (a
rare loss on the way): that gap is found and filled for every member at the
stream's next push.
"""

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pushgate.hub import Sink
from pushgate.sessionresume import missed_histories
from pushgate.ssequery import SseStart
from pushgate.streams import Position
from pushgate.wire import StreamReport

if TYPE_CHECKING:
    from pushgate.node import Node


class StreamGone(Exception):
    """The stream's client went (or it was closed) while it opened."""


@dataclass(frozen=True, slots=True)
class Caught:
    """Where the stream starts (its first id: ``starts``), the pushgate messages it
    missed after that, in order per stream, and each stream's report: recovered or
    not, and where it is once those are sent. All empty when history is off."""

    starts: dict[str, Position]
    messages: list[bytes]
    reports: dict[str, StreamReport]


async def open_stream(node: "Node", start: SseStart, sink: Sink) -> Caught:
    """Register ``sink`` as ``start`` says and catch it up. The sink must drop what
    fan-out hands it until this returns (the capture holds it); then, in the same
    step, queue ``Caught.messages`` and take fan-out. Raises BrokerUnavailable
    (nothing is left registered), StreamGone."""
    topics = list(start.streams)
    keeps_history = node.broker.keeps_history
    recovery = node.recovery
    if keeps_history:
        recovery.capture(topics)
    try:
        _register(node, start, sink)
        following = node.following
        unsettled = [topic for topic in topics if not following.settled(topic)]
        if unsettled:
            await asyncio.gather(*map(following.sync, unsettled))
        if not keeps_history:
            return Caught({}, [], {})
        since = start.since or {}
        asked = {topic: since.get(topic) for topic in topics}
        histories, read = await missed_histories(recovery, node.broker, asked)
        await node.broker.sync(topics)  # every push read above has reached us, or is captured
        if node.hub.sink(start.conn_id) is not sink:
            raise StreamGone(start.conn_id)
        if start.since is not None:  # a resume (Last-Event-ID) that is caught up now
            node.meters.caught_up(len(asked), read)
        starts = {topic: since.get(topic) or histories[topic].position for topic in topics}
        caught = recovery.catch_up(starts, histories, True)
        return Caught(starts, caught.frames, caught.reports)
    except BaseException:
        node.connection_closed(start.conn_id, sink)
        raise
    finally:
        if keeps_history:
            recovery.release(topics)


def _register(node: "Node", start: SseStart, sink: Sink) -> None:
    """In the hub (with its user and rooms) and the directory: the back end reaches
    it by wsId (``/push/conn``, ``/room/join``) as any connection."""
    hub = node.hub
    hub.register(start.conn_id, sink, start.user)
    for room in start.rooms:
        hub.join(room, start.conn_id)
    node.directory.add(start.conn_id)  # found by other nodes soon; the stream needs not wait
