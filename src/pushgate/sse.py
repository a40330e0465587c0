"""Server-Sent Events: how pushgate's messages look on ``GET /events`` (docs/sse.md).

Pure: no I/O. The asyncio side is sseconnection.py; the request is ssequery.py.

An event is its fields, one per line, and a blank line (the HTML standard's
"server-sent events"). A push is sent as the pushgate protocol's own JSON (wire.py)
in one ``data:`` line (compact JSON has no raw newline), with no ``event:`` field, so
that ``EventSource.onmessage`` gets it; pushgate's own events are named
``pushgate:open``, ``pushgate:lost``, ``pushgate:presence`` and ``pushgate:close``.

The ``id:`` of an event is **where the connection is in each of its streams**, not
the position of the one push: ``EventSource`` sends back only the last id it saw
(``Last-Event-ID``), and from it alone the server must resume every stream of the
connection (``all``, its user's, each room's) with no session kept anywhere. So
the id is ``<fingerprint>/<epoch>:<seq>,<epoch>:<seq>,...``: the positions in the
order of :func:`stream_names`, behind a fingerprint of those names (a stream set
that changed, or an id made for another URL, is told apart from a resume).

Two connections with the same streams hold different positions (one joined later),
so the id differs per connection. That part is kept tiny: the event body (``data:``
line and blank line) is made once per push and shared by every SSE member of a
gateway (hub.Outgoing); each connection only writes its own short ``id:`` line in
front, joined from one bytes object per stream. See :class:`SseFrame`.
"""

import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pushgate.ids import RoomId
from pushgate.streams import TOPIC_ALL, Position, room_topic, user_topic
from pushgate.wire import StreamReport

EVENT_OPEN = "pushgate:open"  # first: the connection's wsId, streams, whether resumed
EVENT_LOST = "pushgate:lost"  # pushes of a stream that could not be sent (a gap)
EVENT_PRESENCE = "pushgate:presence"  # a join or leave in a presence room
EVENT_CLOSE = "pushgate:close"  # last: the server closes the stream, and why
# A comment line: EventSource ignores it, proxies see bytes flow.
PING = b": ping\n\n"
# The longest Last-Event-ID read: 100 rooms' positions fit with room to spare.
MAX_EVENT_ID = 4096
_POSITION = re.compile(r"([0-9A-Za-z_-]{1,32}):(\d{1,16})")
_FINGERPRINT = re.compile(r"[0-9a-f]{8}")


class SseFrame(bytes):
    """The shared part of one event (its ``event:`` and ``data:`` lines and the blank
    line), made once per push and gateway, and the stream position it moves a
    connection to: ``stream`` (None: it moves none, as a notice) and ``position``
    (``<epoch>:<seq>``, ready to join into an id). A bytes object, so the hub hands
    it on like any frame; its two attributes save each connection parsing it."""

    stream: str | None
    position: bytes


def frame(message: bytes) -> bytes:
    """A pushgate message (JSON and a newline, wire.py) as one SSE event, without
    its ``id:`` line (the connection's own: :meth:`StreamSet.id_line`).

    The message is parsed here, once per push and gateway, for its stream and
    position: the cost is per push, never per connection."""
    body = message[:-1] if message.endswith(b"\n") else message
    stream, position, event = _read(body)
    head = b"data: " if event is None else b"event: %s\ndata: " % event.encode()
    out = SseFrame(head + body + b"\n\n")
    out.stream = stream
    out.position = position
    return out


def _read(body: bytes) -> tuple[str | None, bytes, str | None]:
    """A message's stream, its position (``b""``: none) and its SSE event name."""
    try:
        message = json.loads(body)
    except ValueError:
        return None, b"", None
    if not isinstance(message, dict):
        return None, b"", None
    event = None
    if message.get("type") == 0:
        data = message.get("data")
        is_notice = isinstance(data, dict) and "recovered" in data
        event = EVENT_LOST if is_notice else EVENT_PRESENCE
    seq, epoch = message.get("seq"), message.get("epoch")
    if not isinstance(seq, int) or not isinstance(epoch, str) or not seq:
        return None, b"", event
    room, user = message.get("room"), message.get("user")
    if isinstance(room, str):
        stream = room_topic(RoomId(room))
    elif isinstance(user, str):
        stream = user_topic(user)
    else:
        stream = TOPIC_ALL
    return stream, position_bytes(Position(epoch, seq)), event


def position_bytes(position: Position) -> bytes:
    return b"%s:%d" % (position.epoch.encode(), position.seq)


def event(name: str, data: object, positions: bytes = b"") -> bytes:
    """One of pushgate's own events (``positions``: its ``id:`` line, or none)."""
    encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return positions + b"event: %s\ndata: %s\n\n" % (name.encode(), encoded)


def open_event(
    ws_id: str, resumed: bool, reports: dict[str, StreamReport], positions: bytes
) -> bytes:
    """The first event: the wsId (for the back end's /room/join, /push/conn), and
    where each stream is as of it, as a resume's welcome says (docs/recovery.md)."""
    data = {
        "wsId": ws_id,
        "resumed": resumed,
        "recovered": all(r.recovered for r in reports.values()),
        "streams": {name: r.as_json() for name, r in reports.items()},
    }
    return event(EVENT_OPEN, data, positions)


def lost_event(reports: dict[str, StreamReport], positions: bytes) -> bytes:
    """Streams a resume could not give everything of, and where they are now: the
    same data as a live notice's (a pushgate:lost without ``id``)."""
    streams = {name: r.as_json() for name, r in reports.items()}
    return event(EVENT_LOST, {"recovered": False, "streams": streams}, positions)


def close_event(code: int, reason: str) -> bytes:
    """The last event: the close code a WebSocket client would get (1012: the
    gateway drains, 1008: a limit...). EventSource reconnects by itself and resumes."""
    return event(EVENT_CLOSE, {"code": code, "reason": reason})


# Streams and ids


def stream_names(user: str | None, rooms: Iterable[RoomId]) -> tuple[str, ...]:
    """A connection's streams in the order its id lists them: ``all``, its user's,
    then its rooms' by name (the same for the same token and query, whatever the
    order the rooms were named in)."""
    names = [TOPIC_ALL]
    if user is not None:
        names.append(user_topic(user))
    names.extend(sorted(room_topic(room) for room in set(rooms)))
    return tuple(names)


@dataclass(frozen=True, slots=True)
class StreamSet:
    """A connection's streams: their slot in its id, and the id's fixed head. One
    object for every connection with the same streams (:func:`stream_set`), so a
    connection holds only its positions."""

    names: tuple[str, ...]
    slots: dict[str, int]
    prefix: bytes  # b"id: <fingerprint>/"

    def id_line(self, positions: Sequence[bytes]) -> bytes:
        return self.prefix + b",".join(positions) + b"\n"


@lru_cache(maxsize=4096)
def stream_set(names: tuple[str, ...]) -> StreamSet:
    slots = {name: i for i, name in enumerate(names)}
    return StreamSet(names, slots, b"id: %s/" % fingerprint(names).encode())


def fingerprint(names: Sequence[str]) -> str:
    """Eight hex digits that tell one list of streams from another."""
    joined = "\n".join(names).encode()
    return f"{zlib.crc32(joined):08x}"


class EventIdError(ValueError):
    """A Last-Event-ID that is not one this server makes."""


@dataclass(frozen=True, slots=True)
class EventId:
    """A Last-Event-ID read back: the fingerprint of its streams and their positions."""

    fingerprint: str
    positions: tuple[Position, ...]

    def since(self, names: tuple[str, ...]) -> dict[str, Position] | None:
        """Each stream's position, or None when the id was made for other streams."""
        if self.fingerprint != fingerprint(names) or len(self.positions) != len(names):
            return None
        return dict(zip(names, self.positions, strict=True))


def parse_event_id(text: str) -> EventId:
    """Read an id made by :meth:`StreamSet.id_line`; raises EventIdError saying what
    is wrong."""
    if len(text) > MAX_EVENT_ID:
        raise EventIdError(f"Last-Event-ID is over {MAX_EVENT_ID} characters")
    head, slash, rest = text.strip().partition("/")
    if not slash or not _FINGERPRINT.fullmatch(head):
        raise EventIdError(
            "Last-Event-ID must be an id this server sent: "
            f"<8 hex digits>/<epoch>:<seq>,... (got {text[:80]!r})"
        )
    positions = []
    for part in rest.split(","):
        match = _POSITION.fullmatch(part)
        if match is None:
            raise EventIdError(f"Last-Event-ID has {part[:40]!r} where <epoch>:<seq> belongs")
        positions.append(Position(match.group(1), int(match.group(2))))
    return EventId(head, tuple(positions))
