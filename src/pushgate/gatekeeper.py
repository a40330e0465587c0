"""The gateway's door: who may open a WebSocket connection.

A handshake that is a valid WebSocket upgrade is checked, in this order, against
the Origin policy, the connection token, and the connection limits; the first
refusal is answered with its HTTP status and reason, and no WebSocket is opened.
"""

from dataclasses import dataclass

from websockets.http11 import Request

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
    """A connection let in: who it is, and the subprotocol to answer with."""

    claims: Claims | None
    subprotocol: str | None


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

    def check(self, request: Request, ip: str, now: float) -> Admitted | Refusal:
        """Admit (and count) the connection, or say why not. An admitted connection
        must be released with :meth:`release` when it goes."""
        refusal = self._origins.check(request.headers.get("Origin"))
        if refusal is not None:
            return refusal
        offered = [
            value.strip()
            for header in request.headers.get_all("Sec-WebSocket-Protocol")
            for value in header.split(",")
            if value.strip()
        ]
        claims = None
        token = None
        if self._tokens is not None:
            token = token_from(request.path.partition("?")[2], offered)
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
        refusal = self._admission.admit(ip, now)
        if refusal is not None:
            return refusal
        return Admitted(claims, _subprotocol(offered, token))

    def release(self, ip: str) -> None:
        self._admission.release(ip)


def _subprotocol(offered: list[str], token: str | None) -> str | None:
    """Answer ``pushgate`` when offered. A browser that offered only its token must
    get one of its offers back, so it gets that; anything else gets none."""
    if TOKEN_SUBPROTOCOL in offered:
        return TOKEN_SUBPROTOCOL
    return token if token is not None and token in offered else None
