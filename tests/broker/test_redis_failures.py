"""The Redis broker's own failure handling, against a real redis-server: a
subscription that dies silently (python-socketio's "deaf worker") is noticed."""

import asyncio

from pushgate.broker.redis import RedisBroker
from tests.broker.test_contract import Recorder
from tests.helpers import UNIT
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
