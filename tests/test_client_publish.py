"""The Python client's publish (pushgate.client, docs/sdk.md, "Publishing"): a member's
message to its room reaches the other members as a Push with its ``sender``, the
sender itself only with ``echo``; a refusal raises SubscribeError with the server's
code; one with no reply raises NoReplyError and is never sent again. Real servers on
loopback; the server's replies are held back by a proxy to cut one off."""

import asyncio
import math
from typing import Any

import jwt
import pytest

from pushgate.client import (
    NoReplyError,
    Push,
    PushAPI,
    Sender,
    State,
    SubscribeError,
)
from pushgate.ids import RoomId
from pushgate.wire import encode_push
from pushgate.wireclient import parse_server_message
from pushgate.wireops import Operation, parse_operation
from tests.helpers import FAST_TIMERS, LOOPBACK, UNIT, running_server
from tests.test_client import StateLog, next_push
from tests.test_client_presence import HoldingProxy
from tests.test_client_subscriptions import client

SECRET = "a-client-publish-test-secret-of-32-bytes"
SETTINGS: dict[str, Any] = {
    **FAST_TIMERS,
    "namespaces": "chat=public+publish,lobby=public",
    "token_secret": SECRET,
}
# Sessions that outlive a cut, for the test that resumes.
KEPT: dict[str, Any] = {**SETTINGS, "session_ttl": 30.0}


def token(user: str) -> str:
    return jwt.encode({"sub": user}, SECRET, algorithm="HS256")


def is_publish(message: Any) -> bool:
    data = message.get("data")
    return message.get("type") == 0 and isinstance(data, dict) and data.get("op") == "publish"


def is_publish_reply(message: Any) -> bool:
    data = message.get("data")
    return isinstance(data, dict) and data.get("op") == "publish" and "ok" in data


# The wire, as a client reads it


def test_a_publish_and_the_push_it_makes_read_back_as_the_other_side_writes_them() -> None:
    """A publish the client encodes, the server parses back; the push the server
    encodes for it, the client reads with its sender (a malformed ``from``: none)."""
    for op in (
        Operation("publish", RoomId("chat:1"), 4, tag=7, data={"text": "hi"}),
        Operation("publish", RoomId("chat:1"), 5, tag=2, data=None, echo=True),
    ):
        assert parse_operation(op.as_message()["data"]) == op
    sent = encode_push(
        7, "hi", RoomId("chat:1"), exclude="w-1", sender={"wsId": "w-1", "user": "ann"}
    )
    push = parse_server_message(sent)
    assert push == Push(7, "hi", "chat:1", sender=Sender("w-1", "ann"))
    anonymous = encode_push(7, "hi", RoomId("chat:1"), sender={"wsId": "w-2"})
    assert parse_server_message(anonymous) == Push(7, "hi", "chat:1", sender=Sender("w-2"))
    assert parse_server_message(encode_push(7, "hi", RoomId("chat:1"))) == Push(7, "hi", "chat:1")
    malformed = b'{"type":7,"data":"hi","room":"chat:1","from":{"user":"ann"}}'
    assert parse_server_message(malformed) == Push(7, "hi", "chat:1")
    # Who said it is part of what was said.
    assert Push(7, "hi", "chat:1", sender=Sender("w-1")) != Push(7, "hi", "chat:1")


# Publishing


async def test_a_message_reaches_the_other_members_with_its_sender_and_itself_with_echo() -> None:
    """Ann (a token's user) publishes: Bob gets it with her wsId and user, she does not
    (the room's next push is the first she gets). Bob (anonymous) publishes with
    echo: both get it, with his wsId and no user."""
    async with (
        running_server(**SETTINGS) as server,
        PushAPI(server.api_url) as api,
        client(server.ws_url, token=token("ann")) as ann,
        client(server.ws_url) as bob,
    ):
        await ann.subscribe("chat:1")
        await bob.subscribe("chat:1")
        await ann.publish("chat:1", {"text": "hi"}, tag=7)
        said = await next_push(bob)
        assert said == Push(7, {"text": "hi"}, "chat:1", sender=Sender(ann.ws_id, "ann"))
        assert said.seq > 0  # in the room's stream, with its pushes

        assert (await api.push_room("chat:1", "from the back end", 3)).delivered == 2
        assert await next_push(ann) == Push(3, "from the back end", "chat:1")
        assert (await next_push(bob)).sender is None

        await bob.publish("chat:1", None, echo=True)  # null is data; the tag defaults to 2
        echoed = Push(2, None, "chat:1", sender=Sender(bob.ws_id, None))
        assert await next_push(bob) == echoed
        assert await next_push(ann) == echoed


async def test_a_refusal_raises_subscribe_error_with_the_servers_code() -> None:
    """Not a member: 403; a member of a namespace without +publish: 403; a bad tag:
    400. Data JSON cannot carry is refused before anything is sent. The connection
    stays open, and a good publish then goes through."""
    async with (
        running_server(**SETTINGS) as server,
        client(server.ws_url) as conn,
        client(server.ws_url) as other,
    ):

        async def refused(room: str, **options: Any) -> SubscribeError:
            with pytest.raises(SubscribeError) as info:
                await conn.publish(room, "x", **options)
            assert not isinstance(info.value, NoReplyError)
            assert not info.value.retryable
            return info.value

        stranger = await refused("chat:2")
        assert (stranger.op, stranger.room, stranger.code) == ("publish", "chat:2", 403)
        assert str(stranger) == f"publish chat:2: 403 {stranger.reason}"
        await conn.subscribe("lobby:1")
        assert (await refused("lobby:1")).code == 403  # lobby: no +publish
        await conn.subscribe("chat:2")
        assert (await refused("chat:2", tag=1)).code == 400
        with pytest.raises(ValueError, match="not JSON compliant"):
            await conn.publish("chat:2", math.nan)  # the server would close for it (1007)
        with pytest.raises(TypeError, match="not JSON serializable"):
            await conn.publish("chat:2", {1, 2})
        await other.subscribe("chat:2")
        await conn.publish("chat:2", "still here", tag=5)
        assert await next_push(other) == Push(5, "still here", "chat:2", sender=Sender(conn.ws_id))
        assert conn.state is State.OPEN


async def test_publishes_are_paced_under_the_servers_message_rate() -> None:
    """60 publishes at once, against the default 50 messages a second: none refused,
    and the other member gets them all, in the order they were called."""
    async with (
        running_server(**SETTINGS) as server,
        client(server.ws_url) as speaker,
        client(server.ws_url) as hearer,
    ):
        await speaker.subscribe("chat:3")
        await hearer.subscribe("chat:3")
        async with asyncio.timeout(10 * UNIT):
            await asyncio.gather(*(speaker.publish("chat:3", n) for n in range(60)))
        assert [(await next_push(hearer)).data for _ in range(60)] == list(range(60))
        assert speaker.connects == 1


async def test_no_reply_raises_no_reply_error_and_the_publish_is_not_sent_again() -> None:
    """The reply is held back and the connection cut: NoReplyError, though the server
    had done it. After the resume the other member has it once, and the client sent
    it once. Once closed, a publish raises NoReplyError at once."""
    states = StateLog()
    async with (
        running_server(**KEPT) as server,
        client(server.ws_url) as hearer,
    ):
        proxy = HoldingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with client(
                f"ws://{LOOPBACK}:{proxy.port}/connect", on_state_change=states
            ) as speaker:
                await speaker.subscribe("chat:4")
                await hearer.subscribe("chat:4")
                proxy.hold = is_publish_reply
                cut_off = asyncio.create_task(speaker.publish("chat:4", "once"))
                await proxy.until(lambda: len(proxy.held) == 1)
                proxy.hold, proxy.held = (lambda message: False), []
                await proxy.drop()
                with pytest.raises(NoReplyError) as info:
                    await asyncio.wait_for(cut_off, 5 * UNIT)
                assert (info.value.op, info.value.code, info.value.retryable) == (
                    "publish",
                    None,
                    True,
                )
                await states.wait_for(State.OPEN, count=2)
                assert speaker.resumed
                assert await next_push(hearer) == Push(
                    2, "once", "chat:4", sender=Sender(speaker.ws_id)
                )
                await speaker.publish("chat:4", "twice")
                assert (await next_push(hearer)).data == "twice"  # not "once" again
                sent = [m["data"]["data"] for m in proxy.sent if is_publish(m)]
                assert sent == ["once", "twice"]
            with pytest.raises(NoReplyError, match="not open"):
                await speaker.publish("chat:4", "closed")
        finally:
            await proxy.close()
