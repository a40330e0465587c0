"""Join redis-servers started with --cluster-enabled into one Redis Cluster of
masters (no replicas), the slots split evenly, and wait until it serves every slot.

    .venv/bin/python scripts/redis-cluster-form.py PORT:BUSPORT PORT:BUSPORT PORT:BUSPORT

(BUSPORT is each server's --cluster-port.)

Used by scripts/bench-cluster (REDIS_SHARDS=3); redis-cli --cluster create does the
same where redis-tools is installed.
"""

import asyncio
import sys

from redis.asyncio import Redis

SLOTS = 16384
HOST = "127.0.0.1"


async def form(nodes: list[tuple[int, int]]) -> None:
    ports = [port for port, _ in nodes]
    share = SLOTS // len(ports)
    for i, port in enumerate(ports):
        async with Redis(host=HOST, port=port) as client:
            last = SLOTS - 1 if i == len(ports) - 1 else (i + 1) * share - 1
            await client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)  # type: ignore[no-untyped-call]
            if i:
                await client.execute_command("CLUSTER", "MEET", HOST, *nodes[0])  # type: ignore[no-untyped-call]
    async with asyncio.timeout(30):
        for port in ports:
            async with Redis(host=HOST, port=port) as client:
                while True:
                    info = (await client.execute_command("CLUSTER", "INFO")).decode()  # type: ignore[no-untyped-call]
                    if "cluster_state:ok" in info and f"cluster_known_nodes:{len(ports)}" in info:
                        break
                    await asyncio.sleep(0.1)


if __name__ == "__main__":
    pairs = [arg.split(":") for arg in sys.argv[1:]]
    asyncio.run(form([(int(port), int(bus)) for port, bus in pairs]))
