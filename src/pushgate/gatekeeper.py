"""The gateway's door: who may open a WebSocket connection.

A TCP connection is counted against the connection limits (in all, per address,
new ones per second per address and in all) the moment it is accepted, so that
handshakes in progress hold no file the limits do not know of. A handshake that is
a valid WebSocket upgrade is then checked against the Origin policy and the
connection token. The first refusal is answered with its HTTP status and reason,
and no WebSocket is opened.

Refusals are logged one line per kind per interval, with a count: a flood of them
must not become a flood of log lines.
"""

import logging
from dataclasses import dataclass

from websockets.http11 import Request

from pushgate.ids import ConnId
from pushgate.limits import Admission, ConnectionLimits
from pushgate.security import (
    TOKEN_SUBPROTOCOL,
    Claims,
    OriginPolicy,
    Refusal,
    TokenError,
    TokenVerifier,
    token_from,
)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A connection let in: who it is, the subprotocol to answer with, and whether
    tokens are verified here (then a resume must be of the token's user, or of no
    user when it has no token: docs/security.md). ``conn_id`` is the wsId its new
    session gets, when it was chosen early (the connect hook is told it)."""

    claims: Claims | None
    subprotocol: str | None
    verified: bool = False
    conn_id: ConnId | None = None


# Connections let in with no token and no subprotocol, where tokens are verified or
# not: all alike, and one object each (a connection's protocol keeps it).
ADMITTED_WITHOUT_TOKEN = {verified: Admitted(None, None, verified) for verified in (False, True)}

# Refusals of one kind after the first are counted, and logged once per this many
# seconds with their count.
REFUSAL_LOG_INTERVAL = 10.0


@dataclass(slots=True)
class _Interval:
    began: float
    count: int  # refusals since the first, not logged yet
    line: str  # the last one's


class RefusalLog:
    """Logs the first refusal of a kind at once, then at most one line per kind per
    ``interval`` saying how many more there were (call :meth:`flush` now and then,
    so that the count of the last interval is not held back)."""

    def __init__(self, logger: logging.Logger, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self._log = logger
        self._interval = interval
        self._open: dict[str, _Interval] = {}

    def refused(self, kind: str, line: str, now: float) -> None:
        interval = self._open.get(kind)
        if interval is None:
            self._log.info("%s (more of these are counted for %g s)", line, self._interval)
            self._open[kind] = _Interval(now, 0, line)
            return
        interval.count += 1
        interval.line = line
        self.flush(now)

    def flush(self, now: float, *, all_kinds: bool = False) -> None:
        """Log the count of each kind whose interval is over (``all_kinds``: of
        every kind, as a stop does)."""
        for kind, interval in list(self._open.items()):
            if now - interval.began < self._interval and not all_kinds:
                continue
            del self._open[kind]
            if interval.count:
                self._log.info(
                    "%d more refused in the last %g s (%s); the last: %s",
                    interval.count,
                    self._interval,
                    kind,
                    interval.line,
                )


class Gatekeeper:
    """Decides on each WebSocket handshake; counts the connections it let in."""

    def __init__(
        self,
        *,
        origins: OriginPolicy | None = None,
        tokens: TokenVerifier | None = None,
        require_token: bool = False,
        limits: ConnectionLimits | None = None,
        max_rooms_per_conn: int = 100,
    ) -> None:
        self._origins = origins or OriginPolicy(["*"])
        self._tokens = tokens
        self._require_token = require_token
        self._admission = Admission(limits or ConnectionLimits(0, 0, 0.0))
        self._max_rooms = max_rooms_per_conn
        self.refusals = RefusalLog(logging.getLogger("pushgate.gateway"))

    def admit(self, ip: str, now: float) -> Refusal | None:
        """Count a new TCP connection from ``ip``, or say which limit it would
        break. A counted connection must be released with :meth:`release` when it
        goes."""
        return self._admission.admit(ip, now)

    def release(self, ip: str) -> None:
        self._admission.release(ip)

    @property
    def tokens(self) -> TokenVerifier | None:
        """What verifies tokens here (connection and subscription tokens alike)."""
        return self._tokens

    def check_origin(self, request: Request) -> Refusal | None:
        """The Origin policy alone (a protocol with its own authentication: Pusher's)."""
        return self._origins.check(request.headers.get("Origin"))

    def check(self, request: Request) -> Admitted | Refusal:
        """Let the handshake open a WebSocket, or say why not."""
        offered = [
            value.strip()
            for header in request.headers.get_all("Sec-WebSocket-Protocol")
            for value in header.split(",")
            if value.strip()
        ]
        return self.decide(request.headers.get("Origin"), request.path.partition("?")[2], offered)

    def decide(self, origin: str | None, query: str, offered: list[str]) -> Admitted | Refusal:
        """:meth:`check` on what it reads of the request: its ``Origin``, its query and
        the subprotocols it offers (a plain upgrade, plainupgrade.py, has its own)."""
        refusal = self._origins.check(origin)
        if refusal is not None:
            return refusal
        claims = None
        token = None
        if self._tokens is not None:
            token = token_from(query, offered)
            if token is None:
                if self._require_token:
                    return Refusal(
                        401,
                        "a connection token is required (?token=… or subprotocol)",
                        "token_required",
                    )
            else:
                try:
                    claims = self._tokens.verify(token, max_rooms=self._max_rooms)
                except TokenError as exc:
                    return exc.refusal
        subprotocol = _subprotocol(offered, token)
        if claims is None and subprotocol is None:  # the usual: one object for all
            return ADMITTED_WITHOUT_TOKEN[self._tokens is not None]
        return Admitted(claims, subprotocol, self._tokens is not None)


def _subprotocol(offered: list[str], token: str | None) -> str | None:
    """Answer ``pushgate`` when offered. A browser that offered only its token must
    get one of its offers back, so it gets that; anything else gets none."""
    if TOKEN_SUBPROTOCOL in offered:
        return TOKEN_SUBPROTOCOL
    return token if token is not None and token in offered else None
