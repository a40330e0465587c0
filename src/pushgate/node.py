"""A node: this process's hub of connections, joined to the others by a broker.

The node turns the logic API's requests into broker traffic and broker traffic into
fan-out. A push is encoded to JSON once by the node that accepts it, published on a
topic (``all`` or ``room:<id>``), framed once by each node that receives it, and the
same frame bytes are handed to every local recipient.

A node subscribes to a room's topic while it has at least one local member in that
room, and only then; :meth:`Node._sync` keeps the subscription in step with
membership even when joins, leaves and disconnects interleave.

In a cluster a join or leave may name a wsId held by another node. The node then
finds the holder in the :class:`~pushgate.directory.Directory`, sends it a
:class:`~pushgate.messages.Command` on its topic ``node:<id>``, and waits up to
``control_timeout`` for the :class:`~pushgate.messages.Reply` on ``reply:<own id>``.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine, Iterable
from typing import Any

from pushgate.broker.base import Broker
from pushgate.commands import Membership, PushAll, PushRoom, PushUser
from pushgate.directory import Directory, LocalDirectory
from pushgate.errors import BrokerUnavailable, RoomLimitExceeded, UnknownConnection
from pushgate.framing import text_frame
from pushgate.hub import Hub, MembershipChange, Sink
from pushgate.ids import ConnId, RoomId
from pushgate.messages import Command, Op, Reply
from pushgate.wire import encode_push

log = logging.getLogger(__name__)

TOPIC_ALL = "all"
ROOM_TOPIC_PREFIX = "room:"
USER_TOPIC_PREFIX = "user:"
NODE_TOPIC_PREFIX = "node:"
REPLY_TOPIC_PREFIX = "reply:"


def room_topic(room: RoomId) -> str:
    return ROOM_TOPIC_PREFIX + room


def user_topic(user: str) -> str:
    return USER_TOPIC_PREFIX + user


class Node:
    """Owns the hub and the broker; the logic API and the gateway both talk to it."""

    def __init__(
        self,
        hub: Hub,
        broker: Broker,
        *,
        directory: Directory | None = None,
        node_id: str | None = None,
        has_gateway: bool = True,
        control_timeout: float = 2.0,
    ) -> None:
        self.hub = hub
        self.broker = broker
        self.directory: Directory = directory if directory is not None else LocalDirectory()
        self.node_id = node_id or os.urandom(6).hex()
        self.has_gateway = has_gateway
        self.control_timeout = control_timeout
        self._replies: dict[str, asyncio.Future[Reply]] = {}
        self._subscribed: set[str] = set()
        self._topic_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect the broker and subscribe to what this node's roles need.

        Raises BrokerUnavailable when the broker does not confirm the subscriptions.
        """
        await self.broker.start(self)
        if self.has_gateway:  # only a node that holds connections announces itself
            await self.directory.start(self.node_id)
        topics = [REPLY_TOPIC_PREFIX + self.node_id]
        if self.has_gateway:
            topics += [TOPIC_ALL, NODE_TOPIC_PREFIX + self.node_id]
        # All at once: each is wanted even if the broker cannot confirm it yet.
        results = await asyncio.gather(
            *(self.broker.subscribe(topic) for topic in topics), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.directory.close()
        await self.broker.close()

    @property
    def ready(self) -> bool:
        """The broker is connected and every subscription is confirmed."""
        return self.broker.ready

    # The logic API's side

    async def push_all(self, request: PushAll) -> int | None:
        """Publish a push to every connection in the cluster; see Broker.publish."""
        return await self.broker.publish(TOPIC_ALL, encode_push(request.tag, request.val))

    async def push_room(self, request: PushRoom) -> int | None:
        """Publish a push to every member of a room, wherever it is connected."""
        payload = encode_push(request.tag, request.val, request.room)
        return await self.broker.publish(room_topic(request.room), payload)

    async def push_user(self, request: PushUser) -> int | None:
        """Publish a push to every connection of a user, wherever it is connected."""
        payload = encode_push(request.tag, request.val)
        return await self.broker.publish(user_topic(request.user), payload)

    async def join(self, request: Membership) -> MembershipChange:
        """Put a connection, wherever it is held, in a room; returns once pushes to
        the room reach it. Raises UnknownConnection, RoomLimitExceeded, BrokerUnavailable."""
        if request.conn not in self.hub:
            return await self._ask("join", request)
        change = self.hub.join(request.room, request.conn)
        topic = room_topic(request.room)
        try:
            await self._sync(topic)
        except BrokerUnavailable:
            if change.changed:  # undo: the caller is told it failed
                with contextlib.suppress(UnknownConnection):  # it may have gone meanwhile
                    self.hub.leave(request.room, request.conn)
                self._in_background(self._sync(topic))  # and let go of the topic
            raise
        return change

    async def leave(self, request: Membership) -> MembershipChange:
        """Take a connection, wherever it is held, out of a room."""
        if request.conn not in self.hub:
            return await self._ask("leave", request)
        change = self.hub.leave(request.room, request.conn)
        if change.room_boundary:
            await self._sync(room_topic(request.room))
        return change

    def connection_count(self) -> int:
        return len(self.hub)

    def room_sizes(self) -> dict[RoomId, int]:
        return self.hub.room_sizes()

    def room_count(self) -> int:
        return self.hub.room_count()

    # The gateway's side

    def connection_opened(
        self,
        conn: ConnId,
        sink: Sink,
        *,
        user: str | None = None,
        rooms: Iterable[RoomId] = (),
    ) -> "asyncio.Future[None] | None":
        """Register a new connection, of ``user`` and in ``rooms`` if its token says so.

        Returns a future that completes once other nodes can find it and pushes to
        its user and rooms reach it (None when that is already so): the gateway
        holds the welcome frame until then, so a wsId a client learns resolves.
        """
        self.hub.register(conn, sink, user)
        topics = [room_topic(room) for room in rooms if self.hub.join(room, conn).room_boundary]
        if user is not None and self.hub.user_size(user) == 1:
            topics.append(user_topic(user))
        registered = self.directory.add(conn)
        if not topics:
            return registered
        return self._in_background(self._settle_new(registered, topics))

    async def _settle_new(
        self, registered: "asyncio.Future[None] | None", topics: list[str]
    ) -> None:
        if registered is not None:
            await registered
        results = await asyncio.gather(*(self._sync(t) for t in topics), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("could not subscribe a new connection's topics: %s", result)

    def connection_closed(self, conn: ConnId) -> None:
        """Forget a connection and every room membership it had, at once."""
        self.directory.discard(conn)
        user = self.hub.user_of(conn)
        topics = [room_topic(room) for room in self.hub.unregister(conn)]
        if user is not None and self.hub.user_size(user) == 0:
            topics.append(user_topic(user))
        for topic in topics:
            self._in_background(self._sync(topic))

    # The broker's side (BrokerHandler)

    def on_message(self, topic: str, payload: bytes) -> int:
        if topic == TOPIC_ALL:
            return self.hub.broadcast(text_frame(payload))
        if topic.startswith(ROOM_TOPIC_PREFIX):
            room = RoomId(topic[len(ROOM_TOPIC_PREFIX) :])
            return self.hub.send_room(room, text_frame(payload)) if self.hub.room_size(room) else 0
        if topic.startswith(USER_TOPIC_PREFIX):
            user = topic[len(USER_TOPIC_PREFIX) :]
            return self.hub.send_user(user, text_frame(payload)) if self.hub.user_size(user) else 0
        if topic.startswith(REPLY_TOPIC_PREFIX):
            self._on_reply(payload)
        elif topic.startswith(NODE_TOPIC_PREFIX):
            self._on_command(payload)
        else:
            log.warning("dropped a message on unexpected topic %r", topic)
        return 0

    # Joins and leaves for connections held by other nodes

    async def _ask(self, op: Op, request: Membership) -> MembershipChange:
        holder = await self.directory.locate(request.conn)
        if holder is None or holder == self.node_id:
            raise UnknownConnection(request.conn)
        request_id = os.urandom(8).hex()
        command = Command(op, request.room, request.conn, request_id, self.node_id)
        waiter = asyncio.get_running_loop().create_future()
        self._replies[request_id] = waiter
        try:
            await self.broker.publish(NODE_TOPIC_PREFIX + holder, command.encode())
            reply = await asyncio.wait_for(waiter, self.control_timeout)
        except TimeoutError:
            raise BrokerUnavailable(
                f"node {holder}, which holds wsId {request.conn}, did not answer within "
                f"{self.control_timeout:g} s"
            ) from None
        finally:
            self._replies.pop(request_id, None)
        if reply.status == "unknown":
            raise UnknownConnection(request.conn)
        if reply.status == "unavailable":
            raise BrokerUnavailable(f"node {holder}: {reply.error}")
        if reply.status == "limit":
            raise RoomLimitExceeded(request.conn, reply.limit)
        return MembershipChange(reply.changed, False)

    def _on_reply(self, payload: bytes) -> None:
        try:
            reply = Reply.decode(payload)
        except Exception:
            log.warning("dropped a malformed reply: %r", payload[:80])
            return
        waiter = self._replies.get(reply.request_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def _on_command(self, payload: bytes) -> None:
        try:
            command = Command.decode(payload)
        except Exception:
            log.warning("dropped a malformed command: %r", payload[:80])
            return
        self._in_background(self._serve(command))

    async def _serve(self, command: Command) -> None:
        request = Membership(command.room, command.conn)
        try:
            if command.conn not in self.hub:
                raise UnknownConnection(command.conn)
            if command.op == "join":
                change = await self.join(request)
            else:
                change = await self.leave(request)
            reply = Reply(command.request_id, "ok", changed=change.changed)
        except UnknownConnection:
            reply = Reply(command.request_id, "unknown")
        except RoomLimitExceeded as exc:
            reply = Reply(command.request_id, "limit", limit=exc.limit)
        except Exception as exc:  # the asker gets the reason, not a timeout
            if not isinstance(exc, BrokerUnavailable):
                log.exception("%s for %s failed", command.op, command.conn)
            reply = Reply(command.request_id, "unavailable", error=str(exc) or type(exc).__name__)
        await self.broker.publish(REPLY_TOPIC_PREFIX + command.reply_to, reply.encode())

    # Subscriptions follow membership

    def _wanted(self, topic: str) -> bool:
        """Whether this node should be subscribed to a room's or a user's topic now."""
        if topic.startswith(ROOM_TOPIC_PREFIX):
            return self.hub.room_size(RoomId(topic[len(ROOM_TOPIC_PREFIX) :])) > 0
        return self.hub.user_size(topic[len(USER_TOPIC_PREFIX) :]) > 0

    async def _sync(self, topic: str) -> None:
        """Subscribe to a room's or user's topic if it has local members, else unsubscribe.

        Each call reads the wanted state under the topic's lock, so whatever order
        concurrent calls run in, the last one leaves the subscription matching the
        membership.
        """
        entry = self._topic_locks.get(topic)
        lock, users = entry if entry is not None else (asyncio.Lock(), 0)
        self._topic_locks[topic] = (lock, users + 1)
        try:
            async with lock:
                wanted = self._wanted(topic)
                if wanted and topic not in self._subscribed:
                    # Recorded first: a broker that could not confirm still wants the
                    # topic, so a later call must be able to unsubscribe it.
                    self._subscribed.add(topic)
                    await self.broker.subscribe(topic)
                elif not wanted and topic in self._subscribed:
                    self._subscribed.discard(topic)
                    await self.broker.unsubscribe(topic)
        finally:
            lock, users = self._topic_locks[topic]
            if users == 1:
                del self._topic_locks[topic]
            else:
                self._topic_locks[topic] = (lock, users - 1)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> "asyncio.Task[None]":
        """Run ``coro`` as a task that close() cancels and whose failure is logged."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: "asyncio.Task[None]") -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_coro(), exc_info=task.exception())
