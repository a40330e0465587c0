"""Who may push and who may connect: API keys, connection tokens, Origin checks.

Pure decisions, no I/O: the HTTP API and the gateway ask and act on the answer.
Every refusal carries the HTTP status to answer with and a reason a person can read.
"""

import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushgate.commands import MAX_USER_ID_LENGTH
from pushgate.ids import ROOM_ID_PATTERN, RoomId
from pushgate.presence import encode_info


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused, and the HTTP status that says so."""

    status: int
    reason: str
    # What kind of refusal, for metrics: token_required, token_invalid, origin,
    # server_full, ip_limit, connect_rate, api_key.
    kind: str = "other"


class ApiKeys:
    """The keys that may call the logic API (several, so keys can be rotated)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys if key)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> Refusal | None:
        """None when ``Authorization: Bearer <key>`` holds a valid key; else 401 for
        no key, 403 for a wrong one. Compares against every key in constant time."""
        if not self._keys:
            return None
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return Refusal(
                401, "an API key is required: send Authorization: Bearer <key>", "api_key"
            )
        candidate = given.strip().encode()
        matched = False
        for key in self._keys:  # no early exit: the time does not depend on which key
            matched |= hmac.compare_digest(candidate, key)
        return None if matched else Refusal(403, "the API key is not valid", "api_key")


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps a server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid connection token says about its holder."""

    user: str | None
    rooms: tuple[RoomId, ...]
    info: str | None = None  # the "info" object, encoded: told to presence rooms


class TokenError(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class TokenChecks:
    """What a connection token must say beyond a good signature.

    The default checks nothing extra, as before these options existed: a token
    without ``exp`` never expires, and ``aud`` and ``iss`` are not read. Name the
    audience and the issuer when one signing key serves several services, so that a
    token minted for another of them is refused here.
    """

    audience: str | None = None  # "aud" must be, or list, this value
    issuer: str | None = None  # "iss" must be exactly this value
    require_exp: bool = False  # a token without "exp" is refused


# RFC 7518 3.2: an HS256 key must be at least as long as the hash, 256 bits; a
# shorter one can be guessed offline from any token signed with it.
MIN_HMAC_SECRET_BYTES = 32


def short_secret(secret: str) -> str | None:
    """What is wrong with ``secret`` as an HS256 key (None: nothing)."""
    size = len(secret.encode())
    if size < MIN_HMAC_SECRET_BYTES:
        return (
            f"must be at least {MIN_HMAC_SECRET_BYTES} bytes, got {size} (an HS256 secret "
            "shorter than its hash can be guessed from any token signed with it)"
        )
    return None


class TokenVerifier:
    """Checks connection tokens: JWTs signed with HS256 (a shared secret) or RS256 /
    ES256 (a public key). ``exp`` is honoured when present (and required when
    ``checks`` says so), ``aud`` and ``iss`` are checked when ``checks`` names them;
    ``sub`` names the user; ``rooms`` lists rooms to join on connect."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        checks: TokenChecks | None = None,
    ) -> None:
        if (secret is None) == (public_key is None):
            raise ValueError("give exactly one of secret and public_key")
        self._checks = checks or TokenChecks()
        if secret is not None:
            self._key: Any = secret
            self._algorithms = ["HS256"]
        else:
            assert public_key is not None
            # The key's own type decides the one algorithm it verifies.
            self._key = serialization.load_pem_public_key(public_key.encode())
            if isinstance(self._key, rsa.RSAPublicKey):
                self._algorithms = ["RS256"]
            elif isinstance(self._key, ec.EllipticCurvePublicKey):
                self._algorithms = ["ES256"]
            else:
                raise ValueError("the public key must be an RSA or an EC (P-256) key")

    def verify(self, token: str, *, max_rooms: int) -> Claims:
        """The token's claims; raises TokenError (403) when it is expired, forged or
        malformed, lacks a claim or names an audience or issuer that ``checks``
        requires, or names rooms it may not."""
        payload = self.decode(token)
        return Claims(_user_of(payload), _rooms_of(payload, max_rooms), info_of(payload))

    def decode(self, token: str) -> dict[str, Any]:
        """A token's payload once its signature and its ``exp``, ``aud`` and ``iss``
        (as ``checks`` requires) are good; raises TokenError (403) otherwise. What
        its other claims mean is the caller's (connection or subscription token)."""
        checks = self._checks
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options={
                    "require": ["exp"] if checks.require_exp else [],
                    # Without an audience of ours, a token's "aud" is not read (PyJWT
                    # would refuse every token that has one).
                    "verify_aud": checks.audience is not None,
                },
                audience=checks.audience,
                issuer=checks.issuer,
                leeway=5,
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise TokenError(Refusal(403, _why_refused(exc), "token_invalid")) from None
        return payload  # a dict: PyJWT refuses a payload that is not a JSON object


# What a missing claim means to the person reading the refusal.
_MISSING_CLAIM = {
    "exp": 'the token has no "exp": this server accepts only tokens that expire',
    "aud": 'the token has no "aud": this server accepts only tokens for its audience',
    "iss": 'the token has no "iss": this server accepts only tokens from its issuer',
}


def _why_refused(exc: Exception) -> str:
    """A refused token's reason, for the client and the log: which claim is wrong,
    but not what the server expected in it (the client need not learn the
    audience or issuer it should have asked for)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token's signature is not valid"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return _MISSING_CLAIM.get(exc.claim, f"the token is not valid: {exc}")
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token's \"aud\" does not name this server's audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token's \"iss\" is not this server's issuer"
    return f"the token is not valid: {exc}"


def _user_of(payload: dict[str, Any]) -> str | None:
    user = payload.get("sub")
    if user is None:
        return None
    if (
        not isinstance(user, str)
        or not 1 <= len(user) <= MAX_USER_ID_LENGTH
        or not user.isprintable()
    ):
        raise TokenError(
            Refusal(
                403,
                f'the token\'s "sub" must be 1-{MAX_USER_ID_LENGTH} characters',
                "token_invalid",
            )
        )
    return user


def info_of(payload: dict[str, Any]) -> str | None:
    """A token's ``info`` claim (a JSON object a presence room's members are told
    of), encoded; raises TokenError (403) when it is not a small object."""
    info = payload.get("info")
    if info is None:
        return None
    try:
        return encode_info(info)
    except ValueError as exc:
        raise TokenError(Refusal(403, f"the token's {exc}", "token_invalid")) from None


def _rooms_of(payload: dict[str, Any], max_rooms: int) -> tuple[RoomId, ...]:
    rooms = payload.get("rooms", [])
    if not isinstance(rooms, list) or not all(
        isinstance(room, str) and ROOM_ID_PATTERN.fullmatch(room) for room in rooms
    ):
        raise TokenError(
            Refusal(403, 'the token\'s "rooms" must be a list of room ids', "token_invalid")
        )
    if len(rooms) > max_rooms:
        raise TokenError(
            Refusal(
                403,
                f"the token names {len(rooms)} rooms; a connection may be in {max_rooms}",
                "token_invalid",
            )
        )
    return tuple(RoomId(room) for room in dict.fromkeys(rooms))


TOKEN_SUBPROTOCOL = "pushgate"


def token_from(query: str, subprotocols: Sequence[str]) -> str | None:
    """A connection token from ``?token=…`` or, for browsers, from the
    ``Sec-WebSocket-Protocol`` header (offer ``pushgate`` and the token)."""
    values = parse_qs(query).get("token")
    if values:
        return values[0]
    for offered in subprotocols:
        if offered.count(".") == 2:  # header.payload.signature
            return offered
    return None


class OriginPolicy:
    """Which browser pages may open connections (cross-site WebSocket hijacking).

    ``*`` allows every Origin. A request without an Origin header comes from a
    program, not a browser page, and is always allowed.
    """

    def __init__(self, allowed: Iterable[str]) -> None:
        origins = {origin.strip().rstrip("/").lower() for origin in allowed if origin.strip()}
        self._any = "*" in origins
        self._allowed = frozenset(origins - {"*"})

    def check(self, origin: str | None) -> Refusal | None:
        if origin is None or self._any:
            return None
        if origin.rstrip("/").lower() in self._allowed:
            return None
        return Refusal(403, f"Origin {origin} is not allowed to connect", "origin")
