"""A node that queues webhook events for a receiver that does not answer, for
tests/webhooks/test_sigkill.py::

    python -m tests.webhooks.emitter REDIS_URL PREFIX RECEIVER_URL COUNT

It emits COUNT ``member_joined`` events (``data["i"]`` from 0), prints ``queued
COUNT`` once they are all in Redis, and waits to be killed, its sender holding the
receiver's lease (a lease of 1 s) with a POST in flight.
"""

import asyncio
import sys

from pushgate.broker.redis import RedisBroker
from pushgate.webhooks.events import Receiver
from pushgate.webhooks.redisqueue import RedisWebhookQueue
from pushgate.webhooks.service import Webhooks
from tests.webhooks.hookserver import SECRET

EVENTS = frozenset({"member_joined"})
HOLDER = "child"
LEASE = 1.0


async def main(url: str, prefix: str, receiver: str, count: int) -> None:
    broker = RedisBroker(url, prefix=prefix, node_id=HOLDER)
    webhooks = Webhooks(
        RedisWebhookQueue(broker),
        [Receiver(receiver, EVENTS)],
        secret=SECRET,
        timeout=60.0,
        retry_for=600.0,
        holder=HOLDER,
        lease=LEASE,
    )
    webhooks.start()
    for i in range(count):
        webhooks.emit("member_joined", {"room": "chat:1", "i": i})
    while webhooks.stats.queued < count:  # noqa: ASYNC110 - a count, no event
        await asyncio.sleep(0.01)
    print("queued", count, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    url, prefix, receiver, count = sys.argv[1:]
    asyncio.run(main(url, prefix, receiver, int(count)))
