"""A node's webhooks: what it emits goes to the queue, and a sender per receiver
takes it from there (sender.py).

What a caller must know
-----------------------

- :meth:`Webhooks.emit` never blocks and never awaits: the event is buffered, and
  the buffer goes to the queue in one add per turn of the event loop, one add at a
  time (so the events of one node are queued in the order they were emitted). An
  event no receiver wants is not queued.
- While the queue is unavailable the add is retried, with backoff, with the same
  batch (the queue adds it once). Meanwhile at most ``max_buffered`` events wait;
  past that the oldest waiting ones are dropped, counted failed and logged.
- :meth:`start` starts the senders; :meth:`close` waits up to ``timeout`` seconds
  for the buffer to be queued (counting and logging what is not), then stops the
  senders and releases their leases: another node takes over at once.
- ``holder`` names this node's process in the leases: unique to it.
"""

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from pushgate.errors import BrokerUnavailable
from pushgate.webhooks.events import Entry, Receiver, WebhookEvent, encode, namespace_in
from pushgate.webhooks.queue import WebhookQueue, keep_for
from pushgate.webhooks.sender import BACKOFF, LEASE, MAX_BACKOFF, POLL, Post, Sender, Timing
from pushgate.webhooks.stats import DROPPED, UNQUEUED, WebhookStats

log = logging.getLogger("pushgate.webhooks")

MAX_BUFFERED = 100_000  # events waiting for the queue
MAX_ADD = 1_000  # events per add
# Retries of an add wait from ADD_BACKOFF, doubling, to MAX_ADD_BACKOFF seconds.
ADD_BACKOFF = 0.05
MAX_ADD_BACKOFF = 2.0


class Webhooks:
    """Emits events to ``receivers`` through ``queue``. See the module docstring."""

    def __init__(
        self,
        queue: WebhookQueue,
        receivers: Sequence[Receiver],
        *,
        secret: bytes,
        timeout: float,
        retry_for: float,
        holder: str,
        # Timers: leases, polling for other nodes' events, backoff between retries.
        lease: float = LEASE,
        poll: float = POLL,
        backoff: float = BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        # Limits
        max_buffered: int = MAX_BUFFERED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = [receiver.key for receiver in receivers]
        if len(set(keys)) != len(keys):
            raise ValueError(f"receivers configured twice: {[r.url for r in receivers]}")
        self.stats = WebhookStats()
        self.receivers = tuple(receivers)
        self._queue = queue
        self._secret = secret
        self._timeout = timeout
        self._retry_for = retry_for
        self._keep = keep_for(retry_for)
        self._holder = holder
        self._timing = Timing(lease, poll, backoff, max_backoff)
        self._max_buffered = max_buffered
        self._clock = clock
        # Emitting: what waits, the add in flight (retried as it is), who adds.
        self._buffer: collections.deque[Entry] = collections.deque()
        self._adding: list[Entry] = []
        self._batch = 0
        self._adder = f"{holder}.{os.urandom(4).hex()}"  # a holder's id may be reused
        self._flusher: asyncio.Task[None] | None = None
        self._dropped = 0  # not logged yet
        self._closed = False
        self._http: aiohttp.ClientSession | None = None
        self._senders: list[Sender] = []

    def emit(self, name: str, data: Mapping[str, object]) -> None:
        """Queue the event ``name`` with ``data`` for the receivers that want it, in
        the background. Raises TypeError, at once, if ``data`` is not JSON-able."""
        namespace = namespace_in(data)
        if not any(r.wants(name, namespace) for r in self.receivers):
            return
        entry = encode(WebhookEvent(name, data, int(self._clock() * 1000)))
        if self._closed:
            self.stats.failed[UNQUEUED] += 1
            log.error("webhook event %s emitted after the webhooks closed: not sent", name)
            return
        if len(self._buffer) >= self._max_buffered:
            self._buffer.popleft()
            self.stats.failed[DROPPED] += 1
            self._dropped += 1
        self._buffer.append(entry)
        self.stats.buffered = len(self._buffer) + len(self._adding)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def start(self) -> None:
        """Start a sender per receiver."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        post = Post(self._http, self._secret, self._clock)
        self._senders = [
            Sender(
                self._queue,
                receiver,
                post,
                self.stats,
                holder=self._holder,
                retry_for=self._retry_for,
                keep=self._keep,
                timing=self._timing,
            )
            for receiver in self.receivers
        ]
        for sender in self._senders:
            sender.start()

    async def close(self) -> None:
        """Queue what is buffered (``timeout`` seconds at most), stop the senders."""
        self._closed = True
        if self._flusher is not None:
            flusher = self._flusher
            await asyncio.wait([flusher], timeout=self._timeout)
            if not flusher.done():
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
                unqueued = len(self._buffer) + len(self._adding)
                self.stats.failed[UNQUEUED] += unqueued
                log.error(
                    "webhooks: %d events could not be queued before closing: not sent", unqueued
                )
        await asyncio.gather(*(sender.stop() for sender in self._senders))
        with contextlib.suppress(BrokerUnavailable, TimeoutError):
            async with asyncio.timeout(self._timeout):  # or the leases run out
                await asyncio.gather(*(sender.release() for sender in self._senders))
        if self._http is not None:
            await self._http.close()

    async def _flush(self) -> None:
        """Add what is buffered, one add at a time, until the buffer is empty."""
        delay = ADD_BACKOFF
        try:
            while self._buffer or self._adding:
                if not self._adding:
                    count = min(len(self._buffer), MAX_ADD)
                    self._adding = [self._buffer.popleft() for _ in range(count)]
                    self._batch += 1
                try:
                    await self._queue.add(
                        self._adding, adder=self._adder, batch=self._batch, keep=self._keep
                    )
                except Exception as exc:  # BrokerUnavailable, or a bug: the events wait
                    self._add_failed(exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_ADD_BACKOFF)
                    continue
                if delay > ADD_BACKOFF:
                    log.info("webhooks: the queue is reachable again")
                    delay = ADD_BACKOFF
                self.stats.queued += len(self._adding)
                self._adding = []
                self.stats.buffered = len(self._buffer)
                self._report_dropped()
                for sender in self._senders:
                    sender.wake()
        finally:
            self._flusher = None

    def _add_failed(self, exc: Exception, delay: float) -> None:
        if not isinstance(exc, BrokerUnavailable):
            log.error("webhooks: cannot queue events", exc_info=exc)
        elif delay == ADD_BACKOFF:
            log.warning("webhooks: %s; %d events wait to be queued", exc, self.stats.buffered)
        self._report_dropped()

    def _report_dropped(self) -> None:
        if self._dropped:
            log.error(
                "webhooks: %d events dropped, the oldest waiting: %d events waited for "
                "the queue already, the limit",
                self._dropped,
                self._max_buffered,
            )
            self._dropped = 0
