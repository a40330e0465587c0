"""A client's operations in pushgate's wire format (wire.py), both ways: subscribe,
unsubscribe, refresh, publish and presence, read from a client's type 0 message and
checked (docs/protocol.md, "Subscribing", "Publishing", "Presence"); the reply each
gets, the events a client is told of its rooms, and presence as a client reads it.

This module is pure: it knows nothing of sockets or of WebSocket framing.
"""

import json
from dataclasses import dataclass

from pushgate.ids import ROOM_ID_PATTERN, RoomId
from pushgate.presence import Change, Roster
from pushgate.wire import MAX_PUSH_TAG, MIN_PUSH_TAG, TYPE_WELCOME, encode, is_int

# Operations a client may ask for (type 0 with "op"), and events it may be told.
OPERATIONS = ("subscribe", "unsubscribe", "refresh", "publish", "presence")
MAX_OPERATION_ID = 64  # characters of a string id


@dataclass(frozen=True, slots=True)
class Operation:
    """A client's operation (docs/protocol.md, "Subscribing"): ``op``, the ``room``,
    the client's ``id`` for the reply, and the grant or token it shows."""

    op: str
    room: RoomId
    id: int | str | None = None
    grant: str | None = None
    token: str | None = None
    # The member info a grant signs (a JSON object's text, as the back end signed it).
    info: str | None = None
    # A publish's tag and data, and whether it comes back to the sender too.
    tag: int = 0
    data: object = None
    echo: bool = False

    def as_message(self) -> dict[str, object]:
        """The message a client sends (what :func:`parse_operation` reads), before it
        is serialized; keys left at their defaults are left out."""
        data: dict[str, object] = {"op": self.op, "room": self.room}
        given = (("id", self.id), ("grant", self.grant), ("token", self.token), ("info", self.info))
        for key, value in given:
            if value is not None:
                data[key] = value
        if self.op == "publish":
            data.update(tag=self.tag, data=self.data, echo=self.echo)
        return {"type": TYPE_WELCOME, "data": data}


class OperationError(Exception):
    """A malformed operation: answered with code 400 and this reason, the
    connection kept (the ``id`` is the one the client gave, if it was usable)."""

    def __init__(
        self, reason: str, op: str | None, id: int | str | None, *, code: int = 400
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.op = op
        self.id = id
        self.code = code  # 400 malformed; 429 over the message rate


def is_operation(data: object) -> bool:
    """Whether a type 0 message's data is an operation (it has an ``op``)."""
    return isinstance(data, dict) and "op" in data


def parse_operation(data: object) -> Operation:
    """An operation from a type 0 message's data; OperationError says what is wrong."""
    if not isinstance(data, dict):
        raise OperationError("an operation is a JSON object", None, None)
    raw_id = data.get("id")
    op_id: int | str | None = None
    if is_int(raw_id) or (isinstance(raw_id, str) and len(raw_id) <= MAX_OPERATION_ID):
        op_id = raw_id
    elif raw_id is not None:
        raise OperationError(
            f'"id" must be an integer or a string of at most {MAX_OPERATION_ID} characters',
            None,
            None,
        )
    op = data.get("op")
    if op not in OPERATIONS:
        raise OperationError(f'"op" must be one of {", ".join(OPERATIONS)}', None, op_id)
    assert isinstance(op, str)
    room = data.get("room")
    if not isinstance(room, str) or not ROOM_ID_PATTERN.fullmatch(room):
        raise OperationError(
            '"room" must be 1-64 characters of letters, digits and _-.:', op, op_id
        )
    room_id = RoomId(room)
    credentials = {}
    for key in ("grant", "token", "info"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value or len(value) > 8192):
            raise OperationError(f'"{key}" must be a string of 1-8192 characters', op, op_id)
        credentials[key] = value
    if op == "refresh" and credentials["token"] is None:
        raise OperationError('a refresh needs a "token"', op, op_id)
    if op == "publish":
        return _publish(data, room_id, op_id)
    return Operation(
        op, room_id, op_id, credentials["grant"], credentials["token"], credentials["info"]
    )


def _publish(data: dict[str, object], room: RoomId, op_id: int | str | None) -> Operation:
    tag = data.get("tag")
    if not is_int(tag) or not MIN_PUSH_TAG <= tag <= MAX_PUSH_TAG:
        raise OperationError(
            f'a publish needs a "tag", an integer from {MIN_PUSH_TAG} to {MAX_PUSH_TAG}',
            "publish",
            op_id,
        )
    if "data" not in data:
        raise OperationError('a publish needs "data" (any JSON value)', "publish", op_id)
    echo = data.get("echo", False)
    if not isinstance(echo, bool):
        raise OperationError('"echo" must be true or false', "publish", op_id)
    return Operation("publish", room, op_id, tag=tag, data=data["data"], echo=echo)


def encode_reply(
    op: str,
    op_id: int | str | None,
    room: str | None,
    *,
    position: tuple[str, int] | None = None,
    expires: float | None = None,
    presence: dict[str, object] | None = None,
    code: int | None = None,
    reason: str | None = None,
) -> bytes:
    """The reply to an operation: ok (with the stream's position, when a token's
    subscription ends, and in a presence room who is there: :func:`encode_roster`),
    or a refusal's code and reason."""
    data: dict[str, object] = {"op": op}
    if op_id is not None:
        data["id"] = op_id
    data["ok"] = code is None
    if room is not None:
        data["room"] = room
    if position is not None:
        data["position"] = list(position)
    if expires is not None:
        data["expires"] = int(expires)
    if presence is not None:
        data["presence"] = presence
    if code is not None:
        data["code"] = code
        data["reason"] = reason or ""
    return encode({"type": TYPE_WELCOME, "data": data})


def encode_event(op: str, room: str, reason: str) -> bytes:
    """An event a ``v=2`` client is told: ``joined`` or ``left`` a room, and why."""
    return encode({"type": TYPE_WELCOME, "data": {"op": op, "room": room, "reason": reason}})


def encode_presence(change: Change, *, quiet_to_joiner: bool = False) -> bytes:
    """A presence event, published in the room's stream: a user joined (with its
    ``info``) or left. The room is named outside ``data`` too, as a room push's is:
    its position is in the room's stream. ``quiet_to_joiner``: a join is not sent to
    the connection that made it (Pusher's clients know themselves from their
    subscription's answer, and would count a member_added of their own twice)."""
    identity = change.identity
    data: dict[str, object] = {
        "op": "presence",
        "room": change.room,
        "event": "join" if change.joined else "leave",
        "user": identity.user,
    }
    if identity.user is None:
        data["wsId"] = identity.conn
    if change.joined and identity.info is not None:
        data["info"] = json.loads(identity.info)
    message: dict[str, object] = {}
    if quiet_to_joiner and change.joined:
        message["exclude"] = identity.conn  # first: see excluded_conn
    message.update(type=TYPE_WELCOME, data=data, room=change.room)
    return encode(message)


def encode_roster(roster: Roster) -> dict[str, object]:
    """A room's users as a reply or the API tells them, with the position they are
    as of: ``{"members": [...], "position": [epoch, seq]}`` (no position without
    history)."""
    told: dict[str, object] = {"members": [member.as_json() for member in roster.members]}
    if roster.position is not None:
        told["position"] = [roster.position.epoch, roster.position.seq]
    return told
