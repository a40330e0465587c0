"""Calls between the nodes of a cluster: one node asks another, by its id, to do
something with the connections it holds, and waits for the answer.

On the wire (messages.py): a :class:`~pushgate.messages.Command` on the topic
``node:<id>`` of the node asked, a :class:`~pushgate.messages.Reply` on
``reply:<id>`` of the node that asked. A call to the node itself is answered here,
without the broker.

What a node answers is one table, op by op (:meth:`NodeCalls.handle`): the node
fills it with join, leave and evict, the presence side (localanswers.py) with its
queries and the operator's actions. A handler's error becomes the reply's status,
and a reply's status becomes the caller's error again, in one place each
(:func:`status_of`, :func:`raise_for_status`), as centrifuge's controller does.
"""

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from pushgate.errors import BrokerUnavailable, RoomLimitExceeded, UnknownConnection
from pushgate.ids import NO_CONN, NO_ROOM, ConnId, RoomId
from pushgate.messages import Command, Op, Reply

log = logging.getLogger("pushgate.node")

NODE_TOPIC_PREFIX = "node:"
REPLY_TOPIC_PREFIX = "reply:"


class CallBus(Protocol):
    """What calls need of the broker: to publish on a topic (the node subscribes
    its own ``node:`` and ``reply:`` topics and hands their messages to
    :meth:`NodeCalls.on_message`)."""

    async def publish(self, topic: str, payload: bytes) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """What a handler did: whether membership changed (join, leave), and what a
    query or an action found (any JSON value)."""

    changed: bool = False
    data: Any = None


Handler = Callable[[Command], Awaitable[Answer]]
# Runs a coroutine in the background (its failure logged), as the node does.
Spawn = Callable[[Coroutine[Any, Any, None]], Any]


def status_of(request_id: str, exc: Exception) -> Reply:
    """The reply that tells the asker a handler failed with ``exc``."""
    if isinstance(exc, UnknownConnection):
        return Reply(request_id, "unknown")
    if isinstance(exc, RoomLimitExceeded):  # data: the wsId at its cap
        return Reply(request_id, "limit", limit=exc.limit, data=exc.conn_id)
    return Reply(request_id, "unavailable", error=str(exc) or type(exc).__name__)


def raise_for_status(reply: Reply, node: str, conn: ConnId = NO_CONN) -> Reply:
    """``reply`` if it is ``ok``; else the error its status means, for ``conn`` on
    ``node``: UnknownConnection, RoomLimitExceeded or BrokerUnavailable."""
    if reply.status == "ok":
        return reply
    if reply.status == "unknown":
        raise UnknownConnection(conn)
    if reply.status == "limit":
        at_cap = reply.data if isinstance(reply.data, str) and reply.data else conn
        raise RoomLimitExceeded(at_cap, reply.limit)
    raise BrokerUnavailable(f"node {node}: {reply.error or reply.status}")


class NodeCalls:
    """This node's side of the calls: asking others, and answering them."""

    def __init__(self, node_id: str, bus: CallBus, timeout: float, spawn: Spawn) -> None:
        self.node_id = node_id
        self.timeout = timeout  # how long an asker waits for a reply
        self._bus = bus
        self._spawn = spawn
        self._handlers: dict[Op, Handler] = {}
        self._no_reply: set[Op] = set()
        self._waiting: dict[str, asyncio.Future[Reply]] = {}

    @property
    def topics(self) -> tuple[str, str]:
        """The topics this node listens on: commands to it, replies to it."""
        return NODE_TOPIC_PREFIX + self.node_id, REPLY_TOPIC_PREFIX + self.node_id

    def handle(self, op: Op, handler: Handler, *, reply: bool = True) -> None:
        """Answer ``op`` with ``handler`` (``reply`` False: the asker expects none)."""
        self._handlers[op] = handler
        if not reply:
            self._no_reply.add(op)

    # Asking

    async def call(
        self,
        node: str,
        op: Op,
        *,
        room: RoomId = NO_ROOM,
        conn: ConnId = NO_CONN,
        args: dict[str, Any] | None = None,
        about: str = "",
    ) -> Reply:
        """Ask ``node`` (this one included) and return its ``ok`` reply; raises what
        another status means (:func:`raise_for_status`), and BrokerUnavailable when
        the call cannot be sent or is not answered within :attr:`timeout`."""
        if node == self.node_id:
            command = Command(op, room, conn, "", node, args or {})
            return raise_for_status(await self.answer(command), node, conn)
        request_id = os.urandom(8).hex()
        command = Command(op, room, conn, request_id, self.node_id, args or {})
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        try:
            await self._bus.publish(NODE_TOPIC_PREFIX + node, command.encode())
            reply = await asyncio.wait_for(waiter, self.timeout)
        except TimeoutError:
            raise BrokerUnavailable(
                f"node {node}{about} did not answer within {self.timeout:g} s"
            ) from None
        finally:
            self._waiting.pop(request_id, None)
        return raise_for_status(reply, node, conn)

    def tell(self, node: str, op: Op, *, conn: ConnId = NO_CONN, reply_to: str = "") -> None:
        """Send ``node`` a command that expects no reply, in the background; a broker
        that is away loses it (the callers can live with that)."""
        command = Command(op, NO_ROOM, conn, os.urandom(8).hex(), reply_to or self.node_id)
        self._spawn(self._send(NODE_TOPIC_PREFIX + node, command.encode()))

    async def _send(self, topic: str, payload: bytes) -> None:
        try:
            await self._bus.publish(topic, payload)
        except BrokerUnavailable as exc:
            log.info("could not send %s: %s", topic, exc)

    # Answering

    def on_message(self, topic: str, payload: bytes) -> bool:
        """A message on one of :attr:`topics`; False for any other topic."""
        if topic.startswith(REPLY_TOPIC_PREFIX):
            self._on_reply(payload)
        elif topic.startswith(NODE_TOPIC_PREFIX):
            self._on_command(payload)
        else:
            return False
        return True

    async def answer(self, command: Command) -> Reply:
        """Run the handler of ``command``; its error becomes the reply's status."""
        handler = self._handlers.get(command.op)
        if handler is None:
            return Reply(command.request_id, "unavailable", error=f"no handler for {command.op}")
        try:
            answer = await handler(command)
        except Exception as exc:  # the asker gets the reason, not a timeout
            if not isinstance(exc, UnknownConnection | RoomLimitExceeded | BrokerUnavailable):
                log.exception("%s for %s failed", command.op, command.conn or "the cluster")
            return status_of(command.request_id, exc)
        return Reply(command.request_id, "ok", changed=answer.changed, data=answer.data)

    def _on_reply(self, payload: bytes) -> None:
        try:
            reply = Reply.decode(payload)
        except Exception:
            log.warning("dropped a malformed reply: %r", payload[:80])
            return
        waiter = self._waiting.get(reply.request_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def _on_command(self, payload: bytes) -> None:
        try:
            command = Command.decode(payload)
        except Exception:
            log.warning("dropped a malformed command: %r", payload[:80])
            return
        self._spawn(self._serve(command))

    async def _serve(self, command: Command) -> None:
        reply = await self.answer(command)
        if command.op in self._no_reply:
            return
        await self._send(REPLY_TOPIC_PREFIX + command.reply_to, reply.encode())
