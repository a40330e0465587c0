"""The chat scenario's pushes through the logic API: the same messages the clients
published, sent by the bench instead, as a back end that relays one client's action
to the others would (``POST /push/batch``, each item to the sender's room with
``exclude`` = the sender's wsId; docs/presence.md, docs/protocol.md "Publishing"),
or with ``batch=False`` one ``POST /push/room`` each, as a back end that relays one
event at a time would.

Each client has its slot in every period of 1/rate seconds
(:func:`pushgate.bench.scenarios.chat_slot`), as when it published itself; the
pusher walks that schedule and, every few milliseconds, sends the items that came
due as one batch (at most MAX_BATCH items), on whichever of ``senders`` kept-alive
connections is free. Each item's ``val`` is ``"<send time ns> <seq> <pad>"`` padded
to ``size`` bytes, the send time taken when its batch is sent: a client message's
latency runs from the moment its client sent it, an API push's from the moment the
bench sent it. When every connection is busy the schedule slips, and ``late_ms``
says by how much.
"""

import asyncio
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pushgate.bench.histogram import Histogram
from pushgate.bench.httpclient import HttpConnection, HttpError

MAX_BATCH = 1000  # items in one POST /push/batch: the API's own limit
TICK = 0.005  # seconds: items due within this long go in the batch being made
REQUEST_TIMEOUT = 30.0
MAX_ERROR_TEXT = 200


@dataclass(frozen=True, slots=True)
class Slot:
    """A client's place in the schedule, and what an item in its name carries."""

    slot: float  # when in each period, a fraction of it
    index: int
    room: str
    ws_id: str


@dataclass
class ApiLog:
    """What the pusher did; read live by the progress display."""

    sent: int = 0  # items
    accepted: int = 0  # items answered ok
    batches: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # items refused or lost, by reason
    by_room: Counter[str] = field(default_factory=Counter)  # items accepted per room
    excluded: Counter[int] = field(default_factory=Counter)  # accepted items leaving a client out
    delivered: int = 0  # the sum of the answers' "delivered" counts
    rtt: Histogram = field(default_factory=Histogram)  # µs from a batch sent to its answer
    first_ns: int = 0
    started: float = 0.0
    finished: float = 0.0
    late_ms: float = 0.0


class JsonConnection(HttpConnection):
    """A kept-alive connection to the logic API that POSTs JSON bodies."""

    async def post_json(self, path: str, body: bytes) -> tuple[int, bytes]:
        request = b"".join(
            (
                b"POST ",
                (self.prefix + path).encode(),
                self._host_line,
                b"Content-Type: application/json\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )
        return await self._send(request)


class ApiPusher:
    """Sends, for each client of ``slots``, one push to its room every period of
    1/``rate`` seconds, in its slot: ``counts[index]`` of them when ``counts`` is
    given, otherwise until :meth:`stop` (or ``duration``)."""

    def __init__(
        self,
        api_url: str,
        slots: Sequence[Slot],
        *,
        rate: float,
        size: int,
        tag: int,
        senders: int,
        counts: Mapping[int, int] | None = None,
        duration: float | None = None,
        exclude: bool = True,
        batch: bool = True,
    ) -> None:
        if rate <= 0:
            raise ValueError("the API pusher needs a rate")
        self.api_url = api_url
        self.slots = sorted(slots, key=lambda s: (s.slot, s.index))
        self.rate = rate
        self.size = size
        self.tag = tag
        self.senders = senders
        self.counts = counts
        self.duration = duration
        self.exclude = exclude
        self.batch = batch
        self.log = ApiLog()
        self._stopped = False
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Send nothing more (batches in flight are still answered); ``run`` returns."""
        self._stopped = True

    async def run(self) -> ApiLog:
        log = self.log
        free: asyncio.Queue[JsonConnection] = asyncio.Queue()
        connections = [JsonConnection(self.api_url) for _ in range(self.senders)]
        for conn in connections:
            free.put_nowait(conn)
        loop = asyncio.get_running_loop()
        period = 1 / self.rate
        start = loop.time() + 0.01
        end = start + self.duration if self.duration is not None else float("inf")
        periods = max(self.counts.values(), default=0) if self.counts is not None else None
        log.started = time.monotonic()
        batch: list[Slot] = []
        try:
            k = 0
            while not self._stopped and (periods is None or k < periods):
                for slot in self.slots:
                    due = start + (k + slot.slot) * period
                    if due >= end or self._stopped:
                        break
                    if self.counts is not None and k >= self.counts.get(slot.index, 0):
                        continue
                    delay = due - loop.time()
                    if delay > TICK:
                        await self._flush(batch, free)
                        batch = []
                        await asyncio.sleep(delay)
                    elif delay < 0:
                        log.late_ms = max(log.late_ms, -delay * 1000)
                    batch.append(slot)
                    if len(batch) >= MAX_BATCH:
                        await self._flush(batch, free)
                        batch = []
                else:
                    k += 1
                    continue
                break
            await self._flush(batch, free)
            if self._tasks:
                await asyncio.gather(*self._tasks)
        finally:
            log.finished = time.monotonic()
            await asyncio.gather(*(c.close() for c in connections))
        return log

    async def _flush(self, batch: list[Slot], free: "asyncio.Queue[JsonConnection]") -> None:
        """Send ``batch`` on the next free connection (waiting for one)."""
        if not batch:
            return
        conn = await free.get()
        task = asyncio.create_task(self._send(conn, batch, free))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, conn: JsonConnection, batch: list[Slot], free: "asyncio.Queue[JsonConnection]"
    ) -> None:
        try:
            if self.batch:
                await self._post(conn, batch)
            else:
                for slot in batch:
                    await self._post(conn, [slot])
        finally:
            free.put_nowait(conn)

    async def _post(self, conn: JsonConnection, slots: list[Slot]) -> None:
        """One request: ``slots`` as one ``POST /push/batch``, or (``batch`` off) the one
        slot as its own ``POST /push/room``, its answer counted as a batch's of one."""
        log = self.log
        sent_ns = time.time_ns()
        log.first_ns = log.first_ns or sent_ns
        if self.batch:
            path = "/push/batch"
            items = [self._item(slot, sent_ns, b'"target":"room",') for slot in slots]
            body = b"[" + b",".join(items) + b"]"
        else:
            path, body = "/push/room", self._item(slots[0], sent_ns, b"")
        log.sent += len(slots)
        log.batches += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, answer = await conn.post_json(path, body)
        except (HttpError, TimeoutError) as exc:
            log.errors[str(exc) or "timed out"] += len(slots)
            return
        log.rtt.add((time.time_ns() - sent_ns) // 1000)
        if status != 200:
            text = answer[:MAX_ERROR_TEXT].decode(errors="replace")
            log.errors[f"HTTP {status}: {text}"] += len(slots)
            return
        self._count(slots, answer if self.batch else b'{"results":[%s]}' % answer)

    def _item(self, slot: Slot, sent_ns: int, target: bytes) -> bytes:
        """One push's JSON: the sender's room, the tag, ``exclude`` and a val of
        ``"<sent ns> <seq> <pad>"`` padded to the size."""
        seq = self._seq
        self._seq += 1
        pad = b"x" * max(1, self.size - (21 + len(str(seq))))
        exclude = b',"exclude":"%s"' % slot.ws_id.encode() if self.exclude else b""
        return b'{%s"id":"%s","tag":%d%s,"val":"%d %d %s"}' % (
            target,
            slot.room.encode(),
            self.tag,
            exclude,
            sent_ns,
            seq,
            pad,
        )

    def _count(self, batch: list[Slot], answer: bytes) -> None:
        log = self.log
        try:
            results = json.loads(answer)["results"]
        except (ValueError, KeyError, TypeError):
            log.errors[f"not a batch answer: {answer[:MAX_ERROR_TEXT]!r}"] += len(batch)
            return
        for slot, result in zip(batch, results, strict=False):
            if isinstance(result, dict) and result.get("ok") is True:
                log.accepted += 1
                log.by_room[slot.room] += 1
                if self.exclude:
                    log.excluded[slot.index] += 1
                delivered = result.get("delivered")
                if isinstance(delivered, int):
                    log.delivered += delivered
            else:
                error = result.get("error") if isinstance(result, dict) else result
                log.errors[f"refused: {str(error)[:MAX_ERROR_TEXT]}"] += 1
        if len(results) < len(batch):
            log.errors["no answer for the item"] += len(batch) - len(results)
