"""The logic HTTP API: push to everyone or to a room, join and leave rooms.

Routes (all answer JSON; see README.md for the bodies)::

    POST /push/all    val, tag        -> 200 {"ok":true,"delivered":N}
    POST /push/room   val, tag, id    -> 200 {"ok":true,"room":ID,"delivered":N}
    POST /push/user   val, tag, uid   -> 200 {"ok":true,"uid":UID,"delivered":N}
    POST /push/conn   val, tag, wsId  -> 200 {"ok":true,"wsId":W,"delivered":1}
    POST /push/batch  [{target,...}]  -> 200 {"ok":true,"results":[one answer per push]}
    POST /room/join   id, wsId        -> 200 {"ok":true,"room":ID,"wsId":W,"alreadyMember":B}
    POST /room/join   id, uid         -> 200 {"ok":true,"room":ID,"uid":U,"joined":[W],...}
    POST /room/leave  id, wsId        -> 200 {"ok":true,"room":ID,"wsId":W,"wasMember":B}
    POST /room/leave  id, uid         -> 200 {"ok":true,"room":ID,"uid":U,"left":[W],...}
    POST /disconnect  wsId|uid, code, reason, endSession -> 200 {"ok":true,"disconnected":[W]}
    GET  /healthz                     -> 200 while the process serves
    GET  /readyz                      -> 200 when the broker is ready, else 503
    GET  /stats                       -> connection, room and user counts, cluster-wide
    GET  /rooms?limit=N               -> the cluster's rooms and member counts, largest first
    GET  /rooms/{id}?limit=&cursor=   -> a room's member count and a page of its members
    GET  /connections/{wsId}          -> a connection's state, node, user and rooms
    GET  /users/{uid}                 -> a user's connections
    GET  /                            -> the console page (see console.py)
    GET  /openapi.json                -> this API's OpenAPI 3.0 description
    GET  /docs                        -> a page that reads it (its reference)
    GET  /metrics                     -> Prometheus metrics (docs/operations.md)
    /apps/{id}/...                    -> Pusher's HTTP API, with --pusher-app (pusherapi.py)

Fields come from an ``application/x-www-form-urlencoded`` body (as ``curl -d``
sends them), from a JSON object body, or from the query string; a body field wins
over a query field of the same name, and the first of repeated form fields wins.

Errors: 400 missing or invalid field (named in ``field``), 403 a request from a
page of another site or, without API keys, a Host name that DNS could rebind
(apiguard.py), 404 unknown wsId or path, 405 wrong method, 409 room cap reached,
413 body over --max-body-bytes, 415 other content types (and a JSON body labelled
a form or not labelled); 503 and the connection closed when the API has as many
connections as --max-api-connections (apisite.py). Every error body is
``{"ok":false,"error":"..."}``; every JSON answer is one line, ending with a newline.
"""

import logging
import re
import time

from aiohttp import web

from pushgate import __version__
from pushgate.apicontext import (
    API_HOST_KEY,
    API_KEYS_KEY,
    CONTROL_KEY,
    METRICS_KEY,
    NODE_KEY,
    PUSHER_IDS_KEY,
    STARTED_KEY,
    _json_line,
    error,
    ok,
)
from pushgate.apifields import _bad_body, read_fields
from pushgate.apimiddlewares import (
    _describe_error,
    _errors_as_json,
    _refuse_cross_site,
    _require_api_key,
)
from pushgate.apisite import track_requests
from pushgate.commands import (
    Disconnect,
    Push,
    PushAll,
    PushConn,
    PushRoom,
    PushUser,
    UserMembership,
    parse_batch,
    parse_batch_item,
    parse_conn_id,
    parse_membership,
    parse_room_id,
    parse_user_id,
)
from pushgate.console import add_console_routes
from pushgate.control import MAX_MEMBERS_PAGE, Control
from pushgate.errors import BrokerUnavailable, InvalidField, UnknownConnection
from pushgate.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pushgate.metrics import Registries, exposition
from pushgate.node import Node
from pushgate.openapi import openapi_spec
from pushgate.pusherapi import add_pusher_routes
from pushgate.pusherapps import PusherApps
from pushgate.security import ApiKeys
from pushgate.wire import decode_json

log = logging.getLogger("pushgate.api")

MAX_ROOMS_LISTED = 1000
_LIMIT_TEXT = re.compile(r"[0-9]{1,4}")


def build_api(
    node: Node,
    *,
    max_body_bytes: int,
    api_keys: ApiKeys | None = None,
    metrics: Registries | None = None,
    api_host: str = "",
    pusher_apps: PusherApps | None = None,
) -> web.Application:
    """The logic API as an aiohttp application bound to ``node``; with ``api_keys``,
    every endpoint but the health checks needs one; with ``metrics``, it serves them
    at ``GET /metrics``. ``api_host`` (--api-host) is accepted as a Host name beside
    IP addresses and localhost when there are no keys (apiguard.py). With
    ``pusher_apps``, it serves Pusher's HTTP API for them too (pusherapi.py)."""
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[track_requests, _errors_as_json, _refuse_cross_site, _require_api_key],
    )
    app[NODE_KEY] = node
    app[CONTROL_KEY] = Control(node)
    app[API_KEYS_KEY] = api_keys or ApiKeys(())
    app[API_HOST_KEY] = api_host
    app[STARTED_KEY] = time.monotonic()
    app.router.add_post("/push/all", push_all)
    app.router.add_post("/push/room", push_room)
    app.router.add_post("/push/user", push_user)
    app.router.add_post("/push/conn", push_conn)
    app.router.add_post("/push/batch", push_batch)
    app.router.add_post("/room/join", room_join)
    app.router.add_post("/room/leave", room_leave)
    app.router.add_post("/disconnect", disconnect)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/stats", stats)
    app.router.add_get("/rooms", rooms)
    app.router.add_get("/rooms/{id}", room_members)
    app.router.add_get("/connections/{wsId}", connection)
    app.router.add_get("/users/{uid:[\\s\\S]+}", user)
    app.router.add_get("/openapi.json", openapi)
    app[PUSHER_IDS_KEY] = [pusher_app.id for pusher_app in pusher_apps or ()]
    if pusher_apps:
        add_pusher_routes(app, pusher_apps, node, app[CONTROL_KEY])
    if metrics is not None:
        app[METRICS_KEY] = metrics
        app.router.add_get("/metrics", serve_metrics)
    add_console_routes(app)
    return app


def metrics_app(metrics: Registries) -> web.Application:
    """``GET /metrics`` alone, for ``--metrics-address``. No Host or Origin check:
    Prometheus names its targets as it pleases, and nothing here changes state."""
    app = web.Application(middlewares=[track_requests])
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", serve_metrics)
    return app


async def serve_metrics(request: web.Request) -> web.Response:
    """The node's metrics in the Prometheus text format (docs/operations.md)."""
    body = await exposition(request.app[METRICS_KEY])
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


# Handlers


async def push_all(request: web.Request) -> web.Response:
    return ok(await _push(request.app, PushAll.from_fields(await read_fields(request))))


async def push_room(request: web.Request) -> web.Response:
    return ok(await _push(request.app, PushRoom.from_fields(await read_fields(request))))


async def push_user(request: web.Request) -> web.Response:
    return ok(await _push(request.app, PushUser.from_fields(await read_fields(request))))


async def push_conn(request: web.Request) -> web.Response:
    return ok(await _push(request.app, PushConn.from_fields(await read_fields(request))))


async def _push(app: web.Application, push: Push) -> dict[str, object]:
    """Do one push; the fields of its answer (a single push's, or a batch item's)."""
    node = app[NODE_KEY]
    if isinstance(push, PushAll):
        return {"delivered": await node.push_all(push)}
    if isinstance(push, PushRoom):
        return {"room": push.room, "delivered": await node.push_room(push)}
    if isinstance(push, PushUser):
        return {"uid": push.user, "delivered": await node.push_user(push)}
    return {"wsId": push.conn, "delivered": await app[CONTROL_KEY].push_conn(push)}


async def push_batch(request: web.Request) -> web.Response:
    """Up to 1,000 pushes in one request, done in order, each answered on its own:
    a bad item gets its error and the others still go."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text="POST /push/batch takes a JSON array (Content-Type: application/json)"
        )
    try:
        body = decode_json((await request.read()).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad_body("the body is not valid JSON") from None
    results: list[dict[str, object]] = []
    for item in parse_batch(body):
        try:
            results.append({"ok": True, **await _push(request.app, parse_batch_item(item))})
        except (InvalidField, UnknownConnection, BrokerUnavailable) as exc:
            status, message, extra = _describe_error(exc)
            results.append({"ok": False, "status": status, "error": message, **extra})
    return ok({"results": results})


async def room_join(request: web.Request) -> web.Response:
    join = parse_membership(await read_fields(request))
    if isinstance(join, UserMembership):
        done = await request.app[CONTROL_KEY].user_membership(join, "join_user")
        return ok(
            {"room": join.room, "uid": join.user, "joined": done["changed"], **_already(done)}
        )
    change = await request.app[NODE_KEY].join(join)
    return ok({"room": join.room, "wsId": join.conn, "alreadyMember": not change.changed})


async def room_leave(request: web.Request) -> web.Response:
    leave = parse_membership(await read_fields(request))
    if isinstance(leave, UserMembership):
        done = await request.app[CONTROL_KEY].user_membership(leave, "leave_user")
        return ok(
            {"room": leave.room, "uid": leave.user, "left": done["changed"], **_already(done)}
        )
    change = await request.app[NODE_KEY].leave(leave)
    return ok({"room": leave.room, "wsId": leave.conn, "wasMember": change.changed})


def _already(done: dict[str, list[str]]) -> dict[str, object]:
    return {"unchanged": done["unchanged"]}


async def disconnect(request: web.Request) -> web.Response:
    order = Disconnect.from_fields(await read_fields(request))
    done = await request.app[CONTROL_KEY].disconnect(order)
    log.info(
        "disconnect %s by the operator: %d connection(s) closed with %d%s",
        order.conn or f"user {order.user}",
        len(done["disconnected"]),
        order.code,
        ", session ended" if done["sessionEnded"] else "",
        extra={"wsId": order.conn, "code": order.code},
    )
    return ok(done)


async def healthz(request: web.Request) -> web.Response:
    return ok({"status": "serving"})


async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    if node.ready:
        return ok({"status": "ready"})
    if node.draining:
        return error(503, "not ready: draining (stopping)")
    return error(503, "not ready: the broker is not connected and subscribed")


async def stats(request: web.Request) -> web.Response:
    counts = await request.app[CONTROL_KEY].stats()
    return ok(
        {
            "version": __version__,
            "uptimeSeconds": round(time.monotonic() - request.app[STARTED_KEY], 3),
            **counts,
        }
    )


async def rooms(request: web.Request) -> web.Response:
    """The cluster's rooms with their member counts, largest first."""
    limit = _limit(request, default=100, most=MAX_ROOMS_LISTED)
    sizes = await request.app[CONTROL_KEY].room_sizes()
    largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:limit]
    listed = [{"id": room, "members": members} for room, members in largest]
    return ok({"rooms": listed, "total": len(sizes)})


async def room_members(request: web.Request) -> web.Response:
    """A room's member count and one page of its members; ``nextCursor`` asks for
    the next page (null on the last)."""
    room = parse_room_id(request.match_info["id"])
    limit = _limit(request, default=100, most=MAX_MEMBERS_PAGE)
    cursor = request.query.get("cursor")
    page = await request.app[CONTROL_KEY].members(room, limit, cursor)
    roster = await request.app[NODE_KEY].roster(room) if cursor is None else None
    if roster is not None:  # a presence room: its users, on the first page
        page["presence"] = {
            "users": [
                {**present.as_json(), "wsIds": list(present.ws_ids)} for present in roster.members
            ]
        }
    return ok({"room": room, **page})


async def connection(request: web.Request) -> web.Response:
    conn = parse_conn_id(request.match_info["wsId"])
    return ok(await request.app[CONTROL_KEY].connection(conn))


async def user(request: web.Request) -> web.Response:
    uid = parse_user_id(request.match_info["uid"])
    connections = await request.app[CONTROL_KEY].user(uid)
    return ok({"uid": uid, "online": bool(connections), "connections": connections})


def _limit(request: web.Request, *, default: int, most: int) -> int:
    text = request.query.get("limit", str(default))
    if not _LIMIT_TEXT.fullmatch(text) or not 1 <= int(text) <= most:
        raise InvalidField("limit", f"must be an integer from 1 to {most}, got {text!r}")
    return int(text)


async def openapi(request: web.Request) -> web.Response:
    spec = openapi_spec(__version__, request.app[PUSHER_IDS_KEY])
    return web.json_response(spec, dumps=_json_line)
