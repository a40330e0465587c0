"""A typed asyncio client of the logic HTTP API (``http://HOST:9999``).

::

    async with PushAPI("http://127.0.0.1:9999", api_key=key) as api:
        delivered = (await api.push_room("news", {"headline": "hi"}, tag=3)).delivered

Every request sends a JSON body, so ``val`` may be any JSON value and arrives as that
value. An answer other than 2xx raises a :class:`PushAPIError` subclass carrying the
HTTP status, the server's ``error`` message and the ``field`` it names; a server that
cannot be reached (or does not answer within ``timeout``) raises
:class:`APIConnectionError`, whose ``status`` is None. Nothing returns an error body.

:class:`~pushgate.syncpushapi.SyncPushAPI` has the same methods, errors and results
for code that does not run an event loop (Django, Flask, Celery).

Use it as an ``async with`` block, or call :meth:`PushAPI.close` when done: it holds
an HTTP connection pool. One instance may be shared by many tasks.
"""

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self, TypeVar

import aiohttp

from pushgate import apicalls
from pushgate.apicalls import (
    DEFAULT_TAG,
    APIConnectionError,
    BadRequestError,
    BatchItemResult,
    Call,
    ConflictError,
    ConnectionInfo,
    DisconnectResult,
    JoinResult,
    LeaveResult,
    Member,
    MembersPage,
    NotFoundError,
    PayloadTooLargeError,
    PushAPIError,
    PushResult,
    ServiceUnavailableError,
    Stats,
    UnauthorizedError,
    UserMembershipResult,
    answer_of,
)

__all__ = [
    "APIConnectionError",
    "BadRequestError",
    "BatchItemResult",
    "ConflictError",
    "ConnectionInfo",
    "DisconnectResult",
    "JoinResult",
    "LeaveResult",
    "Member",
    "MembersPage",
    "NotFoundError",
    "PayloadTooLargeError",
    "PushAPI",
    "PushAPIError",
    "PushResult",
    "ServiceUnavailableError",
    "Stats",
    "UnauthorizedError",
    "UserMembershipResult",
]

T = TypeVar("T")


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

    # The API (apicalls.py builds each request and reads its answer)

    async def push_all(self, val: object, tag: int = DEFAULT_TAG) -> PushResult:
        """Push ``{"type":tag,"data":val}`` to every connection."""
        return await self._call(apicalls.push_all(val, tag))

    async def push_room(self, room: str, val: object, tag: int = DEFAULT_TAG) -> PushResult:
        """Push ``{"type":tag,"data":val,"room":room}`` to the members of ``room``."""
        return await self._call(apicalls.push_room(room, val, tag))

    async def push_user(self, user: str, val: object, tag: int = DEFAULT_TAG) -> PushResult:
        """Push ``{"type":tag,"data":val}`` to every connection whose token's ``sub``
        is ``user``."""
        return await self._call(apicalls.push_user(user, val, tag))

    async def push_conn(self, ws_id: str, val: object, tag: int = DEFAULT_TAG) -> PushResult:
        """Push ``{"type":tag,"data":val}`` to the one connection ``ws_id``, at most
        once (not kept in history). NotFoundError when it is not connected now."""
        return await self._call(apicalls.push_conn(ws_id, val, tag))

    async def push_batch(self, pushes: Sequence[Mapping[str, object]]) -> list[BatchItemResult]:
        """Up to 1,000 pushes in one request, done in order, each answered: every item
        holds the fields of its single push plus ``target`` (``all``, ``room`` with
        ``id``, ``user`` with ``uid``, ``conn`` with ``wsId``)."""
        return await self._call(apicalls.push_batch(pushes))

    async def join(self, room: str, ws_id: str) -> JoinResult:
        """Put connection ``ws_id`` in ``room``; joining twice is no error."""
        return await self._call(apicalls.join(room, ws_id))

    async def leave(self, room: str, ws_id: str) -> LeaveResult:
        """Take connection ``ws_id`` out of ``room``; leaving a room it is not in is no
        error (``was_member`` is then False)."""
        return await self._call(apicalls.leave(room, ws_id))

    async def join_user(self, room: str, user: str) -> UserMembershipResult:
        """Put every current connection of ``user`` in ``room``."""
        return await self._call(apicalls.join_user(room, user))

    async def leave_user(self, room: str, user: str) -> UserMembershipResult:
        """Take every current connection of ``user`` out of ``room``."""
        return await self._call(apicalls.leave_user(room, user))

    async def disconnect(
        self,
        *,
        ws_id: str | None = None,
        user: str | None = None,
        code: int | None = None,
        reason: str | None = None,
        end_session: bool = False,
    ) -> DisconnectResult:
        """Close connection ``ws_id``, or every connection of ``user``, with ``code``
        (4000-4999; 4400-4499 tell the SDKs not to reconnect) and ``reason``;
        ``end_session``: they cannot resume. Without a code: 4000, or 4410 (session
        ended: the SDKs do not reconnect) with ``end_session``."""
        call = apicalls.disconnect(
            ws_id=ws_id, user=user, code=code, reason=reason, end_session=end_session
        )
        return await self._call(call)

    async def stats(self) -> Stats:
        """Connections, rooms and users over every gateway."""
        return await self._call(apicalls.stats())

    async def rooms(self, limit: int = 100) -> dict[str, int]:
        """The cluster's ``limit`` largest rooms and their member counts, largest first."""
        return await self._call(apicalls.rooms(limit))

    async def room_members(
        self, room: str, *, limit: int = 100, cursor: str | None = None
    ) -> MembersPage:
        """One page of ``room``'s members; pass the page's ``next_cursor`` for the next."""
        return await self._call(apicalls.room_members(room, limit=limit, cursor=cursor))

    async def connection(self, ws_id: str) -> ConnectionInfo:
        """Where ``ws_id`` is: connected (node, user, rooms) or detached."""
        return await self._call(apicalls.connection(ws_id))

    async def user_connections(self, user: str) -> list[Member]:
        """Every current connection of ``user``, wherever it is held."""
        return await self._call(apicalls.user_connections(user))

    async def healthz(self) -> str:
        """The server's status (``"serving"``); raises when it does not answer 200."""
        return await self._call(apicalls.healthz())

    async def readyz(self) -> str:
        """``"ready"``; raises :class:`ServiceUnavailableError` when the broker is not."""
        return await self._call(apicalls.readyz())

    # Internals

    async def _call(self, call: Call[T]) -> T:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = self.base_url + call.path
        try:
            async with self._session.request(
                call.method,
                url,
                json=call.fields,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                text = await response.text(errors="replace")
                status = response.status
        except TimeoutError:
            raise APIConnectionError(None, f"{call.method} {url}: no answer in time") from None
        except aiohttp.ClientError as exc:
            raise APIConnectionError(None, f"cannot reach {url}: {_reason(exc)}") from None
        return call.read(answer_of(status, text))


def _reason(exc: aiohttp.ClientError) -> str:
    """The root cause of a connection error, in a few words."""
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.strerror:
        return exc.os_error.strerror
    return str(exc) or type(exc).__name__
