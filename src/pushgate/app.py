"""The composition root: the one place that picks implementations and wires them.

:class:`PushServer` runs the gateway and the logic API of one process on one node.
"""

import asyncio
import logging
import os
import signal
import socket

from aiohttp import web

from pushgate import __version__
from pushgate.api import build_api
from pushgate.broker.base import Broker
from pushgate.broker.memory import MemoryBroker
from pushgate.config import Config
from pushgate.errors import StartupError
from pushgate.gateway import Gateway
from pushgate.hub import Hub
from pushgate.node import Node

log = logging.getLogger("pushgate")

HTTP_BACKLOG = 1024


def make_broker(url: str) -> Broker:
    """The broker named by a URL (``memory://``)."""
    if url.startswith("memory://"):
        return MemoryBroker()
    raise StartupError(f"unsupported broker URL {url!r}")


class PushServer:
    """Gateway and logic API in one process. ``start()``, then ``stop()``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        hub = Hub(max_rooms_per_conn=config.max_rooms_per_conn)
        self.node = Node(hub, make_broker(config.broker))
        self.gateway = Gateway(self.node, config.connection_settings())
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    async def start(self) -> None:
        """Start the node and both servers. Raises StartupError with a one-line reason."""
        config = self.config
        await self.node.start()
        try:
            await self.gateway.start(config.ws_host, config.ws_port)
        except OSError as exc:
            await self.node.close()
            raise _listen_error("gateway", config.ws_host, config.ws_port, exc) from None
        debug = logging.getLogger("pushgate.api").isEnabledFor(logging.DEBUG)
        self._runner = web.AppRunner(
            build_api(self.node, max_body_bytes=config.max_body_bytes),
            handle_signals=False,
            access_log=logging.getLogger("pushgate.api.access") if debug else None,
        )
        await self._runner.setup()
        self._site = web.TCPSite(
            self._runner, config.api_host, config.api_port, backlog=HTTP_BACKLOG, reuse_address=True
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

    async def stop(self) -> None:
        """Graceful stop: stop accepting HTTP, close every WebSocket with 1001 and
        let output drain (up to ``shutdown_timeout``), then close the API and broker."""
        if self._site is not None:
            await self._site.stop()
        await self.gateway.close(self.config.shutdown_timeout)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.node.close()


def _port_of(sockets: list[socket.socket]) -> int:
    for sock in sockets:
        return int(sock.getsockname()[1])
    raise RuntimeError("not listening")


def _listen_error(what: str, host: str, port: int, exc: OSError) -> StartupError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return StartupError(f"cannot listen on {host}:{port} for the {what}: {reason}")


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    server = PushServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    log.info(
        "pushgate %s ready: gateway ws://%s:%d/connect, logic API http://%s:%d, broker %s",
        __version__,
        config.ws_host,
        server.ws_port,
        config.api_host,
        server.api_port,
        config.broker,
    )
    await stop.wait()
    log.info("shutting down (up to %g s)", config.shutdown_timeout)
    await server.stop()
    log.info("stopped")


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    if stop.is_set():
        log.info("%s: already shutting down", sig.name)
        return
    log.info("%s received", sig.name)
    stop.set()
