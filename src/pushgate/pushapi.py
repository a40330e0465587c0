"""A typed asyncio client of the logic HTTP API (``http://HOST:9999``).

::

    async with PushAPI("http://127.0.0.1:9999", api_key=key) as api:
        delivered = (await api.push_room("news", {"headline": "hi"}, tag=3)).delivered

Every request sends a JSON body, so ``val`` may be any JSON value and arrives as that
value. An answer other than 2xx raises a :class:`PushAPIError` subclass carrying the
HTTP status, the server's ``error`` message and the ``field`` it names; a server that
cannot be reached (or does not answer within ``timeout``) raises
:class:`APIConnectionError`, whose ``status`` is None. Nothing returns an error body.

Use it as an ``async with`` block, or call :meth:`PushAPI.close` when done: it holds
an HTTP connection pool. One instance may be shared by many tasks.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp

__all__ = [
    "APIConnectionError",
    "BadRequestError",
    "ConflictError",
    "JoinResult",
    "LeaveResult",
    "NotFoundError",
    "PayloadTooLargeError",
    "PushAPI",
    "PushAPIError",
    "PushResult",
    "ServiceUnavailableError",
    "Stats",
    "UnauthorizedError",
]


class PushAPIError(Exception):
    """The logic API refused a request, or could not be reached.

    ``status`` is the HTTP status (None when no answer came), ``message`` the server's
    ``error`` text and ``field`` the request field it blames (None when it names none).
    """

    def __init__(self, status: int | None, message: str, field: str | None = None) -> None:
        prefix = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{prefix}{message}")
        self.status = status
        self.message = message
        self.field = field


class BadRequestError(PushAPIError):
    """400: a field is missing or invalid; ``field`` names it."""


class UnauthorizedError(PushAPIError):
    """401 or 403: the API key is missing, wrong, or not allowed to do this."""


class NotFoundError(PushAPIError):
    """404: no open connection has this wsId (``field`` is ``wsId``), or no such path."""


class ConflictError(PushAPIError):
    """409: the connection is already in as many rooms as the server allows."""


class PayloadTooLargeError(PushAPIError):
    """413: the request body is over the server's ``--max-body-bytes``."""


class ServiceUnavailableError(PushAPIError):
    """503: the cluster's broker (or the gateway holding the wsId) cannot be reached.
    Nothing was done; the request may be retried."""


class APIConnectionError(PushAPIError):
    """No answer: the server cannot be reached, or did not answer in time."""


_ERRORS: dict[int, type[PushAPIError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: UnauthorizedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    503: ServiceUnavailableError,
}


@dataclass(frozen=True, slots=True)
class PushResult:
    """A push was accepted: ``delivered`` connections were handed it, or None when
    the server cannot count them (a cluster: Redis knows nodes, not connections).
    ``room`` or ``user`` names its target; both are None for a push to all."""

    delivered: int | None
    room: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class JoinResult:
    room: str
    ws_id: str
    already_member: bool


@dataclass(frozen=True, slots=True)
class LeaveResult:
    room: str
    ws_id: str
    was_member: bool


@dataclass(frozen=True, slots=True)
class Stats:
    """``GET /stats``; ``raw`` holds the whole answer, fields added later included."""

    version: str
    uptime_seconds: float
    connections: int
    rooms: int
    raw: Mapping[str, Any] = field(default_factory=dict)


class PushAPI:
    """A client of the logic API at ``base_url`` (e.g. ``http://127.0.0.1:9999``).

    ``api_key``, when given, is sent as ``Authorization: Bearer <key>``. ``timeout``
    bounds each request, in seconds. ``session`` lets a caller share its own
    ``aiohttp.ClientSession`` (which it then closes itself).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool this client opened (not a session passed in)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # The API

    async def push_all(self, val: object, tag: int) -> PushResult:
        """Push ``{"type":tag,"data":val}`` to every connection."""
        body = await self._request("POST", "/push/all", {"val": val, "tag": tag})
        return PushResult(_delivered(body))

    async def push_room(self, room: str, val: object, tag: int) -> PushResult:
        """Push ``{"type":tag,"data":val,"room":room}`` to the members of ``room``."""
        body = await self._request("POST", "/push/room", {"id": room, "val": val, "tag": tag})
        return PushResult(_delivered(body), str(body.get("room", room)))

    async def push_user(self, user: str, val: object, tag: int) -> PushResult:
        """Push ``{"type":tag,"data":val}`` to every connection whose token's ``sub``
        is ``user``."""
        body = await self._request("POST", "/push/user", {"uid": user, "val": val, "tag": tag})
        return PushResult(_delivered(body), user=str(body.get("uid", user)))

    async def join(self, room: str, ws_id: str) -> JoinResult:
        """Put connection ``ws_id`` in ``room``; joining twice is no error."""
        body = await self._request("POST", "/room/join", {"id": room, "wsId": ws_id})
        return JoinResult(
            str(body.get("room", room)), str(body.get("wsId", ws_id)), bool(body["alreadyMember"])
        )

    async def leave(self, room: str, ws_id: str) -> LeaveResult:
        """Take connection ``ws_id`` out of ``room``; leaving a room it is not in is no
        error (``was_member`` is then False)."""
        body = await self._request("POST", "/room/leave", {"id": room, "wsId": ws_id})
        return LeaveResult(
            str(body.get("room", room)), str(body.get("wsId", ws_id)), bool(body["wasMember"])
        )

    async def stats(self) -> Stats:
        body = await self._request("GET", "/stats")
        return Stats(
            version=str(body.get("version", "")),
            uptime_seconds=float(body.get("uptimeSeconds", 0.0)),
            connections=int(body["connections"]),
            rooms=int(body["rooms"]),
            raw=body,
        )

    async def healthz(self) -> str:
        """The server's status (``"serving"``); raises when it does not answer 200."""
        return str((await self._request("GET", "/healthz")).get("status", ""))

    async def readyz(self) -> str:
        """``"ready"``; raises :class:`ServiceUnavailableError` when the broker is not."""
        return str((await self._request("GET", "/readyz")).get("status", ""))

    # Internals

    async def _request(
        self, method: str, path: str, fields: dict[str, object] | None = None
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = self.base_url + path
        try:
            async with self._session.request(
                method,
                url,
                json=fields,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                text = await response.text(errors="replace")
                status = response.status
        except TimeoutError:
            raise APIConnectionError(None, f"{method} {url}: no answer in time") from None
        except aiohttp.ClientError as exc:
            raise APIConnectionError(None, f"cannot reach {url}: {_reason(exc)}") from None
        body = _json_object(text)
        if 200 <= status < 300 and body is not None:
            return body
        if body is None:
            message = text.strip()[:200] or f"HTTP {status} with no body"
            if 200 <= status < 300:
                message = f"the answer is not a JSON object: {message}"
            raise _ERRORS.get(status, PushAPIError)(status, message)
        error_field = body.get("field")
        raise _ERRORS.get(status, PushAPIError)(
            status,
            str(body.get("error", f"HTTP {status}")),
            error_field if isinstance(error_field, str) else None,
        )


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _reason(exc: aiohttp.ClientError) -> str:
    """The root cause of a connection error, in a few words."""
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.strerror:
        return exc.os_error.strerror
    return str(exc) or type(exc).__name__


def _delivered(body: dict[str, Any]) -> int | None:
    delivered = body.get("delivered")
    return None if delivered is None else int(delivered)
