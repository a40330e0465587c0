"""Redis CPU per push: what one publish (the history script and its PUBLISH or
SPUBLISH) costs the Redis server, which is what sizes Redis for a load.

Publishes COUNT pushes to TOPICS one-member rooms through pushgate's own broker,
with a second broker subscribed to every one of them (a gateway), and reads the
server's CPU (INFO cpu) before and after.

    .venv/bin/python scripts/redis-publish-cost.py redis://127.0.0.1:6379/0
    .venv/bin/python scripts/redis-publish-cost.py redis+cluster://127.0.0.1:7000,...
"""

import argparse
import asyncio
import time

from redis.asyncio import Redis

from pushgate.broker.redis import RedisBroker
from pushgate.broker.redis_cluster import RedisClusterBroker
from pushgate.streams import Publication

IN_FLIGHT = 200  # publishes awaited at once


class Counter:
    def __init__(self) -> None:
        self.received = 0

    def on_message(self, topic: str, payload: bytes) -> int:
        return 0

    def on_publication(self, topic: str, pub: Publication) -> int:
        self.received += 1
        return 1

    def on_reconnected(self) -> None:
        pass


async def redis_cpu(ports: list[tuple[str, int]]) -> list[float]:
    seconds = []
    for host, port in ports:
        async with Redis(host=host, port=port) as client:
            info = await client.info("cpu")
            seconds.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("broker")
    parser.add_argument("--topics", type=int, default=2000)
    parser.add_argument("--count", type=int, default=50_000)
    args = parser.parse_args()
    kind = RedisClusterBroker if args.broker.startswith("redis+cluster://") else RedisBroker
    prefix = f"cost{time.time_ns()}:"
    publisher = kind(args.broker, prefix=prefix, node_id="publisher")
    gateway = kind(args.broker, prefix=prefix, node_id="gateway")
    counter = Counter()
    await publisher.start(Counter())
    await gateway.start(counter)
    topics = [f"room:r{i}" for i in range(args.topics)]
    await asyncio.gather(*(gateway.subscribe(t) for t in topics))
    if isinstance(publisher, RedisClusterBroker):
        ports = [(n.host, int(n.port)) for n in publisher.client.get_primaries()]
    else:
        kwargs = publisher.client.connection_pool.connection_kwargs
        ports = [(kwargs["host"], int(kwargs["port"]))]
    message = b'{"type":2,"data":"' + b"x" * 100 + b'","room":"r"}\n'
    before = await redis_cpu(ports)
    started = time.perf_counter()
    sent = 0

    async def publish_some() -> None:
        nonlocal sent
        while sent < args.count:
            sent += 1
            await publisher.publish_push(topics[sent % len(topics)], message)

    await asyncio.gather(*(publish_some() for _ in range(IN_FLIGHT)))
    await gateway.sync()
    elapsed = time.perf_counter() - started
    after = await redis_cpu(ports)
    used = [b - a for a, b in zip(before, after, strict=True)]
    print(
        f"{args.count} pushes to {args.topics} topics in {elapsed:.2f} s, "
        f"{counter.received} received"
    )
    print(
        f"Redis CPU per push: {sum(used) / args.count * 1e6:.1f} µs over {len(ports)} server(s)"
        f" (each: {', '.join(f'{u:.2f} s' for u in used)})"
    )
    await gateway.close()
    await publisher.close()


if __name__ == "__main__":
    asyncio.run(main())
