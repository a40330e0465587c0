"""The Redis broker's own failure handling, against a real redis-server: a
subscription that dies silently (python-socketio's "deaf worker") is noticed, and
told apart from one whose connection Redis closed (on_interrupted)."""

import asyncio

from pushgate.broker.redis import RedisBroker
from tests.broker.test_contract import Recorder
from tests.helpers import LOOPBACK, UNIT
from tests.redis_server import RedisServer
from tests.tcp_proxy import FreezableProxy


async def wait_until(predicate: "object", timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 - a property, no event
            await asyncio.sleep(0.02)


async def test_a_silently_dead_subscription_is_detected_and_rebuilt(redis: RedisServer) -> None:
    """When the path to Redis freezes (no error, no byte), the broker's probes stop
    coming back: it reports not ready, and once the path thaws it resubscribes and
    delivers again, with no restart."""
    proxy = FreezableProxy("127.0.0.1", redis.port)
    await proxy.start()
    deaf_prone = RedisBroker(
        f"redis://127.0.0.1:{proxy.port}/0",
        prefix="t:",
        node_id="listener",
        probe_interval=0.1,
        probe_timeout=0.5,
    )
    publisher = RedisBroker(redis.url, prefix="t:", node_id="publisher")
    recorder = Recorder()
    await deaf_prone.start(recorder)
    await publisher.start(Recorder())
    await deaf_prone.subscribe("room:x")
    await wait_until(lambda: deaf_prone.ready, 5 * UNIT)

    proxy.freeze()
    await publisher.publish("room:x", b"during")  # cannot reach the frozen listener
    await wait_until(lambda: not deaf_prone.ready, 5 * UNIT)
    await wait_until(lambda: bool(recorder.interruptions), 5 * UNIT)
    assert recorder.interruptions == [{"room:x": False}]  # silence: not closed under it

    proxy.thaw()
    await wait_until(lambda: deaf_prone.ready, 10 * UNIT)
    await publisher.publish("room:x", b"after")
    # "during" may or may not arrive late (at most once); "after" must arrive.
    async with asyncio.timeout(5 * UNIT):
        while b"after" not in recorder.payloads:
            await recorder.wait_for(len(recorder.received) + 1)

    await deaf_prone.close()
    await publisher.close()
    await proxy.close()


async def test_a_redis_that_stops_closes_the_subscription_under_its_topics(
    redis: RedisServer,
) -> None:
    """Redis killed: the connection ends under the subscription, which is told as
    closed for every confirmed topic (all it had written arrived first), and once
    Redis is back the subscription is rebuilt."""
    broker = RedisBroker(redis.url, prefix="t:", node_id="listener")
    recorder = Recorder()
    await broker.start(recorder)
    await broker.subscribe("room:x")
    await broker.subscribe("room:y")
    await wait_until(lambda: broker.ready, 5 * UNIT)

    redis.kill()
    await wait_until(lambda: bool(recorder.interruptions), 5 * UNIT)
    assert recorder.interruptions == [{"room:x": True, "room:y": True}]
    await redis.start()
    await wait_until(lambda: recorder.reconnects == 1, 10 * UNIT)
    assert len(recorder.interruptions) == 1
    await broker.close()


async def test_a_reconnect_that_something_answers_unmakes_the_closed_cut(
    redis: RedisServer,
) -> None:
    """Redis killed, then its port answers (not refused, as it was: a Redis may be up
    there, publishing what the node cannot see): the cut is told again, not closed."""
    broker = RedisBroker(redis.url, prefix="t:", node_id="listener")
    recorder = Recorder()
    await broker.start(recorder)
    await broker.subscribe("room:x")
    await wait_until(lambda: broker.ready, 5 * UNIT)

    redis.kill()
    await wait_until(lambda: bool(recorder.interruptions), 5 * UNIT)
    answering = await asyncio.start_server(lambda _, writer: writer.close(), LOOPBACK, redis.port)
    try:
        await wait_until(lambda: len(recorder.interruptions) == 2, 5 * UNIT)
    finally:
        answering.close()
        await answering.wait_closed()
    assert recorder.interruptions == [{"room:x": True}, {"room:x": False}]
    await broker.close()
