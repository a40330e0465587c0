"""Shared fixtures: a running server on free loopback ports, and an HTTP client."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.helpers import FAST_TIMERS, Running, running_server


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    """A pushgate server (gateway and logic API) with short timers."""
    async with running_server(**FAST_TIMERS) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
