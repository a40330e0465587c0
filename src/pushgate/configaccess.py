"""The settings of who may push and connect (API keys, tokens, origins, namespaces,
Pusher apps), and whom pushgate tells (webhooks, the connect hook). Fields of
:class:`~pushgate.config.Config`, after those of configlimits.py."""

from dataclasses import dataclass

from pushgate.configchecks import (
    WEBHOOK_EVENTS,
    at_least,
    hmac_secret,
    must_be,
    namespace_specs,
    namespace_webhook_specs,
    one_of,
    positive_seconds,
    pusher_app_specs,
    pusher_webhook_specs,
    webhook_event_names,
    webhook_urls,
)
from pushgate.configlimits import LimitSettings
from pushgate.configoptions import GATEWAY, LOGIC, Group, flag, option
from pushgate.hookverdict import hook_url


@dataclass(frozen=True, slots=True)
class AccessSettings(LimitSettings):
    """Who may push and connect; webhooks and the connect hook."""

    api_key: str = option(
        "",
        "API keys (comma-separated, for rotation); the logic API then requires "
        "Authorization: Bearer <key>",
        metavar="KEYS",
        group=Group.ACCESS,
        secret=True,
        roles=LOGIC,
    )
    insecure: bool = flag(
        "allow the logic API on a non-loopback address without --api-key",
        group=Group.ACCESS,
        roles=LOGIC,
    )
    token_secret: str = option(
        "",
        "verify connection tokens (JWT, HS256) with this secret, of at least 32 bytes",
        metavar="SECRET",
        group=Group.ACCESS,
        check=hmac_secret,
        secret=True,
        roles=GATEWAY,
    )
    token_public_key: str = option(
        "",
        "verify connection tokens (JWT, RS256 or ES256) with the PEM public key in FILE",
        metavar="FILE",
        group=Group.ACCESS,
        roles=GATEWAY,
    )
    require_token: bool = flag(
        "refuse (401/403) WebSocket handshakes without a valid token",
        group=Group.ACCESS,
        roles=GATEWAY,
    )
    token_audience: str = option(
        "",
        'accept only connection tokens whose "aud" names AUD (default: "aud" not checked)',
        metavar="AUD",
        group=Group.ACCESS,
        roles=GATEWAY,
    )
    token_issuer: str = option(
        "",
        'accept only connection tokens whose "iss" is ISS (default: "iss" not checked)',
        metavar="ISS",
        group=Group.ACCESS,
        roles=GATEWAY,
    )
    token_require_exp: bool = flag(
        'refuse connection tokens without an "exp" (by default a token without one never expires)',
        group=Group.ACCESS,
        roles=GATEWAY,
    )
    allowed_origins: str = option(
        "*",
        "browser Origins allowed to connect, comma-separated, or * for any; requests "
        "without an Origin header (programs) are always allowed",
        metavar="ORIGINS",
        group=Group.ACCESS,
        roles=GATEWAY,
    )
    namespaces: str = option(
        "",
        "who may subscribe a connection to a room, by the room's namespace (the part of "
        "its id before the first :), comma-separated: NAME=public (any client), "
        "NAME=grant:SECRET (with the back end's HMAC grant or a subscription token), "
        "NAME=grant (tokens only), NAME=server (only the back end: the default; =POLICY "
        "sets the default namespace's); +publish after the policy lets members publish "
        "to their room, +presence tells them who joins and leaves (chat=public+presence), "
        "+webhook sends their messages to --webhook too; "
        "see docs/protocol.md",
        metavar="NAMESPACES",
        group=Group.ACCESS,
        check=namespace_specs,
        secret=True,  # the grant secrets
    )
    pusher_app: str = option(
        "",
        "speak the Pusher Channels protocol for these apps, comma-separated "
        "ID:KEY:SECRET[:client-events][:max-connections=N]: Pusher clients connect to "
        "/app/KEY on the gateway's port, Pusher server libraries call /apps/ID/... on the "
        "API's; client-events lets members of private and presence channels send client- "
        "events; max-connections caps the app's connections on each gateway; in --config, "
        "a [pusher_apps.ID] table (see docs/pusher.md)",
        metavar="APPS",
        group=Group.ACCESS,
        check=pusher_app_specs,
        secret=True,  # the apps' secrets
    )
    pusher_webhook: str = option(
        "",
        "a Pusher app's webhook receivers, comma-separated ID=URL: its channels occupied "
        "and vacated, presence members added and removed, client events and cache "
        "misses, in Pusher's format and signed with the app's secret (X-Pusher-Key, "
        "X-Pusher-Signature), queued and retried as --webhook's (see docs/pusher.md)",
        metavar="ID=URL,...",
        group=Group.HOOKS,
        check=pusher_webhook_specs,
    )
    # -- webhooks (pushgate.webhooks; composed in app.py) --
    webhook: str = option(
        "",
        "POST what happens (sessions started and ended, rooms occupied and vacated, "
        "members joined and left) to these URLs, comma-separated, in signed batches, "
        "at least once and in order; each receiver gets every event on its own. A "
        "namespace's webhook in --config gets its rooms' events, and client messages "
        "where it asks (see docs/webhooks.md)",
        metavar="URLS",
        group=Group.HOOKS,
        check=webhook_urls,
    )
    namespace_webhooks: str = option(
        "",
        "receivers of one namespace's events, comma-separated NAME=URL (a namespace may "
        "name several): its rooms occupied and vacated, members joined and left, and its "
        "members' messages where it says +webhook; in --config, a namespace's webhook = "
        '"URL" (see docs/webhooks.md)',
        metavar="NAME=URL,...",
        group=Group.HOOKS,
        check=namespace_webhook_specs,
    )
    webhook_secret: str = option(
        "",
        "sign each webhook request with HMAC-SHA256 under this secret (at least 32 "
        "bytes; header X-Pushgate-Signature); required with --webhook",
        metavar="SECRET",
        group=Group.HOOKS,
        secret=True,
    )
    webhook_events: str = option(
        ",".join(WEBHOOK_EVENTS),
        f"the events sent, comma-separated, of {', '.join(WEBHOOK_EVENTS)}",
        metavar="EVENTS",
        group=Group.HOOKS,
        check=webhook_event_names,
    )
    webhook_timeout: float = option(
        5.0,
        "seconds a receiver has to answer a batch; no answer, no connection or any "
        "status but 2xx is retried, with backoff",
        metavar="SECONDS",
        group=Group.HOOKS,
        check=positive_seconds,
    )
    webhook_retry_for: float = option(
        3600.0,
        "seconds an event is retried before it is given up (logged with its id, and "
        "counted in pushgate_webhook_events_failed_total; never dropped silently); at "
        "least 600",
        metavar="SECONDS",
        group=Group.HOOKS,
        check=must_be(lambda value: value >= 600, "at least 600"),
    )

    # -- the connect hook (pushgate.connecthook) --
    connect_hook: str = option(
        "",
        "on each WebSocket handshake without a connection token, POST its headers "
        "(Cookie and Authorization included), cookies and query to this URL, which "
        "answers allow (with the user, rooms and info, as a token would) or deny (with "
        "the 4xx the client gets); see docs/connect-hook.md",
        metavar="URL",
        group=Group.HOOKS,
        check=hook_url,
        roles=GATEWAY,
    )
    connect_hook_timeout: float = option(
        2.0,
        "seconds the connect hook has to answer; then --connect-hook-failure decides "
        "(shorter than --handshake-timeout)",
        metavar="SECONDS",
        group=Group.HOOKS,
        check=positive_seconds,
        roles=GATEWAY,
    )
    connect_hook_failure: str = option(
        "deny",
        "what a handshake gets when the connect hook cannot be reached, times out, or "
        "answers no valid verdict (each logged and counted): deny (503) or allow (as "
        "if there were no hook: no user, no rooms)",
        metavar="POLICY",
        group=Group.HOOKS,
        parse=str.lower,
        check=one_of("deny", "allow"),
        roles=GATEWAY,
    )
    connect_hook_max_calls: int = option(
        100,
        "connect hook calls in flight at most; a handshake over it is answered 503 at "
        "once, so that a flood of handshakes cannot pile up work",
        metavar="N",
        group=Group.HOOKS,
        check=at_least(1),
        roles=GATEWAY,
    )
