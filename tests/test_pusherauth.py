"""Pusher's request signatures (pusherauth.py), checked without a server against
requests signed by the real Python library."""

import time

import pusher
from pusher.http import GET, POST, Request

from pushgate.pusherapps import PusherApp, PusherApps, parse_apps
from pushgate.pusherauth import MAX_CLOCK_SKEW, Refused, check

APPS: PusherApps = parse_apps("4242:key4242:secret-of-app-4242,77:key77:secret-of-app-77-77")
LIB = pusher.Pusher(app_id="4242", key="key4242", secret="secret-of-app-4242", ssl=False)


def signed(method: str, path: str, params: dict[str, object] | None = None) -> Request:
    """A request as the library signs it (``path`` under /apps/4242)."""
    return Request(LIB._pusher_client, method, "/apps/4242" + path, params)


def verdict(
    request: Request,
    *,
    app_id: str | None = "4242",
    body: bytes | None = None,
    query: str | None = None,
    now: float | None = None,
) -> PusherApp | Refused:
    return check(
        APPS,
        app_id,
        request.method,
        request.path,
        request.query_string if query is None else query,
        request.body if body is None else body,
        time.time() if now is None else now,
    )


def test_the_librarys_requests_are_accepted() -> None:
    trigger = signed(POST, "/events", {"name": "e", "channels": ["a"], "data": "x"})
    query = signed(GET, "/channels", {"filter_by_prefix": "presence-", "info": "user_count"})
    for request in (trigger, query):
        app = verdict(request)
        assert not isinstance(app, Refused), app
        assert app.id == "4242"


def test_a_changed_body_query_or_path_is_refused() -> None:
    request = signed(POST, "/events", {"name": "e", "channels": ["a"], "data": "x"})
    changed_body = verdict(request, body=request.body.replace(b'"x"', b'"y"'))
    assert changed_body == Refused(401, "Invalid body_md5: it is not the MD5 of the body sent")
    changed_query = verdict(request, query=request.query_string + "&info=user_count")
    assert isinstance(changed_query, Refused)
    assert changed_query.message.startswith(
        'Invalid signature: you should have sent HmacSHA256Hex("'
    )
    assert "info=user_count" in changed_query.message
    # Signed for one app, sent to another's path.
    other = check(
        APPS, "77", POST, "/apps/77/events", request.query_string, request.body, time.time()
    )
    assert other == Refused(401, "Unknown auth_key 'key4242' for app 77")


def test_the_timestamp_must_be_within_600_seconds() -> None:
    request = signed(GET, "/channels")
    sent = int(request.query_params["auth_timestamp"])
    assert not isinstance(verdict(request, now=sent + MAX_CLOCK_SKEW - 1), Refused)
    for now in (sent + MAX_CLOCK_SKEW + 2, sent - MAX_CLOCK_SKEW - 2):
        late = verdict(request, now=now)
        assert isinstance(late, Refused)
        assert late.status == 401
        assert late.message.startswith(f"Timestamp expired: Given timestamp ({sent})")


def test_without_an_app_id_the_key_names_the_app() -> None:
    request = Request(LIB._pusher_client, POST, "/users/ann/terminate_connections", {})
    app = verdict(request, app_id=None)
    assert not isinstance(app, Refused)
    assert app.id == "4242"
    unknown = verdict(request, app_id=None, query=request.query_string.replace("key4242", "nokey"))
    assert unknown == Refused(401, "Unknown auth_key 'nokey'")


def test_unknown_app_missing_and_repeated_parameters() -> None:
    request = signed(GET, "/channels")
    assert verdict(request, app_id="9") == Refused(
        404, "Unknown app id '9': no Pusher app of this server has it"
    )
    missing = verdict(request, query="auth_key=key4242")
    assert isinstance(missing, Refused)
    assert missing.status == 401
    assert missing.message.startswith("Missing auth_timestamp, auth_version, auth_signature")
    twice = verdict(request, query=request.query_string + "&auth_key=key77")
    assert twice == Refused(400, "the query parameter auth_key is given twice")
