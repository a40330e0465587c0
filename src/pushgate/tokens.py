"""Making connection tokens: what a back end (or ``pushgate token``) hands a client.

A token is a JWT signed with HS256 under the gateway's ``--token-secret``; its claims
are the ones :class:`pushgate.security.TokenVerifier` reads: ``sub`` (the user),
``rooms`` (joined on every connect), ``info`` (told to presence rooms), ``exp``, and
``aud`` / ``iss`` for a gateway started with ``--token-audience`` /
``--token-issuer``. :func:`make_token` checks the token it makes as the gateway
would, so a token it returns is one a gateway with that secret accepts (up to its
``--max-rooms-per-conn``).
"""

import math
import time
from collections.abc import Iterable, Mapping

import jwt

from pushgate.ids import ROOM_ID_PATTERN
from pushgate.security import TokenChecks, TokenError, TokenVerifier, short_secret


def make_token(
    secret: str,
    sub: str | None,
    rooms: Iterable[str] = (),
    ttl: float | None = 3600,
    info: Mapping[str, object] | None = None,
    *,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A connection token for user ``sub`` (None: a connection without a user), that
    puts it in ``rooms`` and expires ``ttl`` seconds from now (``ttl=None``: never,
    which a gateway with ``--token-require-exp`` refuses). Raises ValueError, saying
    what is wrong, for a secret shorter than 32 bytes or a claim the gateway would
    refuse (a room id, a ``sub`` too long, an ``info`` that is not a small JSON
    object)."""
    problem = short_secret(secret)
    if problem is not None:
        raise ValueError(f"the secret {problem}")
    if isinstance(rooms, str):  # list("news") would be four rooms of one letter
        raise ValueError(f"rooms must be a list of room ids, not one string: {rooms!r}")
    issued = int(time.time())
    payload: dict[str, object] = {"iat": issued}
    if sub is not None:
        payload["sub"] = sub
    room_list = list(rooms)
    for room in room_list:  # the gateway's reason would not say which one
        if not isinstance(room, str) or not ROOM_ID_PATTERN.fullmatch(room):
            raise ValueError(f"not a room id: {room!r} (1-64 letters, digits and _ . : -)")
    if room_list:
        payload["rooms"] = room_list
    if info is not None:
        if not isinstance(info, Mapping):
            raise ValueError(f'"info" must be a JSON object, got {info!r}')
        payload["info"] = dict(info)
    if ttl is not None:
        if not 0 < ttl < math.inf:
            raise ValueError(f"ttl must be a number of seconds above 0, got {ttl!r}")
        payload["exp"] = issued + max(1, round(ttl))
    if audience is not None:
        payload["aud"] = audience
    if issuer is not None:
        payload["iss"] = issuer
    try:
        token = jwt.encode(payload, secret, algorithm="HS256")
    except TypeError as exc:  # a value in info that JSON cannot hold
        raise ValueError(f"the claims cannot be sent as JSON: {exc}") from None
    # The gateway's own checks, so that a token refused there is refused here first,
    # with the same reason. Its clock is ours: a ttl of 1 s may expire on the way.
    verifier = TokenVerifier(secret=secret, checks=TokenChecks(audience, issuer))
    try:
        verifier.verify(token, max_rooms=max(1, len(room_list)))
    except TokenError as exc:
        raise ValueError(exc.refusal.reason) from None
    return token
