"""Calls between nodes (nodecalls.py) over a bus that hands each message to the node
it is for: the handler table, the one mapping from errors to reply statuses and
back, timeouts and malformed messages. (The cluster tests make the same calls over
a real Redis.)"""

import asyncio
import logging
from typing import Any

import pytest

from pushgate.errors import BrokerUnavailable, RoomLimitExceeded, UnknownConnection
from pushgate.ids import ConnId, RoomId
from pushgate.messages import Command
from pushgate.nodecalls import Answer, NodeCalls, raise_for_status, status_of

W = ConnId("w1")


class LoopbackBus:
    """Delivers each published message to the NodeCalls listening on its topic."""

    def __init__(self) -> None:
        self.nodes: list[NodeCalls] = []
        self.published: list[str] = []

    async def publish(self, topic: str, payload: bytes) -> int | None:
        self.published.append(topic)
        for calls in self.nodes:
            if topic in calls.topics:
                calls.on_message(topic, payload)
        return None


def spawn(coro: Any) -> "asyncio.Task[None]":
    return asyncio.get_running_loop().create_task(coro)


def pair(timeout: float = 1.0) -> tuple[NodeCalls, NodeCalls, LoopbackBus]:
    bus = LoopbackBus()
    a, b = (NodeCalls(name, bus, timeout, spawn) for name in ("a", "b"))
    bus.nodes += [a, b]
    return a, b, bus


async def test_a_call_reaches_the_other_node_and_brings_its_answer_back() -> None:
    a, b, bus = pair()

    async def join(command: Command) -> Answer:
        assert (command.room, command.conn) == ("r", W)
        return Answer(changed=True, data={"on": "b"})

    b.handle("join", join)
    reply = await a.call("b", "join", room=RoomId("r"), conn=W)
    assert (reply.changed, reply.data) == (True, {"on": "b"})
    assert bus.published == ["node:b", "reply:a"]


async def test_a_call_to_itself_does_not_go_through_the_broker() -> None:
    a, _b, bus = pair()

    async def census(command: Command) -> Answer:
        return Answer(data=1)

    a.handle("census", census)
    assert (await a.call("a", "census")).data == 1
    assert bus.published == []


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (UnknownConnection(W), UnknownConnection),
        (RoomLimitExceeded(W, 7), RoomLimitExceeded),
        (BrokerUnavailable("redis is away"), BrokerUnavailable),
        (RuntimeError("a bug"), BrokerUnavailable),
    ],
)
async def test_a_handlers_error_is_the_callers_error(
    error: Exception, raised: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a handler raises reaches the caller as the same kind of error, on
    another node or on itself; a bug is logged where it happened, with its trace."""
    a, b, _bus = pair()

    async def failing(command: Command) -> Answer:
        raise error

    for calls in (a, b):
        calls.handle("leave", failing)
    for target in ("a", "b"):
        with pytest.raises(raised) as caught:
            await a.call(target, "leave", room=RoomId("r"), conn=W)
        if isinstance(caught.value, RoomLimitExceeded):
            assert (caught.value.conn_id, caught.value.limit) == (W, 7)
        if isinstance(error, RuntimeError):
            assert "a bug" in str(caught.value)
    assert ("a bug" in caplog.text) == isinstance(error, RuntimeError)


def test_statuses_and_errors_map_both_ways() -> None:
    for error in (UnknownConnection(W), RoomLimitExceeded(W, 3), BrokerUnavailable("x")):
        with pytest.raises(type(error)):
            raise_for_status(status_of("id", error), "b", W)
    ok = status_of("id", BrokerUnavailable("x"))
    assert (ok.status, ok.error) == ("unavailable", "x")


async def test_an_unanswered_call_times_out_as_unavailable() -> None:
    a, _b, _bus = pair(timeout=0.05)
    with pytest.raises(BrokerUnavailable, match="node c, which holds w1, did not answer"):
        await a.call("c", "join", conn=W, about=", which holds w1,")


async def test_a_told_command_gets_no_reply() -> None:
    a, b, bus = pair()
    got = asyncio.Event()

    async def evict(command: Command) -> Answer:
        assert command.reply_to == "b.holder"
        got.set()
        return Answer()

    b.handle("evict", evict, reply=False)
    a.tell("b", "evict", conn=W, reply_to="b.holder")
    await asyncio.wait_for(got.wait(), 1)
    assert bus.published == ["node:b"]


async def test_malformed_messages_are_dropped_and_said(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pushgate")
    a, _b, _bus = pair()
    assert a.on_message("node:a", b"not json") is True
    assert a.on_message("reply:a", b'{"status":"what"}') is True
    assert a.on_message("room:x", b"{}") is False
    assert "malformed command" in caplog.text
    assert "malformed reply" in caplog.text


async def test_an_op_without_a_handler_is_unavailable() -> None:
    a, _b, _bus = pair()
    with pytest.raises(BrokerUnavailable, match="no handler for census"):
        await a.call("b", "census")
