"""Running a coroutine in the turn that started it, for as long as it does not wait.

On a broker in this process (``Broker.answers_at_once``) most of what a client asks
(an operation, a connection's session) completes without waiting for anything: a
task for it costs more than the work (a tenth of a chat's server CPU was making and
stepping one task per client message). :func:`start` runs the coroutine to its end
or to its first wait; only then is a task made, which takes over from there
(:class:`Started`). Not for coroutines that need a task before their first wait
(``asyncio.timeout``, as redis-py's calls use): hence only where the broker says so.
"""

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar, cast

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Future[None]"]

T = TypeVar("T")


class Started(Generic[T]):
    """A coroutine already run up to its first wait (it gave ``waiting_on``, the
    future it awaits, on its first step), made awaitable from there: a task awaiting
    it hands that future to the event loop, then drives the coroutine to its end as
    ``await`` would (values, exceptions and cancellation passed through)."""

    __slots__ = ("_waiting_on", "_work")

    def __init__(self, work: Coroutine[Any, Any, T], waiting_on: Any) -> None:
        self._work = work
        self._waiting_on = waiting_on

    def close(self, _task: object = None) -> None:
        """End the coroutine where it waits (its ``finally`` blocks run); also a done
        callback of the task that awaits it."""
        self._work.close()

    def __await__(self) -> Generator[Any, Any, T]:
        work, step = self._work, self._waiting_on
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                work.close()
                raise
            except BaseException as exc:  # thrown into the awaiting task: cancellation
                try:
                    step = work.throw(exc)
                except StopIteration as done:
                    return cast(T, done.value)
            else:
                try:
                    step = work.send(sent)
                except StopIteration as done:
                    return cast(T, done.value)


def start(work: Coroutine[Any, Any, None], spawn: Spawn) -> "asyncio.Future[None] | None":
    """Run ``work`` now, up to its end or its first wait; in the second case hand the
    rest to ``spawn`` (which makes a task of it) and return what ``spawn`` returned;
    None when it is done already. Its exceptions, raised before its first wait,
    reach the caller."""
    try:
        waiting_on = work.send(None)
    except StopIteration:
        return None
    started = Started(work, waiting_on)

    async def rest() -> None:
        await started

    task = spawn(rest())
    task.add_done_callback(started.close)  # cancelled before its first step: end it too
    return task
