"""The chat's back end (docs/chat.md): it knows who the user is, so it mints their
connection tokens and their grants to enter chat rooms, and it hears what happens
on pushgate through webhooks.

    PUSHGATE_TOKEN_SECRET=... PUSHGATE_WEBHOOK_SECRET=... CHAT_GRANT_SECRET=... \\
        python examples/chat/backend.py            # listens on 127.0.0.1:8000

Three endpoints:

- ``GET /token?user=NAME``: a connection token for NAME (a real app takes the user
  from its own login session instead of a query parameter);
- ``GET /grant?user=NAME&room=ROOM&wsId=WSID``: a grant for that connection to
  enter ROOM, with the member info the others will see;
- ``POST /hooks``: pushgate's webhooks; the signature is checked, each event is
  logged and kept (``GET /events`` lists them, for the curious and for the tests).
"""

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web

from pushgate.namespaces import grant_for

log = logging.getLogger("chat.backend")

TOKEN_SECRET = os.environ.get("PUSHGATE_TOKEN_SECRET", "")
WEBHOOK_SECRET = os.environ.get("PUSHGATE_WEBHOOK_SECRET", "")
GRANT_SECRET = os.environ.get("CHAT_GRANT_SECRET", "")


def make_app(
    token_secret: str,
    grant_secret: str,
    webhook_secret: str,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> web.Application:
    """The back end's routes, with the secrets it shares with pushgate; ``on_event``
    is handed each webhook event once (what your app would act on)."""
    events: list[dict[str, Any]] = []

    async def token(request: web.Request) -> web.Response:
        user = request.query.get("user", "")
        if not user:
            raise web.HTTPBadRequest(text="which user?")
        claims = {"sub": user, "info": {"name": user.title()}, "exp": int(time.time()) + 3600}
        return web.json_response({"token": jwt.encode(claims, token_secret, algorithm="HS256")})

    async def grant(request: web.Request) -> web.Response:
        user, room = request.query.get("user", ""), request.query.get("room", "")
        ws_id = request.query.get("wsId", "")
        if not room.startswith("chat:") or not user or not ws_id:
            raise web.HTTPForbidden(text="no such chat room for you")
        # Here a real app checks that the user may read this room.
        info = json.dumps({"name": user.title()}, separators=(",", ":"))
        return web.json_response(
            {"grant": grant_for(grant_secret, ws_id, room, info), "info": info}
        )

    async def hooks(request: web.Request) -> web.Response:
        body = await request.read()
        if not signed(webhook_secret, body, request.headers.get("X-Pushgate-Signature", "")):
            raise web.HTTPUnauthorized(text="bad signature")
        for event in json.loads(body)["events"]:
            if any(seen["id"] == event["id"] for seen in events[-1000:]):
                continue  # sent again (at least once): already handled
            events.append(event)
            log.info("%s %s", event["name"], json.dumps(event["data"]))
            if on_event is not None:
                on_event(event)
        return web.Response(text="ok")

    async def listed(request: web.Request) -> web.Response:
        return web.json_response(events)

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/grant", grant)
    app.router.add_post("/hooks", hooks)
    app.router.add_get("/events", listed)
    return app


def signed(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
    """``X-Pushgate-Signature: t=<unix seconds>,v1=<hex>`` is HMAC-SHA256 of
    ``"<t>." + body`` under the webhook secret, and recent (docs/webhooks.md)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        stamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - stamp) <= tolerance
    return fresh and hmac.compare_digest(expected.hexdigest(), fields.get("v1", ""))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not (TOKEN_SECRET and WEBHOOK_SECRET and GRANT_SECRET):
        raise SystemExit("set PUSHGATE_TOKEN_SECRET, PUSHGATE_WEBHOOK_SECRET and CHAT_GRANT_SECRET")
    web.run_app(make_app(TOKEN_SECRET, GRANT_SECRET, WEBHOOK_SECRET), host="127.0.0.1", port=8000)
