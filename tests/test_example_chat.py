"""docs/chat.md, followed as written: ``pushgate serve --config
examples/chat/chat.toml`` (in a child process, on free ports, the back end's URL
given on the command line), the example back end (examples/chat/backend.py), and two
example clients (examples/chat/client.py) talking through it."""

import asyncio
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from examples.chat.backend import make_app
from examples.chat.client import SAID, chat_client, enter, listen
from tests.helpers import LOOPBACK, UNIT, server_process

CHAT = Path(__file__).parent.parent / "examples" / "chat"
TOKEN_SECRET = "the-chat-example-token-secret-32-bytes"
WEBHOOK_SECRET = "the-chat-example-webhook-secret-32-bytes"
GRANT_SECRET = tomllib.loads((CHAT / "chat.toml").read_text())["namespaces"]["chat"]["secret"]


class Lines:
    """What a client shows, with a wait for a line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._new = asyncio.Event()

    def show(self, line: str) -> None:
        self.lines.append(line)
        self._new.set()

    async def until(self, line: str) -> None:
        async with asyncio.timeout(10 * UNIT):
            while line not in self.lines:
                self._new.clear()
                await self._new.wait()


class Heard:
    """The webhook events the back end acted on, with a wait for one."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._new = asyncio.Event()

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._new.set()

    async def until(self, name: str) -> list[dict[str, Any]]:
        async with asyncio.timeout(10 * UNIT):
            while not any(event["name"] == name for event in self.events):
                self._new.clear()
                await self._new.wait()
        return self.events


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
async def backend(heard: Heard) -> AsyncIterator[str]:
    app = make_app(TOKEN_SECRET, GRANT_SECRET, WEBHOOK_SECRET, on_event=heard.on_event)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield f"http://{LOOPBACK}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_the_chat_of_docs_chat_md(backend: str, heard: Heard) -> None:
    env = {"PUSHGATE_TOKEN_SECRET": TOKEN_SECRET, "PUSHGATE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    args = ["--config", str(CHAT / "chat.toml"), "--webhook", backend + "/hooks"]
    async with server_process(*args, env=env) as server:
        ann_sees, bob_sees = Lines(), Lines()
        async with (
            chat_client(server.ws_url, backend, "ann", ann_sees.show) as ann,
            chat_client(server.ws_url, backend, "bob", bob_sees.show) as bob,
        ):
            await enter(ann, backend, "ann", "chat:lobby")
            await ann_sees.until("* ann is here")
            await enter(bob, backend, "bob", "chat:lobby")
            await ann_sees.until("* bob is here")
            listening = [
                asyncio.create_task(listen(c, s.show))
                for c, s in ((ann, ann_sees), (bob, bob_sees))
            ]
            await ann.publish("chat:lobby", "hello bob", tag=SAID)
            await bob_sees.until("<ann> hello bob")
            assert "<ann> hello bob" not in ann_sees.lines  # not sent back to its sender
            for task in listening:
                task.cancel()
        said = await heard.until("client_message")
    joined = [e["data"] for e in said if e["name"] == "member_joined"]
    assert joined == [
        {"room": "chat:lobby", "user": "ann", "info": {"name": "Ann"}},
        {"room": "chat:lobby", "user": "bob", "info": {"name": "Bob"}},
    ]
    (message,) = [e["data"] for e in said if e["name"] == "client_message"]
    assert message == {
        "room": "chat:lobby",
        "wsId": ann.ws_id,
        "user": "ann",
        "tag": SAID,
        "val": "hello bob",
    }
