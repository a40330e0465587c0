"""How many webhook events per second one Webhooks delivers over a redis-server to
one local aiohttp receiver (in this process: it shares the CPU, so this is a floor)::

    python -m tests.webhooks.throughput [COUNT]

Emits COUNT events (1,000 per turn of the loop), and reports the time from the first
emit to the last event received, with every event checked once, in order.
"""

import asyncio
import sys
import time

from pushgate.broker.redis import RedisBroker
from pushgate.webhooks.events import Receiver
from pushgate.webhooks.redisqueue import RedisWebhookQueue
from pushgate.webhooks.service import Webhooks
from tests.redis_server import RedisServer
from tests.webhooks.hookserver import SECRET, HookServer


async def main(count: int) -> None:
    redis = RedisServer()
    await redis.start()
    hook = HookServer()
    await hook.start()
    broker = RedisBroker(redis.url, prefix="bench:", node_id="bench")
    webhooks = Webhooks(
        RedisWebhookQueue(broker),
        [Receiver(hook.url, frozenset({"member_joined"}))],
        secret=SECRET,
        timeout=5.0,
        retry_for=600.0,
        holder="bench",
    )
    webhooks.start()
    try:
        started = time.perf_counter()
        for i in range(count):
            webhooks.emit("member_joined", {"room": f"chat:{i % 100}", "user": f"u{i}", "i": i})
            if i % 1000 == 999:
                await asyncio.sleep(0)
        await hook.until_events(count, timeout=600)
        elapsed = time.perf_counter() - started
        assert [event["data"]["i"] for event in hook.events] == list(range(count))
        assert hook.problems == []
        print(
            f"{count} events in {elapsed:.2f} s: {count / elapsed:,.0f} events/s, "
            f"{len(hook.attempts)} POSTs"
        )
    finally:
        await webhooks.close()
        await broker.close()
        await hook.stop()
        redis.kill()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000))
