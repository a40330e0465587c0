"""Every setting of ``pushgate serve``, each declared once, as a field of ``Config``.

A field made by ``option(...)`` (or ``flag(...)`` for a yes or no) holds all there is
to know about its setting: its default, how its text is read, its metavar, its help
text, its --help group and the checks of its value. ``OPTIONS`` (what cli.py turns
into arguments, and what the environment variables are read from) is derived from
the fields, in the order they are declared, so a setting cannot be added without its
help, group and check. Checks that weigh several settings together are listed once,
in ``Config._between_settings``, and run after every setting's own checks.

Precedence: a command-line option, else the environment variable
``PUSHGATE_<NAME>``, else the default.
"""

import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, TypeVar

from pushgate.broker.urls import CLUSTER_SCHEMES
from pushgate.configchecks import (
    KIB,
    MIB,
    WEBHOOK_EVENTS,
    Check,
    _specs,
    at_least,
    broker_url,
    empty_or_console_gateway,
    empty_or_host_port,
    empty_or_readable_file,
    hmac_secret,
    host_port,
    must_be,
    namespace_specs,
    namespace_webhook_specs,
    node_name,
    non_negative_seconds,
    one_of,
    parse_bool,
    parse_size,
    parse_workers,
    port,
    positive_seconds,
    pusher_app_specs,
    pusher_webhook_specs,
    webhook_event_names,
    webhook_urls,
    zero_or_more,
)
from pushgate.connsettings import ConnectionSettings
from pushgate.errors import ConfigError
from pushgate.hookverdict import hook_url
from pushgate.limits import InputLimits
from pushgate.namespaces import Namespaces, parse_namespace
from pushgate.pusherapps import PusherApps, parse_apps
from pushgate.pushgateproto import RESUME_MAX_MESSAGE_BYTES

ENV_PREFIX = "PUSHGATE_"
LOG_LEVELS = ("debug", "info", "warning", "error")
# The commands that run a node, and which of them read a setting: `serve` is a gateway
# and a logic API in one process, so it reads every setting; `gateway` and `logic` only
# their own (cli.py shows only those in their --help, and refuses the others).
ROLES = ("serve", "gateway", "logic")
GATEWAY = ("serve", "gateway")
LOGIC = ("serve", "logic")


class Group(Enum):
    """The sections of ``--help``, in the order it shows them."""

    LISTEN = "where to listen"
    PROCESSES = "processes"
    CLUSTER = "cluster (see docs/cluster.md)"
    RECOVERY = "sessions and recovery (see docs/recovery.md)"
    TIMEOUTS = "heartbeat, timeouts and stopping"
    LIMITS = "limits (see docs/security.md)"
    API_CONNECTIONS = "the logic API's connections (see docs/security.md)"
    COMPRESSION_GC = "compression and garbage collection"
    ACCESS = "who may push and connect (see docs/security.md)"
    HOOKS = "webhooks and the connect hook (see docs/webhooks.md, docs/connect-hook.md)"
    OBSERVING = "metrics and logs (see docs/operations.md)"
    TESTING = "testing"


# -- Declaring a setting ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as the command line and the environment show it. A ``flag_only``
    option takes no value on the command line. ``name`` is its Config field's."""

    parse: Callable[[str], Any]
    metavar: str
    help: str
    group: Group
    checks: tuple[Check, ...] = ()
    flag_only: bool = False
    name: str = ""
    # A secret: warned of on the command line (ps shows it), and handed to --workers'
    # children by environment only.
    secret: bool = False
    roles: tuple[str, ...] = ROLES  # the commands that read it (GATEWAY, LOGIC or all)

    @property
    def flag(self) -> str:
        return "--" + _dashed(self.name)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def read(self, text: str) -> Any:
        """The value ``text`` stands for; ValueError saying what was expected, in
        words (never the name of the function that read it)."""
        try:
            return self.parse(text)
        except ValueError:
            if self.parse is int:
                raise ValueError(f"not a whole number: {text!r}") from None
            if self.parse is float:
                raise ValueError(f"not a number: {text!r}") from None
            raise

    def check(self, value: object) -> None:
        """Raise ConfigError, naming this option, at the first check ``value`` fails."""
        for check in self.checks:
            problem = check(value)
            if problem is not None:
                raise ConfigError(f"{self.flag} {problem}")


def _dashed(name: str) -> str:
    return name.replace("_", "-")


_OPTION = "pushgate.option"  # the key of a Config field's Option in its metadata
T = TypeVar("T", int, float, str)


def option(
    default: T,
    help: str,
    *,
    metavar: str,
    group: Group,
    parse: Callable[[str], T] | None = None,
    check: Check | tuple[Check, ...] = (),
    secret: bool = False,
    roles: tuple[str, ...] = ROLES,
) -> T:
    """A Config field that is a setting. Its text is read by ``parse``, by default the
    type of ``default`` (so write a float's default as ``10.0``); its value must
    pass ``check`` (one check or several, in order); a ``secret`` should be given by
    environment; ``roles``: the commands that read it."""
    checks = check if isinstance(check, tuple) else (check,)
    declared = Option(
        parse or type(default), metavar, help, group, checks, secret=secret, roles=roles
    )
    return field(default=default, metadata={_OPTION: declared})


def flag(help: str, *, group: Group, roles: tuple[str, ...] = ROLES) -> bool:
    """A Config field that is a yes or no, off unless ``--name`` is given (or its
    environment variable says 1/true/yes/on)."""
    declared = Option(parse_bool, "", help, group, flag_only=True, roles=roles)
    return field(default=False, metadata={_OPTION: declared})


@dataclass(frozen=True, slots=True)
class Config:
    """The settings of one pushgate process.

    Fields are declared in the order of the usage line; --help shows them by group.
    """

    ws_host: str = option(
        "0.0.0.0",
        "address the WebSocket gateway listens on",
        metavar="HOST",
        group=Group.LISTEN,
        roles=GATEWAY,
    )
    ws_port: int = option(
        8888,
        "port of the gateway; clients connect to ws://HOST:PORT/connect",
        metavar="PORT",
        group=Group.LISTEN,
        check=port,
        roles=GATEWAY,
    )
    api_host: str = option(
        "127.0.0.1",
        "address the logic HTTP API listens on (keep it private)",
        metavar="HOST",
        group=Group.LISTEN,
        roles=LOGIC,
    )
    api_port: int = option(
        9999,
        "port of the logic HTTP API",
        metavar="PORT",
        group=Group.LISTEN,
        check=port,
        roles=LOGIC,
    )
    console_gateway: str = option(
        "",
        "the gateway the console page (GET / on the API) connects to, HOST:PORT (HOST "
        "empty: the host the page was loaded from); default: serve's own gateway, or "
        "this host's port 8888 for a logic node alone",
        metavar="HOST:PORT",
        group=Group.LISTEN,
        check=empty_or_console_gateway,
        roles=LOGIC,
    )
    tls_cert: str = option(
        "",
        "serve TLS with this certificate chain (PEM): clients connect to wss://, the API "
        "answers https:// (a reverse proxy in front is the other way: docs/operations.md)",
        metavar="FILE",
        group=Group.LISTEN,
        check=empty_or_readable_file,
    )
    tls_key: str = option(
        "",
        "the private key (PEM) of --tls-cert",
        metavar="FILE",
        group=Group.LISTEN,
        check=empty_or_readable_file,
    )
    workers: int = option(  # 0: one per CPU ("auto")
        1,
        "gateway processes sharing the WebSocket port (serve and gateway; auto: one per "
        "CPU). More than 1 runs a supervisor that restarts a worker that dies; they share "
        "--broker, or a private redis-server it starts when none is given (see "
        "docs/scaling.md)",
        metavar="N",
        group=Group.PROCESSES,
        parse=parse_workers,
        check=must_be(lambda n: n >= 0, "auto or a number of processes, 1 or more"),
        roles=GATEWAY,
    )
    reuse_port: bool = flag(
        "listen with SO_REUSEPORT, so that several gateways share the WebSocket port "
        "(--workers sets it)",
        group=Group.PROCESSES,
        roles=GATEWAY,
    )
    broker: str = option(
        "memory://",
        "message broker: memory:// keeps everything in this process; redis://HOST:PORT/DB "
        "joins the cluster that shares that Redis (or Valkey); "
        "redis+cluster://HOST:PORT,HOST:PORT spreads topics over the shards of a "
        "Redis Cluster (Redis 7 or later, sharded pub/sub; rediss+cluster:// for TLS, "
        "?ssl_ca_certs=PATH for a private CA)",
        metavar="URL",
        group=Group.CLUSTER,
        check=broker_url,
    )
    # --prefix is checked with the broker, in _between_settings.
    prefix: str = option(
        "pushgate:",
        "prefix of every Redis key and channel; one per cluster",
        metavar="TEXT",
        group=Group.CLUSTER,
    )
    node_id: str = option(
        "",
        "this node's name in the cluster (default: random)",
        metavar="ID",
        group=Group.CLUSTER,
        check=node_name,
    )
    node_ttl: float = option(
        10.0,
        "a node that stops refreshing its Redis entries (killed) is forgotten after this, "
        "and the wsIds it held stop resolving",
        metavar="SECONDS",
        group=Group.CLUSTER,
        check=positive_seconds,
    )
    control_timeout: float = option(
        2.0,
        "time a logic node waits for the gateway holding a wsId to answer a join or leave",
        metavar="SECONDS",
        group=Group.CLUSTER,
        check=positive_seconds,
        roles=LOGIC,
    )
    history_size: int = option(
        100,
        "pushes each stream (all, a room, a user) keeps for clients that resume; "
        "0 turns history, positions and recovery off (see docs/recovery.md)",
        metavar="N",
        group=Group.RECOVERY,
        check=zero_or_more("no history"),
    )
    history_ttl: float = option(
        300.0,
        "how long a stream keeps each push; a client away longer resumes without "
        "recovery (and is told so)",
        metavar="SECONDS",
        group=Group.RECOVERY,
        check=positive_seconds,
    )
    session_ttl: float = option(
        60.0,
        "how long a session (wsId, rooms, user) waits for its client to resume after "
        "its connection ends; 0: a connection's end is its session's end",
        metavar="SECONDS",
        group=Group.RECOVERY,
        check=non_negative_seconds,
    )
    # --history-max-bytes is checked against --max-body-bytes, in _between_settings.
    history_max_bytes: int = option(
        64 * MIB,
        "memory the history of all streams together may take with --broker memory:// "
        "(with Redis, history is in Redis); past it the oldest pushes go first, and a "
        "client that missed them is told it was not recovered (0: no limit)",
        metavar="BYTES",
        group=Group.RECOVERY,
        parse=parse_size,
    )
    heartbeat: float = option(
        10.0,
        "PING interval announced in the welcome frame",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=positive_seconds,
        roles=GATEWAY,
    )
    idle_timeout: float = option(
        30.0,
        "close (1011) a connection that sent nothing, not even a pong, for this long; "
        "a silent connection is sent a protocol ping half-way",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=positive_seconds,
        roles=GATEWAY,
    )
    handshake_timeout: float = option(
        10.0,
        "time a new TCP connection has to complete the WebSocket handshake; in a "
        "cluster, also the longest a welcome waits for the wsId to be announced",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=positive_seconds,
        roles=GATEWAY,
    )
    close_timeout: float = option(
        5.0,
        "time a client has to answer a close frame before its TCP connection is dropped",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=positive_seconds,
        roles=GATEWAY,
    )
    shutdown_timeout: float = option(
        10.0,
        "on SIGTERM/SIGINT, after the drain, time to let connections close and output drain",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=non_negative_seconds,
        roles=GATEWAY,
    )
    drain_seconds: float = option(
        5.0,
        "on SIGTERM/SIGINT, report not ready and close the connections spread over this "
        "long with 1012 (service restart), so that clients resume elsewhere a few at a time",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=non_negative_seconds,
        roles=GATEWAY,
    )
    max_message_bytes: int = option(
        4 * KIB,
        "largest client message; a larger one closes the connection with 1009",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=at_least(64, "bytes"),
        roles=GATEWAY,
    )
    max_body_bytes: int = option(
        1 * MIB,
        "largest logic API request body; more is 413",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=at_least(64, "bytes"),
        roles=LOGIC,
    )
    max_output_bytes: int = option(
        1 * MIB,
        "bytes held unsent for one client beyond the kernel's buffers; a client that "
        "reads too slowly to stay under it is closed with 1008, the others never wait",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=at_least(64, "bytes"),
        roles=GATEWAY,
    )
    # --max-output-total-bytes is checked against --max-output-bytes, in _between_settings.
    max_output_total_bytes: int = option(
        128 * MIB,
        "bytes held unsent for all clients together; past it, the clients holding the "
        "most are closed with 1008 until the rest fits (0: no limit)",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        roles=GATEWAY,
    )
    max_rooms_per_conn: int = option(
        100,
        "rooms one connection may be in at once; more is 409",
        metavar="N",
        group=Group.LIMITS,
        check=at_least(1),
        roles=GATEWAY,
    )
    max_connections: int = option(
        0,
        "open connections in all; one more is refused with 503 (0: the open-file limit, "
        "raised to its maximum at start, less 100 kept for the API and the broker)",
        metavar="N",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_connections_per_ip: int = option(
        0,
        "open connections from one client address; one more is refused (0: no limit)",
        metavar="N",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_connects_per_second: float = option(
        0.0,
        "new connections accepted per second, in bursts of up to one second's worth (0: no limit)",
        metavar="RATE",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_connects_per_second_per_ip: float = option(
        0.0,
        "new connections accepted per second from one client address (an IPv6 /64), "
        "checked before --max-connects-per-second, so that one address cannot take it "
        "all (0: a quarter of --max-connects-per-second, at least 1)",
        metavar="RATE",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_client_messages_per_second: int = option(
        50,
        "messages one client may send per second; more closes it with 1008 (0: no limit)",
        metavar="N",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_client_frames_per_second: int = option(
        200,
        "WebSocket frames of any kind (ping, pong, continuation, data) one client may "
        "send per second, in bursts of up to one second's worth; more closes it with "
        "1008 (0: no limit)",
        metavar="N",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_client_bytes_per_second: int = option(
        256 * KIB,
        "bytes one client may send per second (a burst may always hold one message of "
        "--max-message-bytes); more closes it with 1008 (0: no limit)",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_handshake_bytes: int = option(
        16 * KIB,
        "largest WebSocket handshake request, request line and headers together; a "
        "larger one is answered 431",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=at_least(1024, "bytes"),
        roles=GATEWAY,
    )
    max_api_connections: int = option(
        64,
        "open connections to the logic API; one more is answered 503 and closed (the "
        "open-file reserve of 100 holds these and the broker's)",
        metavar="N",
        group=Group.API_CONNECTIONS,
        check=at_least(1),
        roles=LOGIC,
    )
    api_header_timeout: float = option(
        10.0,
        "time a logic API connection has to send a whole request header, from its "
        "first byte or from connecting",
        metavar="SECONDS",
        group=Group.API_CONNECTIONS,
        check=positive_seconds,
        roles=LOGIC,
    )
    api_keepalive_timeout: float = option(
        15.0,
        "an idle keep-alive connection to the logic API is closed after this long",
        metavar="SECONDS",
        group=Group.API_CONNECTIONS,
        check=positive_seconds,
        roles=LOGIC,
    )
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

    conformance_echo: bool = flag(
        "also serve ws://HOST:PORT/echo, which echoes every message (for protocol "
        "conformance tests such as Autobahn; not for production)",
        group=Group.TESTING,
        roles=GATEWAY,
    )
    no_compression: bool = flag(
        "decline permessage-deflate: send every frame uncompressed (by default a client "
        "that offers it, as browsers do, gets pushes over 128 bytes compressed, each "
        "compressed once per gateway)",
        group=Group.COMPRESSION_GC,
        roles=GATEWAY,
    )
    no_gc_freeze: bool = flag(
        "let full garbage collections walk every object again (by default, on uvloop, "
        "long-lived objects are frozen out of them, so that none stops the event loop "
        "for long; see docs/operations.md)",
        group=Group.COMPRESSION_GC,
    )
    no_metrics: bool = flag(
        "count nothing for GET /metrics, and do not serve it (to measure what metrics cost)",
        group=Group.OBSERVING,
    )
    metrics_address: str = option(
        "",
        "also serve GET /metrics on this address, without an API key (a gateway-only "
        "node has no logic API to serve it on); keep it private. With --workers N: "
        "every worker's metrics, labelled by worker, on PORT (worker i on PORT+i)",
        metavar="HOST:PORT",
        group=Group.OBSERVING,
        check=empty_or_host_port,
    )
    log_level: str = option(
        "info",
        f"log level: {', '.join(LOG_LEVELS)}",
        metavar="LEVEL",
        group=Group.OBSERVING,
        parse=str.lower,
        check=one_of(*LOG_LEVELS),
    )
    log_format: str = option(
        "text",
        "text: a readable line per event; json: one JSON object per line (time, level, "
        "logger, message, and wsId, remote, code, room where there is one)",
        metavar="FORMAT",
        group=Group.OBSERVING,
        parse=str.lower,
        check=one_of("text", "json"),
    )

    def __post_init__(self) -> None:
        """Check every setting on its own (its option's checks, in declaration order),
        then the settings that must agree with one another."""
        for declared in OPTIONS:
            declared.check(getattr(self, declared.name))
        problem = self._between_settings()
        if problem is not None:
            raise ConfigError(problem)

    def _between_settings(self) -> str | None:
        """What is wrong between settings that are each fine on their own, or None:
        every check that reads more than one setting, in the order they are made."""
        if bool(self.tls_cert) != bool(self.tls_key):
            return "--tls-cert and --tls-key go together: give both, or neither"
        if self.no_metrics and self.metrics_address:
            return "--metrics-address serves /metrics, which --no-metrics turns off"
        if (self.webhook or self.namespace_webhooks) and len(self.webhook_secret.encode()) < 32:
            return (
                "--webhook needs --webhook-secret (at least 32 bytes) to sign its "
                "requests: receivers must be able to tell them from forgeries"
            )
        # A negative size is told the same way: it is neither of the two.
        if 0 < self.history_max_bytes < self.max_body_bytes or self.history_max_bytes < 0:
            return (
                "--history-max-bytes must be 0 (no limit) or at least --max-body-bytes, "
                "so that the largest push fits"
            )
        if self.idle_timeout <= self.heartbeat:
            return (
                f"--idle-timeout ({self.idle_timeout:g} s) must be longer than --heartbeat "
                f"({self.heartbeat:g} s), or clients that PING on time would be closed"
            )
        # A negative total is told the same way: it is less than --max-output-bytes.
        if self.max_output_total_bytes and self.max_output_total_bytes < self.max_output_bytes:
            return "--max-output-total-bytes must be 0 (no limit) or at least --max-output-bytes"
        if self.token_secret and self.token_public_key:
            return "give --token-secret or --token-public-key, not both"
        if self.require_token and not (self.token_secret or self.token_public_key):
            return "--require-token needs --token-secret or --token-public-key"
        if self.connect_hook and self.require_token:
            return (
                "--connect-hook is asked about handshakes without a token, which "
                "--require-token refuses: give one or the other"
            )
        if self.connect_hook and self.connect_hook_timeout >= self.handshake_timeout:
            return (
                f"--connect-hook-timeout ({self.connect_hook_timeout:g} s) must be shorter "
                f"than --handshake-timeout ({self.handshake_timeout:g} s), or a slow hook's "
                "handshakes would be dropped before --connect-hook-failure decides"
            )
        app_ids = {app.id for app in self.pusher_apps}
        for app_id, _ in self.pusher_receivers:
            if app_id not in app_ids:
                return f"--pusher-webhook names {app_id}, which no --pusher-app is"
        clash = app_ids & {ns.name for ns in self.namespace_list}
        if clash:
            return (
                f"--namespaces names {min(clash)}, which is a Pusher app's id: an app's "
                "channels are the rooms of its own namespace"
            )
        if self.redis_cluster and ("{" in self.prefix or "}" in self.prefix):
            return "--prefix may not hold { or } with a Redis Cluster broker"
        # After the braces, so that "{ a}" with a cluster is told about the braces.
        if not self.prefix or any(c.isspace() for c in self.prefix):
            return "--prefix must be a non-empty string without spaces"
        return None

    @property
    def metrics_endpoint(self) -> tuple[str, int] | None:
        """--metrics-address as (host, port); None when not given or not HOST:PORT."""
        return host_port(self.metrics_address)

    @property
    def api_keys(self) -> tuple[str, ...]:
        return tuple(key.strip() for key in self.api_key.split(",") if key.strip())

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.allowed_origins.split(",") if o.strip())

    def tls_context(self) -> ssl.SSLContext | None:
        """The server's TLS context, from --tls-cert and --tls-key (None: plain).
        Raises ConfigError when they do not load (not PEM, or not a pair)."""
        if not self.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"--tls-cert {self.tls_cert} and --tls-key {self.tls_key} do not load: {exc}"
            ) from None
        return context

    @property
    def pusher_apps(self) -> PusherApps:
        """--pusher-app, parsed (checked already, so it parses)."""
        return parse_apps(self.pusher_app)

    @property
    def pusher_receivers(self) -> list[tuple[str, str]]:
        """--pusher-webhook as (app id, URL) pairs (checked already, so it parses)."""
        pairs = (spec.partition("=") for spec in _specs(self.pusher_webhook))
        return [(app_id.strip(), url.strip()) for app_id, _, url in pairs]

    @property
    def namespace_list(self) -> Namespaces:
        """--namespaces, parsed (checked already, so it parses)."""
        return Namespaces([parse_namespace(spec) for spec in _specs(self.namespaces)])

    @property
    def sessions(self) -> bool:
        return self.session_ttl > 0

    @property
    def clustered(self) -> bool:
        return not self.broker.startswith("memory://")

    @property
    def redis_cluster(self) -> bool:
        """The broker is a Redis Cluster (sharded pub/sub), not one Redis server."""
        return self.broker.startswith(CLUSTER_SCHEMES)

    @property
    def worker_count(self) -> int:
        """How many gateway processes --workers asks for (auto: one per CPU)."""
        return self.workers or os.cpu_count() or 1

    def connection_settings(self) -> ConnectionSettings:
        return ConnectionSettings(
            heartbeat=self.heartbeat,
            # A client that PINGs every `heartbeat` seconds is never pinged; one that
            # does not (a browser) is pinged half-way to the idle timeout.
            ping_after=self.idle_timeout / 2,
            idle_timeout=self.idle_timeout,
            handshake_timeout=self.handshake_timeout,
            close_timeout=self.close_timeout,
            max_message_bytes=self.max_message_bytes,
            max_output_bytes=self.max_output_bytes,
            input=InputLimits(
                messages_per_second=self.max_client_messages_per_second,
                frames_per_second=self.max_client_frames_per_second,
                bytes_per_second=self.max_client_bytes_per_second,
                # A resume message may be larger than other messages.
                max_message_bytes=max(self.max_message_bytes, RESUME_MAX_MESSAGE_BYTES),
            ),
            max_handshake_bytes=self.max_handshake_bytes,
            max_output_total_bytes=self.max_output_total_bytes,
            namespaces=self.namespace_list,
            pusher_apps=self.pusher_apps,
            conformance_echo=self.conformance_echo,
            compression=not self.no_compression,
        )


def _options_of(settings: type[Config]) -> tuple[Option, ...]:
    """The Option of each field, named, in declaration order. A field declared
    without option() or flag() stops the import, so none goes without its help."""
    found: list[Option] = []
    for declared in fields(settings):
        if _OPTION not in declared.metadata:
            raise TypeError(f"Config.{declared.name} must be declared with option() or flag()")
        found.append(replace(declared.metadata[_OPTION], name=declared.name))
    return tuple(found)


# Every setting, in the order its Config field is declared.
OPTIONS = _options_of(Config)


def default_of(name: str) -> object:
    return Config.__dataclass_fields__[name].default


def from_sources(
    cli: Mapping[str, object],
    env: Mapping[str, str],
    file: Mapping[str, object] | None = None,
    *,
    source: str | None = None,
) -> Config:
    """Build a Config from parsed command-line values (None when not given), the
    environment, and a config file's values (configfile.py; ``source`` its name), in
    that order of precedence. Raises ConfigError naming the variable or option at
    fault, and the file when settings together are wrong and it set any of them."""
    values: dict[str, object] = dict(file or {})
    for option in OPTIONS:
        given = cli.get(option.name)
        if given is not None:
            values[option.name] = given
        elif option.env in env:
            try:
                values[option.name] = option.read(env[option.env])
            except ValueError as exc:
                raise ConfigError(f"{option.env}={env[option.env]!r}: {exc}") from None
    try:
        return Config(**values)  # type: ignore[arg-type]
    except ConfigError as exc:
        if source and file:
            raise ConfigError(f"{source} (with the command line and environment): {exc}") from None
        raise
