"""A worker of the chat scenario: the bench worker (:mod:`pushgate.bench.worker`),
whose clients are :class:`~pushgate.bench.chatclient.ChatClient` s, each with a
connection token naming its user, and which subscribes them, makes them publish,
and drops and resumes them. Run as ``python -m pushgate.bench.chatworker``.

Commands, beside the worker's (``connect`` takes a ``chat`` field: the room size,
the run's prefixes and the server's token secret):

- ``chat_mark`` (``phase``): the worker's ``mark``, and the phase presence events
  are counted in from now on;
- ``chat_subscribe`` (``rate``, ``stall``): every client subscribes to its room,
  ``rate`` a second (0: all at once), and the replies are awaited;
- ``chat_publish`` (``rate``, ``duration``, ``size``, ``tag``, ``stall``): every
  subscribed client publishes ``rate`` messages a second, in its slot of each
  period (:func:`pushgate.bench.scenarios.chat_slot`), for ``duration`` seconds;
  then the replies are awaited;
- ``chat_status``, ``chat_report``: a glance, and everything (each client's row);
- ``chat_drop_resume``: the resume scenario's drop (:mod:`pushgate.bench.reopen`),
  each client resuming as a chat client;
- ``chat_caught_up`` (``seqs``: stream -> seq, ``stall``): until every resumed
  client has, on its room's stream, reached the seq its room had at the last resume.

A wait for replies ends when every one came, or none came for ``stall`` seconds.
"""

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence

import jwt

from pushgate.bench.chatclient import PHASES, ChatClient, ChatState, Member
from pushgate.bench.chatreplies import ChatReport, ChatRow, ChatStatus, Published, Subscribed
from pushgate.bench.commands import Json, main
from pushgate.bench.histogram import Histogram
from pushgate.bench.procstat import own_cpu_seconds
from pushgate.bench.reopen import Resumes
from pushgate.bench.replies import CaughtUp, Connected, Resumed
from pushgate.bench.resumeclient import ResumeClient, Tally, fresh_path, resume_path
from pushgate.bench.scenarios import chat_room, chat_slot, chat_user
from pushgate.bench.worker import Worker
from pushgate.bench.wsclient import BenchClient

POLL = 0.05  # seconds between looks while waiting for replies
SPIN = 0.002  # a publish due sooner than this is sent now rather than slept for


class ChatWorker(Worker):
    """A worker whose measured clients are chat clients."""

    def __init__(self) -> None:
        super().__init__()
        self.state = ChatState()
        self.room_size = 10
        self.connections = 0
        self.room_prefix = ""
        self.user_prefix = ""
        self.secret = ""

    # Commands

    async def _cmd_connect(self, msg: Json) -> Connected:
        chat = msg["chat"]
        self.room_size = int(chat["room_size"])
        self.connections = int(chat["connections"])
        self.room_prefix = str(chat.get("room_prefix", ""))
        self.user_prefix = str(chat.get("user_prefix", ""))
        self.secret = str(chat["secret"])
        return await super()._cmd_connect(msg)

    async def _cmd_chat_mark(self, msg: Json) -> Json:
        phase = str(msg["phase"])
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self.state.phase = phase
        return await self._cmd_mark(msg)

    async def _cmd_chat_subscribe(self, msg: Json) -> Subscribed:
        rate, stall = float(msg["rate"]), float(msg["stall"])
        state = self.state
        state.sub_hist = Histogram()
        state.sub_refused.clear()
        replies_before = state.sub_replies
        clients = self._chat_clients()
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        for n, client in enumerate(clients):
            if rate > 0:
                delay = started + n / rate - loop.time()
                if delay > SPIN:
                    await asyncio.sleep(delay)
            sent += client.subscribe()
        await _until(lambda: state.sub_replies - replies_before, sent, stall)
        replied = state.sub_replies - replies_before
        refused = dict(state.sub_refused)
        return Subscribed(
            sent=sent,
            replied=replied,
            ok=replied - sum(refused.values()),
            refused=refused,
            sub_us=state.sub_hist.to_pairs(),
            elapsed_s=loop.time() - started,
        )

    async def _cmd_chat_publish(self, msg: Json) -> Published:
        rate, duration = float(msg["rate"]), float(msg["duration"])
        size, tag, stall = int(msg["size"]), int(msg["tag"]), float(msg["stall"])
        state = self.state
        state.ack_hist = Histogram()
        members = [c for c in self._chat_clients() if c.member.position is not None]
        before = {id(c.member): (c.member.published, c.member.published_ok) for c in members}
        refused_before = Counter[str]()
        for c in members:
            refused_before.update(c.member.refused)
        slots = sorted(
            (chat_slot(c.index, self.connections, self.room_size), c.index, c) for c in members
        )
        pad = _pad(size)
        loop = asyncio.get_running_loop()
        period = 1 / rate
        start = loop.time() + 0.01
        end = start + duration
        first_ns = last_ns = 0
        late = 0.0
        k, over = 0, not slots
        while not over:
            for slot, _, client in slots:
                due = start + (k + slot) * period
                if due >= end:
                    over = True  # the slots after it are later still
                    break
                delay = due - loop.time()
                if delay > SPIN:
                    await asyncio.sleep(delay)
                else:
                    late = max(late, -delay)
                if client.publish(tag, pad(client.member.published)):
                    last_ns = time.time_ns()
                    first_ns = first_ns or last_ns
            k += 1
        sent = sum(c.member.published - before[id(c.member)][0] for c in members)
        await _until(lambda: sent - sum(len(c.member.pending) for c in members), sent, stall)
        ok_by_room: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        for c in members:
            ok_by_room[c.member.room] += c.member.published_ok - before[id(c.member)][1]
            refused.update(c.member.refused)
        refused.subtract(refused_before)
        return Published(
            sent=sent,
            ok=sum(ok_by_room.values()),
            refused={code: n for code, n in refused.items() if n > 0},
            unanswered=sum(len(c.member.pending) for c in members),
            ack_us=state.ack_hist.to_pairs(),
            first_ns=first_ns,
            last_ns=last_ns,
            late_ms=late * 1000,
            ok_by_room=dict(ok_by_room),
        )

    async def _cmd_chat_status(self, msg: Json) -> ChatStatus:
        counters = self.counters
        return ChatStatus(
            counters.open, counters.deliveries, self.state.presence_total(), counters.last_ns
        )

    async def _cmd_chat_report(self, msg: Json) -> ChatReport:
        counters = self.counters
        clients = self._chat_clients()
        return ChatReport(
            cpu_s=own_cpu_seconds() - self.cpu_mark,
            deliveries=counters.deliveries,
            last_ns=counters.last_ns,
            hist=counters.hist.to_pairs(),
            presence={phase: list(counts) for phase, counts in self.state.presence.items()},
            rows=[_row(c) for c in clients],
            unpositioned=sum(c.unpositioned for c in clients),
            gap_notices=sum(c.gap_notices for c in clients),
        )

    async def _cmd_chat_drop_resume(self, msg: Json) -> Resumed:
        """The resume scenario's drop and resumes, each client resuming as a chat client."""
        return await ChatResumes(self._new_drop(msg)).run(float(msg.get("outage", 0)))

    async def _cmd_chat_caught_up(self, msg: Json) -> CaughtUp:
        if self.drop is None:
            raise RuntimeError("chat_caught_up comes after chat_drop_resume")
        seqs = {str(name): int(seq) for name, seq in msg["seqs"].items()}
        caught_ns, caught, not_caught = await caught_up(
            self._chat_clients(), seqs, float(msg["stall"])
        )
        return CaughtUp(caught_ns, caught, not_caught, own_cpu_seconds() - self.drop.cpu_mark)

    # Internals

    def _new_client(self, index: int, *, need_welcome: bool, measured: bool = True) -> BenchClient:
        if not measured:
            return super()._new_client(index, need_welcome=need_welcome, measured=measured)
        target = self._target(index)
        user = chat_user(index, self.user_prefix)
        token = jwt.encode({"sub": user}, self.secret, algorithm="HS256")
        member = Member(chat_room(index, self.room_size, self.room_prefix), user, token)
        path = fresh_path(target.path, token)
        return ChatClient(index, target.host_header, path, self.counters, self.state, member)

    def _chat_clients(self) -> list[ChatClient]:
        return [c for c in self.clients if isinstance(c, ChatClient)]


class ChatResumes(Resumes):
    """The resume scenario's resumes, each client coming back as a chat client with
    its :class:`~pushgate.bench.chatclient.Member` (and tallies) taken over."""

    async def _resume(self, n: int, old: ResumeClient) -> None:
        if not (old.session and old.ws_id and isinstance(old, ChatClient)):
            self.drop.errors["no session to resume (the welcome had none)"] += 1
            return
        counters = self.drop.counters
        client = await self.drop.reopen(
            n,
            old,
            lambda target: ChatClient(
                old.index,
                target.host_header,
                resume_path(fresh_path(target.path, old.member.token)),
                counters,
                old.state,
                old.member,
                previous=old,
            ),
        )
        if client is not None:
            self._count(old, client)


async def caught_up(
    clients: Sequence[ChatClient], seqs: dict[str, int], stall: float
) -> tuple[int, int, int]:
    """Wait until every resumed client has, on its room's stream, reached the seq of
    ``seqs`` (stream name -> seq: the stream's position at the last resume), or none
    got there for ``stall`` seconds. Returns when the last got there (wall clock, to
    within POLL), how many did, and how many did not.

    Reached, not received: a member is not sent its own messages, nor the API's
    pushes that leave it out, so the seq may be one it never gets; the pushes go on
    meanwhile, and a later position reached counts."""
    resumed = [c for c in clients if c.welcome_resumed]
    caught_ns = max((c.welcome_ns for c in resumed), default=0)
    pending = resumed
    last_change = time.monotonic()
    while pending:
        still = []
        for client in pending:
            tally = client.streams.get(client.member.key)
            owed = seqs.get(client.member.stream)
            if owed is None or (tally is not None and tally.last >= owed):
                caught_ns = max(caught_ns, time.time_ns())
            else:
                still.append(client)
        now = time.monotonic()
        if len(still) != len(pending):
            last_change = now
        pending = still
        if not pending or now - last_change > stall:
            break
        await asyncio.sleep(POLL)
    return caught_ns, len(resumed) - len(pending), len(pending)


def _row(client: ChatClient) -> ChatRow:
    m = client.member
    tally = client.streams.get(m.key)
    return ChatRow(
        index=client.index,
        room=m.room,
        own_join=-1 if m.own_join is None else m.own_join,
        position=-1 if m.position is None else m.position,
        received=_received_after(tally, m.position),
        last=tally.last if tally is not None else -1,
        dups=tally.dups if tally is not None else 0,
        epoch_changes=tally.epoch_changes if tally is not None else 0,
        published_ok=m.published_ok,
        joins=len(m.joins),
        joins_after_position=m.joins_after(m.position),
        roster=-1 if m.roster is None else m.roster,
        joins_after_roster=m.joins_after(m.roster_seq),
        leaves=m.leaves,
        close_code=client.close_code,
        unrecovered=m.stream in client.unrecovered,
    )


def _received_after(tally: Tally | None, position: int | None) -> int:
    """Distinct positions received after ``position`` (all, for None): what a
    subscription guarantees (a member may also get some before it: events published
    after it was in the room, but before its subscribe's position was read)."""
    if tally is None:
        return 0
    if position is None or tally.first > position:
        return tally.received
    upto = min(tally.last, position)
    before = upto - tally.first + 1 - sum(1 for seq in tally.missing if seq <= position)
    return tally.received - before


def _pad(size: int) -> Callable[[int], bytes]:
    """The padding of a message's data to ``size`` bytes after its "<ns> <seq> "."""
    pads: dict[int, bytes] = {}

    def pad(seq: int) -> bytes:
        room = max(1, size - (21 + len(str(seq))))  # a 19-digit ns, a space, the seq, a space
        if room not in pads:
            pads[room] = b"x" * room
        return pads[room]

    return pad


async def _until(done: Callable[[], int], total: int, stall: float) -> None:
    """Until ``done()`` reaches ``total``, or stops growing for ``stall`` seconds."""
    seen, since = -1, time.monotonic()
    while (now_done := done()) < total:
        now = time.monotonic()
        if now_done != seen:
            seen, since = now_done, now
        elif now - since > stall:
            return
        await asyncio.sleep(POLL)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        main(ChatWorker)
