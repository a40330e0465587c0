"""Who may subscribe a connection to a room: the room's namespace decides.

A room's namespace is the part of its id before the first ``:`` (``chat:42`` is in
``chat``); a room without one is in the default namespace. Each namespace has a
**policy**:

- ``public``: any connected client may subscribe itself;
- ``grant``: only with a grant the back end made for this connection and room (see
  :func:`check_grant`): an HMAC-SHA256 of ``"<wsId>:<room>"`` with the namespace's
  secret, or a subscription token;
- ``server``: only the back end may join a connection (``POST /room/join``, or the
  connection token's ``rooms``): the default, and what every room was before
  namespaces existed.

A **subscription token** is a JWT signed with the key that verifies connection
tokens (``--token-secret`` / ``--token-public-key``, with the same ``aud``, ``iss``
and ``exp`` checks). Its ``subscribe`` claim lists the rooms it opens, where ``*``
stands for any run of characters (``"chat:*"``); when it has ``wsId`` it opens them to
that connection only, and when it has ``sub`` only to a connection of that user. Its
``exp`` ends the subscription, unless a renewed token comes first.

Pure: no I/O; the clock is the caller's.
"""

import fnmatch
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

from pushgate.ids import ConnId, RoomId
from pushgate.presence import decode_info, encode_info
from pushgate.security import Refusal, TokenError, TokenVerifier, info_of

DEFAULT_NAMESPACE = ""
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class Policy(Enum):
    PUBLIC = "public"
    GRANT = "grant"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace's name ("" for the default), its policy, for ``grant`` the secret
    its HMAC grants are made with (None: subscription tokens only), whether its
    members may publish to their room, whether its rooms keep presence (their
    members get join and leave events: presence.py), and whether its members'
    messages are sent to the webhooks (client_message)."""

    name: str
    policy: Policy
    secret: str | None = None
    publish: bool = False
    presence: bool = False
    webhook: bool = False


@dataclass(frozen=True, slots=True)
class Granted:
    """A subscription allowed, until ``expires_at`` (the caller's clock; None: for as
    long as the connection's session lasts), with the member ``info`` its grant or
    token gave (encoded; None: the connection token's, if any)."""

    expires_at: float | None = None
    info: str | None = None


def namespace_of(room: str) -> str:
    """The name of a room's namespace: the part of its id before the first ``:``, or
    the default namespace's (whether or not a namespace of that name is configured)."""
    name, colon, _ = room.partition(":")
    return name if colon else DEFAULT_NAMESPACE


class Namespaces:
    """Every namespace of a server, and the default for the rest."""

    def __init__(self, namespaces: list[Namespace] | tuple[Namespace, ...] = ()) -> None:
        self._by_name = {ns.name: ns for ns in namespaces}
        self._by_name.setdefault(DEFAULT_NAMESPACE, Namespace(DEFAULT_NAMESPACE, Policy.SERVER))

    def of(self, room: RoomId) -> Namespace:
        namespace = self._by_name.get(namespace_of(room))
        return namespace or self._by_name[DEFAULT_NAMESPACE]

    def __iter__(self) -> Any:
        return iter(self._by_name.values())


@dataclass(frozen=True, slots=True)
class SubscribePolicy:
    """What decides a connection's own subscriptions on one gateway."""

    namespaces: Namespaces
    tokens: TokenVerifier | None  # verifies subscription tokens (None: no tokens here)

    def check(
        self,
        ws_id: ConnId,
        user: str | None,
        room: RoomId,
        *,
        grant: str | None,
        token: str | None,
        info: str | None = None,
    ) -> Granted | Refusal:
        return check_subscription(
            self.namespaces.of(room),
            ws_id,
            user,
            room,
            grant=grant,
            token=token,
            tokens=self.tokens,
            info=info,
        )

    def may_publish(self, room: RoomId) -> bool:
        """Members of ``room`` may publish to it."""
        return self.namespaces.of(room).publish

    def has_presence(self, room: RoomId) -> bool:
        """``room`` keeps presence."""
        return self.namespaces.of(room).presence

    def reports_messages(self, room: RoomId) -> bool:
        """Members' messages to ``room`` go to the webhooks too."""
        return self.namespaces.of(room).webhook

    def may_leave(self, room: RoomId) -> bool:
        """A client may take itself out of a room it could put itself in."""
        return self.namespaces.of(room).policy is not Policy.SERVER


FLAGS = ("publish", "presence", "webhook")


def parse_namespace(text: str) -> Namespace:
    """``NAME=POLICY[+publish][+presence][+webhook][:SECRET]`` (NAME empty for the
    default namespace; a SECRET for ``grant`` only), as ``--namespaces`` takes it.
    Raises ValueError saying what is wrong."""
    name, equals, rest = text.partition("=")
    name = name.strip()
    if not equals:
        raise ValueError(f"expected NAME=POLICY, got {text!r}")
    if name and not _NAME.fullmatch(name):
        raise ValueError(f"a namespace is 1-64 letters, digits and _-. ; got {name!r}")
    policy_part, colon, secret = rest.partition(":")
    policy_text, *flags = policy_part.split("+")
    which = repr(name) if name else "the default namespace"
    unknown = [flag for flag in flags if flag.strip().lower() not in FLAGS]
    if unknown:
        raise ValueError(
            f"{which} has {unknown[0]!r}; a namespace may say +publish, +presence and +webhook"
        )
    try:
        policy = Policy(policy_text.strip().lower())
    except ValueError:
        choices = ", ".join(p.value for p in Policy)
        raise ValueError(f"the policy of {which} must be one of {choices}") from None
    if colon and policy is not Policy.GRANT:
        raise ValueError(f"only a grant namespace takes a secret ({which})")
    if colon and len(secret) < 16:
        raise ValueError(f"the grant secret of {which} is under 16 characters")
    said = {flag.strip().lower() for flag in flags}
    return Namespace(
        name,
        policy,
        secret if colon else None,
        "publish" in said,
        "presence" in said,
        "webhook" in said,
    )


def grant_for(secret: str, ws_id: str, room: str, info: str | None = None) -> str:
    """The HMAC grant a back end gives a client to subscribe ``ws_id`` to ``room``:
    hex HMAC-SHA256 of ``"<wsId>:<room>"`` with the namespace's secret; with ``info``
    (the member's info as a JSON text, which the client sends as it is), of
    ``"<wsId>:<room>:<info>"``."""
    message = f"{ws_id}:{room}" if info is None else f"{ws_id}:{room}:{info}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def check_subscription(
    namespace: Namespace,
    ws_id: ConnId,
    user: str | None,
    room: RoomId,
    *,
    grant: str | None,
    token: str | None,
    tokens: TokenVerifier | None,
    info: str | None = None,
) -> Granted | Refusal:
    """Whether ``ws_id`` (of ``user``) may subscribe itself to ``room``, and until
    when, with what member info. A refusal's status: 403 not allowed (a ``server``
    namespace, or a bad or foreign grant), 401 a grant is needed and none was given,
    400 an ``info`` that is not a small JSON object or comes without a grant."""
    if info is not None and (grant is None or namespace.policy is not Policy.GRANT):
        return Refusal(400, '"info" comes with a grant that signs it', "bad_grant")
    if namespace.policy is Policy.PUBLIC:
        return Granted()
    if namespace.policy is Policy.SERVER:
        return Refusal(403, f"only the back end may put a connection in {room}", "server_room")
    if grant is not None:
        if namespace.secret is None:
            return Refusal(403, f"{room} takes subscription tokens, not grants", "bad_grant")
        expected = grant_for(namespace.secret, ws_id, room, info)
        if not hmac.compare_digest(grant.encode(), expected.encode()):
            reason = f"the grant is not valid for this connection and {room}"
            reason += " with this info" if info is not None else ""
            return Refusal(403, reason, "bad_grant")
        if info is None:
            return Granted()
        try:
            return Granted(info=encode_info(decode_info(info)))
        except ValueError as exc:
            return Refusal(400, str(exc), "bad_grant")
    if token is not None:
        if tokens is None:
            return Refusal(403, "this server verifies no tokens", "bad_grant")
        return _check_token(tokens, token, ws_id, user, room)
    return Refusal(401, f"{room} needs a grant or a subscription token", "no_grant")


def _check_token(
    tokens: TokenVerifier, token: str, ws_id: ConnId, user: str | None, room: RoomId
) -> Granted | Refusal:
    try:
        payload = tokens.decode(token)
    except TokenError as exc:
        return Refusal(403, exc.refusal.reason, "bad_grant")
    patterns = payload.get("subscribe")
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        return Refusal(403, 'the token has no "subscribe" list of rooms', "bad_grant")
    if not any(room_matches(pattern, room) for pattern in patterns):
        return Refusal(403, f"the token does not open {room}", "bad_grant")
    bound = payload.get("wsId")
    if bound is not None and bound != ws_id:
        return Refusal(403, "the token was made for another connection", "bad_grant")
    owner = payload.get("sub")
    if owner is not None and owner != user:
        return Refusal(403, "the token was made for another user", "bad_grant")
    try:
        info = info_of(payload)
    except TokenError as exc:
        return Refusal(403, exc.refusal.reason, "bad_grant")
    expires = payload.get("exp")
    return Granted(float(expires) if isinstance(expires, int | float) else None, info)


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern[str]:
    # Only * is special: rooms have no [ ] ? in them, and a literal must stay literal.
    return re.compile(fnmatch.translate(pattern.replace("[", "[[]").replace("?", "[?]")))


def room_matches(pattern: str, room: str) -> bool:
    """Whether ``room`` is one a ``subscribe`` entry opens (``*``: any characters)."""
    if "*" not in pattern:
        return pattern == room
    return _pattern(pattern).fullmatch(room) is not None
