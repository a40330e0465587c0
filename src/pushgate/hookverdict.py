"""What the connect hook is asked about a handshake, and what its answer may say
(docs/connect-hook.md). Pure: no I/O; connecthook.py does the asking.

The question is one JSON object: the handshake's method, path, query (each name to
the list of its values), headers (lower-cased names; a repeated header's values
joined as HTTP joins them), cookies (parsed from ``Cookie``), the client's address,
the wsId a new session will get, and whether the client resumes a session.

The answer must be a JSON object, checked strictly: ``{"allow": true}`` with an
optional ``sub`` (the user, as a token's), ``rooms`` (room ids joined on connect,
as a token's) and ``info`` (an object, as a token's); or ``{"allow": false}`` with an
optional ``status`` (4xx, 403 by default) and ``reason`` (the client gets both). Any
other key, or a value of the wrong shape, makes the answer malformed: the hook is
then failing, and ``--connect-hook-failure`` decides.
"""

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

from pushgate.commands import MAX_USER_ID_LENGTH
from pushgate.ids import ROOM_ID_PATTERN, ConnId, RoomId
from pushgate.presence import encode_info
from pushgate.security import Claims, Refusal

# A denial's reason, when the hook gives none; and the longest it may give.
DEFAULT_REASON = "refused by the connect hook"
MAX_REASON_LENGTH = 256
DEFAULT_DENY_STATUS = 403
ALLOW_KEYS = frozenset({"allow", "sub", "rooms", "info"})
DENY_KEYS = frozenset({"allow", "status", "reason"})


class MalformedAnswer(ValueError):
    """The hook's answer is not a verdict; the message says what is wrong."""


def is_http_url(url: str) -> bool:
    """An http:// or https:// URL with a host (what the hooks and webhooks call)."""
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed IPv6 host, a port not a number
        return False


def hook_url(url: str) -> str | None:
    """A check of --connect-hook: empty (no hook), or an http(s) URL with a host."""
    if not url or is_http_url(url):
        return None
    return f"must be an http:// or https:// URL with a host, got {url!r}"


def url_for_logs(url: str) -> str:
    """The hook's URL without what may be a secret in it (user info, the query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def question(request: Request, *, ip: str, port: int | None, ws_id: ConnId, resume: bool) -> bytes:
    """The JSON body asking about ``request``, a handshake from ``ip``:``port``."""
    path, _, query = request.path.partition("?")
    headers: dict[str, str] = {}
    for name, value in request.headers.raw_items():
        name = name.lower()
        if name in headers:  # RFC 9110 5.3 (and RFC 6265 5.4 for cookies)
            headers[name] += ("; " if name == "cookie" else ", ") + value
        else:
            headers[name] = value
    asked = {
        "method": request.method,
        "path": path,
        "query": parse_qs(query, keep_blank_values=True),
        "headers": headers,
        "cookies": parse_cookies(headers.get("cookie", "")),
        "remote": {"ip": ip, "port": port},
        "wsId": ws_id,
        "resume": resume,
    }
    return json.dumps(asked, separators=(",", ":")).encode()


def parse_cookies(header: str) -> dict[str, str]:
    """``name=value; name2=value2`` as a dict; the first of a repeated name wins, as
    in Werkzeug and Django; a pair without ``=`` is skipped. Values are left as sent
    (a quoted value loses its quotes)."""
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, equals, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies


def parse_answer(body: bytes, *, max_rooms: int) -> Claims | Refusal:
    """The hook's verdict: who the client is (allowed), or the refusal it gets.
    Raises MalformedAnswer saying what is wrong."""
    try:
        answer = json.loads(body)
    except ValueError:
        raise MalformedAnswer(f"the answer is not JSON: {_start(body)}") from None
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"the answer must be a JSON object, got {_start(body)}")
    allow = answer.get("allow")
    if not isinstance(allow, bool):
        raise MalformedAnswer(f'"allow" must be true or false, got {allow!r}')
    unknown = sorted(set(answer) - (ALLOW_KEYS if allow else DENY_KEYS))
    if unknown:
        verdict = "an allow" if allow else "a deny"
        raise MalformedAnswer(f"{verdict} may not say {', '.join(map(repr, unknown))}")
    if not allow:
        return _refusal(answer)
    return Claims(_user(answer.get("sub")), _rooms(answer.get("rooms"), max_rooms), _info(answer))


def _refusal(answer: dict[str, Any]) -> Refusal:
    status = answer.get("status", DEFAULT_DENY_STATUS)
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 499:
        raise MalformedAnswer(f'"status" must be an HTTP status from 400 to 499, got {status!r}')
    reason = answer.get("reason", DEFAULT_REASON)
    if (
        not isinstance(reason, str)
        or not 1 <= len(reason) <= MAX_REASON_LENGTH
        or not reason.isprintable()
    ):
        raise MalformedAnswer(
            f'"reason" must be 1-{MAX_REASON_LENGTH} printable characters, got {reason!r:.80}'
        )
    return Refusal(status, reason, "connect_hook_denied")


def _user(sub: object) -> str | None:
    if sub is None:
        return None
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_USER_ID_LENGTH or not sub.isprintable():
        raise MalformedAnswer(
            f'"sub" must be 1-{MAX_USER_ID_LENGTH} printable characters, got {sub!r:.80}'
        )
    return sub


def _rooms(rooms: object, max_rooms: int) -> tuple[RoomId, ...]:
    if rooms is None:
        return ()
    if not isinstance(rooms, list) or not all(
        isinstance(room, str) and ROOM_ID_PATTERN.fullmatch(room) for room in rooms
    ):
        raise MalformedAnswer(
            f'"rooms" must be a list of room ids (1-64 letters, digits and _-.:), got {rooms!r:.80}'
        )
    unique = tuple(RoomId(room) for room in dict.fromkeys(rooms))
    if len(unique) > max_rooms:
        raise MalformedAnswer(
            f'"rooms" names {len(unique)} rooms; a connection may be in {max_rooms} '
            "(--max-rooms-per-conn)"
        )
    return unique


def _info(answer: dict[str, Any]) -> str | None:
    if answer.get("info") is None:
        return None
    try:
        return encode_info(answer["info"])
    except ValueError as exc:
        raise MalformedAnswer(str(exc)) from None


def _start(body: bytes) -> str:
    """The start of a body, for a log line."""
    text = body[:60].decode("utf-8", "replace")
    return repr(text + ("…" if len(body) > 60 else ""))
