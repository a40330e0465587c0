"""Shared fixtures: a running server on free loopback ports, an HTTP client, a
redis-server of its own or one for a whole module, a Redis Cluster for a whole
module, headless Chromium, and each fan-out path in turn."""

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import aiohttp
import pytest

from pushgate import speedups
from tests.browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, require_browser
from tests.helpers import FAST_TIMERS, Running, require_compiled, running_server
from tests.redis_cluster import RedisClusterServers, started_in_a_thread
from tests.redis_server import RedisServer


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    """A pushgate server (gateway and logic API) with short timers."""
    async with running_server(**FAST_TIMERS) as running:
        yield running


@pytest.fixture(params=["compiled", "python"])
def fanout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on each fan-out path (pushgate/speedups.py): the compiled one,
    where pushgate._speedups was built (see require_compiled), and pure Python.
    A module takes both with ``pytestmark = pytest.mark.usefixtures("fanout")``."""
    if request.param == "compiled":
        monkeypatch.setattr(speedups, "compiled", require_compiled())
    else:
        monkeypatch.setattr(speedups, "compiled", None)
    return str(request.param)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def redis() -> AsyncIterator[RedisServer]:
    """A redis-server of this test's own, on a free loopback port."""
    server = RedisServer()
    await server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """One redis-server for the module, on a free loopback port: each test keeps to
    a key prefix of its own, so no test sees another's keys.

    Started on an event loop of its own, in a thread, as :func:`redis_cluster` is.
    """
    server = RedisServer()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, server.start()).result()
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """One three-master Redis Cluster for the module (it takes about 2 s to form)."""
    yield from started_in_a_thread()


if TYPE_CHECKING:
    from playwright.async_api import Browser


@pytest.fixture
async def browser() -> AsyncIterator["Browser"]:
    """Headless Debian Chromium driven by Playwright; fails (never skips) when missing."""
    require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_MS
        )
        try:
            yield browser
        finally:
            await browser.close()
