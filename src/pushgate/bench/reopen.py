"""A worker's side of the resume and reconnect scenarios: drop every client at once,
then open a new connection for each, and (resume) wait until each caught up.

The drop (:meth:`Drop.run`) aborts every measured client's TCP connection at the
same moment (no close frame), and from then on records the arrival of every push
per stream and seq (:attr:`~pushgate.bench.wsclient.Counters.arrivals`), so that
:func:`caught_up` can tell when the last owed push arrived. Then, ``concurrency``
handshakes in flight, each within ``timeout`` seconds, on the target ``shift``
places after the client's own (0: the same gateway):

- :class:`Resumes` resumes each client's session (docs/recovery.md): the new
  :class:`~pushgate.bench.resumeclient.ResumeClient` takes the old one's wsId,
  session and tallies, and asks for every push since its positions;
- :class:`Reconnects` connects each client afresh (a new session, in the rooms
  its ``token`` names, if given): the baseline a resume storm is compared with.

A new connection the server closes with 1013 (try again later, docs/recovery.md)
is tried again, RESUME_ATTEMPTS times in all.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from pushgate.bench.histogram import Histogram
from pushgate.bench.procstat import own_cpu_seconds
from pushgate.bench.replies import Reconnected, Resumed
from pushgate.bench.resumeclient import ResumeClient, fresh_path, resume_path, stream_key
from pushgate.bench.targets import MAX_ERROR_KINDS, Target, describe, gave_up, open_client
from pushgate.bench.wsclient import CLOSE_ABNORMAL, BenchClient, Counters, HandshakeError
from pushgate.wire import CLOSE_TRY_AGAIN_LATER

RESUME_ATTEMPTS = 3
MAX_REASONS = 5
CATCH_UP_POLL = 0.05  # seconds between looks at the clients still catching up (the
# caught-up time comes from the arrival times, not from these looks)


class Drop:
    """One drop of a worker's measured clients and their new connections, counted as
    they go; :class:`Resumes` or :class:`Reconnects` says how each client comes back."""

    def __init__(
        self,
        clients: list[BenchClient],
        counters: Counters,
        target_of: Callable[[int], Target],
        source_of: Callable[[int], str | None],
        *,
        timeout: float,
        shift: int,
        concurrency: int,
    ) -> None:
        self.clients = clients  # the worker's: each new connection takes its old one's place
        self.counters = counters
        self.target_of, self.source_of = target_of, source_of
        self.timeout, self.shift = timeout, shift
        self.olds = [(n, c) for n, c in enumerate(clients) if isinstance(c, ResumeClient)]
        self.concurrency = max(1, min(concurrency, len(self.olds) or 1))
        self.opened = 0  # new connections that counted (resumed, or reconnected)
        self.refused = 0  # new connections that opened with a new session instead
        self.errors: Counter[str] = Counter()  # no new connection, by reason
        self.hist = Histogram()  # µs from a new connection's start to its welcome
        self.retried = 0
        self.welcome_ns = 0  # the last welcome that counted
        self.drop_ns = 0
        self.cpu_mark = 0.0

    async def run(
        self, outage: float, reopen_one: Callable[[int, ResumeClient], Awaitable[None]]
    ) -> None:
        """Drop every client; ``outage`` seconds later, reopen each with
        ``reopen_one(n, old)`` (``n``: its place in :attr:`clients`)."""
        self._drop()
        if outage > 0:
            await asyncio.sleep(outage)
        todo = iter(self.olds)

        async def reopen_some() -> None:
            for n, old in todo:
                if gave_up(sum(self.errors.values()) + self.refused, self.opened):
                    return
                await reopen_one(n, old)

        await asyncio.gather(*(reopen_some() for _ in range(self.concurrency)))
        untried = len(self.olds) - (self.opened + self.refused + sum(self.errors.values()))
        if untried > 0:
            self.errors["not tried: too many failures before"] += untried

    async def reopen(
        self, n: int, old: ResumeClient, make: Callable[[Target], ResumeClient]
    ) -> ResumeClient | None:
        """Open ``make(target)`` in ``old``'s place, trying again after a 1013; None
        when it got no welcome (the reason is counted)."""
        target, source = self.target_of(old.index + self.shift), self.source_of(old.index)
        t0 = time.monotonic()
        for attempt in range(1, RESUME_ATTEMPTS + 1):
            client = make(target)
            try:
                await open_client(target, source, client, self.timeout)
                break
            except (OSError, HandshakeError, TimeoutError) as exc:
                code = client.close_code
                if code == CLOSE_TRY_AGAIN_LATER and attempt < RESUME_ATTEMPTS:
                    self.retried += 1  # the server asks for it (docs/recovery.md)
                    continue
                if code is not None and code != CLOSE_ABNORMAL:
                    self.errors[f"the server closed with {code} before the welcome"] += 1
                else:
                    self.errors[describe(exc)] += 1
                return None
        if not client.welcome:
            return None
        self.hist.add(int((time.monotonic() - t0) * 1e6))
        self.clients[n] = client
        return client

    def counted(self, client: ResumeClient) -> None:
        """A new connection that counts (resumed, or reconnected)."""
        self.opened += 1
        self.welcome_ns = max(self.welcome_ns, client.welcome_ns)

    def reopened(self) -> dict[str, Any]:
        """The fields every :class:`~pushgate.bench.replies.Reopened` reply has."""
        return {
            "drop_ns": self.drop_ns,
            "welcome_ns": self.welcome_ns,
            "failed": sum(self.errors.values()),
            "errors": dict(self.errors.most_common(MAX_ERROR_KINDS)),
            "retried": self.retried,
            "reopen_us": self.hist.to_pairs(),
            "cpu_s": own_cpu_seconds() - self.cpu_mark,
        }

    def _drop(self) -> None:
        """Abort every client's TCP connection at the same moment, and record every
        push's arrival from now on."""
        self.counters.arrivals = {}
        self.cpu_mark = own_cpu_seconds()
        self.drop_ns = time.time_ns()
        for _, client in self.olds:
            client.drop()


class Resumes:
    """Each client of a drop resumes its session; the welcomes say what was replayed."""

    def __init__(self, drop: Drop) -> None:
        self.drop = drop
        self.reasons: Counter[str] = Counter()  # why a new session came instead
        self.not_recovered = 0
        self.replayed = 0
        self.seqs: dict[str, int] = {}

    async def run(self, outage: float) -> Resumed:
        drop = self.drop
        await drop.run(outage, self._resume)
        return Resumed(
            **drop.reopened(),
            resumed=drop.opened,
            new_session=drop.refused,
            reasons=dict(self.reasons.most_common(MAX_REASONS)),
            not_recovered=self.not_recovered,
            replayed=self.replayed,
            seqs=self.seqs,
        )

    async def _resume(self, n: int, old: ResumeClient) -> None:
        if not (old.session and old.ws_id):
            self.drop.errors["no session to resume (the welcome had none)"] += 1
            return
        counters = self.drop.counters
        client = await self.drop.reopen(
            n,
            old,
            lambda target: ResumeClient(
                old.index, target.host_header, resume_path(target.path), counters, previous=old
            ),
        )
        if client is not None:
            self._count(old, client)

    def _count(self, old: ResumeClient, client: ResumeClient) -> None:
        """A resumed session, or a new one instead; what its welcome says was missed."""
        welcome = client.welcome or {}
        if not client.welcome_resumed or client.ws_id != old.ws_id:
            self.drop.refused += 1
            self.reasons[str(welcome.get("reason") or "no reason given")[:200]] += 1
            return
        self.drop.counted(client)
        if welcome.get("recovered") is not True:
            self.not_recovered += 1
        streams = welcome.get("streams")
        for name, state in (streams if isinstance(streams, dict) else {}).items():
            if not isinstance(state, dict) or not isinstance(state.get("seq"), int):
                continue
            self.seqs[name] = max(self.seqs.get(name, 0), state["seq"])
            since = client.since.get(name)
            if since and since[0] == state.get("epoch") and isinstance(since[1], int):
                self.replayed += max(0, state["seq"] - since[1])


class Reconnects:
    """Each client of a drop connects afresh, with ``token`` (when given) naming its
    rooms, as an app without resume would bring it back."""

    def __init__(self, drop: Drop, token: str | None) -> None:
        self.drop = drop
        self.token = token

    async def run(self, outage: float) -> Reconnected:
        await self.drop.run(outage, self._reconnect)
        return Reconnected(**self.drop.reopened(), reconnected=self.drop.opened)

    async def _reconnect(self, n: int, old: ResumeClient) -> None:
        counters = self.drop.counters
        client = await self.drop.reopen(
            n,
            old,
            lambda target: ResumeClient(
                old.index, target.host_header, fresh_path(target.path, self.token), counters
            ),
        )
        if client is not None:
            self.drop.counted(client)


async def caught_up(
    clients: list[BenchClient], counters: Counters, seqs: dict[str, int], stall: float
) -> tuple[int, int, int]:
    """Wait until every resumed client has received, on each stream of ``seqs``
    ({stream: seq}), every push up to that seq, or until none got there for
    ``stall`` seconds. Returns when the last one got there (wall clock: its welcome,
    or the arrival of the last push it needed), how many did, and how many did
    not; arrivals are no longer recorded."""
    targets = [(stream_key(name), name, int(seq)) for name, seq in seqs.items()]
    resumed = [c for c in clients if isinstance(c, ResumeClient) and c.welcome_resumed]
    pending = resumed
    last_change = time.monotonic()
    while pending:
        still = [c for c in pending if not c.caught_up(targets)]
        now = time.monotonic()
        if len(still) != len(pending):
            last_change = now
        pending = still
        if not pending or now - last_change > stall:
            break
        await asyncio.sleep(CATCH_UP_POLL)
    arrivals = counters.arrivals or {}
    counters.arrivals = None
    caught_ns = max((c.welcome_ns for c in resumed), default=0)
    for key, _, seq in targets:
        caught_ns = max(caught_ns, arrivals.get(key, {}).get(seq, 0))
    return caught_ns, len(resumed) - len(pending), len(pending)
