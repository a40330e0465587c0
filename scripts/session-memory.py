"""What a detached, resumable session costs: in the memory store (tracemalloc around
creating and detaching N sessions, the wsId included, the token not: the server keeps
only its hash) and in Redis (`used_memory` before and after, on a redis-server of its
own). Each session follows `all` and one room, as a client in one room does.

    .venv/bin/python scripts/session-memory.py [N]
"""

import asyncio
import gc
import sys
import tracemalloc
from pathlib import Path

from redis.asyncio import Redis

from pushgate.broker.redis_sessions import RedisSessions
from pushgate.ids import new_conn_id
from pushgate.memorysessions import MemorySessions
from pushgate.sessions import Sessions, new_token
from pushgate.streams import Position, new_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.redis_server import RedisServer


async def fill(store: Sessions, n: int, tokens: list[str]) -> None:
    all_epoch, room_epoch = new_epoch(), new_epoch()
    for i in range(n):
        ws_id, holder = new_conn_id(), f"0123456789ab.{i:08x}"
        streams = {
            "all": Position(all_epoch, 1000 + i),
            f"room:r{i % 100}": Position(room_epoch, 50),
        }
        await store.create(ws_id, tokens[i], None, streams, holder)
        await store.detach(ws_id, holder)


async def main(n: int) -> None:
    tokens = [new_token() for _ in range(n)]  # the client's; made before measuring
    memory = MemorySessions(60.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    await fill(memory, n, tokens)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"memory store: {used / n:.0f} bytes per detached session ({n:,} sessions)")

    server = RedisServer()
    await server.start()
    client = Redis.from_url(server.url)
    try:
        before = (await client.info("memory"))["used_memory"]
        await fill(RedisSessions(client, prefix="pushgate:", ttl=60.0), n, tokens)
        used = (await client.info("memory"))["used_memory"] - before
        print(f"Redis store:  {used / n:.0f} bytes of used_memory per detached session")
    finally:
        await client.aclose()
        server.kill()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
