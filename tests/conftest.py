"""Shared fixtures: a running server on free loopback ports, an HTTP client, a
redis-server of its own, and headless Chromium."""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, require_browser
from tests.helpers import FAST_TIMERS, Running, running_server
from tests.redis_server import RedisServer


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    """A pushgate server (gateway and logic API) with short timers."""
    async with running_server(**FAST_TIMERS) as running:
        yield running


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
