"""One receiver's sender: claims the receiver's lease, then POSTs its events in
order, in batches, until the lease is lost or the sender is closed.

A step reads up to ``READ_COUNT`` entries after the cursor, takes the ones the
receiver wants (up to ``MAX_EVENTS`` and ``MAX_BYTES``), POSTs them, and on a 2xx
moves the cursor past every entry it looked at. Anything else (no connection, no
answer within the timeout, any other status) is retried, after a backoff that
doubles from ``backoff`` to ``max_backoff`` with jitter, with the same batch (it
may have grown: the same first id, more after it).

While a receiver fails, an event is given up once it is older than ``retry_for`` and
the receiver has been failing for that long (so each event is retried for at least
``retry_for``, and a backlog queued before the failure too): the error log names the
receiver, how many and the first and last id; ``failed`` counts them. Each receiver
has a sender of its own: a slow or failing receiver holds up no other.

The lease is renewed every third of its length by a task of its own (a POST may take
the whole timeout); when a renewal is refused, or none succeeded within the lease,
the sender stops posting and claims again. A POST whose commit the queue refuses
(the lease was lost meanwhile) is sent again by the next holder: at least once.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from pushgate import __version__
from pushgate.errors import BrokerUnavailable
from pushgate.webhooks import pusherformat
from pushgate.webhooks.events import Queued, Receiver, body, id_ms, lost_between
from pushgate.webhooks.pusherformat import PusherHookApp
from pushgate.webhooks.queue import WebhookQueue
from pushgate.webhooks.signing import HEADER, sign
from pushgate.webhooks.stats import GAVE_UP, TRIMMED, WebhookStats

log = logging.getLogger("pushgate.webhooks")

# Limits of one POST.
MAX_EVENTS = 100
MAX_BYTES = 256 * 1024
READ_COUNT = 100  # entries read per step (a receiver that wants few reads on at once)
USER_AGENT = f"pushgate/{__version__}"
# Seconds; see Timing.
LEASE = 5.0
POLL = 0.2
BACKOFF = 1.0
MAX_BACKOFF = 60.0


# Seconds between cancels of a sender that has not stopped yet (see Sender.stop).
STOP_WAIT = 0.5


@dataclass(frozen=True, slots=True)
class Timing:
    """``lease``: how long a claim lasts (a dead holder's receiver waits that long);
    ``poll``: how often an idle sender looks for events other nodes queued; retries
    wait ``backoff`` seconds, doubling up to ``max_backoff``."""

    lease: float = LEASE
    poll: float = POLL
    backoff: float = BACKOFF
    max_backoff: float = MAX_BACKOFF


@dataclass(frozen=True, slots=True)
class Post:
    """What a sender needs to POST: the session, the secret, the timeout is the session's."""

    http: aiohttp.ClientSession
    secret: bytes
    clock: Callable[[], float] = time.time


class Sender:
    """Sends ``receiver`` its events from ``queue`` while it holds the lease."""

    def __init__(
        self,
        queue: WebhookQueue,
        receiver: Receiver,
        post: Post,
        stats: WebhookStats,
        *,
        holder: str,
        retry_for: float,
        keep: float,
        timing: Timing,
    ) -> None:
        self.receiver = receiver
        self._queue = queue
        self._post_with = post
        self._stats = stats
        self._key = receiver.key
        self._holder = holder
        self._retry_for = retry_for
        self._keep = keep
        self._timing = timing
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wakeup = asyncio.Event()
        # The lease, and where this holder is in the queue.
        self._held_until = 0.0  # monotonic
        self._cursor: str | None = None
        self._moved = False  # the cursor moved here and the queue was not told yet
        self._checked: str | None = ""  # the cursor whose gap was checked ("": none)
        # Failures: of the receiver (since when, and the last one), of the queue.
        self._failing_since: float | None = None
        self._error = ""
        self._attempts = 0
        self._queue_down = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pushgate-webhook-{self._key}")

    def wake(self) -> None:
        """Events were queued: look now rather than at the next poll."""
        self._wakeup.set()

    async def stop(self) -> None:
        """Stop sending: a POST in flight is abandoned (the next holder sends it again).

        The cancel is repeated until the task ends, and every loop of the task looks at
        ``_stopping``: on Python 3.11 a cancel that lands as an ``asyncio.timeout`` (the
        idle poll) expires can come out as that timeout, and be swallowed with it."""
        self._stopping = True
        task = self._task
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=STOP_WAIT)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("webhook %s: the sender ended with %r", self.receiver.url, task.exception())

    async def release(self) -> None:
        """Once stopped, let another node take over at once, rather than when the
        lease runs out. Raises BrokerUnavailable."""
        if self._held_until:
            await self._queue.release(self._key, self._holder)

    # The lease

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._serve()
            except Exception:  # a bug must not end this receiver's deliveries for good
                log.exception("webhook %s: unexpected error; starting again", self.receiver.url)
                self._held_until = 0.0
                await asyncio.sleep(self._backoff())

    async def _serve(self) -> None:
        """Claim the lease and deliver while it is held; return when it is lost."""
        while not self._stopping:
            asked = time.monotonic()
            try:
                claim = await self._queue.claim(self._key, self._holder, self._timing.lease)
            except BrokerUnavailable as exc:
                await self._queue_failed(exc)
                continue
            if claim is None:  # another node sends them; it may die
                await asyncio.sleep(self._timing.lease / 3)
                continue
            self._held_until = asked + self._timing.lease
            self._cursor, self._moved, self._checked = claim.cursor, False, ""
            keeper = asyncio.create_task(self._keep_lease())
            try:
                await self._deliver()
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            if not self._held():
                return

    def _held(self) -> bool:
        return time.monotonic() < self._held_until

    def _lose(self) -> None:
        self._held_until = 0.0
        self.wake()

    async def _keep_lease(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._timing.lease / 3)
            asked = time.monotonic()
            try:
                claim = await self._queue.claim(self._key, self._holder, self._timing.lease)
            except BrokerUnavailable:
                continue  # the lease runs out here as it does in the queue
            if claim is None:
                log.warning("webhook %s: another node took over its events", self.receiver.url)
                self._lose()
                return
            self._held_until = asked + self._timing.lease

    # Delivery

    async def _deliver(self) -> None:
        while self._held() and not self._stopping:
            self._wakeup.clear()  # before the read: a wake during it is not missed
            try:
                if self._moved and self._cursor is not None:  # a commit that failed
                    await self._commit(self._cursor)
                busy = await self._step()
            except BrokerUnavailable as exc:
                await self._queue_failed(exc)
                continue
            if self._queue_down:
                log.info("webhook queue: reachable again")
                self._queue_down = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._timing.poll):
                        await self._wakeup.wait()

    async def _step(self) -> bool:
        """One batch read, and sent or given up; False when there was nothing to read."""
        entries = await self._queue.read(self._cursor, READ_COUNT)
        if not entries:
            return False
        self._check_gap(entries[0].id)
        batch, last = _take(self.receiver, entries)
        expired = self._expired(batch)
        if expired:
            self._give_up(batch[:expired])
            await self._commit(batch[expired - 1].id)
            return True
        if batch:
            error = await self._post(batch)
            if error is not None:
                await self._retry_later(batch, error)
                return True
            self._stats.sent += len(batch)
            self._delivered()
        await self._commit(last)
        return True

    async def _commit(self, last: str) -> None:
        self._cursor, self._moved = last, True
        if not await self._queue.commit(self._key, self._holder, last, keep=self._keep):
            log.warning("webhook %s: its lease ran out; claiming it again", self.receiver.url)
            self._lose()
        self._moved = False

    async def _post(self, batch: list[Queued]) -> str | None:
        """POST the batch; None when the receiver answered 2xx, else what went wrong."""
        post = self._post_with
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        pusher = self.receiver.pusher
        if pusher is None:
            data = body(batch)
            headers[HEADER] = sign(post.secret, data, int(post.clock()))
        else:
            told = pusherformat.body(batch, int(post.clock() * 1000))
            if told is None:
                return None  # nothing Pusher tells: delivered, as far as it goes
            data = told
            headers.update(pusherformat.headers(PusherHookApp(*pusher), data))
        started = time.perf_counter()
        try:
            async with post.http.post(
                self.receiver.url, data=data, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            self._stats.post_seconds.observe(time.perf_counter() - started)
        return None if 200 <= status < 300 else f"HTTP {status}"

    # Failures

    async def _retry_later(self, batch: list[Queued], error: str) -> None:
        self._stats.retried += len(batch)
        if self._failing_since is None:
            self._failing_since = self._post_with.clock()
            log.warning(
                "webhook %s: %s; retrying for %g s (%d events waiting from id %s)",
                self.receiver.url,
                error,
                self._retry_for,
                len(batch),
                batch[0].id,
            )
        self._error = error
        await asyncio.sleep(self._backoff())

    def _delivered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "webhook %s: delivered again after %.1f s of failures",
                self.receiver.url,
                self._post_with.clock() - self._failing_since,
            )
        self._failing_since, self._attempts = None, 0

    def _backoff(self) -> float:
        timing = self._timing
        delay = min(timing.max_backoff, timing.backoff * 2.0**self._attempts)
        self._attempts = min(self._attempts + 1, 32)
        return delay * random.uniform(0.8, 1.2)  # nodes that failed at once retry apart

    def _expired(self, batch: list[Queued]) -> int:
        """How many of the batch's first events are given up: the receiver has been
        failing, and they have been waiting, for longer than ``retry_for``."""
        if self._failing_since is None:
            return 0
        now_ms = self._post_with.clock() * 1000
        since_ms = self._failing_since * 1000
        limit = self._retry_for * 1000
        count = 0
        for queued in batch:
            if now_ms - max(id_ms(queued.id), since_ms) <= limit:
                break
            count += 1
        return count

    def _give_up(self, given: list[Queued]) -> None:
        self._stats.failed[GAVE_UP] += len(given)
        log.error(
            "webhook %s: gave up %d events (ids %s to %s) after %g s of failures (last: %s)",
            self.receiver.url,
            len(given),
            given[0].id,
            given[-1].id,
            self._retry_for,
            self._error,
        )

    def _check_gap(self, first: str) -> None:
        """Count, once per cursor, the events trimmed before this sender read them."""
        if self._checked == self._cursor:
            return
        self._checked = self._cursor
        lost = lost_between(self._cursor, first)
        if lost is None:
            log.error(
                "webhook %s: the queue started again after id %s; the events queued "
                "in between, if any, were lost",
                self.receiver.url,
                self._cursor,
            )
        elif lost:
            self._stats.failed[TRIMMED] += lost
            log.error(
                "webhook %s: %d events after id %s were dropped from the queue before "
                "they were sent (no node sent this receiver's events for a long while; "
                "some may not have been for it)",
                self.receiver.url,
                lost,
                self._cursor,
            )

    async def _queue_failed(self, exc: BrokerUnavailable) -> None:
        if not self._queue_down:
            log.warning("webhook %s: %s; trying again", self.receiver.url, exc)
            self._queue_down = True
        await asyncio.sleep(min(self._timing.lease / 3, 1.0))


def _take(receiver: Receiver, entries: list[Queued]) -> tuple[list[Queued], str]:
    """The events of ``entries`` the receiver wants that fit in one POST, and the id
    of the last entry looked at (what the cursor moves to once they are sent)."""
    batch: list[Queued] = []
    size = 0
    last = entries[0].id
    for queued in entries:
        entry = queued.entry
        if receiver.wants(entry.name, entry.namespace):
            size += len(entry.payload) + len(queued.id) + 10
            if len(batch) == MAX_EVENTS or (batch and size > MAX_BYTES):
                break
            batch.append(queued)
        last = queued.id
    return batch, last
