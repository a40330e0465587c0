"""examples/flask/app.py, run as it is: its page in headless Chromium connects to
pushgate with the token the app mints, and each of its buttons makes the app push
(to the user, to the token's room, to all) through SyncPushAPI; what arrives is
what the page shows."""

import threading
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
from werkzeug.serving import BaseWSGIServer, make_server

from examples.flask.app import create_app
from pushgate.syncpushapi import SyncPushAPI
from tests.browser import WAIT_MS
from tests.helpers import LOOPBACK, Running, running_server

if TYPE_CHECKING:
    from playwright.async_api import Browser

SECRET = "flask-example-secret-0123456789abcdef"


@pytest.fixture
async def pushgate() -> AsyncIterator[Running]:
    async with running_server(token_secret=SECRET, require_token=True) as server:
        yield server


@pytest.fixture
def flask_app(pushgate: Running) -> Iterator[str]:
    """The example app on a free port, in a thread (Flask's own server), pointed at
    this test's pushgate."""
    api = SyncPushAPI(pushgate.api_url)
    app = create_app(SECRET, api, gateway_url=pushgate.ws_url)
    server: BaseWSGIServer = make_server(LOOPBACK, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        api.close()


async def test_the_flask_examples_page_connects_and_hears_its_pushes(
    browser: "Browser", flask_app: str
) -> None:
    page = await browser.new_page()
    await page.goto(f"{flask_app}/?user=ann", timeout=WAIT_MS)
    await page.wait_for_function(
        "document.getElementById('state').textContent.startsWith('connected as')",
        timeout=WAIT_MS,
    )
    for button, seen in (("me", 1), ("news", 2), ("all", 3)):
        await page.click(f"#{button}")
        await page.wait_for_function(
            f"document.querySelectorAll('#log li').length === {seen}", timeout=WAIT_MS
        )
    items = await page.eval_on_selector_all("#log li", "items => items.map(i => i.textContent)")
    assert items == [
        """ann: {"from":"ann","text":"ann pressed 'me'"}""",
        """news: {"from":"ann","text":"ann pressed 'news'"}""",
        """all: {"from":"ann","text":"ann pressed 'all'"}""",
    ]
