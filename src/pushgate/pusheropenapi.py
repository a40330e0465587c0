"""Pusher's HTTP API routes (pusherapi.py) in the logic API's OpenAPI description:
added by openapi.py when the server has --pusher-app apps, with their ids, so that
the document describes what this server serves. Pusher's own reference is the
authority on the bodies; this says what pushgate answers."""

from typing import Any

from pushgate.pusherauth import MAX_CLOCK_SKEW
from pushgate.pusherevents import MAX_BATCH, MAX_CHANNELS, MAX_EVENT_NAME

SIGNATURE = {
    "type": "apiKey",
    "in": "query",
    "name": "auth_signature",
    "description": "Pusher's request signature, as its server libraries make it: auth_key, "
    f"auth_timestamp (within {MAX_CLOCK_SKEW} s), auth_version=1.0, body_md5 (with a body), "
    'and auth_signature = HMAC-SHA256 of "METHOD\\nPATH\\nsorted query" with the app\'s '
    "secret, in hex (docs/pusher.md)",
}
_TEXT_OR_JSON = {
    "text/plain": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}},
}
_MEANINGS = {
    400: "the request is not one Pusher's API takes: the text says what is wrong",
    401: "the signature is missing, not of this app, expired or wrong",
    403: "a browser sent it from a page of another site, or, without API keys, the Host "
    "is not an IP address, localhost or --api-host",
    404: "no Pusher app of this server has this id",
    413: "the event's data is over the app's limit (10 KB), or the body over --max-body-bytes",
    503: "the cluster's broker cannot be reached",
}
COUNT_PROPERTIES: dict[str, Any] = {
    "user_count": {"type": "integer", "minimum": 0},
    "subscription_count": {"type": "integer", "minimum": 0},
}
COUNTS = {"type": "object", "properties": COUNT_PROPERTIES}
EVENT = {
    "type": "object",
    "required": ["name", "data"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_EVENT_NAME},
        "data": {"type": "string", "description": "what clients get (JSON text, usually)"},
        "channel": {"type": "string"},
        "channels": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_CHANNELS},
        "socket_id": {"type": "string", "description": "the connection left out"},
        "info": {"type": "string", "description": "user_count, subscription_count"},
    },
}


def _operation(
    summary: str,
    answer: dict[str, Any],
    *,
    params: list[dict[str, Any]],
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [{"pusherSignature": []}],
        "parameters": params,
        "responses": {
            "200": {"description": "done", "content": {"application/json": {"schema": answer}}},
            **{
                str(status): {"description": meaning, "content": _TEXT_OR_JSON}
                for status, meaning in _MEANINGS.items()
            },
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}


def pusher_paths(app_ids: list[str]) -> dict[str, Any]:
    """The paths of Pusher's HTTP API for apps of these ids."""
    app_id = _path("app_id", {"type": "string", "enum": app_ids})
    channel = _path("channel", {"type": "string"})
    user = _path("user", {"type": "string"})
    channels = {
        "type": "object",
        "additionalProperties": COUNTS,
        "description": "by channel name",
    }
    terminate = _operation(
        "Close every connection of a user (docs/pusher.md: who that is here)",
        {"type": "object"},
        params=[app_id, user],
        body={"type": "object"},
    )
    return {
        "/apps/{app_id}/events": {
            "post": _operation(
                "Trigger an event on channels (Pusher)",
                {"type": "object", "properties": {"channels": channels}},
                params=[app_id],
                body=EVENT,
            )
        },
        "/apps/{app_id}/batch_events": {
            "post": _operation(
                f"Trigger up to {MAX_BATCH} events, in order (Pusher)",
                {"type": "object", "properties": {"batch": {"type": "array", "items": COUNTS}}},
                params=[app_id],
                body={
                    "type": "object",
                    "required": ["batch"],
                    "properties": {
                        "batch": {"type": "array", "items": EVENT, "maxItems": MAX_BATCH}
                    },
                },
            )
        },
        "/apps/{app_id}/channels": {
            "get": _operation(
                "The app's occupied channels, cluster-wide (Pusher)",
                {"type": "object", "required": ["channels"], "properties": {"channels": channels}},
                params=[app_id, _query("filter_by_prefix"), _query("info")],
            )
        },
        "/apps/{app_id}/channels/{channel}": {
            "get": _operation(
                "One channel: occupied, and the counts info asks for (Pusher)",
                {
                    "type": "object",
                    "required": ["occupied"],
                    "properties": {"occupied": {"type": "boolean"}, **COUNT_PROPERTIES},
                },
                params=[app_id, channel, _query("info")],
            )
        },
        "/apps/{app_id}/channels/{channel}/users": {
            "get": _operation(
                "A presence channel's users (Pusher)",
                {
                    "type": "object",
                    "required": ["users"],
                    "properties": {
                        "users": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"id": {"type": "string"}}},
                        }
                    },
                },
                params=[app_id, channel],
            )
        },
        "/apps/{app_id}/users/{user}/terminate_connections": {"post": terminate},
        # Where the Python library (3.3.4) sends it: the app is the one whose key signed.
        "/users/{user}/terminate_connections": {
            "post": {**terminate, "parameters": [user]},
        },
    }
