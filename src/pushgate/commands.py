"""The logic API's requests, parsed and checked: what a caller may ask for.

Each request is a frozen dataclass built from the fields of one HTTP request by its
``from_fields`` method, the one place that checks them. Fields come either from a
form (every value a string, as the blog's ``curl -d "val=test push&tag=3"`` sends
them) or from a JSON object (where ``val`` may be any JSON value). A field that is
missing or malformed raises :class:`~pushgate.errors.InvalidField` naming it.

This module is pure: no I/O, no framework.
"""

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pushgate.errors import InvalidField
from pushgate.ids import ROOM_ID_PATTERN as ROOM_ID_PATTERN  # re-exported: its old home
from pushgate.ids import ConnId, RoomId
from pushgate.wire import CLOSE_SESSION_ENDED, MAX_PUSH_TAG, MIN_PUSH_TAG

MAX_USER_ID_LENGTH = 128
MAX_BATCH = 1000
MAX_CLOSE_REASON_BYTES = 123
DEFAULT_DISCONNECT_CODE = 4000
DEFAULT_DISCONNECT_REASON = "disconnected by the operator"
DEFAULT_END_SESSION_REASON = "session ended by the operator"
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,20}")
_UUID_TEXT = re.compile(
    r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}"
)

Fields = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class PushAll:
    """``POST /push/all``: send ``val`` with type ``tag`` to every connection (but
    ``exclude``, a back end relaying one client's action)."""

    tag: int
    val: object
    exclude: ConnId | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> "PushAll":
        return cls(
            tag=parse_tag(_required(fields, "tag")),
            val=_required(fields, "val"),
            exclude=_excluded(fields),
        )


@dataclass(frozen=True, slots=True)
class PushRoom:
    """``POST /push/room``: send ``val`` with type ``tag`` to the members of ``room``."""

    room: RoomId
    tag: int
    val: object
    exclude: ConnId | None = None
    event: str | None = None  # the event a Pusher client hears it as (pusherwire.py)

    @classmethod
    def from_fields(cls, fields: Fields) -> "PushRoom":
        return cls(
            room=parse_room_id(_required(fields, "id")),
            tag=parse_tag(_required(fields, "tag")),
            val=_required(fields, "val"),
            exclude=_excluded(fields),
        )


@dataclass(frozen=True, slots=True)
class PushUser:
    """``POST /push/user``: send ``val`` with type ``tag`` to every connection of ``uid``."""

    user: str
    tag: int
    val: object
    exclude: ConnId | None = None
    event: str | None = None  # the event a Pusher client hears it as (pusherwire.py)

    @classmethod
    def from_fields(cls, fields: Fields) -> "PushUser":
        return cls(
            user=parse_user_id(_required(fields, "uid")),
            tag=parse_tag(_required(fields, "tag")),
            val=_required(fields, "val"),
            exclude=_excluded(fields),
        )


@dataclass(frozen=True, slots=True)
class Membership:
    """``POST /room/join`` and ``/room/leave``: put ``conn`` in or out of ``room``."""

    room: RoomId
    conn: ConnId

    @classmethod
    def from_fields(cls, fields: Fields) -> "Membership":
        return cls(
            room=parse_room_id(_required(fields, "id")),
            conn=parse_conn_id(_required(fields, "wsId")),
        )


@dataclass(frozen=True, slots=True)
class PushConn:
    """``POST /push/conn``: send ``val`` with type ``tag`` to the one connection ``conn``
    (at most once: it is not kept in history)."""

    conn: ConnId
    tag: int
    val: object

    @classmethod
    def from_fields(cls, fields: Fields) -> "PushConn":
        return cls(
            conn=parse_conn_id(_required(fields, "wsId")),
            tag=parse_tag(_required(fields, "tag")),
            val=_required(fields, "val"),
        )


@dataclass(frozen=True, slots=True)
class UserMembership:
    """``POST /room/join`` and ``/room/leave`` with ``uid``: every current connection
    of the user in or out of ``room``."""

    room: RoomId
    user: str

    @classmethod
    def from_fields(cls, fields: Fields) -> "UserMembership":
        return cls(
            room=parse_room_id(_required(fields, "id")),
            user=parse_user_id(_required(fields, "uid")),
        )


def parse_membership(fields: Fields) -> "Membership | UserMembership":
    """A join or leave names one connection (``wsId``) or one user's (``uid``)."""
    if "wsId" in fields and "uid" in fields:
        raise InvalidField("uid", "give wsId or uid, not both")
    if "uid" in fields:
        return UserMembership.from_fields(fields)
    return Membership.from_fields(fields)


@dataclass(frozen=True, slots=True)
class Disconnect:
    """``POST /disconnect``: close the connection ``conn``, or every connection of
    ``user``, with ``code`` and ``reason``; ``end_session``: it cannot be resumed."""

    conn: ConnId | None
    user: str | None
    code: int
    reason: str
    end_session: bool

    @classmethod
    def from_fields(cls, fields: Fields) -> "Disconnect":
        if ("wsId" in fields) == ("uid" in fields):
            raise InvalidField("wsId", "give wsId or uid (exactly one of them)")
        end_session = parse_flag("endSession", fields.get("endSession", False))
        # An ended session by default closes with a code the SDKs do not reconnect
        # after: coming straight back with a new session would undo the operator's act.
        code, reason = DEFAULT_DISCONNECT_CODE, DEFAULT_DISCONNECT_REASON
        if end_session:
            code, reason = CLOSE_SESSION_ENDED, DEFAULT_END_SESSION_REASON
        return cls(
            conn=parse_conn_id(fields["wsId"]) if "wsId" in fields else None,
            user=parse_user_id(fields["uid"]) if "uid" in fields else None,
            code=parse_close_code(fields.get("code", code)),
            reason=parse_close_reason(fields.get("reason", reason)),
            end_session=end_session,
        )


Push = PushAll | PushRoom | PushUser | PushConn
BATCH_TARGETS: dict[str, Callable[[Fields], Push]] = {
    "all": PushAll.from_fields,
    "room": PushRoom.from_fields,
    "user": PushUser.from_fields,
    "conn": PushConn.from_fields,
}


def parse_batch_item(value: object) -> Push:
    """One push of ``POST /push/batch``: the fields of the single push it stands for,
    plus ``target``: ``all``, ``room`` (with ``id``), ``user`` (``uid``), ``conn`` (``wsId``)."""
    if not isinstance(value, dict):
        raise InvalidField("target", f"each item must be a JSON object, got {_show(value)}")
    parse = BATCH_TARGETS.get(str(value.get("target")))
    if parse is None:
        raise InvalidField(
            "target", f"must be one of all, room, user, conn; got {_show(value.get('target'))}"
        )
    return parse(value)


def parse_batch(value: object) -> list[object]:
    """The body of ``POST /push/batch``: a JSON array of 1 to MAX_BATCH items."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
        raise InvalidField("batch", f"the body must be a JSON array of 1 to {MAX_BATCH} pushes")
    return value


def parse_close_code(value: object) -> int:
    """A close code for an operator's disconnect: 4000-4999, the range for applications."""
    code = _as_int(value)
    if code is None or not 4000 <= code <= 4999:
        raise InvalidField("code", f"must be an integer from 4000 to 4999, got {_show(value)}")
    return code


def parse_close_reason(value: object) -> str:
    """A close reason: text of at most 123 bytes in UTF-8 (what a close frame holds)."""
    if not isinstance(value, str) or len(value.encode()) > MAX_CLOSE_REASON_BYTES:
        raise InvalidField(
            "reason", f"must be text of at most {MAX_CLOSE_REASON_BYTES} bytes, got {_show(value)}"
        )
    return value


def parse_flag(name: str, value: object) -> bool:
    """A yes/no field: JSON true/false, or the text true/false/1/0 from a form."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0", ""):
        return False
    raise InvalidField(name, f"must be true or false, got {_show(value)}")


def parse_tag(value: object) -> int:
    """A push type: an integer from 2 to 2**53-1, given as a number or as decimal text."""
    tag = _as_int(value)
    if tag is None or not MIN_PUSH_TAG <= tag <= MAX_PUSH_TAG:
        raise InvalidField(
            "tag",
            f"must be an integer from {MIN_PUSH_TAG} to {MAX_PUSH_TAG} "
            f"(0 and 1 are the welcome and heartbeat types), got {_show(value)}",
        )
    return tag


def parse_room_id(value: object) -> RoomId:
    """A room id: 1-64 of ``A-Z a-z 0-9 _ - . :``; a non-negative JSON integer is taken as text."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not ROOM_ID_PATTERN.fullmatch(value):
        raise InvalidField(
            "id",
            f"must be 1-64 characters of letters, digits and _-.: , got {_show(value)}",
        )
    return RoomId(value)


def _excluded(fields: Fields) -> ConnId | None:
    """The optional ``exclude`` field: the wsId a push is not for."""
    value = fields.get("exclude")
    if value is None or value == "":
        return None
    try:
        return parse_conn_id(value)
    except InvalidField as exc:
        raise InvalidField("exclude", exc.message) from None


def parse_conn_id(value: object) -> ConnId:
    """A wsId as the welcome frame gives it: a UUID (any letter case is accepted)."""
    if isinstance(value, str) and _UUID_TEXT.fullmatch(value):
        return ConnId(str(uuid.UUID(value)))
    raise InvalidField("wsId", f"must be a UUID as sent in the welcome frame, got {_show(value)}")


def parse_user_id(value: object) -> str:
    """A user id, as a token's ``sub`` carries it: 1-128 characters, no control characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and 1 <= len(value) <= MAX_USER_ID_LENGTH and value.isprintable():
        return value
    raise InvalidField(
        "uid", f"must be 1-{MAX_USER_ID_LENGTH} printable characters, got {_show(value)}"
    )


def _required(fields: Fields, name: str) -> object:
    try:
        return fields[name]
    except KeyError:
        raise InvalidField(name, "is required") from None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        return int(value)
    return None


def _show(value: object, limit: int = 40) -> str:
    """Quote a caller's value for an error message, cut short if long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
