"""What Pusher's HTTP API is asked to do, parsed and checked with Pusher's limits:
an event to trigger (``POST /apps/{id}/events``, each item of ``batch_events``) and
the ``info`` attributes a query asks for (docs/pusher.md).

Each refusal is a :class:`PusherRequestError` with the status Pusher answers (400,
or 413 for data over the app's limit) and a message that says what is wrong. Pure:
no I/O.
"""

from dataclasses import dataclass

from pushgate.ids import ConnId, RoomId
from pushgate.pusherapps import (
    USER_CHANNEL_PREFIX,
    ChannelKind,
    PusherApp,
    channel,
    channel_problem,
    conn_of,
)

# Pusher's limits: channels per event, events per batch, an event name's length.
MAX_CHANNELS = 100
MAX_BATCH = 10
MAX_EVENT_NAME = 200
# The channel Pusher's libraries send a user's events to (sendToUser): it reaches
# the connections signed in as that user (pusher:signin), wherever they are.
SERVER_TO_USER = USER_CHANNEL_PREFIX
# Events clients treat as the protocol's own: a back end must not forge them.
RESERVED_PREFIXES = ("pusher:", "pusher_internal:")
MAX_USER_ID = 200  # characters of a user's id
USER_COUNT = "user_count"
SUBSCRIPTION_COUNT = "subscription_count"


class PusherRequestError(Exception):
    """A request Pusher's API refuses: its status and what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Event:
    """One event to trigger: its name, its data (as clients get it), its channels and
    their rooms, the signed-in users it is for (their ``#server-to-user-`` channels:
    pushgate's users ``<app id>:<id>``), the connection it is not for, and the counts
    asked back."""

    name: str
    data: str
    channels: tuple[str, ...]
    rooms: tuple[RoomId, ...]
    exclude: ConnId | None
    info: frozenset[str]
    users: tuple[str, ...] = ()


def parse_event(app: PusherApp, body: object, *, batched: bool = False) -> Event:
    """``POST /apps/{id}/events``'s body (``name``, ``data``, ``channel`` or
    ``channels``, ``socket_id``, ``info``), or one item of a batch (``channel``)."""
    if not isinstance(body, dict):
        raise PusherRequestError(400, "an event must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_EVENT_NAME:
        raise PusherRequestError(400, f"name must be the event's name: 1-{MAX_EVENT_NAME} chars")
    if name.startswith(RESERVED_PREFIXES):
        raise PusherRequestError(400, f"the event name {name!r} is reserved for the protocol")
    data = body.get("data")
    if not isinstance(data, str):
        raise PusherRequestError(400, "data must be a string (Pusher's libraries send JSON text)")
    size = len(data.encode())
    if size > app.max_event_bytes:
        raise PusherRequestError(
            413, f"the event's data is {size} bytes, over this app's limit of {app.max_event_bytes}"
        )
    named = _channels(body, batched=batched)
    users = tuple(_user(app, name) for name in named if name.startswith(SERVER_TO_USER))
    channels = tuple(name for name in named if not name.startswith(SERVER_TO_USER))
    info = parse_info(body.get("info"), {USER_COUNT, SUBSCRIPTION_COUNT})
    if users and info:
        raise PusherRequestError(400, "info is for channels, not for a user's events")
    return Event(
        name=name,
        data=data,
        channels=channels,
        rooms=tuple(_room(app, name) for name in channels),
        exclude=_excluded(body.get("socket_id")),
        info=info,
        users=users,
    )


def parse_batch(app: PusherApp, body: object) -> list[Event]:
    """``POST /apps/{id}/batch_events``'s body: ``{"batch": [...]}``, 1 to MAX_BATCH
    events each with one ``channel``; one bad event refuses the whole batch (none
    is sent), as Pusher does."""
    batch = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(batch, list) or not batch:
        raise PusherRequestError(400, 'the body must be {"batch": [events]}')
    if len(batch) > MAX_BATCH:
        raise PusherRequestError(
            400, f"Batch too large: {len(batch)} events, at most {MAX_BATCH} per batch"
        )
    events = []
    for index, item in enumerate(batch):
        try:
            events.append(parse_event(app, item, batched=True))
        except PusherRequestError as exc:
            raise PusherRequestError(exc.status, f"batch[{index}]: {exc.message}") from None
    return events


def parse_info(value: object, allowed: set[str]) -> frozenset[str]:
    """``info``: a comma-separated list of the attributes a query asks back."""
    if value is None or value == "":
        return frozenset()
    if not isinstance(value, str):
        raise PusherRequestError(400, "info must be a comma-separated list of attributes")
    asked = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(asked - allowed)
    if unknown:
        raise PusherRequestError(
            400,
            f"info: unknown attribute {unknown[0]!r}; "
            f"this query knows {', '.join(sorted(allowed))}",
        )
    return asked


def check_channel(app: PusherApp, name: str) -> RoomId:
    """The room of a channel named in a request; a refusal for a name Pusher or
    this server cannot hold."""
    return _room(app, name)


def is_presence(name: str) -> bool:
    return channel(name).kind is ChannelKind.PRESENCE


def _channels(body: dict[str, object], *, batched: bool) -> tuple[str, ...]:
    one, several = body.get("channel"), body.get("channels")
    if batched or several is None:
        if not isinstance(one, str):
            raise PusherRequestError(400, "channel must be the name of the event's channel")
        return (one,)
    if one is not None:
        raise PusherRequestError(400, "give channel or channels, not both")
    if not isinstance(several, list) or not several or not all(isinstance(c, str) for c in several):
        raise PusherRequestError(400, "channels must be a list of channel names")
    if len(several) > MAX_CHANNELS:
        raise PusherRequestError(
            400, f"{len(several)} channels: an event goes to at most {MAX_CHANNELS}"
        )
    return tuple(dict.fromkeys(several))  # a channel named twice gets the event once


def _user(app: PusherApp, name: str) -> str:
    """The pushgate user a ``#server-to-user-<id>`` channel is for."""
    user_id = name[len(SERVER_TO_USER) :]
    if not 1 <= len(user_id) <= MAX_USER_ID or not user_id.isprintable():
        raise PusherRequestError(400, f"a user id is 1-{MAX_USER_ID} printable characters")
    return app.user(user_id)


def check_user(app: PusherApp, user_id: str) -> str:
    """The pushgate user an app's user id in a request is; a refusal for a bad id."""
    return _user(app, SERVER_TO_USER + user_id)


def _room(app: PusherApp, name: str) -> RoomId:
    if name.startswith(SERVER_TO_USER):
        raise PusherRequestError(400, f"{name[:200]!r} is a user's channel, not a channel's")
    problem = channel_problem(app, name)
    if problem is not None:
        raise PusherRequestError(400, f"channel {name[:200]!r}: {problem}")
    return RoomId(f"{app.id}:{name}")


def _excluded(socket_id: object) -> ConnId | None:
    if socket_id is None or socket_id == "":
        return None
    conn = conn_of(socket_id)
    if conn is None:
        raise PusherRequestError(
            400, f"Invalid socket_id {str(socket_id)[:60]!r}: not one this server gave"
        )
    return conn
