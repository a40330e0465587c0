"""Pusher's HTTP API signatures, checked as Pusher checks them (docs/pusher.md).

A Pusher server library signs each request in its query string:

- ``auth_key``: the app's key; ``auth_timestamp``: Unix seconds, which must be
  within :data:`MAX_CLOCK_SKEW` of this server's clock (a captured request cannot be
  replayed later); ``auth_version``: ``1.0``;
- ``body_md5``: the MD5 of the body, in hex, when there is one (the signature
  covers the body through it);
- ``auth_signature``: HMAC-SHA256 of ``"METHOD\\nPATH\\nQUERY"`` with the app's
  secret, in hex, where QUERY is every other parameter as ``name=value``, sorted by
  name, joined by ``&``, values unescaped (the libraries send them so).

A refusal says what is wrong, and for a wrong signature what was expected to be
signed, in Pusher's own words, so that a back end's developer sees the usual
message. Pure: no I/O.
"""

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from pushgate.pusherapps import PusherApp, PusherApps

# How far a request's auth_timestamp may be from this server's clock, as Pusher's.
MAX_CLOCK_SKEW = 600
AUTH_VERSION = "1.0"
REQUIRED = ("auth_key", "auth_timestamp", "auth_version", "auth_signature")
# More query parameters than any Pusher request has: a longer query is refused
# before anything is hashed.
MAX_PARAMS = 32


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a request is refused, and the HTTP status that says so."""

    status: int
    message: str


def params_of(query: str) -> dict[str, str] | Refused:
    """A raw query string's parameters, decoded; a refusal when one is given twice
    (a signature of one would then vouch for the other)."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_PARAMS)
    except ValueError:
        return Refused(400, f"more than {MAX_PARAMS} query parameters")
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            return Refused(400, f"the query parameter {name} is given twice")
        params[name] = value
    return params


def string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """What ``auth_signature`` signs: the method, the path and every parameter but
    the signature itself, sorted by name."""
    query = "&".join(
        f"{name}={params[name]}" for name in sorted(params) if name != "auth_signature"
    )
    return f"{method}\n{path}\n{query}"


def sign(app: PusherApp, method: str, path: str, params: Mapping[str, str]) -> str:
    """The ``auth_signature`` of a request (what a server library sends)."""
    return app.sign(string_to_sign(method, path, params))


def body_md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def check(
    apps: PusherApps,
    app_id: str | None,
    method: str,
    path: str,
    query: str,
    body: bytes,
    now: float,
) -> PusherApp | Refused:
    """The app a request is signed for, or why it is refused: 404 an unknown app
    id, 401 a signature missing, not of the app, expired or wrong, 400 a query that
    cannot be read. ``app_id`` None: the app is the one whose key signed (a route
    without the app's id in its path)."""
    known = apps.by_id(app_id) if app_id is not None else None
    if app_id is not None and known is None:
        return Refused(404, f"Unknown app id {app_id!r}: no Pusher app of this server has it")
    params = params_of(query)
    if isinstance(params, Refused):
        return params
    missing = [name for name in REQUIRED if not params.get(name)]
    if missing:
        return Refused(
            401,
            f"Missing {', '.join(missing)}: sign the request as Pusher's server libraries "
            "do, with the app's key and secret",
        )
    key = params["auth_key"]
    if known is not None:
        app = known
        if key != app.key:
            return Refused(401, f"Unknown auth_key {key!r} for app {app_id}")
    else:
        found = apps.by_key(key)
        if found is None:
            return Refused(401, f"Unknown auth_key {key!r}")
        app = found
    if params["auth_version"] != AUTH_VERSION:
        return Refused(401, f"Unsupported auth_version {params['auth_version']!r}: use 1.0")
    stale = _stale(params["auth_timestamp"], now)
    if stale is not None:
        return stale
    signature = params["auth_signature"]
    expected = string_to_sign(method, path, params)
    if not hmac.compare_digest(signature.encode(), app.sign(expected).encode()):
        shown = expected.replace("\n", "\\n")
        return Refused(
            401,
            f'Invalid signature: you should have sent HmacSHA256Hex("{shown}", '
            f'your_secret_key), but you sent "{signature}"',
        )
    # Checked once the signature holds: body_md5 is what ties the body to it.
    if body or "body_md5" in params:
        sent = params.get("body_md5")
        if sent is None:
            return Refused(401, "Missing body_md5: a request with a body signs its MD5")
        if not hmac.compare_digest(sent.encode(), body_md5(body).encode()):
            return Refused(401, "Invalid body_md5: it is not the MD5 of the body sent")
    return app


def _stale(timestamp: str, now: float) -> Refused | None:
    if not timestamp.isdigit() or len(timestamp) > 12:
        return Refused(401, f"Invalid auth_timestamp {timestamp[:20]!r}: Unix seconds")
    if abs(int(timestamp) - now) > MAX_CLOCK_SKEW:
        return Refused(
            401,
            f"Timestamp expired: Given timestamp ({timestamp}) not within "
            f"{MAX_CLOCK_SKEW}s of server time ({int(now)})",
        )
    return None
