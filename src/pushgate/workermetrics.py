"""The supervisor's ``GET /metrics``: every gateway worker's metrics in one scrape.

With ``--workers N --metrics-address HOST:PORT``, gateway worker *i* serves its own
metrics on ``PORT+i`` (and ``serve``'s logic process on ``PORT+N+1``), and the
supervisor serves, on ``PORT``, all of them merged with a ``worker`` label
(:mod:`pushgate.metricsmerge`), read from the children at each scrape.
"""

import asyncio
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web

from pushgate.metricsmerge import merge_expositions

SCRAPE_TIMEOUT = 2.0  # per worker; one that does not answer in time is reported down


class WorkerMetrics:
    """Serves the merged metrics of the workers ``urls()`` names (read at each scrape:
    a restarted worker may have moved)."""

    def __init__(self, urls: Callable[[], Mapping[str, str | None]]) -> None:
        self._urls = urls
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _metrics(self, request: web.Request) -> web.Response:
        urls = self._urls()
        texts = await asyncio.gather(*(self._read(url) for url in urls.values()))
        body = merge_expositions(dict(zip(urls, texts, strict=True)))
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _read(self, url: str | None) -> str | None:
        if url is None or self._http is None:
            return None
        try:
            async with self._http.get(url) as response:
                if response.status != 200:
                    return None
                return await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
