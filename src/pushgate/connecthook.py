"""The connect hook (``--connect-hook URL``): the back end decides who may open a
WebSocket, by the handshake's cookies, headers and query (docs/connect-hook.md).

Theory of operation
-------------------

The gateway asks about a handshake the gatekeeper let in without a connection
token (a token decides alone). :meth:`ConnectHook.ask` answers at once, without
awaiting: either a refusal (over ``max_calls`` calls in flight: 503, so a flood of
handshakes cannot pile up unbounded work) or a task whose result is the verdict.
Meanwhile the connection waits, its handshake timeout still running; nothing else
does. A connection that goes before the verdict cancels its task, which frees its
place at once and drops the HTTP call.

The verdict is one of:

- **allow**: the client is admitted as the hook's ``sub``, with its ``rooms`` and
  ``info``, exactly as a token naming them would admit it; and, as with a token, a
  resume must then be of that user's session (or of a session of no user when the
  hook names none).
- **deny**: the refusal the hook chose (a 4xx and a reason), as the client gets it.
- **failure** (no answer within ``timeout``, no connection, a status other than
  200, more than :data:`MAX_ANSWER_BYTES`, or an answer that is no verdict):
  ``allow_on_failure`` decides. Deny (the default) answers 503; allow lets the
  handshake go on as if there were no hook: no user, no rooms. A failure is logged
  (the first of an interval at once, the others counted into one line at its end)
  and counted by cause.

One aiohttp session per gateway, made on the first call and closed by :meth:`close`,
with no cookie jar: a cookie the back end sets in one answer must never ride along
with the next call, which is about another client.
"""

import asyncio
import logging
from dataclasses import dataclass, replace

import aiohttp
from websockets.http11 import Request

from pushgate import __version__
from pushgate.gatekeeper import Admitted
from pushgate.hookverdict import MalformedAnswer, parse_answer, question, url_for_logs
from pushgate.ids import new_conn_id
from pushgate.meters import Meters
from pushgate.security import Claims, Refusal

log = logging.getLogger("pushgate.connecthook")

# The largest answer read: a verdict of 100 rooms and 1 KB of info is under 10 KB.
MAX_ANSWER_BYTES = 64 * 1024
# Failures after the first are counted and logged once per this many seconds.
FAILURE_LOG_INTERVAL = 10.0

# What a client is told: the cause is the operator's (logged), not the client's.
FAILED = Refusal(
    503,
    "Service Unavailable: the connection cannot be authenticated now; retry",
    "connect_hook_failed",
)
BUSY = Refusal(
    503,
    "Service Unavailable: too many handshakes are waiting to be authenticated; retry",
    "connect_hook_busy",
)


@dataclass(frozen=True, slots=True)
class HookSettings:
    """The connect hook's options (config.py declares them). Seconds."""

    url: str
    timeout: float = 2.0
    allow_on_failure: bool = False  # --connect-hook-failure allow
    max_calls: int = 100  # in flight at once; a handshake over it is 503
    max_rooms: int = 100  # --max-rooms-per-conn: an answer naming more is malformed


class HookFailure(Exception):
    """The hook gave no verdict; ``cause`` names the kind, for the metrics."""

    def __init__(self, cause: str, what: str) -> None:
        super().__init__(what)
        self.cause = cause


class ConnectHook:
    """Asks the back end about handshakes; one per gateway."""

    def __init__(self, settings: HookSettings, meters: Meters) -> None:
        self.settings = settings
        self._meters = meters
        self._session: aiohttp.ClientSession | None = None
        self._calls: set[asyncio.Task[Admitted | Refusal]] = set()
        self._failures = FailureLog(log)
        self._url = url_for_logs(settings.url)

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def ask(
        self, request: Request, peer: str, admitted: Admitted, *, resume: bool
    ) -> "asyncio.Task[Admitted | Refusal] | Refusal":
        """Ask about the handshake ``request`` from ``peer`` (``ip:port``), which the
        gatekeeper ``admitted``; or refuse it at once when too many calls are in
        flight. The task's result is the admission, with the wsId the hook was
        told, or the refusal to answer with; cancel it if the client goes."""
        if len(self._calls) >= self.settings.max_calls:
            return BUSY
        ip, _, port = peer.rpartition(":")
        if not port.isdigit():  # no port known (not a TCP peer)
            ip, port = peer, ""
        ws_id = new_conn_id()
        body = question(
            request, ip=ip, port=int(port) if port else None, ws_id=ws_id, resume=resume
        )
        task = asyncio.get_running_loop().create_task(
            self._decide(body, replace(admitted, conn_id=ws_id), peer)
        )
        self._calls.add(task)  # the place is held until the task is done
        task.add_done_callback(self._calls.discard)
        return task

    async def close(self) -> None:
        """Drop the calls in flight and close the HTTP session."""
        calls = list(self._calls)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._failures.flush()

    async def _decide(self, body: bytes, admitted: Admitted, peer: str) -> Admitted | Refusal:
        meters, loop = self._meters, asyncio.get_running_loop()
        started = loop.time()
        try:
            verdict = await self._call(body)
        except HookFailure as failure:
            meters.hook_seconds.observe(loop.time() - started)
            meters.hook_calls["failure"] += 1
            meters.hook_failures[failure.cause] += 1
            self._failed(failure, peer)
            return admitted if self.settings.allow_on_failure else FAILED
        meters.hook_seconds.observe(loop.time() - started)
        if isinstance(verdict, Refusal):
            meters.hook_calls["deny"] += 1
            return verdict
        meters.hook_calls["allow"] += 1
        # Verified: a resume must be of this user's session (docs/security.md).
        return replace(admitted, claims=verdict, verified=True)

    async def _call(self, body: bytes) -> Claims | Refusal:
        """POST the question; the verdict, or HookFailure saying why there is none."""
        settings = self.settings
        try:
            async with self._http().post(
                settings.url, data=body, allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise HookFailure("status", f"answered HTTP {response.status}, not 200")
                answer = await _read_at_most(response, MAX_ANSWER_BYTES)
        except TimeoutError:
            raise HookFailure("timeout", f"no answer within {settings.timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HookFailure("unreachable", f"cannot be reached: {exc}") from None
        try:
            return parse_answer(answer, max_rooms=settings.max_rooms)
        except MalformedAnswer as exc:
            raise HookFailure("malformed", f"answered no verdict: {exc}") from None

    def _http(self) -> aiohttp.ClientSession:
        """The gateway's one HTTP session, made on the first call (in the loop)."""
        if self._session is None:
            settings = self.settings
            self._session = aiohttp.ClientSession(
                # At most one HTTP connection per call in flight.
                connector=aiohttp.TCPConnector(limit=settings.max_calls),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=settings.timeout),
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": f"pushgate/{__version__} (connect hook)",
                },
            )
        return self._session

    def _failed(self, failure: HookFailure, peer: str) -> None:
        consequence = (
            "let it in with no user and no rooms (--connect-hook-failure allow)"
            if self.settings.allow_on_failure
            else "refused it with 503 (--connect-hook-failure deny)"
        )
        self._failures.failed(
            f"connect hook {self._url} failed for the handshake from {peer}: {failure}; "
            + consequence
        )


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or HookFailure once it is over ``limit`` bytes."""
    too_large = HookFailure("too_large", f"answered more than {limit // 1024} KiB")
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


class FailureLog:
    """Logs the first failure at once, then counts the others for ``interval``
    seconds and logs one line with their count and the last one: a hook that is
    down under a flood of handshakes must not flood the log."""

    def __init__(self, logger: logging.Logger, interval: float = FAILURE_LOG_INTERVAL) -> None:
        self._log = logger
        self._interval = interval
        self._timer: asyncio.TimerHandle | None = None
        self._count = 0  # since the first, not logged yet
        self._last = ""

    def failed(self, line: str) -> None:
        if self._timer is None:
            self._log.warning("%s (more failures are counted for %g s)", line, self._interval)
            self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)
        else:
            self._count += 1
            self._last = line

    def flush(self) -> None:
        """Log the count of the interval (at its end, or at a stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._count:
            self._log.warning(
                "%d more connect hook failures in the last %g s; the last: %s",
                self._count,
                self._interval,
                self._last,
            )
            self._count = 0
