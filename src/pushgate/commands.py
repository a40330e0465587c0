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
from collections.abc import Mapping
from dataclasses import dataclass

from pushgate.errors import InvalidField
from pushgate.ids import ConnId, RoomId
from pushgate.wire import MAX_PUSH_TAG, MIN_PUSH_TAG

MAX_USER_ID_LENGTH = 128
ROOM_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,20}")
_UUID_TEXT = re.compile(
    r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}"
)

Fields = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class PushAll:
    """``POST /push/all``: send ``val`` with type ``tag`` to every connection."""

    tag: int
    val: object

    @classmethod
    def from_fields(cls, fields: Fields) -> "PushAll":
        return cls(tag=parse_tag(_required(fields, "tag")), val=_required(fields, "val"))


@dataclass(frozen=True, slots=True)
class PushRoom:
    """``POST /push/room``: send ``val`` with type ``tag`` to the members of ``room``."""

    room: RoomId
    tag: int
    val: object

    @classmethod
    def from_fields(cls, fields: Fields) -> "PushRoom":
        return cls(
            room=parse_room_id(_required(fields, "id")),
            tag=parse_tag(_required(fields, "tag")),
            val=_required(fields, "val"),
        )


@dataclass(frozen=True, slots=True)
class PushUser:
    """``POST /push/user``: send ``val`` with type ``tag`` to every connection of ``uid``."""

    user: str
    tag: int
    val: object

    @classmethod
    def from_fields(cls, fields: Fields) -> "PushUser":
        return cls(
            user=parse_user_id(_required(fields, "uid")),
            tag=parse_tag(_required(fields, "tag")),
            val=_required(fields, "val"),
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
