"""The composition root: the one place that picks implementations and wires them.

:class:`PushServer` runs one node in one of three roles: ``serve`` (gateway and
logic API), ``gateway`` (WebSocket clients only) or ``logic`` (HTTP API only).
"""

import asyncio
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING

from aiohttp import web

from pushgate import __version__, speedups
from pushgate.api import build_api, metrics_app
from pushgate.apisite import ConnectionGuard, GuardedSite
from pushgate.broker.base import Broker
from pushgate.broker.memory import MemoryBroker, MemoryBus
from pushgate.config import Config
from pushgate.configchecks import console_gateway_address
from pushgate.connecthook import ConnectHook, HookSettings
from pushgate.console import show_gateway
from pushgate.directory import Directory, LocalDirectory
from pushgate.errors import BrokerUnavailable, ConfigError, StartupError
from pushgate.gatekeeper import Gatekeeper
from pushgate.gateway import Gateway
from pushgate.gcpolicy import FreezeSurvivors, runs_on_uvloop
from pushgate.hub import Hub
from pushgate.ids import RoomId
from pushgate.limits import ConnectionLimits
from pushgate.meters import Meters
from pushgate.metrics import LoopWatch, new_registries
from pushgate.namespaces import namespace_of
from pushgate.node import Node
from pushgate.openfiles import METRICS_CONNECTIONS, connection_cap, raise_open_file_limit
from pushgate.presence import PresenceStore
from pushgate.presencerooms import Reports
from pushgate.presencestore import MemoryPresence
from pushgate.security import ApiKeys, OriginPolicy, TokenChecks, TokenVerifier, is_loopback
from pushgate.sessions import MemorySessions, NoSessions, Sessions
from pushgate.webhooks.queue import WebhookQueue
from pushgate.webhooks.receivers import ROOM_EVENTS, SESSION_EVENTS, webhook_receivers

if TYPE_CHECKING:
    from pushgate.webhooks.service import Webhooks

ROLES = ("serve", "gateway", "logic")

log = logging.getLogger("pushgate")

HTTP_BACKLOG = 1024


def make_node(config: Config, *, has_gateway: bool) -> Node:
    """A node with the broker and directory the config names (imported lazily)."""
    hub = Hub(max_rooms_per_conn=config.max_rooms_per_conn)
    node_id = config.node_id or os.urandom(6).hex()
    broker: Broker
    directory: Directory
    sessions: Sessions = NoSessions()
    namespaces = config.namespace_list
    receivers = webhook_receivers(config)
    # Rooms whose events some receiver wants: all, or those of some namespaces.
    reports_all_rooms = any(r.events & ROOM_EVENTS and r.namespaces is None for r in receivers)
    reported_namespaces = frozenset(
        name for r in receivers if r.events & ROOM_EVENTS for name in r.namespaces or ()
    )
    reports_rooms = reports_all_rooms or bool(reported_namespaces)
    # Pusher apps with a receiver: their members' client events are reported.
    pusher_hooked = frozenset(
        name for r in receivers if r.pusher is not None for name in r.namespaces or ()
    )
    reports_sessions = any(receiver.events & SESSION_EVENTS for receiver in receivers)
    # Rooms with presence, and with webhooks the rooms and sessions, are kept there.
    pusher_apps = config.pusher_apps
    keeps_presence = (
        any(namespace.presence for namespace in namespaces)
        or bool(pusher_apps)  # presence- channels
        or reports_rooms
        or reports_sessions
    )
    presence: PresenceStore | None = None
    queue: WebhookQueue | None = None

    def has_presence(room: RoomId) -> bool:
        return namespaces.of(room).presence or pusher_apps.has_presence(room)

    def quiet_to_joiner(room: RoomId) -> bool:
        # Pusher's clients learn their own membership from their subscription's
        # answer; a member_added of their own would be counted twice.
        return pusher_apps.of_room(room) is not None

    if config.clustered:
        from pushgate.broker.redis import RedisBroker
        from pushgate.broker.redis_cluster import RedisClusterBroker
        from pushgate.broker.redis_directory import RedisDirectory
        from pushgate.broker.redis_sessions import RedisSessions

        kind = RedisClusterBroker if config.redis_cluster else RedisBroker
        redis_broker = kind(
            config.broker,
            prefix=config.prefix,
            node_id=node_id,
            history_size=config.history_size,
            history_ttl=config.history_ttl,
            session_ttl=config.session_ttl,
        )
        directory = RedisDirectory(
            redis_broker.client,
            # On a Redis Cluster the prefix is the hash tag: the directory's scripts
            # read several of its keys, which must share a slot.
            prefix=f"{{{config.prefix}}}" if config.redis_cluster else config.prefix,
            ttl=config.node_ttl,
            local_conns=hub.conn_ids,
            transactions=not config.redis_cluster,
        )
        broker = redis_broker
        if config.sessions:
            sessions = RedisSessions(
                redis_broker.client, prefix=config.prefix, ttl=config.session_ttl
            )
        if keeps_presence:
            from pushgate.broker.redis_presence import RedisPresence

            presence = RedisPresence(
                redis_broker,
                ttl=sessions.ttl,
                announces=has_presence,
                quiet_to_joiner=quiet_to_joiner,
            )
        if receivers:
            from pushgate.webhooks.redisqueue import RedisWebhookQueue

            queue = RedisWebhookQueue(redis_broker)
    else:
        bus = MemoryBus(
            history_size=config.history_size,
            history_ttl=config.history_ttl,
            session_ttl=config.session_ttl,
            history_max_bytes=config.history_max_bytes,
        )
        broker, directory = MemoryBroker(bus), LocalDirectory()
        if config.sessions:
            sessions = MemorySessions(config.session_ttl)
        if keeps_presence:
            presence = MemoryPresence(
                broker, sessions.ttl, announces=has_presence, quiet_to_joiner=quiet_to_joiner
            )
        if receivers:
            from pushgate.webhooks.memqueue import memory_queue

            queue = memory_queue()
    webhooks: Webhooks | None = None
    reports: Reports | None = None
    if queue is not None:
        from pushgate.webhooks import service

        webhooks = service.Webhooks(
            queue,
            receivers,
            secret=config.webhook_secret.encode(),
            timeout=config.webhook_timeout,
            retry_for=config.webhook_retry_for,
            holder=node_id,
        )
        reports = Reports(
            emit=webhooks.emit,
            rooms=lambda room: reports_all_rooms or namespace_of(room) in reported_namespaces,
            sessions=reports_sessions,
            messages=lambda room: (
                namespaces.of(room).webhook or namespace_of(room) in pusher_hooked
            ),
        )
    return Node(
        hub,
        broker,
        directory=directory,
        node_id=node_id,
        has_gateway=has_gateway,
        control_timeout=config.control_timeout,
        sessions=sessions,
        presence=presence,
        has_presence=has_presence,
        reports=reports,
        webhooks=webhooks,
    )


def make_gatekeeper(config: Config) -> Gatekeeper:
    """The handshake checks the config asks for. Raises StartupError when the token
    public key cannot be read."""
    tokens = None
    checks = TokenChecks(
        audience=config.token_audience or None,
        issuer=config.token_issuer or None,
        require_exp=config.token_require_exp,
    )
    if config.token_secret:
        tokens = TokenVerifier(secret=config.token_secret, checks=checks)
    elif config.token_public_key:
        try:
            with open(config.token_public_key) as key_file:
                tokens = TokenVerifier(public_key=key_file.read(), checks=checks)
        except OSError as exc:
            raise StartupError(
                f"cannot read --token-public-key {config.token_public_key}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise StartupError(f"--token-public-key {config.token_public_key}: {exc}") from None
    return Gatekeeper(
        origins=OriginPolicy(config.origins),
        tokens=tokens,
        require_token=config.require_token,
        limits=ConnectionLimits(
            connection_cap(config),
            config.max_connections_per_ip,
            config.max_connects_per_second,
            config.max_connects_per_second_per_ip,
        ),
        max_rooms_per_conn=config.max_rooms_per_conn,
    )


def make_connect_hook(config: Config, meters: Meters) -> ConnectHook | None:
    """--connect-hook: the back end decides on handshakes without a token (None:
    no hook). Warns when any page may open connections: a hook that authenticates
    by cookie would then let any site act as its visitors (docs/connect-hook.md)."""
    if not config.connect_hook:
        return None
    if "*" in config.origins:
        log.warning(
            "--connect-hook with --allowed-origins *: a page of any site can open a "
            "connection with its visitors' cookies; set --allowed-origins, or have the "
            "hook check the Origin header"
        )
    settings = HookSettings(
        config.connect_hook,
        timeout=config.connect_hook_timeout,
        allow_on_failure=config.connect_hook_failure == "allow",
        max_calls=config.connect_hook_max_calls,
        max_rooms=config.max_rooms_per_conn,
    )
    return ConnectHook(settings, meters)


class PushServer:
    """One node in a role (see ROLES). ``start()``, then ``stop()``."""

    def __init__(self, config: Config, role: str = "serve") -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.config = config
        self.role = role
        if role != "gateway" and not config.api_keys and not is_loopback(config.api_host):
            if not config.insecure:
                raise ConfigError(
                    f"refusing to serve the logic API on {config.api_host} without --api-key: "
                    "anyone who can reach it could push to every client "
                    "(set --api-key, or --insecure if that is what you mean)"
                )
            log.warning("the logic API on %s has no API key (--insecure)", config.api_host)
        self._tls = config.tls_context()  # before anything starts: a bad pair stops here
        self.node = make_node(config, has_gateway=role != "logic")
        self.gateway = Gateway(
            self.node,
            config.connection_settings(),
            make_gatekeeper(config),
            count_writes=not config.no_metrics,
            connect_hook=None if role == "logic" else make_connect_hook(config, self.node.meters),
        )
        self.metrics = None if config.no_metrics else new_registries(self.node)
        if self.metrics is not None and config.webhook:
            from pushgate.metrics import WebhookCollector
            from pushgate.webhooks.service import Webhooks

            assert isinstance(self.node.webhooks, Webhooks)
            self.metrics.node.register(WebhookCollector(self.node.webhooks.stats))
        self._loop_watch = None if config.no_metrics else LoopWatch(self.node.meters)
        self._gc = FreezeSurvivors()
        self._runner: web.AppRunner | None = None
        self._site: GuardedSite | None = None
        self._metrics_runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Start the node and the role's servers. Raises StartupError with a one-line
        reason. A broker that is not reachable yet is no error: the node serves,
        answers 503 where it needs the broker, and catches up once it is back."""
        config = self.config
        try:
            await self.node.start()
        except BrokerUnavailable as exc:
            log.warning("%s; starting anyway, not ready until the broker answers", exc)
        if self.role != "logic":
            try:
                await self.gateway.start(
                    config.ws_host, config.ws_port, reuse_port=config.reuse_port, tls=self._tls
                )
            except OSError as exc:
                await self.node.close()
                raise _listen_error("gateway", config.ws_host, config.ws_port, exc) from None
        if self.role != "gateway":
            await self._start_api()
        if self.metrics is not None and config.metrics_endpoint is not None:
            await self._start_metrics(*config.metrics_endpoint)
        if self._loop_watch is not None:
            self._loop_watch.start()
        if not config.no_gc_freeze and runs_on_uvloop(asyncio.get_running_loop()):
            self._gc.start()

    async def _start_metrics(self, host: str, port: int) -> None:
        """GET /metrics alone, on --metrics-address (no API key: keep it private),
        with the logic API's timeouts and METRICS_CONNECTIONS at most."""
        assert self.metrics is not None
        config = self.config
        self._metrics_runner = web.AppRunner(
            metrics_app(self.metrics),
            handle_signals=False,
            access_log=None,
            keepalive_timeout=config.api_keepalive_timeout,
        )
        await self._metrics_runner.setup()
        guard = ConnectionGuard(
            METRICS_CONNECTIONS, config.api_header_timeout, what="metrics endpoint"
        )
        site = GuardedSite(self._metrics_runner, host, port, guard=guard)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise _listen_error("metrics", host, port, exc) from None

    @property
    def metrics_port(self) -> int:
        if self._metrics_runner is None or not self._metrics_runner.addresses:
            raise RuntimeError("not serving metrics on their own address")
        return int(self._metrics_runner.addresses[0][1])

    async def _start_api(self) -> None:
        config = self.config
        debug = logging.getLogger("pushgate.api").isEnabledFor(logging.DEBUG)
        api = build_api(
            self.node,
            max_body_bytes=config.max_body_bytes,
            api_keys=ApiKeys(config.api_keys),
            metrics=self.metrics,
            api_host=config.api_host,
            pusher_apps=config.pusher_apps,
        )
        told = console_gateway_address(config.console_gateway)
        if told is not None:  # as given (serve --workers gives its logic child its own)
            show_gateway(api, lambda: told)
        elif self.role == "serve":  # the console page connects to this process's gateway
            show_gateway(api, lambda: (config.ws_host, self.ws_port))
        self._runner = web.AppRunner(
            api,
            handle_signals=False,
            access_log=logging.getLogger("pushgate.api.access") if debug else None,
            keepalive_timeout=config.api_keepalive_timeout,
        )
        await self._runner.setup()
        guard = ConnectionGuard(
            config.max_api_connections,
            config.api_header_timeout,
            what="API",
            tripped=self.node.meters.limits,
        )
        self._site = GuardedSite(
            self._runner,
            config.api_host,
            config.api_port,
            guard=guard,
            backlog=HTTP_BACKLOG,
            tls=self._tls,
        )
        try:
            await self._site.start()
        except OSError as exc:
            await self.gateway.close(0)
            await self._runner.cleanup()
            await self.node.close()
            raise _listen_error("logic API", config.api_host, config.api_port, exc) from None

    @property
    def ws_port(self) -> int:
        return _port_of(self.gateway.sockets)

    @property
    def api_port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("not listening")
        return int(self._runner.addresses[0][1])

    async def stop(self, *, drain: bool = False) -> None:
        """Graceful stop: stop accepting HTTP, close every WebSocket and let output
        drain (up to ``shutdown_timeout``), then close the API and broker.

        ``drain`` (a signal): first report not ready, and close the WebSockets spread
        over ``drain_seconds`` with 1012, which tells clients to resume elsewhere;
        otherwise they are closed at once with 1001."""
        self.node.draining = True
        if self._site is not None:
            await self._site.stop()
        if drain:
            await self.gateway.drain(self.config.drain_seconds)
        await self.gateway.close(self.config.shutdown_timeout)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        if self._loop_watch is not None:
            await self._loop_watch.stop()
        self._gc.stop()
        await self.node.close()

    def describe(self) -> str:
        """Where this node listens, for the ready line."""
        parts = []
        if self.role != "logic":
            scheme = "wss" if self._tls is not None else "ws"
            parts.append(f"gateway {scheme}://{self.config.ws_host}:{self.ws_port}/connect")
        if self.role != "gateway":
            scheme = "https" if self._tls is not None else "http"
            parts.append(f"logic API {scheme}://{self.config.api_host}:{self.api_port}")
        if self._metrics_runner is not None:
            host = self.config.metrics_address.rpartition(":")[0]
            parts.append(f"metrics http://{host}:{self.metrics_port}/metrics")
        broker = self.config.broker.rsplit("@", 1)[-1]  # never log a password
        parts.append(f"node {self.node.node_id}, broker {broker}")
        if self.role != "logic":  # which path fan-out takes (speedups.py)
            parts.append(f"fan-out {speedups.describe()}")
        return ", ".join(parts)


def _port_of(sockets: list[socket.socket]) -> int:
    for sock in sockets:
        return int(sock.getsockname()[1])
    raise RuntimeError("not listening")


def _listen_error(what: str, host: str, port: int, exc: OSError) -> StartupError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return StartupError(f"cannot listen on {host}:{port} for the {what}: {reason}")


async def serve(config: Config, role: str = "serve") -> None:
    """Run a node in ``role`` until SIGTERM or SIGINT, then stop gracefully."""
    raise_open_file_limit()
    server = PushServer(config, role)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    if server.node.ready:
        log.info("pushgate %s %s ready: %s", __version__, role, server.describe())
    else:  # it serves, answering 503 where it needs the broker, until Redis answers
        log.warning(
            "pushgate %s %s started, not ready: Redis unreachable; %s",
            __version__,
            role,
            server.describe(),
        )
    if role != "logic":
        log.info("accepting up to %d WebSocket connections", connection_cap(config))
    await stop.wait()
    log.info(
        "shutting down: draining connections over %g s, then up to %g s to close",
        config.drain_seconds,
        config.shutdown_timeout,
    )
    await server.stop(drain=True)
    log.info("stopped")


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    if stop.is_set():
        log.info("%s: already shutting down", sig.name)
        return
    log.info("%s received", sig.name)
    stop.set()
