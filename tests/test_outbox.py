"""The outbox writes each marked connection once per turn; while pushes come back to
back after a long flush, it waits a little so that one write carries several."""

import asyncio
import time

from pushgate import outbox as outbox_module
from pushgate.outbox import Outbox


class SlowSocket:
    """A connection whose write takes ``cost`` seconds of CPU (as 10,000 sockets do)."""

    peer = "127.0.0.1:1"

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        end = time.monotonic() + self.cost
        while time.monotonic() < end:
            pass

    def abort(self) -> None:
        pass


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_push_after_a_quiet_moment_is_written_on_the_next_turn() -> None:
    box = Outbox(asyncio.get_running_loop())
    conn = SlowSocket(0.0)
    box.mark(conn)
    await turns(2)
    assert conn.flushes == 1
    await asyncio.sleep(outbox_module.BURST_GAP * 2)  # quiet, even after a long flush
    box.mark(conn)
    await turns(2)
    assert conn.flushes == 2


async def test_pushes_back_to_back_after_a_long_flush_share_the_next_write() -> None:
    box = Outbox(asyncio.get_running_loop())
    conn = SlowSocket(0.02)  # a long flush: the next one waits a quarter of it
    box.mark(conn)
    await turns(2)
    assert conn.flushes == 1
    box.mark(conn)  # right after it: a burst
    await turns(3)
    assert conn.flushes == 1  # waiting for the pushes behind it
    await asyncio.sleep(0.02 * outbox_module.COALESCE_SHARE + 0.01)
    assert conn.flushes == 2


async def test_the_wait_is_bounded() -> None:
    box = Outbox(asyncio.get_running_loop())
    conn = SlowSocket(0.08)  # a quarter of it would be over the bound
    box.mark(conn)
    await turns(2)
    assert conn.flushes == 1
    assert box._coalesce_delay == outbox_module.MAX_COALESCE_DELAY
