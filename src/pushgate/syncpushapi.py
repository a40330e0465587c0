"""A blocking client of the logic HTTP API, for code without an event loop: Django
views, Flask handlers, Celery tasks, scripts.

::

    from pushgate.client import SyncPushAPI

    api = SyncPushAPI("http://127.0.0.1:9999", api_key=key)  # one per process
    api.push_room("news", {"headline": "hi"}, tag=3)

It has the methods, results and errors of the asyncio
:class:`~pushgate.pushapi.PushAPI` (both are built on :mod:`pushgate.apicalls`), on
``httpx``: one connection pool, kept alive, safe to share between threads. Use it as
a ``with`` block, or call :meth:`SyncPushAPI.close` when done.
"""

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self, TypeVar

import httpx

from pushgate import apicalls
from pushgate.apicalls import (
    DEFAULT_TAG,
    APIConnectionError,
    BatchItemResult,
    Call,
    ConnectionInfo,
    DisconnectResult,
    JoinResult,
    LeaveResult,
    Member,
    MembersPage,
    PushResult,
    Stats,
    UserMembershipResult,
    answer_of,
)

__all__ = ["SyncPushAPI"]

T = TypeVar("T")


class SyncPushAPI:
    """A blocking client of the logic API at ``base_url`` (e.g. ``http://127.0.0.1:9999``).

    ``api_key``, when given, is sent as ``Authorization: Bearer <key>``. ``timeout``
    bounds each request, in seconds. ``client`` lets a caller share its own
    ``httpx.Client`` (which it then closes itself).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self._owns_client = client is None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool this client opened (not a client passed in)."""
        if self._owns_client:
            self._client.close()

    # The API (apicalls.py builds each request and reads its answer)

    def push_all(self, val: object, tag: int = DEFAULT_TAG) -> PushResult:
        """Push ``{"type":tag,"data":val}`` to every connection."""
        return self._call(apicalls.push_all(val, tag))

    def push_room(self, room: str, val: object, tag: int = DEFAULT_TAG) -> PushResult:
        """Push ``{"type":tag,"data":val,"room":room}`` to the members of ``room``."""
        return self._call(apicalls.push_room(room, val, tag))

    def push_user(self, user: str, val: object, tag: int = DEFAULT_TAG) -> PushResult:
        """Push ``{"type":tag,"data":val}`` to every connection whose token's ``sub``
        is ``user``."""
        return self._call(apicalls.push_user(user, val, tag))

    def push_conn(self, ws_id: str, val: object, tag: int = DEFAULT_TAG) -> PushResult:
        """Push ``{"type":tag,"data":val}`` to the one connection ``ws_id``, at most
        once (not kept in history). NotFoundError when it is not connected now."""
        return self._call(apicalls.push_conn(ws_id, val, tag))

    def push_batch(self, pushes: Sequence[Mapping[str, object]]) -> list[BatchItemResult]:
        """Up to 1,000 pushes in one request, done in order, each answered: every item
        holds the fields of its single push plus ``target`` (``all``, ``room`` with
        ``id``, ``user`` with ``uid``, ``conn`` with ``wsId``)."""
        return self._call(apicalls.push_batch(pushes))

    def join(self, room: str, ws_id: str) -> JoinResult:
        """Put connection ``ws_id`` in ``room``; joining twice is no error."""
        return self._call(apicalls.join(room, ws_id))

    def leave(self, room: str, ws_id: str) -> LeaveResult:
        """Take connection ``ws_id`` out of ``room``; leaving a room it is not in is no
        error (``was_member`` is then False)."""
        return self._call(apicalls.leave(room, ws_id))

    def join_user(self, room: str, user: str) -> UserMembershipResult:
        """Put every current connection of ``user`` in ``room``."""
        return self._call(apicalls.join_user(room, user))

    def leave_user(self, room: str, user: str) -> UserMembershipResult:
        """Take every current connection of ``user`` out of ``room``."""
        return self._call(apicalls.leave_user(room, user))

    def disconnect(
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
        return self._call(call)

    def stats(self) -> Stats:
        """Connections, rooms and users over every gateway."""
        return self._call(apicalls.stats())

    def rooms(self, limit: int = 100) -> dict[str, int]:
        """The cluster's ``limit`` largest rooms and their member counts, largest first."""
        return self._call(apicalls.rooms(limit))

    def room_members(
        self, room: str, *, limit: int = 100, cursor: str | None = None
    ) -> MembersPage:
        """One page of ``room``'s members; pass the page's ``next_cursor`` for the next."""
        return self._call(apicalls.room_members(room, limit=limit, cursor=cursor))

    def connection(self, ws_id: str) -> ConnectionInfo:
        """Where ``ws_id`` is: connected (node, user, rooms) or detached."""
        return self._call(apicalls.connection(ws_id))

    def user_connections(self, user: str) -> list[Member]:
        """Every current connection of ``user``, wherever it is held."""
        return self._call(apicalls.user_connections(user))

    def healthz(self) -> str:
        """The server's status (``"serving"``); raises when it does not answer 200."""
        return self._call(apicalls.healthz())

    def readyz(self) -> str:
        """``"ready"``; raises :class:`ServiceUnavailableError` when the broker is not."""
        return self._call(apicalls.readyz())

    # Internals

    def _call(self, call: Call[T]) -> T:
        url = self.base_url + call.path
        try:
            response = self._client.request(
                call.method,
                url,
                json=call.fields,
                headers=self._headers,
                timeout=self._timeout,
            )
        except httpx.TimeoutException:
            raise APIConnectionError(None, f"{call.method} {url}: no answer in time") from None
        except httpx.HTTPError as exc:
            raise APIConnectionError(
                None, f"cannot reach {url}: {exc or type(exc).__name__}"
            ) from None
        return call.read(answer_of(response.status_code, response.text))
