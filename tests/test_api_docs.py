"""GET /docs on the logic API's port: a page that reads the server's own
/openapi.json and shows every operation it describes, with a filter; served without
the API key (it reveals nothing /openapi.json does not), under the console's
Content-Security-Policy."""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import pytest

from tests.browser import WAIT_MS
from tests.helpers import Running, running_server

if TYPE_CHECKING:
    from playwright.async_api import Browser

METHODS = ("get", "post", "put", "delete", "head")


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    async with running_server(api_key="a-key-of-the-operator-0123456789") as running:
        yield running


async def test_docs_is_served_without_a_key_under_the_policy(server: Running) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.api_url + "/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "/static/docs.js" in await response.text()


async def test_the_page_shows_every_operation_and_filters_them(
    browser: "Browser", server: Running
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.api_url + "/openapi.json") as response,
    ):
        spec = await response.json()
    operations = sum(1 for item in spec["paths"].values() for m in METHODS if m in item)
    page = await browser.new_page()
    await page.goto(server.api_url + "/docs", timeout=WAIT_MS)
    await page.wait_for_function("window.pushgateDocsReady !== undefined", timeout=WAIT_MS)
    assert await page.evaluate("window.pushgateDocsReady") == operations
    assert await page.locator("section.op").count() == operations
    await page.fill("#filter", "post /push/room")
    shown = page.locator("section.op:not(.hidden) h2")
    assert await shown.all_inner_texts() == ["POST /push/room"]
