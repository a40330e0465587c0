"""What a ``GET /events`` request asks for, and whether it may have it (docs/sse.md).

Pure: no I/O. The gateway's request hook (gatewayhttp.py) reads the query with
:func:`parse_query` (a malformed one is a 400) once the gatekeeper has let the
connection in (Origin, connection token, limits), and :func:`resolve` decides its
streams once its claims are final (the connect hook may give them).

The query:

- ``token=<jwt>``: a connection token, as ``/connect`` takes it (its ``sub`` is the
  user whose pushes the stream gets; its ``rooms`` are joined), read by the
  gatekeeper;
- ``room=<id>`` (several, or comma-separated): more rooms, as the room's namespace
  allows a client to subscribe itself (namespaces.py): ``public`` rooms always,
  ``grant`` rooms with a subscription token in ``grant=<jwt>`` (several allowed; one
  may open several rooms). An HMAC grant names a wsId, which a stream has none of
  before it opens: it is refused, saying so;
- ``lastEventId=<id>``: where to resume, for a new ``EventSource`` (which sends no
  ``Last-Event-ID`` header of its own); the header wins when both are given.
"""

from dataclasses import dataclass
from urllib.parse import parse_qs

from pushgate.ids import ROOM_ID_PATTERN, ConnId, RoomId
from pushgate.namespaces import Granted, SubscribePolicy
from pushgate.security import Claims, Refusal
from pushgate.sse import EventId, EventIdError, parse_event_id, stream_names
from pushgate.streams import Position

# Grants one request may carry (each is a JWT to verify).
MAX_GRANTS = 16


class QueryError(ValueError):
    """A request the server cannot read (answered 400 with this text)."""


@dataclass(frozen=True, slots=True)
class SseQuery:
    """The rooms a request names, its grants, and where it resumes (None: it opens)."""

    rooms: tuple[RoomId, ...] = ()
    grants: tuple[str, ...] = ()
    resume: EventId | None = None


@dataclass(frozen=True, slots=True)
class SseStart:
    """A stream allowed to open: its wsId, user, rooms and streams (in id order),
    each stream's position to resume from (``since``; None: open from now), and
    when the first of its subscription tokens ends (Unix seconds; None: never).

    ``mismatch``: the Last-Event-ID was made for other streams, so nothing could be
    resumed (told in a pushgate:lost event)."""

    conn_id: ConnId
    user: str | None
    rooms: tuple[RoomId, ...]
    streams: tuple[str, ...]
    since: dict[str, Position] | None
    expires_at: float | None = None
    mismatch: bool = False


def parse_query(query: str, last_event_id: str | None) -> SseQuery:
    """The rooms, grants and resume point a request names; raises QueryError."""
    fields = parse_qs(query)
    rooms: list[RoomId] = []
    for value in fields.get("room", []):
        for room in value.split(","):
            if not ROOM_ID_PATTERN.fullmatch(room):
                raise QueryError(f"room must be 1-64 letters, digits and _-.: (got {room[:80]!r})")
            rooms.append(RoomId(room))
    grants = tuple(fields.get("grant", []))
    if len(grants) > MAX_GRANTS:
        raise QueryError(f"at most {MAX_GRANTS} grants; got {len(grants)}")
    text = last_event_id if last_event_id is not None else fields.get("lastEventId", [None])[-1]
    try:
        resume = parse_event_id(text) if text else None
    except EventIdError as exc:
        raise QueryError(str(exc)) from None
    return SseQuery(tuple(dict.fromkeys(rooms)), grants, resume)


def resolve(
    query: SseQuery,
    conn_id: ConnId,
    claims: Claims | None,
    policy: SubscribePolicy,
    *,
    max_rooms: int,
) -> SseStart | Refusal:
    """The streams of the connection ``conn_id`` (of ``claims``, if it has a token),
    or why it may not have them (401, 403, 400: namespaces.py's statuses; 409 over
    ``max_rooms``)."""
    user = claims.user if claims else None
    allowed = dict.fromkeys(claims.rooms if claims else ())
    expires_at: float | None = None
    for room in query.rooms:
        if room in allowed:
            continue
        granted = _subscription(query, conn_id, user, room, policy)
        if isinstance(granted, Refusal):
            return granted
        allowed[room] = None
        if granted.expires_at is not None:
            expires_at = min(expires_at or granted.expires_at, granted.expires_at)
    if len(allowed) > max_rooms:
        return Refusal(409, f"{len(allowed)} rooms named; a connection may be in {max_rooms}")
    rooms = tuple(allowed)
    streams = stream_names(user, rooms)
    since = None
    mismatch = False
    if query.resume is not None:
        since = query.resume.since(streams)
        mismatch = since is None
    return SseStart(conn_id, user, rooms, streams, since, expires_at, mismatch)


def _subscription(
    query: SseQuery, conn_id: ConnId, user: str | None, room: RoomId, policy: SubscribePolicy
) -> Granted | Refusal:
    """The first grant that opens ``room`` (a public room needs none), or the most
    telling refusal."""
    refusal = policy.check(conn_id, user, room, grant=None, token=None)
    if not isinstance(refusal, Refusal) or refusal.status != 401:
        return refusal  # public (granted), or server-only (403): no grant changes that
    tokens = [grant for grant in query.grants if grant.count(".") == 2]
    if not tokens and query.grants:
        return Refusal(
            400,
            f"an HMAC grant is made for a wsId, which a stream has none of before it opens: "
            f"give {room} a subscription token (a JWT whose subscribe claim names it) in grant=",
            "bad_grant",
        )
    for token in tokens:
        refusal = policy.check(conn_id, user, room, grant=None, token=token)
        if not isinstance(refusal, Refusal):
            return refusal
    return refusal
