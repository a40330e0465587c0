"""Every setting of ``pushgate serve``, each declared once, as a field of ``Config``.

A field made by ``option(...)`` (or ``flag(...)`` for a yes or no) holds all there is
to know about its setting: its default, how its text is read, its metavar, its help
text, its --help group and the checks of its value. ``OPTIONS`` (what cli.py turns
into arguments, and what the environment variables are read from) is derived from
the fields, in the order they are declared, so a setting cannot be added without its
help, group and check. Checks that weigh several settings together are listed once,
in ``Config._between_settings``, and run after every setting's own checks.

The fields are declared over four classes, each a module and each over the one
before, in the order of the usage line: configserver.py (where to listen, processes,
cluster, sessions and recovery, timeouts), configlimits.py (limits, the logic API's
connections), configaccess.py (who may push and connect, webhooks, the connect hook),
then ``Config`` itself (testing, compression and GC, metrics and logs), with the
checks between settings and the values derived from them. configoptions.py declares
``option()``, ``flag()``, ``Option`` and ``Group``; all are importable from here.

Precedence: a command-line option, else the environment variable
``PUSHGATE_<NAME>``, else the default.
"""

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from pushgate.broker.urls import CLUSTER_SCHEMES
from pushgate.configaccess import AccessSettings
from pushgate.configchecks import (
    _specs,
    empty_or_host_port,
    host_port,
    one_of,
)
from pushgate.configoptions import (
    _OPTION,
    ENV_PREFIX,
    GATEWAY,
    LOG_LEVELS,
    LOGIC,
    ROLES,
    Group,
    Option,
    flag,
    option,
)
from pushgate.connsettings import ConnectionSettings
from pushgate.errors import ConfigError
from pushgate.limits import InputLimits
from pushgate.namespaces import Namespaces, parse_namespace
from pushgate.pusherapps import PusherApps, parse_apps
from pushgate.pushgateproto import RESUME_MAX_MESSAGE_BYTES

__all__ = [
    "ENV_PREFIX",
    "GATEWAY",
    "LOGIC",
    "LOG_LEVELS",
    "OPTIONS",
    "ROLES",
    "Config",
    "Group",
    "Option",
    "default_of",
    "flag",
    "from_sources",
    "option",
]


@dataclass(frozen=True, slots=True)
class Config(AccessSettings):
    """The settings of one pushgate process.

    Fields are declared in the order of the usage line (those of configserver.py,
    configlimits.py and configaccess.py, then these); --help shows them by group.
    """

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
    for declared in OPTIONS:
        given = cli.get(declared.name)
        if given is not None:
            values[declared.name] = given
        elif declared.env in env:
            try:
                values[declared.name] = declared.read(env[declared.env])
            except ValueError as exc:
                raise ConfigError(f"{declared.env}={env[declared.env]!r}: {exc}") from None
    try:
        return Config(**values)  # type: ignore[arg-type]
    except ConfigError as exc:
        if source and file:
            raise ConfigError(f"{source} (with the command line and environment): {exc}") from None
        raise
