"""A node SIGKILLed with webhook events queued loses none: another node delivers them.

The killed node is a child process (tests/webhooks/emitter.py) on the test's
redis-server; its receiver takes its first POST and never answers, so that the
node dies holding the receiver's lease with a batch in flight.
"""

import asyncio
import itertools
import sys
from pathlib import Path

from pushgate.broker.redis import RedisBroker
from pushgate.webhooks.events import Receiver
from pushgate.webhooks.redisqueue import RedisWebhookQueue
from pushgate.webhooks.service import Webhooks
from tests.helpers import UNIT
from tests.redis_server import RedisServer
from tests.webhooks.emitter import EVENTS, LEASE
from tests.webhooks.hookserver import SECRET, HookServer, id_key

COUNT = 1000
ROOT = Path(__file__).resolve().parents[2]
PREFIXES = itertools.count()


async def test_a_killed_nodes_queued_events_are_delivered_by_another(
    module_redis: RedisServer,
) -> None:
    """All COUNT events queued by a node killed mid-POST arrive through another node,
    in order, once the dead node's lease runs out; the batch it had in flight comes
    again with the same ids."""
    prefix = f"sigkill{next(PREFIXES)}:"
    hook = HookServer()
    hook.hang = True
    await hook.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.webhooks.emitter",
        module_redis.url,
        prefix,
        hook.url,
        str(COUNT),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    broker = RedisBroker(module_redis.url, prefix=prefix, node_id="parent")
    webhooks = Webhooks(
        RedisWebhookQueue(broker),
        [Receiver(hook.url, EVENTS)],
        secret=SECRET,
        timeout=5.0,
        retry_for=600.0,
        holder="parent",
        lease=LEASE,
        poll=0.05,
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(20 * UNIT):
            assert await child.stdout.readline() == f"queued {COUNT}\n".encode()
        await hook.until(lambda: len(hook.attempts) == 1)
        in_flight = hook.attempts[0]
        child.kill()  # SIGKILL, by the pid started above
        await child.wait()
        hook.hang = False
        webhooks.start()
        await hook.until(lambda: len(hook.unique()) >= COUNT, timeout=10 * UNIT)
        events = hook.unique()
        assert [event["data"]["i"] for event in events] == list(range(COUNT))
        ids = [event["id"] for event in events]
        assert [id_key(i) for i in ids] == sorted(map(id_key, ids))
        assert ids[: len(in_flight)] == in_flight
        assert hook.problems == []
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await webhooks.close()
        await broker.close()
        await hook.stop()
