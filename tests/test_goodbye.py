"""A client that closes with 1000 has said goodbye (issue 22, part 2): its session
ends at once, not --session-ttl later. Its presence leave and its session_ended
("closed") come while the TTL (here 60 s) is far off, and a resume of it is a new
session. A client that goes away otherwise (1001, a drop) keeps its session: the
tests that resume after 1001 or a cut (test_promises_resume.py and others) hold that.
"""

import asyncio
import json

from websockets.asyncio.client import connect

from pushgate.wire import CLOSE_NORMAL
from tests.helpers import UNIT, running_server
from tests.test_subscriptions import Client, client
from tests.test_webhook_events import Receiver, named, receiver, settings, url

__all__ = ["receiver"]  # the fixture, used by name

LONG_TTL = 60.0  # far longer than the test waits: an end seen is an end at once
PRESENCE = "chat=public+presence+webhook"


async def test_a_goodbye_ends_the_session_its_presence_and_tells_the_back_end_at_once(
    receiver: Receiver,
) -> None:
    async with running_server(
        **settings(receiver, session_ttl=LONG_TTL, namespaces=PRESENCE)
    ) as server:
        async with client(url(server.ws_url, "bob")) as bob:
            await bob.op("subscribe", "chat:1")
            async with connect(url(server.ws_url, "ann"), open_timeout=5 * UNIT) as ws:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))["data"]
                await Client(ws, welcome).op("subscribe", "chat:1")
                await ws.close(CLOSE_NORMAL, "bye")
            while (event := (await bob.next())["data"])["event"] != "leave":
                assert event["event"] == "join"  # Ann's, before she left
            assert event["user"] == "ann"
            events = await receiver.count("session_ended", 1)
        ended = named(events, "session_ended")
        assert ended == [
            {"name": "session_ended", "wsId": welcome["wsId"], "user": "ann", "reason": "closed"}
        ]
        # Resuming it finds no session: a new one, and the welcome says why.
        async with connect(f"{server.ws_url}?resume=1", open_timeout=5 * UNIT) as ws:
            resume = {"wsId": welcome["wsId"], "session": welcome["session"], "since": {}}
            await ws.send(json.dumps({"type": 0, "data": resume}))
            again = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))["data"]
        assert again.get("resumed") is not True
        assert again["wsId"] != welcome["wsId"]
