"""The logic API's OpenAPI 3.0 description, served at ``GET /openapi.json``.

Written by hand beside the handlers in ``api.py``: when one changes, so must the
other (``tests/test_openapi.py`` runs schemathesis against the live server to hold
them together).
"""

from typing import Any

from pushgate.commands import MAX_BATCH, MAX_CLOSE_REASON_BYTES
from pushgate.control import MAX_MEMBERS_PAGE
from pushgate.openapischema import (
    BATCH_ITEM,
    BATCH_RESULT,
    DELIVERED,
    EXCLUDE,
    MEMBER,
    NODE,
    PRESENT_USER,
    ROOM_ID,
    SINCE,
    TAG,
    TAG_TEXT,
    USER_ID,
    WS_ID,
    WS_IDS,
    _errors,
    _get,
    _get_with,
    _json,
    _ok,
    _param,
    _post,
    _post_fields,
)
from pushgate.pusheropenapi import SIGNATURE, pusher_paths


def openapi_spec(version: str, pusher_app_ids: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI document for this version of the logic API; with the ids of its
    --pusher-app apps, Pusher's HTTP API too (pusheropenapi.py)."""
    spec = _native_spec(version)
    if pusher_app_ids:
        spec["paths"].update(pusher_paths(pusher_app_ids))
        spec["components"]["securitySchemes"]["pusherSignature"] = SIGNATURE
    return spec


def _native_spec(version: str) -> dict[str, Any]:
    val = {"description": "the message: any JSON value (a string from a form)"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pushgate logic API",
            "version": version,
            "description": "Push to WebSocket connections, and move them in and out of rooms.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"apiKey": []}],
        "paths": {
            "/push/all": _post(
                "Push to every connection",
                {"val": val, "tag": TAG},
                {"val": {"type": "string"}, "tag": TAG_TEXT},
                _ok({"delivered": DELIVERED}, ["delivered"]),
                optional={"exclude": EXCLUDE},
            ),
            "/push/room": _post(
                "Push to the members of a room",
                {"val": val, "tag": TAG, "id": ROOM_ID},
                {"val": {"type": "string"}, "tag": TAG_TEXT, "id": ROOM_ID},
                _ok({"room": ROOM_ID, "delivered": DELIVERED}, ["room", "delivered"]),
                optional={"exclude": EXCLUDE},
            ),
            "/push/user": _post(
                "Push to every connection of a user (a token's sub)",
                {"val": val, "tag": TAG, "uid": USER_ID},
                {"val": {"type": "string"}, "tag": TAG_TEXT, "uid": USER_ID},
                _ok({"uid": USER_ID, "delivered": DELIVERED}, ["uid", "delivered"]),
                optional={"exclude": EXCLUDE},
            ),
            "/room/join": _post_fields(
                "Put a connection (wsId) or every connection of a user (uid) in a room",
                {"id": ROOM_ID, "wsId": WS_ID, "uid": USER_ID},
                ["id"],
                _ok(
                    {
                        "room": ROOM_ID,
                        "wsId": WS_ID,
                        "alreadyMember": {"type": "boolean"},
                        "uid": USER_ID,
                        "joined": WS_IDS,
                        "unchanged": WS_IDS,
                    },
                    ["room"],
                ),
                404,
                409,
            ),
            "/room/leave": _post_fields(
                "Take a connection (wsId) or every connection of a user (uid) out of a room",
                {"id": ROOM_ID, "wsId": WS_ID, "uid": USER_ID},
                ["id"],
                _ok(
                    {
                        "room": ROOM_ID,
                        "wsId": WS_ID,
                        "wasMember": {"type": "boolean"},
                        "uid": USER_ID,
                        "left": WS_IDS,
                        "unchanged": WS_IDS,
                    },
                    ["room"],
                ),
                404,
            ),
            "/push/conn": _post(
                "Push to one connection (at most once: not kept in history)",
                {"val": val, "tag": TAG, "wsId": WS_ID},
                {"val": {"type": "string"}, "tag": TAG_TEXT, "wsId": WS_ID},
                _ok({"wsId": WS_ID, "delivered": DELIVERED}, ["wsId", "delivered"]),
                404,
            ),
            "/push/batch": {
                "post": {
                    "summary": f"Up to {MAX_BATCH} pushes, done in order, each answered",
                    "requestBody": {
                        "required": True,
                        "content": _json(
                            {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": MAX_BATCH,
                                "items": BATCH_ITEM,
                            }
                        ),
                    },
                    "responses": {
                        "200": {
                            "description": "one answer per push, in order",
                            "content": _json(
                                _ok(
                                    {"results": {"type": "array", "items": BATCH_RESULT}},
                                    ["results"],
                                )
                            ),
                        },
                        **_errors(400, 401, 403, 413, 415, 503),
                    },
                }
            },
            "/disconnect": _post_fields(
                "Close a connection (wsId) or every connection of a user (uid)",
                {
                    "wsId": WS_ID,
                    "uid": USER_ID,
                    "code": {
                        "type": "integer",
                        "minimum": 4000,
                        "maximum": 4999,
                        "description": "default 4000, or 4410 with endSession; 4400-4499 "
                        "tell the SDKs not to reconnect",
                    },
                    "reason": {"type": "string", "maxLength": MAX_CLOSE_REASON_BYTES // 4},
                    "endSession": {"type": "boolean"},
                },
                [],
                _ok(
                    {"disconnected": WS_IDS, "sessionEnded": {"type": "boolean"}},
                    ["disconnected", "sessionEnded"],
                ),
                404,
            ),
            "/rooms/{id}": _get_with(
                "A room's member count and a page of its members, cluster-wide",
                [
                    _param("id", "path", ROOM_ID),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _param("cursor", "query", {"type": "string"}),
                ],
                _ok(
                    {
                        "room": ROOM_ID,
                        "count": {"type": "integer", "minimum": 0},
                        "members": {
                            "type": "array",
                            "maxItems": MAX_MEMBERS_PAGE,
                            "items": MEMBER,
                        },
                        "nextCursor": {"type": "string", "nullable": True},
                        "presence": {
                            "type": "object",
                            "description": "in a presence room, on the first page: its "
                            "users (grouped by user; an anonymous member is a user of "
                            "its own, with its wsId), each with its info and wsIds",
                            "properties": {"users": {"type": "array", "items": PRESENT_USER}},
                            "required": ["users"],
                        },
                    },
                    ["count", "members", "nextCursor"],
                ),
            ),
            "/connections/{wsId}": _get_with(
                "Where a connection is: connected (node, user, rooms) or detached",
                [_param("wsId", "path", WS_ID)],
                _ok(
                    {
                        "wsId": WS_ID,
                        "state": {"type": "string", "enum": ["connected", "detached"]},
                        "node": {**NODE, "nullable": True},
                        "user": {"type": "string", "nullable": True},
                        "rooms": {"type": "array", "items": ROOM_ID},
                        "connectedSince": SINCE,
                    },
                    ["wsId", "state", "node", "user", "rooms", "connectedSince"],
                ),
                404,
            ),
            "/users/{uid}": _get_with(
                "A user's connections, cluster-wide",
                [_param("uid", "path", USER_ID)],
                _ok(
                    {
                        "uid": USER_ID,
                        "online": {"type": "boolean"},
                        "connections": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["wsId", "node", "rooms", "connectedSince"],
                                "properties": {
                                    "wsId": WS_ID,
                                    "node": NODE,
                                    "rooms": {"type": "array", "items": ROOM_ID},
                                    "connectedSince": SINCE,
                                },
                            },
                        },
                    },
                    ["uid", "online", "connections"],
                ),
            ),
            "/healthz": _get(
                "The process serves", _ok({"status": {"type": "string"}}, ["status"]), 503
            ),
            "/readyz": _get(
                "The broker is connected and subscribed",
                _ok({"status": {"type": "string"}}, ["status"]),
                503,
            ),
            "/rooms": {
                "get": {
                    "summary": "The cluster's rooms with their member counts, largest first",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": _json(
                                _ok(
                                    {
                                        "rooms": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "required": ["id", "members"],
                                                "properties": {
                                                    "id": ROOM_ID,
                                                    "members": {"type": "integer", "minimum": 1},
                                                },
                                            },
                                        },
                                        "total": {"type": "integer", "minimum": 0},
                                    },
                                    ["rooms", "total"],
                                )
                            ),
                        },
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of this node (docs/operations.md)",
                    "responses": {
                        "200": {
                            "description": "the Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 403, 503),
                    },
                }
            },
            "/stats": _get(
                "Connection, room and user counts over every gateway of the cluster",
                _ok(
                    {
                        "version": {"type": "string"},
                        "uptimeSeconds": {"type": "number"},
                        "connections": {"type": "integer", "minimum": 0},
                        "rooms": {"type": "integer", "minimum": 0},
                        "users": {"type": "integer", "minimum": 0},
                        "deliveries": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "pushes handed to connections since start",
                        },
                        "deliveryLatency": {
                            "type": "object",
                            "description": "pushgate_delivery_latency_seconds over every "
                            "gateway: cumulative counts per upper bound (seconds; null: +Inf)",
                            "properties": {
                                "le": {
                                    "type": "array",
                                    "items": {"type": "number", "nullable": True},
                                },
                                "cumulative": {"type": "array", "items": {"type": "integer"}},
                            },
                        },
                        "nodes": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["node", "connections", "rooms", "users"],
                                "properties": {
                                    "node": NODE,
                                    "connections": {"type": "integer", "minimum": 0},
                                    "rooms": {"type": "integer", "minimum": 0},
                                    "users": {"type": "integer", "minimum": 0},
                                },
                            },
                        },
                        "missing": {
                            "type": "array",
                            "items": NODE,
                            "description": "gateways listed that did not answer (killed, "
                            "until --node-ttl forgets them): the counts leave them out",
                        },
                    },
                    ["connections", "rooms", "users", "nodes", "missing"],
                ),
                401,
                403,
                503,
            ),
        },
    }
