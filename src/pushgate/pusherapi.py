"""Pusher's HTTP API on the logic API's port, for the apps of ``--pusher-app``
(docs/pusher.md): what Pusher's server libraries call.

Routes (each signed as pusherauth.py checks; JSON answers, refusals in text as
Pusher's)::

    POST /apps/{id}/events                          -> {} (or {"channels": {...}} with info)
    POST /apps/{id}/batch_events                    -> {} (or {"batch": [...]} with info)
    GET  /apps/{id}/channels                        -> {"channels": {NAME: {...}}}
    GET  /apps/{id}/channels/{name}                 -> {"occupied": B, ...}
    GET  /apps/{id}/channels/{name}/users           -> {"users": [{"id": U}]}
    POST /apps/{id}/users/{user}/terminate_connections  -> {}
    POST /users/{user}/terminate_connections        (the Python library's path: the
                                                     app is the one whose key signed)

Everything is cluster-wide, as the native API: an event is a push to the channel's
room through the broker (``Node.push_room``), and channels and their counts come
from every live gateway (control.py) and the presence store, not this node alone.

These routes authenticate by their signature, not by pushgate's API key: the key
middleware lets through what :func:`is_signed_route` says resolved to one of them.
The Host and cross-site checks (apiguard.py) apply to them as to every route.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pushgate.commands import Disconnect, PushRoom, PushUser
from pushgate.control import Control
from pushgate.errors import UnknownConnection
from pushgate.ids import ConnId, RoomId
from pushgate.node import Node
from pushgate.pusherapps import PusherApp, PusherApps, socket_id_of
from pushgate.pusherauth import Refused, check
from pushgate.pusherevents import (
    SUBSCRIPTION_COUNT,
    USER_COUNT,
    Event,
    PusherRequestError,
    check_channel,
    check_user,
    is_presence,
    parse_batch,
    parse_event,
    parse_info,
)
from pushgate.wire import MIN_PUSH_TAG, decode_json

log = logging.getLogger("pushgate.api")

ROUTE_PREFIX = "pusher-"
# How a terminated connection is closed: Pusher's "connection is unauthorized",
# in the range its clients do not reconnect on by themselves.
TERMINATED_CODE = 4009
TERMINATED_REASON = "terminated by the app's back end"

Signed = Callable[[web.Request, PusherApp], Awaitable[web.Response]]


def is_signed_route(request: web.Request) -> bool:
    """The request resolved to one of Pusher's routes, which check their own
    signature (so pushgate's API key is not asked of it)."""
    name = request.match_info.route.name
    return name is not None and name.startswith(ROUTE_PREFIX)


def add_pusher_routes(app: web.Application, apps: PusherApps, node: Node, control: Control) -> None:
    """Serve Pusher's HTTP API for ``apps`` on ``app``."""
    api = PusherAPI(apps, node, control)
    routes: list[tuple[str, str, Signed, bool]] = [
        ("POST", "/apps/{app_id}/events", api.events, True),
        ("POST", "/apps/{app_id}/batch_events", api.batch_events, True),
        ("GET", "/apps/{app_id}/channels", api.channels, True),
        ("GET", "/apps/{app_id}/channels/{channel}", api.channel, True),
        ("GET", "/apps/{app_id}/channels/{channel}/users", api.users, True),
        ("POST", "/apps/{app_id}/users/{user}/terminate_connections", api.terminate, True),
        ("POST", "/users/{user}/terminate_connections", api.terminate, False),
    ]
    for method, path, handler, has_id in routes:
        name = ROUTE_PREFIX + path.strip("/").replace("/", "-").replace("{", "").replace("}", "")
        app.router.add_route(method, path, api.signed(handler, has_id=has_id), name=name)


def answer(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, dumps=lambda value: json.dumps(value, separators=(",", ":")))


def refuse(status: int, message: str) -> web.Response:
    """A refusal as Pusher answers it: its message, in text."""
    return web.Response(status=status, text=message + "\n")


class PusherAPI:
    """The handlers, bound to the apps and the node they act through."""

    def __init__(self, apps: PusherApps, node: Node, control: Control) -> None:
        self.apps = apps
        self.node = node
        self.control = control

    def signed(
        self, handler: Signed, *, has_id: bool
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """``handler``, called with the request's app once its signature holds;
        PusherRequestError raised in it answered in text."""

        async def checked(request: web.Request) -> web.Response:
            body = await request.read() if request.body_exists else b""
            found = check(
                self.apps,
                request.match_info["app_id"] if has_id else None,
                request.method,
                request.path,
                request.rel_url.raw_query_string,  # decoded once, by check
                body,
                time.time(),
            )
            if isinstance(found, Refused):
                log.info(
                    "%s %s from %s: %d, %s",
                    request.method,
                    request.path,
                    request.remote,
                    found.status,
                    found.message,
                )
                return refuse(found.status, found.message)
            try:
                return await handler(request, found)
            except PusherRequestError as exc:
                return refuse(exc.status, exc.message)

        return checked

    # Events

    async def events(self, request: web.Request, app: PusherApp) -> web.Response:
        event = parse_event(app, await _json_body(request))
        await self._trigger(event)
        if not event.info:
            return answer({})
        counts = await self._counts(event)
        return answer({"channels": dict(zip(event.channels, counts, strict=True))})

    async def batch_events(self, request: web.Request, app: PusherApp) -> web.Response:
        events = parse_batch(app, await _json_body(request))
        # One after another: a batch's events to one channel arrive in its order.
        for event in events:
            await self._trigger(event)
        if not any(event.info for event in events):
            return answer({})
        return answer({"batch": [(await self._counts(event))[0] for event in events]})

    async def _trigger(self, event: Event) -> None:
        """The event to each of its channels, as a push to the channel's room, and to
        each signed-in user it names, as a push to that user."""
        name, data, exclude = event.name, event.data, event.exclude
        await asyncio.gather(
            *(
                self.node.push_room(PushRoom(room, MIN_PUSH_TAG, data, exclude=exclude, event=name))
                for room in event.rooms
            ),
            *(
                self.node.push_user(PushUser(user, MIN_PUSH_TAG, data, exclude=exclude, event=name))
                for user in event.users
            ),
        )

    async def _counts(self, event: Event) -> list[dict[str, int]]:
        """The counts ``info`` asks for, for each channel of the event (user_count
        for presence channels only, as Pusher)."""
        sizes = await self.control.room_sizes() if SUBSCRIPTION_COUNT in event.info else {}
        counts = []
        for name, room in zip(event.channels, event.rooms, strict=True):
            found: dict[str, int] = {}
            if USER_COUNT in event.info and is_presence(name):
                found[USER_COUNT] = await self._user_count(room)
            if SUBSCRIPTION_COUNT in event.info:
                found[SUBSCRIPTION_COUNT] = sizes.get(room, 0)
            counts.append(found)
        return counts

    # Channels

    async def channels(self, request: web.Request, app: PusherApp) -> web.Response:
        """The app's occupied channels, cluster-wide; with ``info=user_count`` (for a
        ``presence-`` prefix only) each one's users."""
        prefix = request.query.get("filter_by_prefix", "")
        info = parse_info(request.query.get("info"), {USER_COUNT})
        if USER_COUNT in info and not prefix.startswith("presence-"):
            raise PusherRequestError(
                400, "info=user_count is only for presence channels: filter_by_prefix=presence-"
            )
        listed: dict[str, dict[str, int]] = {}
        for room, size in sorted((await self.control.room_sizes()).items()):
            name = app.channel_of(room)
            if name is None or size <= 0 or not name.startswith(prefix):
                continue
            listed[name] = {}
            if USER_COUNT in info:
                listed[name][USER_COUNT] = await self._user_count(RoomId(room))
        return answer({"channels": listed})

    async def channel(self, request: web.Request, app: PusherApp) -> web.Response:
        """One channel: ``occupied``, and the counts ``info`` asks for."""
        name = request.match_info["channel"]
        room = check_channel(app, name)
        info = parse_info(request.query.get("info"), {USER_COUNT, SUBSCRIPTION_COUNT})
        if USER_COUNT in info and not is_presence(name):
            raise PusherRequestError(400, "info=user_count is only for presence channels")
        subscriptions = (await self.control.members(room, 0, None))["count"]
        found: dict[str, object] = {"occupied": subscriptions > 0}
        if USER_COUNT in info:
            found[USER_COUNT] = await self._user_count(room)
        if SUBSCRIPTION_COUNT in info:
            found[SUBSCRIPTION_COUNT] = subscriptions
        return answer(found)

    async def users(self, request: web.Request, app: PusherApp) -> web.Response:
        """A presence channel's users, cluster-wide."""
        name = request.match_info["channel"]
        room = check_channel(app, name)
        if not is_presence(name):
            raise PusherRequestError(400, "users are only for presence channels")
        roster = await self.node.roster(room)
        members = roster.members if roster is not None else []
        users = [
            {"id": member.user if member.user is not None else socket_id_of(member.ws_ids[0])}
            for member in members
        ]
        return answer({"users": users})

    async def _user_count(self, room: RoomId) -> int:
        roster = await self.node.roster(room)
        return len(roster.members) if roster is not None else 0

    # Users

    async def terminate(self, request: web.Request, app: PusherApp) -> web.Response:
        """Close every connection of a user, cluster-wide: those signed in as it
        (pusher:signin), as Pusher does, and those in one of the app's presence
        channels as it (a user of an app that never signs its users in)."""
        user_id = request.match_info["user"]
        signed_in = Disconnect(
            None, check_user(app, user_id), TERMINATED_CODE, TERMINATED_REASON, end_session=True
        )
        await self.control.disconnect(signed_in)  # a user's: none is no error
        for conn in await self._connections_of(app, user_id):
            order = Disconnect(conn, None, TERMINATED_CODE, TERMINATED_REASON, end_session=True)
            with contextlib.suppress(UnknownConnection):  # closed meanwhile
                await self.control.disconnect(order)
        return answer({})

    async def _connections_of(self, app: PusherApp, user: str) -> set[ConnId]:
        # One census of every gateway and one roster read per presence channel of
        # the app: a rare operator's action, so no index of users is kept for it.
        found: set[ConnId] = set()
        for room in await self.control.room_sizes():
            name = app.channel_of(room)
            if name is None or not is_presence(name):
                continue
            roster = await self.node.roster(RoomId(room))
            for member in roster.members if roster is not None else []:
                if member.user == user:
                    found.update(member.ws_ids)
        return found


async def _json_body(request: web.Request) -> object:
    try:
        return decode_json((await request.read()).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PusherRequestError(400, "the body is not JSON") from None
