"""Every setting of ``pushgate serve``, with its default, its environment variable
and its help text, in one table.

Precedence: a command-line option, else the environment variable
``PUSHGATE_<NAME>``, else the default.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pushgate.broker.urls import CLUSTER_SCHEMES, parse_cluster_url
from pushgate.connsettings import ConnectionSettings
from pushgate.errors import ConfigError
from pushgate.limits import InputLimits
from pushgate.pushgateproto import RESUME_MAX_MESSAGE_BYTES

ENV_PREFIX = "PUSHGATE_"
KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Config:
    """The settings of one pushgate process."""

    # Listening
    ws_host: str = "0.0.0.0"
    ws_port: int = 8888
    api_host: str = "127.0.0.1"
    api_port: int = 9999
    broker: str = "memory://"
    # Processes
    workers: int = 1  # 0: one per CPU ("auto")
    reuse_port: bool = False
    # Cluster
    prefix: str = "pushgate:"
    node_id: str = ""
    node_ttl: float = 10.0
    control_timeout: float = 2.0
    # Recovery
    history_size: int = 100
    history_ttl: float = 300.0
    session_ttl: float = 60.0
    history_max_bytes: int = 64 * MIB
    # Heartbeat
    heartbeat: float = 10.0
    idle_timeout: float = 30.0
    # Timeouts
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    shutdown_timeout: float = 10.0
    drain_seconds: float = 5.0
    # Limits
    max_message_bytes: int = 4 * KIB
    max_body_bytes: int = 1 * MIB
    max_output_bytes: int = 1 * MIB
    max_output_total_bytes: int = 128 * MIB
    max_rooms_per_conn: int = 100
    max_connections: int = 0
    max_connections_per_ip: int = 0
    max_connects_per_second: float = 0.0
    max_connects_per_second_per_ip: float = 0.0
    max_client_messages_per_second: int = 50
    max_client_frames_per_second: int = 200
    max_client_bytes_per_second: int = 256 * KIB
    max_handshake_bytes: int = 16 * KIB
    # The logic API's connections
    max_api_connections: int = 64
    api_header_timeout: float = 10.0
    api_keepalive_timeout: float = 15.0
    # Security
    api_key: str = ""
    insecure: bool = False
    token_secret: str = ""
    token_public_key: str = ""
    require_token: bool = False
    token_audience: str = ""
    token_issuer: str = ""
    token_require_exp: bool = False
    allowed_origins: str = "*"
    # Testing
    conformance_echo: bool = False
    # Compression
    no_compression: bool = False
    # Garbage collection
    no_gc_freeze: bool = False
    # Metrics and logs
    no_metrics: bool = False
    metrics_address: str = ""
    log_level: str = "info"
    log_format: str = "text"

    @property
    def metrics_endpoint(self) -> tuple[str, int] | None:
        """--metrics-address as (host, port); None when not given or not HOST:PORT."""
        host, colon, port = self.metrics_address.rpartition(":")
        if not colon or not host or not port.isdigit() or int(port) > 65535:
            return None
        return host.strip("[]"), int(port)

    def __post_init__(self) -> None:
        for name in ("ws_port", "api_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"--{_flag(name)} must be a port from 0 to 65535, got {port}")
        for name in ("heartbeat", "idle_timeout", "handshake_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be more than 0 seconds")
        for name in ("shutdown_timeout", "drain_seconds", "session_ttl"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be 0 seconds or more")
        if self.metrics_address and self.metrics_endpoint is None:
            raise ConfigError(f"--metrics-address must be HOST:PORT, got {self.metrics_address!r}")
        if self.no_metrics and self.metrics_address:
            raise ConfigError("--metrics-address serves /metrics, which --no-metrics turns off")
        if self.history_size < 0:
            raise ConfigError("--history-size must be 0 (no history) or more")
        if self.workers < 0:
            raise ConfigError("--workers must be auto or a number of processes, 1 or more")
        if self.history_ttl <= 0:
            raise ConfigError("--history-ttl must be more than 0 seconds")
        if 0 < self.history_max_bytes < self.max_body_bytes or self.history_max_bytes < 0:
            raise ConfigError(
                "--history-max-bytes must be 0 (no limit) or at least --max-body-bytes, "
                "so that the largest push fits"
            )
        if self.idle_timeout <= self.heartbeat:
            raise ConfigError(
                f"--idle-timeout ({self.idle_timeout:g} s) must be longer than --heartbeat "
                f"({self.heartbeat:g} s), or clients that PING on time would be closed"
            )
        for name in ("max_message_bytes", "max_body_bytes", "max_output_bytes"):
            if getattr(self, name) < 64:
                raise ConfigError(f"--{_flag(name)} must be at least 64 bytes")
        if self.max_handshake_bytes < 1024:
            raise ConfigError("--max-handshake-bytes must be at least 1024 bytes")
        if self.max_output_total_bytes and self.max_output_total_bytes < self.max_output_bytes:
            raise ConfigError(
                "--max-output-total-bytes must be 0 (no limit) or at least --max-output-bytes"
            )
        if self.max_api_connections < 1:
            raise ConfigError("--max-api-connections must be at least 1")
        for name in ("api_header_timeout", "api_keepalive_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be more than 0 seconds")
        if self.max_rooms_per_conn < 1:
            raise ConfigError("--max-rooms-per-conn must be at least 1")
        for name in (
            "max_connections",
            "max_connections_per_ip",
            "max_connects_per_second",
            "max_connects_per_second_per_ip",
            "max_client_messages_per_second",
            "max_client_frames_per_second",
            "max_client_bytes_per_second",
            "max_output_total_bytes",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be 0 (no limit) or more")
        if self.token_secret and self.token_public_key:
            raise ConfigError("give --token-secret or --token-public-key, not both")
        if self.require_token and not (self.token_secret or self.token_public_key):
            raise ConfigError("--require-token needs --token-secret or --token-public-key")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in ("text", "json"):
            raise ConfigError("--log-format must be text or json")
        if not self.broker.startswith(BROKER_SCHEMES):
            raise ConfigError(
                f"--broker {self.broker!r} is not supported: use memory://, "
                "redis://HOST:PORT/DB (rediss:// for TLS, unix:///path for a socket) or "
                "redis+cluster://HOST:PORT,HOST:PORT (rediss+cluster:// for TLS)"
            )
        if self.redis_cluster:
            try:
                parse_cluster_url(self.broker)
            except ValueError as exc:
                raise ConfigError(f"--broker {self.broker!r}: {exc}") from None
            if "{" in self.prefix or "}" in self.prefix:
                raise ConfigError("--prefix may not hold { or } with a Redis Cluster broker")
        for name in ("node_ttl", "control_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be more than 0 seconds")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ConfigError("--prefix must be a non-empty string without spaces")
        if self.node_id and not self.node_id.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("--node-id may hold letters, digits, - and _ only")

    @property
    def api_keys(self) -> tuple[str, ...]:
        return tuple(key.strip() for key in self.api_key.split(",") if key.strip())

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.allowed_origins.split(",") if o.strip())

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
            conformance_echo=self.conformance_echo,
            compression=not self.no_compression,
        )


LOG_LEVELS = ("debug", "info", "warning", "error")
BROKER_SCHEMES = ("memory://", "redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as the command line shows it. A ``flag`` takes no value."""

    name: str
    parse: Callable[[str], Any]
    metavar: str
    help: str
    flag_only: bool = False

    @property
    def flag(self) -> str:
        return "--" + _flag(self.name)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _flag(name: str) -> str:
    return name.replace("_", "-")


def parse_bool(text: str) -> bool:
    """An environment variable's yes or no: 1/true/yes/on or 0/false/no/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a yes or no: {text!r}")


def parse_workers(text: str) -> int:
    """A number of processes, or ``auto`` (0: one per CPU)."""
    value = text.strip().lower()
    if value == "auto":
        return 0
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"not auto or a number: {text!r}") from None
    if count < 1:
        raise ValueError(f"not auto or a number of processes, 1 or more: {text!r}")
    return count


def parse_size(text: str) -> int:
    """Bytes, with an optional K/KiB or M/MiB suffix: ``4096``, ``64K``, ``4MiB``."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if value.endswith("K"):
        scale, value = KIB, value[:-1]
    elif value.endswith("M"):
        scale, value = MIB, value[:-1]
    try:
        return int(value) * scale
    except ValueError:
        raise ValueError(f"not a size in bytes: {text!r}") from None


OPTIONS: tuple[Option, ...] = (
    Option("ws_host", str, "HOST", "address the WebSocket gateway listens on"),
    Option(
        "ws_port", int, "PORT", "port of the gateway; clients connect to ws://HOST:PORT/connect"
    ),
    Option("api_host", str, "HOST", "address the logic HTTP API listens on (keep it private)"),
    Option("api_port", int, "PORT", "port of the logic HTTP API"),
    Option(
        "workers",
        parse_workers,
        "N",
        "gateway processes sharing the WebSocket port (serve and gateway; auto: one per "
        "CPU). More than 1 runs a supervisor that restarts a worker that dies; they share "
        "--broker, or a private redis-server it starts when none is given (see "
        "docs/scaling.md)",
    ),
    Option(
        "reuse_port",
        parse_bool,
        "",
        "listen with SO_REUSEPORT, so that several gateways share the WebSocket port "
        "(--workers sets it)",
        flag_only=True,
    ),
    Option(
        "broker",
        str,
        "URL",
        "message broker: memory:// keeps everything in this process; redis://HOST:PORT/DB "
        "joins the cluster that shares that Redis (or Valkey); "
        "redis+cluster://HOST:PORT,HOST:PORT spreads topics over the shards of a "
        "Redis Cluster (Redis 7 or later, sharded pub/sub; rediss+cluster:// for TLS, "
        "?ssl_ca_certs=PATH for a private CA)",
    ),
    Option("prefix", str, "TEXT", "prefix of every Redis key and channel; one per cluster"),
    Option("node_id", str, "ID", "this node's name in the cluster (default: random)"),
    Option(
        "node_ttl",
        float,
        "SECONDS",
        "a node that stops refreshing its Redis entries (killed) is forgotten after this, "
        "and the wsIds it held stop resolving",
    ),
    Option(
        "control_timeout",
        float,
        "SECONDS",
        "time a logic node waits for the gateway holding a wsId to answer a join or leave",
    ),
    Option(
        "history_size",
        int,
        "N",
        "pushes each stream (all, a room, a user) keeps for clients that resume; "
        "0 turns history, positions and recovery off (see docs/recovery.md)",
    ),
    Option(
        "history_ttl",
        float,
        "SECONDS",
        "how long a stream keeps each push; a client away longer resumes without "
        "recovery (and is told so)",
    ),
    Option(
        "session_ttl",
        float,
        "SECONDS",
        "how long a session (wsId, rooms, user) waits for its client to resume after "
        "its connection ends; 0: a connection's end is its session's end",
    ),
    Option(
        "history_max_bytes",
        parse_size,
        "BYTES",
        "memory the history of all streams together may take with --broker memory:// "
        "(with Redis, history is in Redis); past it the oldest pushes go first, and a "
        "client that missed them is told it was not recovered (0: no limit)",
    ),
    Option("heartbeat", float, "SECONDS", "PING interval announced in the welcome frame"),
    Option(
        "idle_timeout",
        float,
        "SECONDS",
        "close (1011) a connection that sent nothing, not even a pong, for this long; "
        "a silent connection is sent a protocol ping half-way",
    ),
    Option(
        "handshake_timeout",
        float,
        "SECONDS",
        "time a new TCP connection has to complete the WebSocket handshake; in a "
        "cluster, also the longest a welcome waits for the wsId to be announced",
    ),
    Option(
        "close_timeout",
        float,
        "SECONDS",
        "time a client has to answer a close frame before its TCP connection is dropped",
    ),
    Option(
        "shutdown_timeout",
        float,
        "SECONDS",
        "on SIGTERM/SIGINT, after the drain, time to let connections close and output drain",
    ),
    Option(
        "drain_seconds",
        float,
        "SECONDS",
        "on SIGTERM/SIGINT, report not ready and close the connections spread over this "
        "long with 1012 (service restart), so that clients resume elsewhere a few at a time",
    ),
    Option(
        "max_message_bytes",
        parse_size,
        "BYTES",
        "largest client message; a larger one closes the connection with 1009",
    ),
    Option("max_body_bytes", parse_size, "BYTES", "largest logic API request body; more is 413"),
    Option(
        "max_output_bytes",
        parse_size,
        "BYTES",
        "bytes held unsent for one client beyond the kernel's buffers; a client that "
        "reads too slowly to stay under it is closed with 1008, the others never wait",
    ),
    Option(
        "max_output_total_bytes",
        parse_size,
        "BYTES",
        "bytes held unsent for all clients together; past it, the clients holding the "
        "most are closed with 1008 until the rest fits (0: no limit)",
    ),
    Option("max_rooms_per_conn", int, "N", "rooms one connection may be in at once; more is 409"),
    Option(
        "max_connections",
        int,
        "N",
        "open connections in all; one more is refused with 503 (0: the open-file limit, "
        "raised to its maximum at start, less 100 kept for the API and the broker)",
    ),
    Option(
        "max_connections_per_ip",
        int,
        "N",
        "open connections from one client address; one more is refused (0: no limit)",
    ),
    Option(
        "max_connects_per_second",
        float,
        "RATE",
        "new connections accepted per second, in bursts of up to one second's worth (0: no limit)",
    ),
    Option(
        "max_connects_per_second_per_ip",
        float,
        "RATE",
        "new connections accepted per second from one client address (an IPv6 /64), "
        "checked before --max-connects-per-second, so that one address cannot take it "
        "all (0: a quarter of --max-connects-per-second, at least 1)",
    ),
    Option(
        "max_client_messages_per_second",
        int,
        "N",
        "messages one client may send per second; more closes it with 1008 (0: no limit)",
    ),
    Option(
        "max_client_frames_per_second",
        int,
        "N",
        "WebSocket frames of any kind (ping, pong, continuation, data) one client may "
        "send per second, in bursts of up to one second's worth; more closes it with "
        "1008 (0: no limit)",
    ),
    Option(
        "max_client_bytes_per_second",
        parse_size,
        "BYTES",
        "bytes one client may send per second (a burst may always hold one message of "
        "--max-message-bytes); more closes it with 1008 (0: no limit)",
    ),
    Option(
        "max_handshake_bytes",
        parse_size,
        "BYTES",
        "largest WebSocket handshake request, request line and headers together; a "
        "larger one is answered 431",
    ),
    Option(
        "max_api_connections",
        int,
        "N",
        "open connections to the logic API; one more is answered 503 and closed (the "
        "open-file reserve of 100 holds these and the broker's)",
    ),
    Option(
        "api_header_timeout",
        float,
        "SECONDS",
        "time a logic API connection has to send a whole request header, from its "
        "first byte or from connecting",
    ),
    Option(
        "api_keepalive_timeout",
        float,
        "SECONDS",
        "an idle keep-alive connection to the logic API is closed after this long",
    ),
    Option(
        "api_key",
        str,
        "KEYS",
        "API keys (comma-separated, for rotation); the logic API then requires "
        "Authorization: Bearer <key>",
    ),
    Option(
        "insecure",
        parse_bool,
        "",
        "allow the logic API on a non-loopback address without --api-key",
        flag_only=True,
    ),
    Option("token_secret", str, "SECRET", "verify connection tokens (JWT, HS256) with this secret"),
    Option(
        "token_public_key",
        str,
        "FILE",
        "verify connection tokens (JWT, RS256 or ES256) with the PEM public key in FILE",
    ),
    Option(
        "require_token",
        parse_bool,
        "",
        "refuse (401/403) WebSocket handshakes without a valid token",
        flag_only=True,
    ),
    Option(
        "token_audience",
        str,
        "AUD",
        'accept only connection tokens whose "aud" names AUD (default: "aud" not checked)',
    ),
    Option(
        "token_issuer",
        str,
        "ISS",
        'accept only connection tokens whose "iss" is ISS (default: "iss" not checked)',
    ),
    Option(
        "token_require_exp",
        parse_bool,
        "",
        'refuse connection tokens without an "exp" (by default a token without one never expires)',
        flag_only=True,
    ),
    Option(
        "allowed_origins",
        str,
        "ORIGINS",
        "browser Origins allowed to connect, comma-separated, or * for any; requests "
        "without an Origin header (programs) are always allowed",
    ),
    Option(
        "conformance_echo",
        parse_bool,
        "",
        "also serve ws://HOST:PORT/echo, which echoes every message (for protocol "
        "conformance tests such as Autobahn; not for production)",
        flag_only=True,
    ),
    Option(
        "no_compression",
        parse_bool,
        "",
        "decline permessage-deflate: send every frame uncompressed (by default a client "
        "that offers it, as browsers do, gets pushes over 128 bytes compressed, each "
        "compressed once per gateway)",
        flag_only=True,
    ),
    Option(
        "no_gc_freeze",
        parse_bool,
        "",
        "let full garbage collections walk every object again (by default, on uvloop, "
        "long-lived objects are frozen out of them, so that none stops the event loop "
        "for long; see docs/operations.md)",
        flag_only=True,
    ),
    Option(
        "no_metrics",
        parse_bool,
        "",
        "count nothing for GET /metrics, and do not serve it (to measure what metrics cost)",
        flag_only=True,
    ),
    Option(
        "metrics_address",
        str,
        "HOST:PORT",
        "also serve GET /metrics on this address, without an API key (a gateway-only "
        "node has no logic API to serve it on); keep it private. With --workers N: "
        "every worker's metrics, labelled by worker, on PORT (worker i on PORT+i)",
    ),
    Option("log_level", str.lower, "LEVEL", f"log level: {', '.join(LOG_LEVELS)}"),
    Option(
        "log_format",
        str.lower,
        "FORMAT",
        "text: a readable line per event; json: one JSON object per line (time, level, "
        "logger, message, and wsId, remote, code, room where there is one)",
    ),
)


def default_of(name: str) -> object:
    return Config.__dataclass_fields__[name].default


def from_sources(cli: Mapping[str, object], env: Mapping[str, str]) -> Config:
    """Build a Config from parsed command-line values (None when not given) and the
    environment. Raises ConfigError naming the variable or option at fault."""
    values: dict[str, object] = {}
    for option in OPTIONS:
        given = cli.get(option.name)
        if given is not None:
            values[option.name] = given
        elif option.env in env:
            try:
                values[option.name] = option.parse(env[option.env])
            except ValueError as exc:
                raise ConfigError(f"{option.env}={env[option.env]!r}: {exc}") from None
    return Config(**values)  # type: ignore[arg-type]


# How --help groups the options (every option is in exactly one group).
OPTION_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("where to listen", ("ws_host", "ws_port", "api_host", "api_port")),
    ("processes", ("workers", "reuse_port")),
    (
        "cluster (see docs/cluster.md)",
        ("broker", "prefix", "node_id", "node_ttl", "control_timeout"),
    ),
    (
        "sessions and recovery (see docs/recovery.md)",
        ("history_size", "history_ttl", "session_ttl", "history_max_bytes"),
    ),
    (
        "heartbeat, timeouts and stopping",
        (
            "heartbeat",
            "idle_timeout",
            "handshake_timeout",
            "close_timeout",
            "drain_seconds",
            "shutdown_timeout",
        ),
    ),
    (
        "limits (see docs/security.md)",
        (
            "max_message_bytes",
            "max_body_bytes",
            "max_output_bytes",
            "max_output_total_bytes",
            "max_rooms_per_conn",
            "max_connections",
            "max_connections_per_ip",
            "max_connects_per_second",
            "max_connects_per_second_per_ip",
            "max_client_messages_per_second",
            "max_client_frames_per_second",
            "max_client_bytes_per_second",
            "max_handshake_bytes",
        ),
    ),
    (
        "the logic API's connections (see docs/security.md)",
        ("max_api_connections", "api_header_timeout", "api_keepalive_timeout"),
    ),
    ("compression and garbage collection", ("no_compression", "no_gc_freeze")),
    (
        "who may push and connect (see docs/security.md)",
        (
            "api_key",
            "insecure",
            "token_secret",
            "token_public_key",
            "require_token",
            "token_audience",
            "token_issuer",
            "token_require_exp",
            "allowed_origins",
        ),
    ),
    (
        "metrics and logs (see docs/operations.md)",
        ("no_metrics", "metrics_address", "log_level", "log_format"),
    ),
    ("testing", ("conformance_echo",)),
)
