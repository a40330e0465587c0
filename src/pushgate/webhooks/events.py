"""What a webhook carries: events, receivers, and the bytes queued and POSTed.

Pure: no I/O, no clock of its own.

An event is queued once, as an :class:`Entry` (its name, its room's namespace for
the receivers' filters, and its JSON), whichever receivers want it; the queue gives
it an id, ``"<ms>-<n>"``: ``ms`` is when it was queued (the queue's clock, never
going back) and ``n`` counts every event ever queued, so ids are unique and
increasing, and the difference of two ``n`` is how many events lie between them
(:func:`lost_between`: how a sender counts events trimmed before it read them).
Receivers see the id as an opaque string to de-duplicate on.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pushgate.namespaces import namespace_of


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """Something that happened: ``name`` (``session_started``, ``member_joined``...),
    its JSON-able ``data`` (a room's events carry ``data["room"]``), and when it
    happened (the server's wall clock, ms)."""

    name: str
    data: Mapping[str, object]
    time_ms: int


@dataclass(frozen=True, slots=True)
class Receiver:
    """A URL that gets the events named in ``events``; with ``namespaces``, only the
    events of rooms in those namespaces (never the session events)."""

    url: str
    events: frozenset[str]
    namespaces: frozenset[str] | None = None
    # A Pusher app's receiver (--pusher-webhook): Pusher's format, signed with the
    # app's (key, secret) (pusherformat.py); None: pushgate's own format.
    pusher: tuple[str, str] | None = None

    def wants(self, name: str, namespace: str | None) -> bool:
        """It gets an event named ``name`` of a room in ``namespace`` (None: of no room)."""
        if name not in self.events:
            return False
        return self.namespaces is None or namespace in self.namespaces

    @property
    def key(self) -> str:
        """Names this receiver's cursor and lease in the queue: the same on every node
        configured alike, and another one when its URL or filters change (a receiver
        whose filters changed starts again from what the queue holds, which only
        repeats events, with their ids)."""
        parts: list[object] = [self.url, sorted(self.events), sorted(self.namespaces or ["*"])]
        if self.pusher is not None:
            parts.append("pusher")
        spec = json.dumps(parts)
        return hashlib.sha256(spec.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Entry:
    """An event as queued: what the receivers' filters look at, and its JSON object
    (``{"name":…,"time_ms":…,"data":…}``, without the id the queue gives it)."""

    name: str
    namespace: str | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class Queued:
    """An entry read back from the queue, with its id."""

    id: str
    entry: Entry


def namespace_in(data: Mapping[str, object]) -> str | None:
    """The namespace of the room an event's data names (None: it names none)."""
    room = data.get("room")
    return namespace_of(room) if isinstance(room, str) else None


def encode(event: WebhookEvent) -> Entry:
    """The entry queued for ``event``. Raises TypeError if its data is not JSON-able."""
    payload = json.dumps(
        {"name": event.name, "time_ms": event.time_ms, "data": event.data},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return Entry(event.name, namespace_in(event.data), payload)


def body(batch: Sequence[Queued]) -> bytes:
    """A POST's body: ``{"events":[{"id":…,"name":…,"time_ms":…,"data":…},…]}``,
    spliced from the queued JSON without decoding it."""
    events = b",".join(b'{"id":"%s",%s' % (q.id.encode(), q.entry.payload[1:]) for q in batch)
    return b'{"events":[' + events + b"]}"


def event_id(ms: int, n: int) -> str:
    return f"{ms}-{n}"


def id_ms(event_id: str) -> int:
    """When the event was queued (ms, the queue's clock)."""
    return int(event_id.partition("-")[0])


def id_count(event_id: str) -> int:
    return int(event_id.partition("-")[2])


def lost_between(cursor: str | None, first: str) -> int | None:
    """How many events were queued after ``cursor`` (the last one a receiver was sent
    or given up) and before ``first`` (the next one the queue still holds): 0 when
    none is missing; None when the queue started again (its counts did), so that how
    many were lost is unknown."""
    if cursor is None:
        return 0
    gap = id_count(first) - id_count(cursor) - 1
    return gap if gap >= 0 else None
