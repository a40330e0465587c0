"""The composition root's node: :func:`make_node` picks the broker, directory,
sessions, presence store and webhook queue the config names (Redis ones imported
lazily) and wires them into a :class:`~pushgate.node.Node`. Part of app.py."""

import os
from typing import TYPE_CHECKING

from pushgate.broker.base import Broker
from pushgate.broker.memory import MemoryBroker, MemoryBus
from pushgate.config import Config
from pushgate.directory import Directory, LocalDirectory
from pushgate.hub import Hub
from pushgate.ids import RoomId
from pushgate.memorysessions import MemorySessions
from pushgate.namespaces import namespace_of
from pushgate.node import Node
from pushgate.presence import PresenceStore
from pushgate.presencerooms import Reports
from pushgate.presencestore import MemoryPresence
from pushgate.sessions import NoSessions, Sessions
from pushgate.webhooks.queue import WebhookQueue
from pushgate.webhooks.receivers import ROOM_EVENTS, SESSION_EVENTS, webhook_receivers

if TYPE_CHECKING:
    from pushgate.webhooks.service import Webhooks


def make_node(config: Config, *, has_gateway: bool) -> Node:
    """A node with the broker and directory the config names (imported lazily)."""
    hub = Hub(max_rooms_per_conn=config.max_rooms_per_conn)
    node_id = config.node_id or os.urandom(6).hex()
    broker: Broker
    directory: Directory
    sessions: Sessions = NoSessions()
    namespaces = config.namespace_list
    receivers = webhook_receivers(config)
    # Rooms whose events some receiver wants: all, or those of some namespaces.
    reports_all_rooms = any(r.events & ROOM_EVENTS and r.namespaces is None for r in receivers)
    reported_namespaces = frozenset(
        name for r in receivers if r.events & ROOM_EVENTS for name in r.namespaces or ()
    )
    reports_rooms = reports_all_rooms or bool(reported_namespaces)
    # Pusher apps with a receiver: their members' client events are reported.
    pusher_hooked = frozenset(
        name for r in receivers if r.pusher is not None for name in r.namespaces or ()
    )
    reports_sessions = any(receiver.events & SESSION_EVENTS for receiver in receivers)
    # Rooms with presence, and with webhooks the rooms and sessions, are kept there.
    pusher_apps = config.pusher_apps
    keeps_presence = (
        any(namespace.presence for namespace in namespaces)
        or bool(pusher_apps)  # presence- channels
        or reports_rooms
        or reports_sessions
    )
    presence: PresenceStore | None = None
    queue: WebhookQueue | None = None

    def has_presence(room: RoomId) -> bool:
        return namespaces.of(room).presence or pusher_apps.has_presence(room)

    def quiet_to_joiner(room: RoomId) -> bool:
        # Pusher's clients learn their own membership from their subscription's
        # answer; a member_added of their own would be counted twice.
        return pusher_apps.of_room(room) is not None

    if config.clustered:
        from pushgate.broker.redis import RedisBroker
        from pushgate.broker.redis_cluster import RedisClusterBroker
        from pushgate.broker.redis_directory import RedisDirectory
        from pushgate.broker.redis_sessions import RedisSessions

        kind = RedisClusterBroker if config.redis_cluster else RedisBroker
        redis_broker = kind(
            config.broker,
            prefix=config.prefix,
            node_id=node_id,
            history_size=config.history_size,
            history_ttl=config.history_ttl,
            session_ttl=config.session_ttl,
        )
        directory = RedisDirectory(
            redis_broker.client,
            # On a Redis Cluster the prefix is the hash tag: the directory's scripts
            # read several of its keys, which must share a slot.
            prefix=f"{{{config.prefix}}}" if config.redis_cluster else config.prefix,
            ttl=config.node_ttl,
            local_conns=hub.conn_ids,
            transactions=not config.redis_cluster,
        )
        broker = redis_broker
        if config.sessions:
            sessions = RedisSessions(
                redis_broker.client, prefix=config.prefix, ttl=config.session_ttl
            )
        if keeps_presence:
            from pushgate.broker.redis_presence import RedisPresence

            presence = RedisPresence(
                redis_broker,
                ttl=sessions.ttl,
                announces=has_presence,
                quiet_to_joiner=quiet_to_joiner,
            )
        if receivers:
            from pushgate.webhooks.redisqueue import RedisWebhookQueue

            queue = RedisWebhookQueue(redis_broker)
    else:
        bus = MemoryBus(
            history_size=config.history_size,
            history_ttl=config.history_ttl,
            session_ttl=config.session_ttl,
            history_max_bytes=config.history_max_bytes,
        )
        broker, directory = MemoryBroker(bus), LocalDirectory()
        if config.sessions:
            sessions = MemorySessions(config.session_ttl)
        if keeps_presence:
            presence = MemoryPresence(
                broker, sessions.ttl, announces=has_presence, quiet_to_joiner=quiet_to_joiner
            )
        if receivers:
            from pushgate.webhooks.memqueue import memory_queue

            queue = memory_queue()
    webhooks: Webhooks | None = None
    reports: Reports | None = None
    if queue is not None:
        from pushgate.webhooks import service

        webhooks = service.Webhooks(
            queue,
            receivers,
            secret=config.webhook_secret.encode(),
            timeout=config.webhook_timeout,
            retry_for=config.webhook_retry_for,
            holder=node_id,
        )
        reports = Reports(
            emit=webhooks.emit,
            rooms=lambda room: reports_all_rooms or namespace_of(room) in reported_namespaces,
            sessions=reports_sessions,
            messages=lambda room: (
                namespaces.of(room).webhook or namespace_of(room) in pusher_hooked
            ),
        )
    return Node(
        hub,
        broker,
        directory=directory,
        node_id=node_id,
        has_gateway=has_gateway,
        control_timeout=config.control_timeout,
        sessions=sessions,
        presence=presence,
        has_presence=has_presence,
        reports=reports,
        webhooks=webhooks,
        unfollow_after=config.unfollow_after,
    )
