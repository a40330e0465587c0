"""What a client reads of pushgate's wire format (wire.py): the server's messages
parsed into values, leniently (a key it does not know, or one of the wrong kind, is
passed over rather than refused). The SDK (:mod:`pushgate.client`) reads through
:func:`parse_welcome`, :func:`parse_server_message` and :func:`is_pong`; what the
server encodes, and what a client sends, stay in wire.py.

This module is pure: it knows nothing of sockets or of WebSocket framing.
"""

import json
from dataclasses import dataclass, field

from pushgate.ids import ConnId
from pushgate.streams import ROOM_TOPIC_PREFIX, TOPIC_ALL, USER_TOPIC_PREFIX
from pushgate.wire import PONG, TYPE_HEARTBEAT, TYPE_WELCOME, StreamReport, is_int


@dataclass(frozen=True, slots=True)
class Sender:
    """Who published a room's message (docs/protocol.md, "Publishing"): the member's
    ``ws_id``, and its ``user`` when its connection token named one."""

    ws_id: str
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Push:
    """A push: its ``type`` (the tag, 2 or more), its ``data`` (any JSON value), the
    ``room`` it was pushed to (None for a push to all or to a user), the ``user`` it
    was pushed to, its position in its stream (``seq`` 0 without history), and, for a
    message a member published, its ``sender`` (None for the back end's pushes)."""

    type: int
    data: object
    room: str | None = None
    user: str | None = None
    seq: int = field(default=0, compare=False)
    epoch: str = field(default="", compare=False)
    # Compared: who said it is part of what was said (a position is only where it sits).
    sender: Sender | None = None

    @property
    def stream(self) -> str:
        if self.room is not None:
            return room_stream(self.room)
        return TOPIC_ALL if self.user is None else USER_TOPIC_PREFIX + self.user


def room_stream(room: str) -> str:
    """The stream of a room's pushes, as positions and resumes name it."""
    return ROOM_TOPIC_PREFIX + room


@dataclass(frozen=True, slots=True)
class Welcome:
    """The first message on a connection, as a client reads it (:func:`encode_welcome`
    writes it). ``session`` is empty when the server keeps no sessions; ``recovered``,
    ``streams`` and ``reason`` come with the answer to a resume."""

    ws_id: ConnId
    heartbeat: float
    session: str = ""
    resumed: bool = False
    recovered: bool = False
    streams: dict[str, StreamReport] = field(default_factory=dict)
    reason: str | None = None
    rooms: tuple[str, ...] | None = None  # with ?v=2: the rooms it is in; None: not told


@dataclass(frozen=True, slots=True)
class Notice:
    """A type-0 message after the welcome: the streams the server could not recover
    (:func:`encode_notice`)."""

    streams: dict[str, StreamReport]


def parse_welcome(payload: str | bytes) -> Welcome:
    """Read the first message on a connection. Raises ValueError when it is not JSON,
    or no welcome with a string ``wsId`` and a positive ``heartbeat``."""
    message = json.loads(payload)
    if not isinstance(message, dict) or message.get("type") != TYPE_WELCOME:
        raise ValueError(f"the first message is not a welcome: {str(payload)[:100]}")
    data = message.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("wsId"), str):
        raise ValueError("the welcome has no wsId")
    heartbeat = data.get("heartbeat")
    if not isinstance(heartbeat, int | float) or isinstance(heartbeat, bool) or heartbeat <= 0:
        raise ValueError(f"the welcome's heartbeat is not a positive number: {heartbeat!r}")
    reason, rooms = data.get("reason"), data.get("rooms")
    return Welcome(
        ConnId(data["wsId"]),
        float(heartbeat),
        session=str(data.get("session") or ""),
        resumed=bool(data.get("resumed")),
        recovered=bool(data.get("recovered")),
        streams=_stream_reports(data.get("streams")),
        reason=None if reason is None else str(reason),
        rooms=tuple(r for r in rooms if isinstance(r, str)) if isinstance(rooms, list) else None,
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a client's :class:`Operation` (:func:`encode_reply` writes it):
    ``ok`` with the room's stream ``position`` (None without history) and, for a
    token's subscription, when it ``expires`` (Unix seconds); or a refusal's ``code``
    (docs/protocol.md lists them) and ``reason``."""

    op: str
    id: int | str | None
    ok: bool
    room: str | None = None
    position: tuple[str, int] | None = None
    expires: int | None = None
    code: int | None = None
    reason: str = ""
    # In a room that keeps presence: who is there (a subscribe's, a presence operation's).
    presence: "PresenceRoster | None" = None


@dataclass(frozen=True, slots=True)
class PresenceMember:
    """One user in a presence room, as a client is told (docs/protocol.md, "Presence"):
    its ``user`` (None: an anonymous connection, a user of its own, named by its
    ``ws_id``) and the ``info`` the back end gave it (a JSON object, or None)."""

    user: str | None
    info: dict[str, object] | None = field(default=None, hash=False)
    ws_id: str | None = None  # an anonymous member's only

    @property
    def key(self) -> str:
        """What members are told apart by: the user, or an anonymous member's wsId."""
        return self.user if self.user is not None else self.ws_id or ""


@dataclass(frozen=True, slots=True)
class PresenceRoster:
    """A presence room's users as a reply tells them, as of ``position`` (the room's
    stream; None without history): apply the events after it to know who is there."""

    members: tuple[PresenceMember, ...]
    position: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A user joined a presence room (``joined``, with its info) or left it
    (:func:`encode_presence`), at ``seq`` of the room's stream (0 without history)."""

    room: str
    joined: bool
    member: PresenceMember
    seq: int = field(default=0, compare=False)
    epoch: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """A ``v=2`` client's connection was put in a room (``joined``) or taken out of
    one, without its asking (:func:`encode_event`): ``reason`` is ``server`` (the back
    end) or ``expired`` (a subscription token's ``exp`` passed)."""

    joined: bool
    room: str
    reason: str


def parse_server_message(
    payload: str | bytes,
) -> Push | Notice | Reply | RoomEvent | PresenceEvent | None:
    """Read a message after the welcome: a :class:`Push`, a :class:`Notice` (a type-0
    message with ``recovered`` false), a :class:`Reply` (one with ``op`` and ``ok``), a
    :class:`RoomEvent` (``op`` joined or left), a :class:`PresenceEvent` (``op``
    presence, without ``ok``), or None for anything else (a PONG, a repeated welcome, a
    message that is no object with an integer type). Raises ValueError when it is not
    JSON."""
    message = json.loads(payload)
    if not isinstance(message, dict):
        return None
    kind = message.get("type")
    if is_int(kind) and kind > TYPE_HEARTBEAT:
        return _push(kind, message)
    data = message.get("data")
    if kind != TYPE_WELCOME or not isinstance(data, dict):
        return None
    if "op" in data:
        return _reply_or_event(data, message)
    if data.get("recovered") is False:
        streams = data.get("streams") or {}
        return Notice(_stream_reports(streams)) if isinstance(streams, dict) else None
    return None


def is_pong(payload: str | bytes) -> bool:
    """Whether a message is the server's :data:`PONG` (which it sends as it is)."""
    text = payload.encode() if isinstance(payload, str) else payload
    return text.strip() == PONG.strip()


def _reply_or_event(
    data: dict[str, object], message: dict[str, object]
) -> Reply | RoomEvent | PresenceEvent | None:
    op, room = data.get("op"), data.get("room")
    if not isinstance(op, str) or (room is not None and not isinstance(room, str)):
        return None
    if "ok" not in data:
        if op in ("joined", "left") and room is not None:
            return RoomEvent(op == "joined", room, str(data.get("reason", "")))
        if op == "presence" and room is not None:
            return _presence_event(room, data, message)
        return None
    op_id, expires, code = data.get("id"), data.get("expires"), data.get("code")
    return Reply(
        op,
        op_id if is_int(op_id) or isinstance(op_id, str) else None,
        data["ok"] is True,
        room,
        _position(data.get("position")),
        expires if is_int(expires) else None,
        code if is_int(code) else None,
        str(data.get("reason") or ""),
        _roster(data.get("presence")),
    )


def _position(value: object) -> tuple[str, int] | None:
    """``[epoch, seq]``, or None when it is not that."""
    if isinstance(value, list) and len(value) == 2:
        epoch, seq = value
        if isinstance(epoch, str) and is_int(seq):
            return (epoch, seq)
    return None


def _member(value: object) -> PresenceMember | None:
    """A member as a roster or an event tells it; None when it names nobody."""
    if not isinstance(value, dict):
        return None
    user, ws_id, info = value.get("user"), value.get("wsId"), value.get("info")
    if user is not None and not isinstance(user, str):
        return None
    if user is None and not isinstance(ws_id, str):
        return None
    return PresenceMember(
        user, info if isinstance(info, dict) else None, ws_id if user is None else None
    )


def _roster(value: object) -> PresenceRoster | None:
    """A reply's ``presence``; members that name nobody are passed over."""
    if not isinstance(value, dict):
        return None
    members = value.get("members")
    told = (_member(m) for m in members) if isinstance(members, list) else ()
    return PresenceRoster(tuple(m for m in told if m is not None), _position(value.get("position")))


def _presence_event(
    room: str, data: dict[str, object], message: dict[str, object]
) -> PresenceEvent | None:
    event, member = data.get("event"), _member(data)
    if event not in ("join", "leave") or member is None:
        return None
    seq, epoch = message.get("seq"), message.get("epoch")
    return PresenceEvent(
        room,
        event == "join",
        member,
        seq if is_int(seq) else 0,
        epoch if isinstance(epoch, str) else "",
    )


def _push(kind: int, message: dict[str, object]) -> Push:
    room, user = message.get("room"), message.get("user")
    seq, epoch = message.get("seq"), message.get("epoch")
    return Push(
        kind,
        message.get("data"),
        room if isinstance(room, str) else None,
        user if isinstance(user, str) else None,
        seq if is_int(seq) else 0,
        epoch if isinstance(epoch, str) else "",
        _sender(message.get("from")),
    )


def _sender(value: object) -> Sender | None:
    """A push's ``from``; None when there is none, or it names no wsId."""
    if not isinstance(value, dict) or not isinstance(value.get("wsId"), str):
        return None
    user = value.get("user")
    return Sender(value["wsId"], user if isinstance(user, str) else None)


def _stream_reports(value: object) -> dict[str, StreamReport]:
    """The ``streams`` of a welcome or a notice; entries that are no object are passed over."""
    if not isinstance(value, dict):
        return {}
    reports = {name: StreamReport.from_json(report) for name, report in value.items()}
    return {name: report for name, report in reports.items() if report is not None}
