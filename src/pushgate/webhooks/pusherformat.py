"""Webhooks in Pusher's format, for a Pusher app's receivers (``--pusher-webhook``):
the same events, queued and retried as pushgate's own (service.py, sender.py), sent
as Pusher's server libraries check them.

- Body: ``{"time_ms": <ms>, "events": [{"name": "channel_occupied", "channel": C},
  …]}``; the names are Pusher's: ``channel_occupied``, ``channel_vacated``,
  ``member_added`` and ``member_removed`` (presence channels only, with
  ``user_id``), ``client_event`` (``event``, ``data``, ``socket_id``, and ``user_id``
  on a presence channel), ``cache_miss``.
- Headers: ``X-Pusher-Key`` (the app's key) and ``X-Pusher-Signature``: HMAC-SHA256
  of the body under the app's secret, in hex.

A queued event that has no Pusher form (a member of a channel that is no presence
channel: Pusher reports those only by occupancy) is left out of the body; a batch
left empty is not sent, and counts as delivered.

Pure: no I/O, no clock of its own.
"""

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

from pushgate.ids import ConnId
from pushgate.pusherapps import socket_id_of
from pushgate.webhooks.events import Queued

KEY_HEADER = "X-Pusher-Key"
SIGNATURE_HEADER = "X-Pusher-Signature"


@dataclass(frozen=True, slots=True)
class PusherHookApp:
    """The app whose receiver this is: its key (told) and secret (signs)."""

    key: str
    secret: str


def pusher_event(name: str, data: dict[str, object]) -> dict[str, object] | None:
    """One queued event (its name and data) as Pusher tells it; None: not told."""
    room = data.get("room")
    if not isinstance(room, str):
        return None
    channel = room.partition(":")[2]
    if name in ("room_occupied", "room_vacated"):
        told = "channel_occupied" if name == "room_occupied" else "channel_vacated"
        return {"name": told, "channel": channel}
    if name in ("member_joined", "member_left"):
        user = data.get("user")
        if not channel.startswith("presence-") or user is None:
            return None
        told = "member_added" if name == "member_joined" else "member_removed"
        return {"name": told, "channel": channel, "user_id": str(user)}
    if name == "client_message":
        event = data.get("event")
        if not isinstance(event, str) or not event.startswith("client-"):
            return None  # a pushgate client's message to the app's room
        val = data.get("val")
        out: dict[str, object] = {
            "name": "client_event",
            "channel": channel,
            "event": event,
            "data": val if isinstance(val, str) else json.dumps(val, separators=(",", ":")),
        }
        ws_id = data.get("wsId")
        if isinstance(ws_id, str):
            out["socket_id"] = socket_id_of(ConnId(ws_id))
        if channel.startswith("presence-") and data.get("user") is not None:
            out["user_id"] = str(data["user"])
        return out
    if name == "cache_miss":
        return {"name": "cache_miss", "channel": channel}
    return None


def body(batch: Sequence[Queued], time_ms: int) -> bytes | None:
    """The POST's body for ``batch``; None when none of its events has a Pusher form."""
    events = []
    for queued in batch:
        entry = json.loads(queued.entry.payload)
        told = pusher_event(entry["name"], entry["data"])
        if told is not None:
            events.append(told)
    if not events:
        return None
    message = {"time_ms": time_ms, "events": events}
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def headers(app: PusherHookApp, data: bytes) -> dict[str, str]:
    signature = hmac.new(app.secret.encode(), data, hashlib.sha256).hexdigest()
    return {KEY_HEADER: app.key, SIGNATURE_HEADER: signature}
