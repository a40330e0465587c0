"""What every wire protocol needs of its transport, and does the same way on one
connection (pushgateproto.py, pusherproto.py): :class:`Transport`, what a protocol
may ask of the connection that carries it; run the client's requests one after
another, each answered in the order sent; let a held welcome go once the session
core has registered the connection.

- :class:`Serial`: a request that needs the node (a subscribe, a publish) is queued
  and answered one after another, so that an event sent right after its subscribe
  is judged once the subscribe has been. On a broker in this process
  (``Broker.answers_at_once``) a request starts in the turn that read it, finishes
  without waiting and is answered then: no task is made for it (a task per client
  message was a tenth of a chat's server CPU). Elsewhere (Redis), and from any
  request that does wait, a task runs the queue.
  More than ``limit`` waiting closes the connection (1008); a bug in a handler
  closes this connection only, and is logged.
- :func:`release_when_registered`: the first message (welcome, connection
  established) is queued first and held; it goes once other nodes can find the
  connection, or after the handshake timeout anyway, so a client never waits on a
  lost broker.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from pushgate.eager import Started
from pushgate.hub import Sink
from pushgate.ids import ConnId
from pushgate.wire import CLOSE_INTERNAL_ERROR

log = logging.getLogger("pushgate.gateway")


class Transport(Sink, Protocol):
    """What the protocol needs of the connection that carries it (which is also the
    sink the session core hands pushes to)."""

    conn_id: ConnId | None

    @property
    def peer(self) -> str:
        """Its address, for the logs."""
        ...

    @property
    def alive(self) -> bool:
        """Open, and not closing."""
        ...

    def log_context(self, code: int | None = None) -> dict[str, object]: ...

    def send_first(self, messages: list[bytes]) -> None:
        """Queue messages ahead of anything queued already (the welcome first)."""
        ...

    def send_message(self, message: bytes) -> None:
        """Queue a message behind what is queued (a reply); written this turn, from
        the handling of what the client sent."""
        ...

    def reply(self, message: bytes) -> None:
        """Queue a message behind what is queued; the outbox writes it this turn."""
        ...

    def limit_message_size(self, size: int) -> None: ...

    def check_timers_by(self, when: float) -> None:
        """Something of the protocol's is due at ``when`` (loop clock): have the
        gateway's sweeper look at the connection by then."""
        ...

    def begin_resume(self) -> None:
        """The resume message came: the connection waits for its session."""
        ...

    def enter_hub(self, *, held: bool) -> None:
        """The session core holds it now: fan-out may reach it; with ``held``, all
        output waits for :meth:`release`."""
        ...

    def release(self) -> None:
        """Let held output go."""
        ...

    def fail(self, code: int, reason: str) -> None:
        """Close it for something it sent (the close frame goes out at once)."""
        ...

    def limit_close(self, limit: str, reason: str) -> None:
        """Close it (1008) for passing one of its limits, named for the metrics."""
        ...


Request = TypeVar("Request")
# What a request is answered with: one message, several, or none.
Answer = bytes | list[bytes]

# Tasks the loop would otherwise hold weakly: each queue's runner, each resume.
running: set["asyncio.Task[None]"] = set()


def spawn(work: Awaitable[None]) -> "asyncio.Future[None]":
    """Run ``work`` in a task kept referenced until it ends (it catches and logs its
    own failure)."""
    task = asyncio.ensure_future(work)
    running.add(task)
    task.add_done_callback(running.discard)
    return task


class Serial(Generic[Request]):
    """One connection's requests, run one after another (module docstring)."""

    __slots__ = ("_answer", "_at_once", "_conn", "_items", "_limit", "_over", "_what")

    def __init__(
        self,
        conn: Transport,
        answer: Callable[[Request], Coroutine[Any, Any, Answer]],
        *,
        limit: int,
        over: str,
        what: str,
        at_once: bool = False,
    ) -> None:
        self._conn = conn
        self._answer = answer
        self._items: deque[Request] = deque()
        self._limit = limit
        self._over = over  # the reason of the 1008 past ``limit``
        self._what = what  # what a request is, in the log line of a bug
        # Start each request in the turn that read it: only where nothing it awaits
        # needs a task (Broker.answers_at_once); else every request runs in a task.
        self._at_once = at_once

    def push(self, item: Request) -> None:
        """Queue ``item``; unless a request is under way, start it now (module
        docstring)."""
        items = self._items
        if len(items) >= self._limit:
            self._conn.limit_close("max_pending_operations", self._over)
            return
        items.append(item)
        if len(items) == 1:
            if self._at_once:
                self._run_now()
            else:
                spawn(self._run(None))

    def _run_now(self) -> None:
        """Answer the queue's requests from its head, each started at once, until one
        must wait: that one continues in a task (:meth:`_run`), holding its place at
        the head of the queue until its answer is sent."""
        items = self._items
        while items:
            work = self._answer(items[0])
            try:
                waiting_on = work.send(None)
            except StopIteration as done:
                items.popleft()
                if not self._answered(done.value):
                    return
                continue
            except Exception:
                items.popleft()
                self._failed()
                return
            started = Started(work, waiting_on)
            # A task cancelled before its first step never awaits ``started``: end
            # the request with it (a no-op once the request has ended).
            spawn(self._run(started)).add_done_callback(started.close)
            return

    async def _run(self, head: "Started[Answer] | None") -> None:
        """Answer the queue from its head (``head``: its request, already started),
        one after another, in this task."""
        items = self._items
        first = head
        while items:
            try:
                answer = await (first if first is not None else self._answer(items[0]))
            except Exception:
                items.popleft()
                self._failed()
                return
            first = None
            items.popleft()
            if not self._answered(answer):
                return

    def _answered(self, answer: Answer) -> bool:
        """Send ``answer``; False (and the queue cleared) if the connection is gone."""
        conn = self._conn
        if not conn.alive:
            self._items.clear()
            return False
        if isinstance(answer, bytes):
            conn.reply(answer)
        else:
            for message in answer:
                conn.reply(message)
        return True

    def _failed(self) -> None:
        """A bug must cost this connection only, and say so."""
        conn = self._conn
        log.exception("%s of %s failed; closing it", self._what, conn.peer)
        self._items.clear()
        conn.close(CLOSE_INTERNAL_ERROR, "internal error")


def release_when_registered(
    conn: Transport, registered: "asyncio.Future[None] | None", timeout: float
) -> None:
    """Let ``conn``'s held output go once ``registered`` is done (None: at once), or
    after ``timeout`` seconds anyway."""
    if registered is None or registered.done():
        conn.release()
        return
    timer = asyncio.get_running_loop().call_later(timeout, conn.release)

    def on_registered(_: "asyncio.Future[None]") -> None:
        timer.cancel()
        conn.release()

    registered.add_done_callback(on_registered)
