"""Webhooks delivered to real receivers (aiohttp servers on free loopback ports), from
a queue in memory or in a real redis-server: order, ids, signatures, retries,
receivers that are down or answer 503 or hang, the retry window, and the emit
buffer while Redis is unreachable.

Timers are short (``FAST``): a lease of a second, polls and backoffs of tens of ms.
"""

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pushgate.broker.redis import RedisBroker
from pushgate.webhooks.events import Receiver
from pushgate.webhooks.memqueue import memory_queue
from pushgate.webhooks.queue import WebhookQueue
from pushgate.webhooks.redisqueue import RedisWebhookQueue
from pushgate.webhooks.service import Webhooks
from pushgate.webhooks.stats import DROPPED, GAVE_UP
from tests.helpers import UNIT
from tests.redis_server import RedisServer
from tests.webhooks.hookserver import SECRET, HookServer, id_key

EVENTS = frozenset({"session_started", "member_joined", "room_vacated"})
FAST: dict[str, Any] = {"lease": 1.0 * UNIT, "poll": 0.05, "backoff": 0.05, "max_backoff": 0.2}
PREFIXES = itertools.count()

MakeWebhooks = Callable[..., Awaitable[Webhooks]]


@pytest.fixture(params=["memory", "redis"])
async def make_webhooks(request: pytest.FixtureRequest) -> AsyncIterator[MakeWebhooks]:
    """Makes started Webhooks for receivers, on one queue (memory, or a redis-server's
    under a prefix of the test's own); closes them after the test."""
    made: list[Webhooks] = []
    brokers: list[RedisBroker] = []
    memory = memory_queue()
    prefix = f"delivery{next(PREFIXES)}:"

    async def make(*receivers: Receiver, **options: Any) -> Webhooks:
        queue: WebhookQueue = memory
        if request.param == "redis":
            url = request.getfixturevalue("module_redis").url
            brokers.append(RedisBroker(url, prefix=prefix, node_id="n"))
            queue = RedisWebhookQueue(brokers[-1])
        settings: dict[str, Any] = {"timeout": 2.0 * UNIT, "retry_for": 600.0, **FAST}
        settings |= options
        webhooks = Webhooks(queue, receivers, secret=SECRET, holder=f"node{len(made)}", **settings)
        webhooks.start()
        made.append(webhooks)
        return webhooks

    try:
        yield make
    finally:
        for webhooks in made:
            await webhooks.close()
        for broker in brokers:
            await broker.close()


@pytest.fixture
async def hook() -> AsyncIterator[HookServer]:
    """A receiver, up."""
    server = HookServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def receiver(server: HookServer, namespaces: frozenset[str] | None = None) -> Receiver:
    return Receiver(server.url, EVENTS, namespaces)


def emit_many(webhooks: Webhooks, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        webhooks.emit("member_joined", {"room": f"chat:{i % 7}", "i": i})


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return [event["data"]["i"] for event in events]


async def until(done: Callable[[], bool], timeout: float = 5 * UNIT) -> None:
    """Return once ``done()``: a count the webhooks keep, which no event announces."""
    async with asyncio.timeout(timeout):
        while not done():  # noqa: ASYNC110 - a count, no event
            await asyncio.sleep(0.01)


def assert_in_order(server: HookServer) -> None:
    """Every attempt's ids increase, and so do those delivered; none twice."""
    for attempt in server.attempts:
        assert [id_key(i) for i in attempt] == sorted(map(id_key, attempt))
    ids = server.ids()
    assert [id_key(i) for i in ids] == sorted(map(id_key, ids))
    assert len(set(ids)) == len(ids)
    assert server.problems == []


async def test_events_arrive_in_order_in_signed_batches(
    make_webhooks: MakeWebhooks, hook: HookServer
) -> None:
    """250 events emitted at once arrive in batches of at most 100, in order, each
    once, with increasing ids and valid signatures; what the receiver does not want
    (another event, another namespace) is not sent."""
    webhooks = await make_webhooks(receiver(hook, frozenset({"chat"})))
    webhooks.emit("session_started", {"wsId": "w1"})  # not in the namespaces
    webhooks.emit("member_left", {"room": "chat:1"})  # not in the events
    webhooks.emit("member_joined", {"room": "other:1", "i": -1})  # another namespace
    emit_many(webhooks, 250)
    events = await hook.until_events(250)
    assert numbers(events) == list(range(250))
    assert events[0] == {
        "id": events[0]["id"],
        "name": "member_joined",
        "time_ms": events[0]["time_ms"],
        "data": {"room": "chat:0", "i": 0},
    }
    assert len(hook.attempts) >= 3
    assert max(map(len, hook.attempts)) <= 100
    assert_in_order(hook)
    await until(lambda: webhooks.stats.sent == 250)
    assert (webhooks.stats.queued, webhooks.stats.retried) == (250, 0)


async def test_a_receiver_down_then_up_gets_everything_in_order(
    make_webhooks: MakeWebhooks,
) -> None:
    """Events emitted while a receiver's port is closed are retried, and arrive in
    order once it listens, with those emitted meanwhile."""
    server = HookServer()
    webhooks = await make_webhooks(receiver(server))
    emit_many(webhooks, 30)
    await until(lambda: webhooks.stats.retried >= 60)  # two failed attempts
    emit_many(webhooks, 30, start=30)
    await server.start()
    try:
        events = await server.until_events(60)
        assert numbers(events) == list(range(60))
        assert_in_order(server)
        await until(lambda: webhooks.stats.sent == 60)
    finally:
        await server.stop()


async def test_a_receiver_down_for_two_minutes_loses_nothing(make_webhooks: MakeWebhooks) -> None:
    """A receiver down for two minutes (by the senders' clock, moved on; the retries
    at this test's pace) gets everything once it is back: the retry window
    (--webhook-retry-for, 600 s here as at the least) gives nothing up before."""

    class Clock:
        offset = 0.0

        def __call__(self) -> float:
            return time.time() + self.offset

    clock = Clock()
    server = HookServer()
    webhooks = await make_webhooks(receiver(server), clock=clock)
    emit_many(webhooks, 30)
    await until(lambda: webhooks.stats.retried >= 60)  # failing a while
    clock.offset = 121.0
    emit_many(webhooks, 30, start=30)
    tried = webhooks.stats.retried
    await until(lambda: webhooks.stats.retried >= tried + 120)  # and two minutes on
    await server.start()
    try:
        events = await server.until_events(60)
        assert numbers(events) == list(range(60))
        assert_in_order(server)
        await until(lambda: webhooks.stats.sent == 60)
        assert webhooks.stats.failed[GAVE_UP] == 0
    finally:
        await server.stop()


async def test_a_receiver_answering_503_gets_the_same_ids_again(
    make_webhooks: MakeWebhooks, hook: HookServer
) -> None:
    """A batch answered 503 is sent again from the same first id, until a 2xx: then
    everything arrives, in order, each once."""
    hook.status = 503
    webhooks = await make_webhooks(receiver(hook))
    emit_many(webhooks, 20)
    await hook.until(lambda: len(hook.attempts) >= 3)
    first = hook.attempts[0][0]
    assert all(attempt[0] == first for attempt in hook.attempts)
    hook.status = 204
    emit_many(webhooks, 5, start=20)
    events = await hook.until_events(25)
    assert numbers(events) == list(range(25))
    assert events[0]["id"] == first
    assert_in_order(hook)
    assert webhooks.stats.retried >= 40


async def test_a_receiver_that_hangs_does_not_delay_another(
    make_webhooks: MakeWebhooks, hook: HookServer
) -> None:
    """While one receiver takes every POST without answering, another gets each event
    as soon as it is emitted."""
    hanging = HookServer()
    hanging.hang = True
    await hanging.start()
    try:
        webhooks = await make_webhooks(receiver(hanging), receiver(hook), timeout=30.0)
        for round_ in range(3):
            emit_many(webhooks, 10, start=10 * round_)
            await hook.until_events(10 * (round_ + 1), timeout=1.0 * UNIT)
        assert numbers(hook.events) == list(range(30))
        assert len(hanging.attempts) == 1
    finally:
        await hanging.stop()


async def test_events_past_the_retry_window_are_given_up_and_logged(
    make_webhooks: MakeWebhooks, caplog: pytest.LogCaptureFixture
) -> None:
    """Events a receiver failed to take for longer than ``retry_for`` are given up:
    counted failed, logged as an error with the receiver and their ids, and never
    sent; later events are."""
    caplog.set_level(logging.INFO, logger="pushgate.webhooks")
    server = HookServer()
    webhooks = await make_webhooks(receiver(server), retry_for=0.3 * UNIT)
    emit_many(webhooks, 5)
    await until(lambda: webhooks.stats.failed[GAVE_UP] >= 5)
    assert webhooks.stats.failed[GAVE_UP] == 5
    (record,) = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith(f"webhook {server.url}: gave up 5 events (ids ")
    await server.start()
    try:
        emit_many(webhooks, 1, start=5)
        events = await server.until_events(1)
        assert numbers(events) == [5]
        await until(lambda: webhooks.stats.sent == 1)
    finally:
        await server.stop()


async def test_a_closed_node_lets_another_take_over_at_once(
    make_webhooks: MakeWebhooks, hook: HookServer
) -> None:
    """Two nodes with one receiver: one sends, and the other takes over its events
    once it closes, well before its lease would have run out."""
    first = await make_webhooks(receiver(hook), lease=3.0 * UNIT)
    second = await make_webhooks(receiver(hook), lease=3.0 * UNIT)
    emit_many(first, 10)
    await hook.until_events(10)
    await first.close()
    emit_many(second, 10, start=10)
    await hook.until(lambda: len(hook.unique()) >= 20, timeout=1.5 * UNIT)
    # The close may abandon the first node's last commit: the second sends it again.
    assert numbers(hook.unique()) == list(range(20))
    await until(lambda: second.stats.sent >= 10)


async def test_emitted_events_wait_while_redis_is_unreachable(
    redis: RedisServer, hook: HookServer, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis is down, emitted events wait (at most ``max_buffered``; the oldest
    beyond are dropped, counted failed and logged); once it is back they are queued
    and delivered, in order."""
    caplog.set_level(logging.INFO, logger="pushgate.webhooks")
    broker = RedisBroker(redis.url, prefix="down:", node_id="n")
    webhooks = Webhooks(
        RedisWebhookQueue(broker),
        [receiver(hook)],
        secret=SECRET,
        timeout=2.0,
        retry_for=600.0,
        holder="n",
        max_buffered=10,
        **FAST,
    )
    webhooks.start()
    try:
        emit_many(webhooks, 1)
        await hook.until_events(1)
        await until(lambda: webhooks.stats.queued == 1)  # the add's answer may come later
        redis.kill()
        emit_many(webhooks, 15, start=1)
        assert webhooks.stats.buffered == 10
        assert webhooks.stats.failed[DROPPED] == 5
        await redis.start()
        events = await hook.until_events(11)
        assert numbers(events) == [0, *range(6, 16)]
        assert webhooks.stats.queued == 11
        assert webhooks.stats.buffered == 0
        dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert dropped[0].levelno == logging.ERROR
        assert dropped[0].getMessage().startswith("webhooks: 5 events dropped")
    finally:
        await webhooks.close()
        await broker.close()
