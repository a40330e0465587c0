"""The Pusher Channels protocol (7) on one connection, over the same transport and
session core as pushgate's own (docs/pusher.md, docs/architecture.md "The seams of
a connection").

Theory of operation
-------------------

- **Open**: a client of a known app (``/app/<key>``) gets a new wsId at once and
  ``pusher:connection_established`` with its ``socket_id`` (the wsId, see
  pusherapps.py). Its session ends with its connection: Pusher's clients do not
  resume, they subscribe again. An unknown key gets ``pusher:error`` 4001 and a
  close with 4001 (its clients then do not retry).
- **Subscriptions** (``pusher:subscribe`` / ``pusher:unsubscribe``): a channel is the
  room ``<app id>:<channel>``; private, presence and encrypted channels need the
  app's signature (``auth``), a presence one names its member in ``channel_data``
  (user_id, user_info), which is the room's presence identity: the same presence
  as pushgate's own clients get, told as ``member_added`` / ``member_removed``. A
  cache channel sends its last event to a new subscriber, or ``pusher:cache_miss``.
- **Client events** (``client-*``) on private and presence channels the client is
  in, where the app allows them: a member's message, never echoed to its sender.
- **Sign-in** (``pusher:signin``, user authentication): the connection becomes the
  app's user its ``user_data`` names, as the app signed it (``<app id>:<id>`` in
  pushgate: a push to that user reaches its ``#server-to-user-<id>`` channel); a
  sign-in the app did not sign is closed with 4009.
- **Heartbeat**: ``pusher:ping`` is answered with ``pusher:pong``; the transport's
  own WebSocket pings and idle timeout apply as to any connection.

Subscriptions, sign-ins and client events run one after another, in the order sent, so that
an event sent right after its channel's subscribe is judged once the subscribe has
been.
"""

import json
import logging
from collections import Counter
from typing import TYPE_CHECKING

from pushgate import pusherwire as wire
from pushgate.clientops import Serial, Transport, release_when_registered
from pushgate.commands import Membership
from pushgate.errors import (
    BrokerUnavailable,
    ClientFrameError,
    InvalidField,
    RoomLimitExceeded,
    UnknownConnection,
)
from pushgate.ids import ConnId, RoomId, new_conn_id
from pushgate.pusherapps import (
    USER_CHANNEL_PREFIX,
    ChannelKind,
    PusherApp,
    channel,
    channel_problem,
    socket_id_of,
)
from pushgate.streams import Position, room_topic
from pushgate.wire import MIN_PUSH_TAG, TYPE_WELCOME

if TYPE_CHECKING:
    from pushgate.node import Node

log = logging.getLogger("pushgate.gateway")

# Subscriptions and client events of one client waiting for their turn; more closes it.
MAX_PENDING = 32
OVER_PENDING = f"over {MAX_PENDING} subscriptions and events waiting"
# channel_data of a presence subscription: at most this many bytes (Pusher: 1 KB of
# user_info; the id and the JSON around it take some more).
MAX_CHANNEL_DATA_BYTES = 2048
# How far back a cache channel looks for its last event past presence events.
CACHE_LOOKBACK = 20
# What a signed-in user's user_data may weigh.
MAX_USER_DATA_BYTES = 4096
# Events run one after another, in the order sent.
SERIAL_EVENTS = ("pusher:subscribe", "pusher:unsubscribe", "pusher:signin")
# A sign-in the app did not sign: Pusher's "connection is unauthorized" (its clients
# then do not reconnect).
CLOSE_UNAUTHORIZED = 4009


class PusherProtocol:
    """One client's side of the Pusher protocol."""

    __slots__ = (
        "_app",
        "_conn",
        "_counted",
        "_counts",
        "_members",
        "_node",
        "_ops",
        "_refusal",
        "_user_id",
        "activity_timeout",
        "expiring",
        "handshake_timeout",
    )

    def __init__(
        self,
        node: "Node",
        conn: Transport,
        app: PusherApp | None,
        *,
        activity_timeout: float,
        handshake_timeout: float,
        refusal: tuple[int, str] | None = None,
        counts: "Counter[str] | None" = None,
    ) -> None:
        self._node = node
        self._conn = conn
        # Open connections by app on this gateway (shared by its Pusher connections),
        # for the apps' max_connections; this one counts once opened, until closed.
        self._counts = counts
        self._counted = False
        # None: refused (an unknown key, a version not served): told, then closed.
        self._app = app if refusal is None else None
        self._refusal = refusal or (wire.CLOSE_APP_UNKNOWN, "App key not in this cluster")
        self._ops: Serial[wire.ClientEvent] | None = None
        # The user_id this connection is in each presence channel as.
        self._members: dict[RoomId, str] | None = None
        self._user_id: str | None = None  # once signed in (pusher:signin)
        self.activity_timeout = activity_timeout
        self.handshake_timeout = handshake_timeout
        self.expiring: dict[RoomId, float] | None = None  # Pusher has no timed subscriptions

    def opened(self, *, resume: bool) -> None:
        """The upgrade was written: register the connection and tell its socket_id."""
        conn, app = self._conn, self._app
        counts = self._counts
        open_here = counts[app.id] if app is not None and counts is not None else 0
        if app is not None and 0 < app.max_connections <= open_here:
            quota = f"App {app.id} is over its connection quota ({app.max_connections})"
            self._refusal = (wire.CLOSE_APP_OVER_QUOTA, quota)
            self._app = app = None
        if app is None:
            code, message = self._refusal
            log.info("refused a Pusher client from %s: %s", conn.peer, message)
            conn.reply(wire.error(code, message))
            conn.close(code, message)
            return
        if counts is not None:
            counts[app.id] += 1
            self._counted = True
        conn_id = conn.conn_id = new_conn_id()
        conn.enter_hub(held=True)  # before registering: a failure must unregister
        opened = self._node.connection_opened(conn_id, conn, resumable=False)
        activity = max(1, int(self.activity_timeout))
        conn.send_first([wire.connection_established(socket_id_of(conn_id), activity)])
        # As pushgate's welcome: once other nodes can find it, or at the timeout.
        release_when_registered(conn, opened.ready, self.handshake_timeout)

    def on_message(self, data: bytes, max_message_bytes: int, *, over_rate: bool = False) -> None:
        try:
            message = wire.parse_client_event(data)
        except ClientFrameError as exc:
            conn = self._conn
            log.info(
                "closing %s from %s: %d %s",
                conn.conn_id,
                conn.peer,
                exc.code,
                exc.reason,
                extra=conn.log_context(exc.code),
            )
            conn.fail(exc.code, exc.reason)
            return
        event = message.event
        if over_rate:
            if event.startswith("client-"):
                reason = "Client event rejected - you're sending too many messages"
                self._conn.reply(wire.error(wire.ERROR_CLIENT_EVENT_REFUSED, reason))
            return
        if event == "pusher:ping":
            self._conn.send_message(wire.PONG)
        elif event in SERIAL_EVENTS or event.startswith("client-"):
            self._queue(message)
        # pusher:pong and anything else: nothing to answer.

    def closed(self) -> None:
        """Its connection ended: it counts no more against its app's quota."""
        if self._counted and self._counts is not None and self._app is not None:
            self._counted = False
            self._counts[self._app.id] -= 1

    def member(self, room: RoomId, joined: bool, reason: str) -> None:
        """The back end moved it: Pusher's clients are not told (their channels are
        their own subscriptions)."""

    def check_expiry(self, now: float) -> None:
        """Nothing expires: Pusher's subscriptions last as long as their connection."""

    # One after another

    def _queue(self, message: wire.ClientEvent) -> None:
        ops = self._ops
        if ops is None:
            ops = self._ops = Serial(
                self._conn,
                self._handle,
                limit=MAX_PENDING,
                over=OVER_PENDING,
                what="Pusher event",
                at_once=self._node.broker.answers_at_once,
            )
        ops.push(message)

    async def _handle(self, message: wire.ClientEvent) -> list[bytes]:
        conn_id = self._conn.conn_id
        if conn_id is None or self._app is None:
            return []
        if message.event == "pusher:subscribe":
            return await self._subscribe(self._app, conn_id, message.data)
        if message.event == "pusher:unsubscribe":
            await self._unsubscribe(self._app, conn_id, message.data)
            return []
        if message.event == "pusher:signin":
            return await self._signin(self._app, conn_id, message.data)
        return await self._client_event(self._app, conn_id, message)

    async def _subscribe(self, app: PusherApp, conn_id: ConnId, data: object) -> list[bytes]:
        name = data.get("channel") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(name, str):
            return [wire.error(None, 'pusher:subscribe needs {"channel": NAME}')]
        if name.startswith(USER_CHANNEL_PREFIX):  # pusher-js's, once signed in
            if self._user_id is None or name != USER_CHANNEL_PREFIX + self._user_id:
                return [wire.subscription_error(name, 403, "only its signed-in user may")]
            return [wire.subscription_succeeded(name)]
        problem = channel_problem(app, name)
        if problem is not None:
            return [wire.subscription_error(name, 400, problem)]
        kind = channel(name)
        user: str | None = None
        info: str | None = None
        if kind.signed:
            channel_data = data.get("channel_data")
            signed_data = channel_data if kind.kind is ChannelKind.PRESENCE else None
            if kind.kind is ChannelKind.PRESENCE:
                member = _presence_member(channel_data)
                if isinstance(member, str):
                    return [wire.subscription_error(name, 400, member)]
                user, info = member
            socket_id = socket_id_of(conn_id)
            if not app.check_auth(socket_id, name, data.get("auth"), signed_data):
                expected = f"{socket_id}:{name}" + (
                    f":{signed_data}" if isinstance(signed_data, str) else ""
                )
                reason = (
                    f"Invalid signature: expected HMAC SHA256 hex digest of {expected}, "
                    "signed with the app's secret, after the app's key and a colon"
                )
                return [wire.subscription_error(name, 401, reason)]
        room = RoomId(f"{app.id}:{name}")
        node = self._node
        try:
            await node.join(Membership(room, conn_id), by_client=True, info=info, user=user)
            roster = await node.roster(room) if user is not None else None
        except RoomLimitExceeded as exc:
            return [wire.subscription_error(name, 409, f"in {exc.limit} channels already")]
        except BrokerUnavailable:
            return [wire.subscription_error(name, 503, "the server's broker is away; retry")]
        except UnknownConnection:
            return []
        if user is not None:
            if self._members is None:
                self._members = {}
            self._members[room] = user
            members = [m.as_json() for m in roster.members] if roster is not None else []
            answer = wire.subscription_succeeded(name, wire.presence_data(members))
        else:
            answer = wire.subscription_succeeded(name)
        if not kind.cache:
            return [answer]
        return [answer, await self._cached(room, name)]

    async def _signin(self, app: PusherApp, conn_id: ConnId, data: object) -> list[bytes]:
        """``pusher:signin``: the connection is the user its ``user_data`` names, as
        the app's back end signed it; pushes to that user reach it from now on."""
        auth = data.get("auth") if isinstance(data, dict) else None
        user_data = data.get("user_data") if isinstance(data, dict) else None
        user_id = _user_id(user_data)
        if user_id is None or not isinstance(user_data, str):
            return [wire.error(None, "pusher:signin needs user_data: a JSON object with an id")]
        if self._user_id is not None:
            return [wire.error(None, f"already signed in as {self._user_id}")]
        if not app.check_signin(socket_id_of(conn_id), user_data, auth):
            reason = "Invalid signature: the sign-in was not signed with the app's secret"
            log.info("closing %s from %s: %s", conn_id, self._conn.peer, reason)
            self._conn.reply(wire.error(CLOSE_UNAUTHORIZED, reason))
            self._conn.close(CLOSE_UNAUTHORIZED, "Connection not authorized")
            return []
        try:
            signed_in = await self._node.sign_in(conn_id, app.user(user_id))
        except BrokerUnavailable:
            return [wire.error(None, "could not sign in now: the server's broker is away")]
        if not signed_in:
            return []  # it went meanwhile
        self._user_id = user_id
        return [wire.signin_success(user_data)]

    async def _cached(self, room: RoomId, name: str) -> bytes:
        """A cache channel's last event, as a new subscriber gets it, or its miss."""
        broker = self._node.broker
        if broker.keeps_history:
            topic = room_topic(room)
            try:
                now = (await broker.history(topic, None)).position
                if now.seq > 0:
                    since = Position(now.epoch, max(0, now.seq - CACHE_LOOKBACK))
                    kept = await broker.history(topic, since)
                    for publication in reversed(kept.publications):
                        if _is_event(publication.data):
                            return wire.encode_push(publication.data)
            except BrokerUnavailable:
                pass  # a miss: the client's app asks its back end, as for any miss
        self._node.report("cache_miss", {"room": room})
        return wire.cache_miss(name)

    async def _unsubscribe(self, app: PusherApp, conn_id: ConnId, data: object) -> None:
        name = data.get("channel") if isinstance(data, dict) else None
        room = app.room(name) if isinstance(name, str) else None
        if room is None:
            return
        if self._members is not None:
            self._members.pop(room, None)
        try:
            await self._node.leave(Membership(room, conn_id), by_client=True)
        except (UnknownConnection, BrokerUnavailable) as exc:
            log.info("could not unsubscribe %s from %s: %s", conn_id, room, exc)

    async def _client_event(
        self, app: PusherApp, conn_id: ConnId, message: wire.ClientEvent
    ) -> list[bytes]:
        name = message.channel
        room = app.room(name) if name is not None else None
        if not app.client_events:
            return [wire.error(None, "To send client events, you must enable this feature")]
        if name is None or room is None or not channel(name).client_events:
            return [wire.error(None, "Client events are only for private and presence channels")]
        if room not in self._node.hub.rooms_of(conn_id):
            return [wire.error(None, f"Client event rejected: not subscribed to {name}")]
        size = len(wire.encode_data(message.data))
        if size > app.max_event_bytes:
            reason = f"Client event rejected: data over {app.max_event_bytes} bytes"
            return [wire.error(wire.ERROR_CLIENT_EVENT_REFUSED, reason)]
        user = self._members.get(room) if self._members is not None else None
        try:
            await self._node.publish_from(
                conn_id,
                user,
                room,
                MIN_PUSH_TAG,
                message.data,
                echo=False,
                event=message.event,
            )
        except InvalidField as exc:
            return [wire.error(None, f"Client event rejected: data {exc.message}")]
        except BrokerUnavailable:
            return [wire.error(None, "Client event rejected: the server's broker is away")]
        return []


def _presence_member(channel_data: object) -> tuple[str, str | None] | str:
    """A presence subscription's member: its user_id and user_info (encoded), or
    what is wrong with its channel_data."""
    if not isinstance(channel_data, str) or len(channel_data.encode()) > MAX_CHANNEL_DATA_BYTES:
        most = MAX_CHANNEL_DATA_BYTES
        return f"a presence channel needs channel_data: a JSON string of at most {most} bytes"
    try:
        parsed = json.loads(channel_data)
    except ValueError:
        return "channel_data is not JSON"
    user_id = parsed.get("user_id") if isinstance(parsed, dict) else None
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not user_id:
        return "channel_data needs a user_id (a string or a number)"
    user_info = parsed.get("user_info")
    info = json.dumps(user_info, separators=(",", ":")) if user_info is not None else None
    return user_id, info


def _user_id(user_data: object) -> str | None:
    """The id a sign-in's user_data names (a non-empty string), or None."""
    if not isinstance(user_data, str) or len(user_data.encode()) > MAX_USER_DATA_BYTES:
        return None
    try:
        parsed = json.loads(user_data)
    except ValueError:
        return None
    user_id = parsed.get("id") if isinstance(parsed, dict) else None
    return user_id if isinstance(user_id, str) and user_id else None


def _is_event(message: bytes) -> bool:
    """A pushed event (not a presence join or leave)."""
    try:
        parsed = json.loads(message)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("type") != TYPE_WELCOME
