"""The logic API's OpenAPI 3.0 description, served at ``GET /openapi.json``.

Written by hand beside the handlers in ``api.py``: when one changes, so must the
other (``tests/test_openapi.py`` runs schemathesis against the live server to hold
them together).
"""

from typing import Any

from pushgate.commands import MAX_USER_ID_LENGTH
from pushgate.wire import MAX_PUSH_TAG, MIN_PUSH_TAG

ROOM_ID = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}
WS_ID = {
    "type": "string",
    "format": "uuid",
    "pattern": "^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$",
}
TAG = {"type": "integer", "minimum": MIN_PUSH_TAG, "maximum": MAX_PUSH_TAG}
TAG_TEXT = {"type": "string", "pattern": "^[0-9]{1,16}$"}
USER_ID = {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID_LENGTH}

ERROR = {
    "type": "object",
    "required": ["ok", "error"],
    "properties": {
        "ok": {"type": "boolean", "enum": [False]},
        "error": {"type": "string"},
        "field": {"type": "string"},
    },
}


def _ok(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["ok", *required],
        "properties": {"ok": {"type": "boolean", "enum": [True]}, **properties},
    }


DELIVERED = {
    "type": "integer",
    "minimum": 0,
    "nullable": True,
    "description": "connections the push was handed to; null in a cluster",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: int) -> dict[str, Any]:
    meanings = {
        400: "a field is missing or invalid; `field` names it",
        401: "an API key is required",
        403: "the API key is not valid",
        404: "no open connection has this wsId",
        409: "the connection is in as many rooms as allowed",
        413: "the body is larger than --max-body-bytes",
        415: "the body is neither a form nor JSON",
        503: "the cluster's broker, or the gateway holding the wsId, cannot be reached",
    }
    return {str(s): {"description": meanings[s], "content": _json(ERROR)} for s in statuses}


def _post(
    summary: str, fields: dict[str, Any], form: dict[str, Any], answer: dict[str, Any], *errors: int
) -> dict[str, Any]:
    required = list(fields)
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "required": required, "properties": fields}
                    },
                    "application/x-www-form-urlencoded": {
                        "schema": {"type": "object", "required": required, "properties": form}
                    },
                },
            },
            "responses": {
                "200": {"description": "done", "content": _json(answer)},
                **_errors(400, 401, 403, 413, 415, 503, *errors),
            },
        }
    }


def _get(summary: str, answer: dict[str, Any], *errors: int) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {"description": "ok", "content": _json(answer)},
                **_errors(*errors),
            },
        }
    }


def openapi_spec(version: str) -> dict[str, Any]:
    """The OpenAPI document for this version of the logic API."""
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
            ),
            "/push/room": _post(
                "Push to the members of a room",
                {"val": val, "tag": TAG, "id": ROOM_ID},
                {"val": {"type": "string"}, "tag": TAG_TEXT, "id": ROOM_ID},
                _ok({"room": ROOM_ID, "delivered": DELIVERED}, ["room", "delivered"]),
            ),
            "/push/user": _post(
                "Push to every connection of a user (a token's sub)",
                {"val": val, "tag": TAG, "uid": USER_ID},
                {"val": {"type": "string"}, "tag": TAG_TEXT, "uid": USER_ID},
                _ok({"uid": USER_ID, "delivered": DELIVERED}, ["uid", "delivered"]),
            ),
            "/room/join": _post(
                "Put a connection in a room",
                {"id": ROOM_ID, "wsId": WS_ID},
                {"id": ROOM_ID, "wsId": WS_ID},
                _ok(
                    {"room": ROOM_ID, "wsId": WS_ID, "alreadyMember": {"type": "boolean"}},
                    ["room", "wsId", "alreadyMember"],
                ),
                404,
                409,
            ),
            "/room/leave": _post(
                "Take a connection out of a room",
                {"id": ROOM_ID, "wsId": WS_ID},
                {"id": ROOM_ID, "wsId": WS_ID},
                _ok(
                    {"room": ROOM_ID, "wsId": WS_ID, "wasMember": {"type": "boolean"}},
                    ["room", "wsId", "wasMember"],
                ),
                404,
            ),
            "/healthz": _get("The process serves", _ok({"status": {"type": "string"}}, ["status"])),
            "/readyz": _get(
                "The broker is connected and subscribed",
                _ok({"status": {"type": "string"}}, ["status"]),
                503,
            ),
            "/rooms": {
                "get": {
                    "summary": "This node's rooms with their member counts, largest first",
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
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/stats": _get(
                "Connection and room counts",
                _ok(
                    {
                        "version": {"type": "string"},
                        "uptimeSeconds": {"type": "number"},
                        "connections": {"type": "integer", "minimum": 0},
                        "rooms": {"type": "integer", "minimum": 0},
                    },
                    ["connections", "rooms"],
                ),
                401,
                403,
            ),
        },
    }
