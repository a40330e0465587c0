"""Control messages between the nodes of a cluster: a logic node asks the gateway
that holds a connection to put it in or out of a room, to push to it or close it,
or asks every gateway what it holds (presence); the gateway answers.

Frozen dataclasses with their JSON form beside them. Pure: no I/O.
"""

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from pushgate.ids import ConnId, RoomId

Op = Literal[
    "join",
    "leave",
    "evict",
    # Presence and the operator's actions (see pushgate.control): answered with data.
    "census",
    "members",
    "conn",
    "user",
    "send",
    "disconnect",
    "join_user",
    "leave_user",
]
OPS: tuple[str, ...] = get_args(Op)
Status = Literal["ok", "unknown", "limit", "unavailable"]
STATUSES = ("ok", "unknown", "limit", "unavailable")


def _encode(message: "Command | Reply") -> bytes:
    return json.dumps(asdict(message), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Command:
    """Put ``conn`` in (``join``) or out of (``leave``) ``room``; answer on ``reply_to``.

    ``evict``: close the local connection of session ``conn`` if ``reply_to`` (then
    the holder, not a node) still holds it; another connection resumed it. No reply.

    The other ops take their parameters from ``args`` (see pushgate.control)."""

    op: Op
    room: RoomId
    conn: ConnId
    request_id: str
    reply_to: str
    args: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, payload: bytes) -> "Command":
        """Raises ValueError (or another Exception) when the payload is not a command."""
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("op") not in OPS:
            raise ValueError(f"not a command: {payload[:80]!r}")
        args = data.get("args", {})
        if not isinstance(args, dict):
            raise ValueError(f"not a command: {payload[:80]!r}")
        return cls(
            op=data["op"],
            room=RoomId(str(data["room"])),
            conn=ConnId(str(data["conn"])),
            request_id=str(data["request_id"]),
            reply_to=str(data["reply_to"]),
            args=args,
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """The outcome of a Command: ``ok`` (with ``changed``), ``unknown`` wsId, ``limit``
    (the room cap), or ``unavailable`` (the holder could not do it; ``error`` says why).
    ``data``: what a presence query or an operator's action found (any JSON value)."""

    request_id: str
    status: Status
    changed: bool = False
    limit: int = 0
    error: str = ""
    data: Any = None

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, payload: bytes) -> "Reply":
        """Raises ValueError (or another Exception) when the payload is not a reply."""
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("status") not in STATUSES:
            raise ValueError(f"not a reply: {payload[:80]!r}")
        return cls(
            request_id=str(data["request_id"]),
            status=data["status"],
            changed=bool(data.get("changed", False)),
            limit=int(data.get("limit", 0)),
            error=str(data.get("error", "")),
            data=data.get("data"),
        )
