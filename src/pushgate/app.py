"""The composition root: the one place that picks implementations and wires them.

:class:`PushServer` runs one node in one of three roles: ``serve`` (gateway and
logic API), ``gateway`` (WebSocket clients only) or ``logic`` (HTTP API only).
"""

import asyncio
import logging
import os
import signal
import socket

from aiohttp import web

from pushgate import __version__, speedups
from pushgate.api import build_api, metrics_app
from pushgate.apisite import ConnectionGuard, GuardedSite
from pushgate.appgatekeeper import make_connect_hook, make_gatekeeper
from pushgate.appnode import make_node
from pushgate.config import Config
from pushgate.configchecks import console_gateway_address
from pushgate.console import show_gateway
from pushgate.errors import BrokerUnavailable, ConfigError, StartupError
from pushgate.gateway import Gateway
from pushgate.gcpolicy import FreezeSurvivors, runs_on_uvloop
from pushgate.metrics import LoopWatch, new_registries
from pushgate.openfiles import METRICS_CONNECTIONS, connection_cap, raise_open_file_limit
from pushgate.security import ApiKeys, is_loopback

ROLES = ("serve", "gateway", "logic")

log = logging.getLogger("pushgate")

HTTP_BACKLOG = 1024


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
