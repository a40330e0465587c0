"""The logic API's middlewares, outermost first: every error answered as JSON with
a status that means something; cross-site requests and (without API keys)
rebindable Host names refused (apiguard.py decides); an API key required where
keys are configured."""

import logging

from aiohttp import web

from pushgate.apicontext import (
    API_HOST_KEY,
    API_KEYS_KEY,
    NODE_KEY,
    Handler,
    error,
)
from pushgate.apiguard import RequestFacts, check_request
from pushgate.errors import BrokerUnavailable, InvalidField, RoomLimitExceeded, UnknownConnection
from pushgate.pusherapi import is_signed_route

log = logging.getLogger("pushgate.api")

# Answered without an API key: probes must work, a browser cannot send a key to load
# a page, and none of these reveals anything.
PUBLIC_PATHS = frozenset({"/", "/docs", "/healthz", "/readyz", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)


@web.middleware
async def _refuse_cross_site(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for what a page on another site made a browser send, and, without API
    keys, for a Host name that DNS rebinding could have pointed here (apiguard.py)."""
    headers = request.headers
    facts = RequestFacts(
        method=request.method,
        path=request.path,
        host=headers.get("Host"),
        origin=headers.get("Origin"),
        fetch_site=headers.get("Sec-Fetch-Site"),
        fetch_mode=headers.get("Sec-Fetch-Mode"),
    )
    app = request.app
    refusal = check_request(facts, keyed=bool(app[API_KEYS_KEY]), api_host=app[API_HOST_KEY])
    if refusal is None:
        return await handler(request)
    log.info(
        "%s %s from %s: %d, %s",
        request.method,
        request.path,
        request.remote,
        refusal.status,
        refusal.reason,
    )
    return error(refusal.status, refusal.reason)


@web.middleware
async def _require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a key, 403 with a wrong one, when keys are configured. Pusher's
    routes are signed with their app's secret instead, and check that themselves."""
    keys = request.app[API_KEYS_KEY]
    public = request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES)
    public = public or is_signed_route(request)
    if keys and not public:
        refusal = keys.check(request.headers.get("Authorization"))
        if refusal is not None:
            log.info(
                "%s %s from %s: %d", request.method, request.path, request.remote, refusal.status
            )
            response = error(refusal.status, refusal.reason)
            if refusal.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="pushgate"'
            return response
    return await handler(request)


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a JSON body with a status code that means something."""
    try:
        return await handler(request)
    except (InvalidField, UnknownConnection, RoomLimitExceeded, BrokerUnavailable) as exc:
        status, message, extra = _describe_error(exc)
        if status == 409:
            request.app[NODE_KEY].meters.limits["max_rooms_per_conn"] += 1
            log.info("%s %s: 409, %s", request.method, request.path, exc)
        elif status == 503:
            log.warning("%s %s: 503, %s", request.method, request.path, exc)
        return error(status, message, **extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = _http_error_message(exc, request)
        if exc.status == 413:  # a limit tripped: say so in the log too
            message = f"the body is over --max-body-bytes ({request.client_max_size} bytes)"
            request.app[NODE_KEY].meters.limits["max_body_bytes"] += 1
            log.info(
                "%s %s from %s: 413, %s", request.method, request.path, request.remote, message
            )
        response = error(exc.status, message)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error; the server log has the details")


def _describe_error(exc: Exception) -> tuple[int, str, dict[str, object]]:
    """The status, message and extra fields that answer one of our own errors."""
    if isinstance(exc, InvalidField):
        return 400, f"{exc.field} {exc.message}", {"field": exc.field}
    if isinstance(exc, UnknownConnection):
        return 404, str(exc), {"field": "wsId"}
    if isinstance(exc, RoomLimitExceeded):
        return 409, str(exc), {"field": "id"}
    return 503, str(exc), {}


def _http_error_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.path}"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"method {request.method} is not allowed on {request.path}; use {allowed}"
    if exc.text and not exc.text.startswith(f"{exc.status}:"):
        return exc.text
    return exc.reason
