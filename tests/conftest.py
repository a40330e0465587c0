"""Shared fixtures: a running server on free loopback ports, and an HTTP client."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

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
