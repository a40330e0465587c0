"""The WebSocket gateway: listens on ``ws://HOST:PORT/connect`` (and serves
Server-Sent Events on ``/events`` from the same port) and runs the connections'
timers.

Shutdown follows a fixed recipe: stop accepting; send every open connection a close
frame with 1001; wait up to ``shutdown_timeout`` for the clients to complete the
closing handshake (their queued output drains meanwhile); drop whatever is left.

A drain (on SIGTERM, before that recipe) stops accepting and closes the connections
with 1012 (service restart) a slice at a time over ``drain_seconds``, so that their
clients resume on the other gateways in a stream rather than in one stampede.
"""

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Protocol

from pushgate.backlog import OutputBudget
from pushgate.connecthook import ConnectHook
from pushgate.connection import WebSocketConnection
from pushgate.connsettings import ConnectionSettings
from pushgate.gatekeeper import Gatekeeper
from pushgate.gatewayhttp import GatewayRoutes
from pushgate.node import Node
from pushgate.outbox import ConnectionRegistry, Outbox
from pushgate.wire import CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART

log = logging.getLogger("pushgate.gateway")

# The sweeper runs this many times per shortest timeout; each time it checks the
# connections that have something due (timerwheel.py).
SWEEPS_PER_TIMEOUT = 4
MAX_SWEEP_INTERVAL = 1.0
# Connections checked in one turn of the event loop. A sweep that pings 20,000 silent
# clients at once stopped the loop for 100-200 ms; in slices, pushes go out between.
SWEEP_SLICE = 200
LISTEN_BACKLOG = 4096
# A drain closes a slice of the connections this often.
DRAIN_STEP = 0.05


class GatewayConnection(Protocol):
    """What the sweeper and a stop do with each connection, of either transport
    (connection.py's WebSocket, sseconnection.py's event stream)."""

    sweep_tick: int | None  # its bucket in the sweeper's wheel

    def check_timers(self, now: float) -> float:
        """Act on whatever is due at ``now``; return when it next has something due."""
        ...

    def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...


def sweep_interval(settings: ConnectionSettings) -> float:
    """How often the sweeper runs: a few times per shortest timeout, at most a second
    apart."""
    shortest = min(
        settings.ping_after,
        settings.idle_timeout,
        settings.handshake_timeout,
        settings.close_timeout,
    )
    return min(MAX_SWEEP_INTERVAL, shortest / SWEEPS_PER_TIMEOUT)


class Gateway:
    """Accepts WebSocket clients and hands them to the node."""

    def __init__(
        self,
        node: Node,
        settings: ConnectionSettings,
        gatekeeper: Gatekeeper | None = None,
        *,
        count_writes: bool = True,
        connect_hook: ConnectHook | None = None,
    ) -> None:
        self._node = node
        self._connect_hook = connect_hook  # asked about handshakes without a token
        self._count_writes = count_writes  # writes and delivery latency, for /metrics
        self._settings = settings
        self._gatekeeper = gatekeeper or Gatekeeper()
        self._registry: ConnectionRegistry[GatewayConnection] = ConnectionRegistry(
            sweep_interval(settings)
        )
        self.output_budget = OutputBudget(settings.max_output_total_bytes)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(
        self,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Listen (sharing the port with other processes when ``reuse_port``); raises
        OSError when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        meters = self._node.meters if self._count_writes else None
        outbox = Outbox(loop, meters, self.output_budget)
        settings, node, registry = self._settings, self._node, self._registry
        routes = GatewayRoutes(
            node,
            self._gatekeeper,
            echo=settings.conformance_echo,
            namespaces=settings.namespaces,
            connect_hook=self._connect_hook,
            pusher_apps=settings.pusher_apps,
        )
        self._server = await loop.create_server(
            lambda: WebSocketConnection(node, settings, outbox, registry, routes),
            host,
            port,
            backlog=LISTEN_BACKLOG,
            reuse_address=True,
            reuse_port=reuse_port or None,
            ssl=tls,
            # A TLS handshake is part of the connection's: --handshake-timeout bounds it.
            ssl_handshake_timeout=self._settings.handshake_timeout if tls else None,
        )
        self._sweeper = asyncio.create_task(self._sweep(), name="pushgate-sweeper")

    @property
    def sockets(self) -> list[socket.socket]:
        return [] if self._server is None else list(self._server.sockets)

    async def wait_empty(self) -> None:
        """Return once no connection is left, open, opening or closing."""
        await self._registry.empty.wait()

    async def drain(self, seconds: float) -> None:
        """Stop accepting, and close every connection with 1012, spread over ``seconds``."""
        if self._server is not None:
            self._server.close()
        connections = list(self._registry.connections)
        if not connections:
            return
        log.info("draining: closing %d connections with 1012 over %g s", len(connections), seconds)
        steps = max(1, int(seconds / DRAIN_STEP))
        per_step = -(-len(connections) // steps)  # ceiling division
        for start in range(0, len(connections), per_step):
            for conn in connections[start : start + per_step]:
                conn.close(CLOSE_SERVICE_RESTART, "service restart: resume elsewhere")
            if start + per_step < len(connections):
                await asyncio.sleep(DRAIN_STEP)

    async def close(self, grace_period: float) -> None:
        """Stop accepting, close every connection with 1001, wait up to ``grace_period`` seconds."""
        if self._server is not None:
            self._server.close()
        connections = list(self._registry.connections)
        if connections:
            log.info("closing %d connections with 1001", len(connections))
        for conn in connections:
            conn.close(CLOSE_GOING_AWAY, "server shutting down")
        try:
            # Not when nothing is left: wait_for with no time left times out at once.
            if not self._registry.empty.is_set():
                await asyncio.wait_for(self.wait_empty(), grace_period)
        except TimeoutError:
            left = list(self._registry.connections)
            log.warning(
                "%d connections did not close within %g s; dropping them", len(left), grace_period
            )
            for conn in left:
                conn.abort()
        self._gatekeeper.refusals.flush(asyncio.get_running_loop().time(), all_kinds=True)
        if self._connect_hook is not None:  # its calls went with their connections
            await self._connect_hook.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            await self._server.wait_closed()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        registry = self._registry
        live, wheel = registry.connections, registry.wheel
        while True:
            await asyncio.sleep(wheel.interval)
            self._gatekeeper.refusals.flush(loop.time())
            due = wheel.take_due(loop.time())
            for start in range(0, len(due), SWEEP_SLICE):
                if start:
                    await asyncio.sleep(0)  # let pushes through between slices
                now = loop.time()
                for conn in due[start : start + SWEEP_SLICE]:
                    if conn in live:  # not closed since the sweep began
                        wheel.schedule(conn, conn.check_timers(now))
