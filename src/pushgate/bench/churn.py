"""The churn of ``pushgate bench churn``, a worker's side: clients that come and go
beside the measured ones, so that the server meets connects and closes while it fans
out. Open-loop: the n-th client is due at start + n / rate whatever became of those
before it, so a slow server meets the rate asked, not a lower one; at most
``max_open`` are open at once, and those due beyond are counted as skipped. They are
not measured as the clients are: only how many opened, closed and failed, and how
long a connect took (:class:`~pushgate.bench.replies.ChurnStopped`).
"""

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

from pushgate.bench.histogram import Histogram
from pushgate.bench.replies import ChurnStopped
from pushgate.bench.targets import MAX_ERROR_KINDS, Target, describe, open_client
from pushgate.bench.wsclient import BenchClient, HandshakeError


async def churn(
    new_client: Callable[[int], BenchClient],
    target_of: Callable[[int], Target],
    source_of: Callable[[int], str | None],
    stop: asyncio.Event,
    rate: float,
    lifetime: float,
    first: int,
    within: float,
    max_open: int,
) -> ChurnStopped:
    """Open a client every ``1 / rate`` seconds, numbered from ``first``, each closed
    after ``lifetime`` seconds, until ``stop`` is set; then give those still open at
    most ``lifetime + 2 * within`` seconds to finish. ``within`` bounds each connect
    and each close."""
    errors: Counter[str] = Counter()
    hist = Histogram()
    stats = {"opened": 0, "closed": 0}
    live: set[asyncio.Task[None]] = set()

    async def one(index: int) -> None:
        client = new_client(index)
        t0 = time.monotonic()
        try:
            await open_client(target_of(index), source_of(index), client, within)
        except (OSError, HandshakeError, TimeoutError) as exc:
            errors[describe(exc)] += 1
            return
        hist.add(int((time.monotonic() - t0) * 1e6))
        stats["opened"] += 1
        await asyncio.sleep(lifetime)
        client.close()
        try:
            async with asyncio.timeout(within):
                await client.closed
            stats["closed"] += 1
        except TimeoutError:
            errors["close timed out"] += 1
            client.abort()

    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while not stop.is_set():
        # Open-loop pacing: the n-th connection is due at start + n / rate.
        delay = start + n / rate - loop.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            continue
        if len(live) < max_open:
            task = asyncio.create_task(one(first + n))
            live.add(task)
            task.add_done_callback(live.discard)
        else:
            errors["skipped: too many churn connections open"] += 1
        n += 1
    # Let the last ones finish their life and close, within bounds.
    if live:
        _, pending = await asyncio.wait(live, timeout=lifetime + 2 * within)
        for task in pending:
            task.cancel()
    return ChurnStopped(
        opened=stats["opened"],
        closed=stats["closed"],
        failed=sum(v for k, v in errors.items() if not k.startswith("skipped")),
        errors=dict(errors.most_common(MAX_ERROR_KINDS)),
        connect_us=hist.to_pairs(),
        cpu_s=0.0,  # churn_stop tells
    )
