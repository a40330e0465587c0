"""The logic API's calls, answers and errors, for both Python clients.

Pure: no I/O. Each function here builds a :class:`Call`: the HTTP method, the path,
the JSON body, and how to read the answer into a typed result.
:class:`~pushgate.pushapi.PushAPI` (asyncio, aiohttp) and
:class:`~pushgate.syncpushapi.SyncPushAPI` (blocking, httpx) only carry calls over
HTTP and hand the status and body to :func:`answer_of`, so both raise the same errors
and return the same results.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

T = TypeVar("T")
# A push's type when the caller gives none, the same in every client (this one, the
# terminal's, pushgate.js, publish): the lowest a push may have (0 and 1 are the
# welcome and the heartbeat).
DEFAULT_TAG = 2


# Errors


class PushAPIError(Exception):
    """The logic API refused a request, or could not be reached.

    ``status`` is the HTTP status (None when no answer came), ``message`` the server's
    ``error`` text and ``field`` the request field it blames (None when it names none).
    """

    def __init__(self, status: int | None, message: str, field: str | None = None) -> None:
        prefix = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{prefix}{message}")
        self.status = status
        self.message = message
        self.field = field


class BadRequestError(PushAPIError):
    """400: a field is missing or invalid; ``field`` names it."""


class UnauthorizedError(PushAPIError):
    """401 or 403: the API key is missing, wrong, or not allowed to do this."""


class NotFoundError(PushAPIError):
    """404: no connection (or session) has this wsId (``field`` is ``wsId``), or no
    such path."""


class ConflictError(PushAPIError):
    """409: the connection is already in as many rooms as the server allows."""


class PayloadTooLargeError(PushAPIError):
    """413: the request body is over the server's ``--max-body-bytes``."""


class ServiceUnavailableError(PushAPIError):
    """503: the cluster's broker (or a gateway) cannot be reached. Nothing was done;
    the request may be retried."""


class APIConnectionError(PushAPIError):
    """No answer: the server cannot be reached, or did not answer in time."""


ERRORS: dict[int, type[PushAPIError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: UnauthorizedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    503: ServiceUnavailableError,
}


def answer_of(status: int, text: str) -> dict[str, Any]:
    """The JSON object of a 2xx answer; the matching PushAPIError for anything else."""
    body = _json_object(text)
    if 200 <= status < 300 and body is not None:
        return body
    if body is None:
        message = text.strip()[:200] or f"HTTP {status} with no body"
        if 200 <= status < 300:
            message = f"the answer is not a JSON object: {message}"
        raise ERRORS.get(status, PushAPIError)(status, message)
    error_field = body.get("field")
    raise ERRORS.get(status, PushAPIError)(
        status,
        str(body.get("error", f"HTTP {status}")),
        error_field if isinstance(error_field, str) else None,
    )


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# Results


@dataclass(frozen=True, slots=True)
class PushResult:
    """A push was accepted: ``delivered`` connections were handed it, or None when
    the server cannot count them (a cluster: Redis knows nodes, not connections).
    ``room``, ``user`` or ``ws_id`` names its target; all None for a push to all."""

    delivered: int | None
    room: str | None = None
    user: str | None = None
    ws_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchItemResult:
    """One push of a batch: done (``delivered``), or refused (``status``, ``error``,
    ``field``, as the single push would have been)."""

    ok: bool
    delivered: int | None = None
    status: int | None = None
    error: str | None = None
    field: str | None = None


@dataclass(frozen=True, slots=True)
class JoinResult:
    room: str
    ws_id: str
    already_member: bool


@dataclass(frozen=True, slots=True)
class LeaveResult:
    room: str
    ws_id: str
    was_member: bool


@dataclass(frozen=True, slots=True)
class UserMembershipResult:
    """A user's connections joined or left a room: those that ``changed`` and those
    already so (``unchanged``)."""

    room: str
    user: str
    changed: list[str]
    unchanged: list[str]


@dataclass(frozen=True, slots=True)
class DisconnectResult:
    disconnected: list[str]
    session_ended: bool


@dataclass(frozen=True, slots=True)
class Stats:
    """``GET /stats``, over every gateway; ``raw`` holds the whole answer, fields
    added later included (``nodes``: each gateway's counts)."""

    version: str
    uptime_seconds: float
    connections: int
    rooms: int
    users: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Member:
    """A room's member, or a user's connection: where it is and since when
    (ISO 8601 UTC text, None if unknown)."""

    ws_id: str
    node: str | None
    user: str | None = None
    rooms: list[str] = field(default_factory=list)
    connected_since: str | None = None


@dataclass(frozen=True, slots=True)
class MembersPage:
    """One page of ``GET /rooms/{id}``: pass ``next_cursor`` for the next (None: last)."""

    room: str
    count: int
    members: list[Member]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """``GET /connections/{wsId}``: ``state`` is ``connected`` or ``detached``."""

    ws_id: str
    state: str
    node: str | None
    user: str | None
    rooms: list[str]
    connected_since: str | None


# Calls


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    fields: Any
    read: Callable[[dict[str, Any]], T]


def push_all(val: object, tag: int = DEFAULT_TAG) -> Call[PushResult]:
    return Call("POST", "/push/all", {"val": val, "tag": tag}, _push_result)


def push_room(room: str, val: object, tag: int = DEFAULT_TAG) -> Call[PushResult]:
    return Call("POST", "/push/room", {"id": room, "val": val, "tag": tag}, _push_result)


def push_user(user: str, val: object, tag: int = DEFAULT_TAG) -> Call[PushResult]:
    return Call("POST", "/push/user", {"uid": user, "val": val, "tag": tag}, _push_result)


def push_conn(ws_id: str, val: object, tag: int = DEFAULT_TAG) -> Call[PushResult]:
    return Call("POST", "/push/conn", {"wsId": ws_id, "val": val, "tag": tag}, _push_result)


def push_batch(pushes: Sequence[Mapping[str, object]]) -> Call[list[BatchItemResult]]:
    return Call("POST", "/push/batch", list(pushes), _batch_results)


def join(room: str, ws_id: str) -> Call[JoinResult]:
    return Call(
        "POST",
        "/room/join",
        {"id": room, "wsId": ws_id},
        lambda b: JoinResult(str(b["room"]), str(b["wsId"]), bool(b["alreadyMember"])),
    )


def leave(room: str, ws_id: str) -> Call[LeaveResult]:
    return Call(
        "POST",
        "/room/leave",
        {"id": room, "wsId": ws_id},
        lambda b: LeaveResult(str(b["room"]), str(b["wsId"]), bool(b["wasMember"])),
    )


def join_user(room: str, user: str) -> Call[UserMembershipResult]:
    return Call(
        "POST",
        "/room/join",
        {"id": room, "uid": user},
        lambda b: UserMembershipResult(room, user, list(b["joined"]), list(b["unchanged"])),
    )


def leave_user(room: str, user: str) -> Call[UserMembershipResult]:
    return Call(
        "POST",
        "/room/leave",
        {"id": room, "uid": user},
        lambda b: UserMembershipResult(room, user, list(b["left"]), list(b["unchanged"])),
    )


def disconnect(
    *,
    ws_id: str | None = None,
    user: str | None = None,
    code: int | None = None,
    reason: str | None = None,
    end_session: bool = False,
) -> Call[DisconnectResult]:
    if (ws_id is None) == (user is None):
        raise ValueError("give ws_id or user, exactly one of them")
    # No code: the server's, 4000, or with end_session 4410 (the SDKs do not reconnect).
    fields: dict[str, object] = {"endSession": end_session}
    if code is not None:
        fields["code"] = code
    if ws_id is not None:
        fields["wsId"] = ws_id
    if user is not None:
        fields["uid"] = user
    if reason is not None:
        fields["reason"] = reason
    return Call(
        "POST",
        "/disconnect",
        fields,
        lambda b: DisconnectResult(list(b["disconnected"]), bool(b["sessionEnded"])),
    )


def stats() -> Call[Stats]:
    return Call(
        "GET",
        "/stats",
        None,
        lambda b: Stats(
            version=str(b.get("version", "")),
            uptime_seconds=float(b.get("uptimeSeconds", 0.0)),
            connections=int(b["connections"]),
            rooms=int(b["rooms"]),
            users=int(b.get("users", 0)),
            raw=b,
        ),
    )


def rooms(limit: int = 100) -> Call[dict[str, int]]:
    """The cluster's rooms and their member counts, largest first (a dict keeps order)."""
    return Call(
        "GET",
        "/rooms?" + urlencode({"limit": limit}),
        None,
        lambda b: {str(r["id"]): int(r["members"]) for r in b["rooms"]},
    )


def room_members(room: str, *, limit: int = 100, cursor: str | None = None) -> Call[MembersPage]:
    query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
    return Call(
        "GET",
        f"/rooms/{quote(room, safe='')}?{urlencode(query)}",
        None,
        lambda b: MembersPage(
            room,
            int(b["count"]),
            [_member(m) for m in b["members"]],
            b.get("nextCursor") or None,
        ),
    )


def connection(ws_id: str) -> Call[ConnectionInfo]:
    return Call(
        "GET",
        f"/connections/{quote(ws_id, safe='')}",
        None,
        lambda b: ConnectionInfo(
            str(b["wsId"]),
            str(b["state"]),
            b.get("node"),
            b.get("user"),
            list(b.get("rooms", [])),
            b.get("connectedSince"),
        ),
    )


def user_connections(user: str) -> Call[list[Member]]:
    return Call(
        "GET",
        f"/users/{quote(user, safe='')}",
        None,
        lambda b: [_member({**c, "user": user}) for c in b["connections"]],
    )


def healthz() -> Call[str]:
    return Call("GET", "/healthz", None, lambda b: str(b.get("status", "")))


def readyz() -> Call[str]:
    return Call("GET", "/readyz", None, lambda b: str(b.get("status", "")))


# Reading answers


def _push_result(body: dict[str, Any]) -> PushResult:
    return PushResult(
        _delivered(body),
        _text(body.get("room")),
        _text(body.get("uid")),
        _text(body.get("wsId")),
    )


def _batch_results(body: dict[str, Any]) -> list[BatchItemResult]:
    return [
        BatchItemResult(
            ok=bool(r.get("ok")),
            delivered=_delivered(r),
            status=r.get("status"),
            error=r.get("error"),
            field=r.get("field"),
        )
        for r in body["results"]
    ]


def _member(data: Mapping[str, Any]) -> Member:
    return Member(
        ws_id=str(data["wsId"]),
        node=data.get("node"),
        user=data.get("user"),
        rooms=list(data.get("rooms", [])),
        connected_since=data.get("connectedSince"),
    )


def _delivered(body: Mapping[str, Any]) -> int | None:
    delivered = body.get("delivered")
    return None if delivered is None else int(delivered)


def _text(value: object) -> str | None:
    return None if value is None else str(value)
