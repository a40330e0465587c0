"""The pieces the logic API's OpenAPI description (openapi.py) is made of: the
schemas of its ids, fields and answers, and the builders of an operation (a POST of
fields, as JSON or a form; a GET), each with the error answers it may give."""

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
        403: "the API key is not valid; or a browser sent the request from a page of "
        "another site (Origin, Sec-Fetch-Site), or, without API keys, the Host is not an "
        "IP address, localhost or --api-host (DNS rebinding)",
        404: "no open connection (or resumable session) has this wsId",
        409: "the connection is in as many rooms as allowed",
        413: "the body is larger than --max-body-bytes",
        415: "the body is neither a form nor JSON",
        503: "the cluster's broker, or the gateway holding the wsId, cannot be reached; or "
        "the API has --max-api-connections connections open (this one is then closed)",
    }
    return {str(s): {"description": meanings[s], "content": _json(ERROR)} for s in statuses}


# A push may leave out one connection (a back end relaying that client's own action).
EXCLUDE = {
    "type": "string",
    "description": "a wsId the push is not for (its own sender, say); the others get it",
}


def _post(
    summary: str,
    fields: dict[str, Any],
    form: dict[str, Any],
    answer: dict[str, Any],
    *errors: int,
    optional: dict[str, Any] | None = None,
) -> dict[str, Any]:
    required = list(fields)
    fields = {**fields, **(optional or {})}
    form = {**form, **(optional or {})}
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


def _post_fields(
    summary: str, fields: dict[str, Any], required: list[str], answer: dict[str, Any], *errors: int
) -> dict[str, Any]:
    """A POST whose fields are the same in JSON and in a form (all text)."""
    schema = {"type": "object", "required": required, "properties": fields}
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schema},
                    "application/x-www-form-urlencoded": {"schema": schema},
                },
            },
            "responses": {
                "200": {"description": "done", "content": _json(answer)},
                **_errors(400, 401, 403, 413, 415, 503, *errors),
            },
        }
    }


def _get_with(
    summary: str, parameters: list[dict[str, Any]], answer: dict[str, Any], *errors: int
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "ok", "content": _json(answer)},
                **_errors(400, 401, 403, 503, *errors),
            },
        }
    }


def _param(name: str, where: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema}


WS_IDS = {"type": "array", "items": WS_ID}
SINCE = {"type": "string", "nullable": True, "description": "ISO 8601 UTC; null if unknown"}
NODE = {"type": "string", "description": "the gateway node's id"}
MEMBER = {
    "type": "object",
    "required": ["wsId", "user", "node", "connectedSince"],
    "properties": {
        "wsId": WS_ID,
        "user": {"type": "string", "nullable": True},
        "node": NODE,
        "connectedSince": SINCE,
    },
}
PRESENT_USER = {
    "type": "object",
    "required": ["user", "wsIds"],
    "properties": {
        "user": {"type": "string", "nullable": True},
        "wsId": WS_ID,
        "info": {"type": "object", "description": "from its token or grant"},
        "wsIds": {"type": "array", "items": WS_ID},
    },
}
BATCH_ITEM = {
    "type": "object",
    "required": ["target", "val", "tag"],
    "properties": {
        "target": {"type": "string", "enum": ["all", "room", "user", "conn"]},
        "val": {"description": "the message: any JSON value"},
        "tag": TAG,
        "id": ROOM_ID,
        "uid": USER_ID,
        "wsId": WS_ID,
        "exclude": EXCLUDE,
    },
}
BATCH_RESULT = {
    "type": "object",
    "required": ["ok"],
    "properties": {
        "ok": {"type": "boolean"},
        "delivered": DELIVERED,
        "room": ROOM_ID,
        "uid": USER_ID,
        "wsId": WS_ID,
        "status": {"type": "integer", "description": "for a push that failed: 400, 404 or 503"},
        "error": {"type": "string"},
        "field": {"type": "string"},
    },
}
