"""The Pusher Channels protocol's messages (protocol 7), as pushgate sends and reads
them: what pusher-js, Laravel Echo and Pusher's other clients expect, and how a
pushgate message (wire.py) becomes a Pusher event. docs/pusher.md has each one.

Every Pusher message is a JSON object with an ``event``, and where it concerns a
channel, its ``channel``; a ``data`` field that clients read as JSON when it is a
string holding JSON (as Pusher's own server sends it).

Pure: no I/O.
"""

import json
from dataclasses import dataclass
from typing import Any

from pushgate.errors import ClientFrameError
from pushgate.pusherapps import USER_CHANNEL_PREFIX
from pushgate.wire import CLOSE_INVALID_DATA, CLOSE_UNSUPPORTED_DATA, TYPE_WELCOME

PROTOCOL_VERSION = 7
# The event name a push that names none goes out as (POST /push/..., a pushgate
# client's publish): its tag is in the data's place only when the data is no string.
PUSH_EVENT = "pushgate:push"

# Close codes (Pusher's ranges: 4000-4099 do not reconnect, 4100-4199 back off,
# 4200-4299 reconnect at once).
CLOSE_APP_UNKNOWN = 4001
CLOSE_APP_OVER_QUOTA = 4004
CLOSE_PATH_NOT_FOUND = 4005
CLOSE_VERSION_UNSUPPORTED = 4007
CLOSE_NO_VERSION = 4008
CLOSE_OVER_CAPACITY = 4100
CLOSE_RECONNECT = 4200  # a generic "reconnect now": the gateway is draining
# Errors told with pusher:error, not closing.
ERROR_CLIENT_EVENT_REFUSED = 4301  # over the rate: "Client event rejected"


def _encode(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _string(data: object) -> str:
    """``data`` as Pusher carries it: a string as it is, anything else as JSON."""
    return data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))


def encode_data(data: object) -> bytes:
    """An event's data as it goes out (what Pusher's size limit counts)."""
    return _string(data).encode()


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    data = {"socket_id": socket_id, "activity_timeout": activity_timeout}
    return _encode({"event": "pusher:connection_established", "data": _string(data)})


PONG = _encode({"event": "pusher:pong", "data": "{}"})
PING = _encode({"event": "pusher:ping", "data": "{}"})


def error(code: int | None, message: str) -> bytes:
    return _encode({"event": "pusher:error", "data": {"code": code, "message": message}})


def subscription_succeeded(channel: str, presence: dict[str, object] | None = None) -> bytes:
    data = _string({"presence": presence}) if presence is not None else "{}"
    return _encode(
        {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data}
    )


def subscription_error(channel: str, status: int, message: str) -> bytes:
    kind = "AuthError" if status in (401, 403) else "SubscriptionError"
    data = {"type": kind, "error": message, "status": status}
    return _encode({"event": "pusher:subscription_error", "channel": channel, "data": data})


def signin_success(user_data: str) -> bytes:
    return _encode({"event": "pusher:signin_success", "data": {"user_data": user_data}})


def cache_miss(channel: str) -> bytes:
    return _encode({"event": "pusher:cache_miss", "channel": channel})


def presence_data(members: list[dict[str, Any]]) -> dict[str, object]:
    """A presence channel's members as its subscription's answer tells them."""
    ids = [str(member["user"]) for member in members]
    hash_ = {str(member["user"]): member.get("info") for member in members}
    return {"ids": ids, "hash": hash_, "count": len(ids)}


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """A message from a Pusher client: its event, channel, and data (an object or
    a string, as sent)."""

    event: str
    channel: str | None
    data: object


def parse_client_event(payload: bytes) -> ClientEvent:
    """Read one client message; raises ClientFrameError (1007 not JSON, 1003 not an
    object with a string ``event``)."""
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise ClientFrameError(CLOSE_INVALID_DATA, "not a JSON message") from None
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise ClientFrameError(CLOSE_UNSUPPORTED_DATA, 'not an object with an "event"')
    channel = message.get("channel")
    return ClientEvent(
        message["event"], channel if isinstance(channel, str) else None, message.get("data")
    )


def encode_push(message: bytes) -> bytes:
    """A pushgate message (wire.py) as a Pusher event: the hub's ``encode`` for
    Pusher connections, once per push per gateway.

    A room's push goes to its channel, under its ``event`` (Pusher's HTTP API and
    client events name one) or :data:`PUSH_EVENT`; a client event on a presence
    channel carries its sender's ``user_id``; a presence join or leave is
    ``pusher_internal:member_added`` / ``member_removed``; a push to a signed-in user
    goes to its ``#server-to-user-<id>`` channel; a push to all has no channel
    (clients hear it with ``bind_global``)."""
    parsed = json.loads(message)
    room, user = parsed.get("room"), parsed.get("user")
    channel = room.partition(":")[2] if isinstance(room, str) else None
    if channel is None and isinstance(user, str) and ":" in user:  # a signed-in user's
        channel = USER_CHANNEL_PREFIX + user.partition(":")[2]
    data = parsed.get("data")
    out: dict[str, object]
    if parsed.get("type") == TYPE_WELCOME and isinstance(data, dict):
        if data.get("op") == "presence" and channel is not None:
            user = data.get("user")
            user_id = str(user) if user is not None else str(data.get("wsId"))
            if data.get("event") == "join":
                member = {"user_id": user_id, "user_info": data.get("info")}
                event = "pusher_internal:member_added"
            else:
                member = {"user_id": user_id}
                event = "pusher_internal:member_removed"
            out = {"event": event, "channel": channel, "data": _string(member)}
            return _encode(out)
        out = {"event": "pushgate:event", "data": _string(data)}
        return _encode(out)
    event = parsed.get("event")
    out = {"event": event if isinstance(event, str) else PUSH_EVENT}
    if channel is not None:
        out["channel"] = channel
    out["data"] = _string(data)
    sender = parsed.get("from")
    if isinstance(sender, dict) and "user" in sender and isinstance(event, str):
        out["user_id"] = str(sender["user"])
    return _encode(out)
