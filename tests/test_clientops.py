"""clientops.Serial: a connection's requests answered one after another, in order,
started in the turn that read them where the broker answers at once, and in a task
from the first that must wait. A pure unit test: the connection is a fake that
records what it is asked to send."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from pushgate import clientops, eager
from pushgate.clientops import Answer, Serial
from pushgate.wire import CLOSE_INTERNAL_ERROR


class FakeConnection:
    """Records replies and closes, as a gateway connection would send them."""

    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self.closed: list[tuple[int, str]] = []
        self.limited: list[str] = []
        self.peer = "127.0.0.1:1"
        self.alive = True

    def reply(self, message: bytes) -> None:
        self.replies.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))
        self.alive = False

    def limit_close(self, limit: str, reason: str) -> None:
        self.limited.append(limit)
        self.alive = False


def serial(
    conn: FakeConnection, answer: Callable[[str], Awaitable[Answer]], *, at_once: bool
) -> "Serial[str]":
    async def run(request: str) -> Answer:
        return await answer(request)

    return Serial(conn, run, limit=3, over="too many", what="operation", at_once=at_once)  # type: ignore[arg-type]


async def test_at_once_a_request_that_waits_for_nothing_is_answered_before_push_returns() -> None:
    conn = FakeConnection()

    async def echo(request: str) -> Answer:
        return request.encode()

    ops = serial(conn, echo, at_once=True)
    tasks_before = len(asyncio.all_tasks())
    ops.push("a")
    ops.push("b")
    assert conn.replies == [b"a", b"b"]
    assert len(asyncio.all_tasks()) == tasks_before  # no task was made for them


async def test_without_at_once_requests_are_answered_in_a_task() -> None:
    conn = FakeConnection()

    async def echo(request: str) -> Answer:
        return [request.encode(), b"and more"]

    ops = serial(conn, echo, at_once=False)
    ops.push("a")
    assert conn.replies == []
    await asyncio.gather(*clientops.running)
    assert conn.replies == [b"a", b"and more"]


async def test_a_request_that_waits_holds_back_the_ones_sent_after_it() -> None:
    conn = FakeConnection()
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def answer(request: str) -> Answer:
        if request == "slow":
            await gate
        return request.encode()

    ops = serial(conn, answer, at_once=True)
    ops.push("fast")
    ops.push("slow")
    ops.push("after")  # would not wait, but comes after one that does
    assert conn.replies == [b"fast"]
    gate.set_result(None)
    await asyncio.gather(*clientops.running)
    assert conn.replies == [b"fast", b"slow", b"after"]
    ops.push("again")  # the queue ran dry: started at once again
    assert conn.replies[-1] == b"again"


async def test_what_the_awaited_future_gives_reaches_the_request() -> None:
    conn = FakeConnection()
    value: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def answer(request: str) -> Answer:
        got = await value
        await asyncio.sleep(0)  # a bare yield after it, passed through as well
        return got + request.encode()

    ops = serial(conn, answer, at_once=True)
    ops.push("!")
    value.set_result(b"given")
    await asyncio.gather(*clientops.running)
    assert conn.replies == [b"given!"]


async def test_a_request_failing_after_its_wait_closes_only_its_connection() -> None:
    conn = FakeConnection()
    failing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def answer(request: str) -> Answer:
        await failing
        return b"never"

    ops = serial(conn, answer, at_once=True)
    ops.push("a")
    ops.push("b")
    failing.set_exception(ValueError("a bug"))
    await asyncio.gather(*clientops.running)
    assert conn.replies == []
    assert conn.closed == [(CLOSE_INTERNAL_ERROR, "internal error")]


@pytest.mark.parametrize("at_once", [True, False])
async def test_a_bug_closes_the_connection_with_1011(
    at_once: bool, caplog: pytest.LogCaptureFixture
) -> None:
    conn = FakeConnection()

    async def broken(request: str) -> Answer:
        raise KeyError(request)

    ops = serial(conn, broken, at_once=at_once)
    ops.push("a")
    await asyncio.gather(*clientops.running)
    assert conn.closed == [(CLOSE_INTERNAL_ERROR, "internal error")]
    assert "operation of 127.0.0.1:1 failed" in caplog.text


async def test_cancelling_the_task_cancels_the_request_it_runs() -> None:
    conn = FakeConnection()
    cleaned: list[str] = []
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def answer(request: str) -> Answer:
        try:
            await never
        finally:
            cleaned.append(request)
        return b"never"

    ops = serial(conn, answer, at_once=True)
    ops.push("a")
    (task,) = clientops.running
    await asyncio.sleep(0)  # the task awaits the request's future now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["a"]
    assert never.cancelled()  # the cancellation reached the future it awaited
    assert conn.replies == []


async def test_cancelled_before_it_ran_the_task_still_ends_the_request() -> None:
    conn = FakeConnection()
    cleaned: list[str] = []
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def answer(request: str) -> Answer:
        try:
            await never
        finally:
            cleaned.append(request)
        return b"never"

    ops = serial(conn, answer, at_once=True)
    ops.push("a")
    (task,) = clientops.running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["a"]


async def test_more_than_the_limit_waiting_closes_the_connection() -> None:
    conn = FakeConnection()
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def answer(request: str) -> Answer:
        await gate
        return request.encode()

    ops = serial(conn, answer, at_once=True)
    for request in "abc":
        ops.push(request)
    assert conn.limited == []
    ops.push("d")
    assert conn.limited == ["max_pending_operations"]
    gate.set_result(None)
    await asyncio.gather(*clientops.running)
    assert conn.replies == []  # closed: nothing more is sent to it


async def test_no_reply_goes_to_a_connection_that_closed_meanwhile() -> None:
    conn = FakeConnection()
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def answer(request: str) -> Answer:
        await gate
        return request.encode()

    ops = serial(conn, answer, at_once=True)
    ops.push("a")
    ops.push("b")
    conn.alive = False
    gate.set_result(None)
    await asyncio.gather(*clientops.running)
    assert conn.replies == []


async def test_eager_start_makes_a_task_only_for_work_that_waits() -> None:
    done: list[str] = []

    async def at_once() -> None:
        done.append("at once")

    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        await gate
        done.append("after its wait")

    assert eager.start(at_once(), asyncio.ensure_future) is None
    assert done == ["at once"]
    task = eager.start(waits(), asyncio.ensure_future)
    assert task is not None
    assert done == ["at once"]
    gate.set_result(None)
    await task
    assert done == ["at once", "after its wait"]
