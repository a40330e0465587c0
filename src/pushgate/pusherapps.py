"""Pusher Channels apps on pushgate's core: which app a key or an id names, how a
channel is a room, how a connection's wsId is its ``socket_id``, and the
signatures Pusher's libraries make (docs/pusher.md).

- An **app** is ``ID:KEY:SECRET`` (``--pusher-app``), with options in ``--config``.
- A **channel** of an app is the room ``<app id>:<channel>``: the app is the room's
  namespace, so a push to ``POST /push/room id=<app id>:<channel>`` reaches the
  channel's Pusher clients, and the app's channels show in every room query.
- A **socket_id** is the connection's wsId (a UUID) written as Pusher's libraries
  check it (``\\d+\\.\\d+``): its two 64-bit halves in decimal. Each way is exact, so
  an event's ``socket_id`` names the wsId it excludes.
- **Signatures**: a private or presence channel's ``auth`` is ``KEY:HMAC-SHA256(
  secret, "<socket_id>:<channel>[:<channel_data>]")``, in hex.

Pure: no I/O.
"""

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from enum import Enum

from pushgate.ids import ROOM_ID_PATTERN, ConnId, RoomId

# What Pusher allows in a channel name, and its length limit.
PUSHER_CHANNEL = re.compile(r"[A-Za-z0-9_\-=@,.;]{1,164}")
# What an app's id and key may be here (an app id is a room's namespace).
_APP_PART = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
SOCKET_ID = re.compile(r"(\d{1,20})\.(\d{1,20})")
# A signed-in user's own channel: pushes to the user (Pusher's sendToUser) go to it.
USER_CHANNEL_PREFIX = "#server-to-user-"


class ChannelKind(Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "private-encrypted"
    PRESENCE = "presence"


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel a client may name: its kind, and whether it is a cache channel
    (its last event is sent to each new subscriber)."""

    name: str
    kind: ChannelKind
    cache: bool

    @property
    def signed(self) -> bool:
        """Subscribing needs the back end's signature."""
        return self.kind is not ChannelKind.PUBLIC

    @property
    def client_events(self) -> bool:
        """Its members may send ``client-`` events (where the app allows them):
        private and presence channels; never encrypted ones, whose payloads the
        server cannot read."""
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.PRESENCE)


def channel(name: str) -> Channel:
    """What kind of channel ``name`` is (its name already checked)."""
    for prefix, kind in (
        ("private-encrypted-", ChannelKind.ENCRYPTED),
        ("private-", ChannelKind.PRIVATE),
        ("presence-", ChannelKind.PRESENCE),
    ):
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return Channel(name, kind, rest.startswith("cache-"))
    return Channel(name, ChannelKind.PUBLIC, name.startswith("cache-"))


@dataclass(frozen=True, slots=True)
class PusherApp:
    """One app: its id (the namespace of its channels' rooms), key (what clients
    connect with), secret (what signs), and options."""

    id: str
    key: str
    secret: str
    client_events: bool = False  # members of private and presence channels may talk
    max_connections: int = 0  # on each gateway (0: only the gateway's own limits)
    max_event_bytes: int = 10 * 1024  # an event's data, as Pusher's default

    def room(self, channel_name: str) -> RoomId | None:
        """The room of one of this app's channels; None for a name Pusher refuses, or
        one this server cannot hold as a room (see :func:`channel_problem`)."""
        if channel_problem(self, channel_name) is not None:
            return None
        return RoomId(f"{self.id}:{channel_name}")

    def channel_of(self, room: str) -> str | None:
        """The channel name of one of this app's rooms; None for another room."""
        prefix = self.id + ":"
        return room[len(prefix) :] if room.startswith(prefix) else None

    def user(self, user_id: str) -> str:
        """The pushgate user a signed-in user of this app is: its id behind the app's,
        so that the users of two apps never meet."""
        return f"{self.id}:{user_id}"

    def check_signin(self, socket_id: str, user_data: str, auth: object) -> bool:
        """Whether ``auth`` is this app's signature of a user's sign-in."""
        return self.check_auth(socket_id, ":user:", auth, user_data)  # "<id>::user::<data>"

    def sign(self, text: str) -> str:
        return hmac.new(self.secret.encode(), text.encode(), hashlib.sha256).hexdigest()

    def check_auth(self, socket_id: str, channel_name: str, auth: object, data: str | None) -> bool:
        """Whether ``auth`` is this app's signature of a subscription (``data``: a
        presence channel's ``channel_data``, signed with it)."""
        if not isinstance(auth, str):
            return False
        key, colon, signature = auth.partition(":")
        if not colon or key != self.key:
            return False
        signed = f"{socket_id}:{channel_name}" + (f":{data}" if data is not None else "")
        return hmac.compare_digest(signature.encode(), self.sign(signed).encode())


def channel_problem(app: PusherApp, name: object) -> str | None:
    """Why ``name`` cannot be one of ``app``'s channels here, or None."""
    if not isinstance(name, str) or not PUSHER_CHANNEL.fullmatch(name):
        return "a channel name is 1-164 characters of letters, digits and _-=@,.;"
    if ROOM_ID_PATTERN.fullmatch(f"{app.id}:{name}") is None:
        limit = 64 - len(app.id) - 1
        return (
            f"this server holds channel names of at most {limit} characters of letters, "
            "digits and _-. (docs/pusher.md)"
        )
    return None


def socket_id_of(conn: ConnId) -> str:
    """The ``socket_id`` Pusher's clients and libraries see for a wsId."""
    value = uuid.UUID(conn).int
    return f"{value >> 64}.{value & (2**64 - 1)}"


def conn_of(socket_id: object) -> ConnId | None:
    """The wsId a ``socket_id`` stands for; None for anything but one made by
    :func:`socket_id_of`."""
    if not isinstance(socket_id, str):
        return None
    match = SOCKET_ID.fullmatch(socket_id)
    if match is None:
        return None
    high, low = int(match[1]), int(match[2])
    if high >= 2**64 or low >= 2**64:
        return None
    return ConnId(str(uuid.UUID(int=(high << 64) | low)))


class PusherApps:
    """Every app of a server, by key and by id."""

    def __init__(self, apps: list[PusherApp] | tuple[PusherApp, ...] = ()) -> None:
        self._by_key = {app.key: app for app in apps}
        self._by_id = {app.id: app for app in apps}

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_id.values())

    def by_key(self, key: str) -> PusherApp | None:
        return self._by_key.get(key)

    def by_id(self, app_id: str) -> PusherApp | None:
        return self._by_id.get(app_id)

    def of_room(self, room: str) -> tuple[PusherApp, Channel] | None:
        """The app and channel a room is, or None for a room of no app."""
        app_id, colon, name = room.partition(":")
        app = self._by_id.get(app_id) if colon else None
        return (app, channel(name)) if app is not None else None

    def has_presence(self, room: RoomId) -> bool:
        """``room`` is an app's presence channel."""
        found = self.of_room(room)
        return found is not None and found[1].kind is ChannelKind.PRESENCE


def parse_app(text: str) -> PusherApp:
    """``ID:KEY:SECRET[:client-events][:max-connections=N]``; raises ValueError saying
    what is wrong."""
    parts = text.strip().split(":")
    if len(parts) < 3:
        raise ValueError(f"{text.strip()!r} is not ID:KEY:SECRET[:OPTION...]")
    app_id, key, secret = parts[:3]
    for what, value in (("id", app_id), ("key", key)):
        if not _APP_PART.fullmatch(value):
            raise ValueError(f"a Pusher app's {what} is 1-64 letters, digits and _.- ({value!r})")
    if len(secret) < 16:
        raise ValueError(f"the secret of Pusher app {app_id} is shorter than 16 characters")
    client_events, max_connections = False, 0
    for option in parts[3:]:
        name, equals, value = option.partition("=")
        if option == "client-events":
            client_events = True
        elif name == "max-connections" and equals and value.isdigit():
            max_connections = int(value)
        else:
            raise ValueError(
                f"unknown Pusher app option {option!r} (client-events, max-connections=N)"
            )
    return PusherApp(app_id, key, secret, client_events, max_connections)


def parse_apps(text: str) -> PusherApps:
    """A comma-separated list of :func:`parse_app`; ids and keys must be unique."""
    apps = [parse_app(part) for part in text.split(",") if part.strip()]
    for attr in ("id", "key"):
        values = [getattr(app, attr) for app in apps]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"two Pusher apps with the {attr} {dupes[0]}")
    return PusherApps(apps)
