"""The chat scenario's client: a :class:`~pushgate.bench.resumeclient.ResumeClient`
that subscribes itself to its room, publishes to it, and hears its presence
(docs/protocol.md, "Subscribing", "Publishing", "Presence").

It counts by position, as the resume client does, every frame of its room's
stream: the other members' messages, the bench's pushes through the logic API, and
the presence events, which take positions in the stream like any push. What it
knows of its room and what it counted lives in a :class:`Member`, which a resumed
connection takes over from the dropped one (the same object: counting goes on).

Frames it sends (masked, as every client frame)::

    {"type":0,"data":{"op":"subscribe","room":"chat:7","id":1}}
    {"type":0,"data":{"op":"publish","room":"chat:7","tag":2,"data":"<sent ns> <seq> xxx"}}

Frames it reads besides pushes: the subscribe reply (its position in the room's
stream, and the presence roster as of a position), a publish reply per publish (in
the order sent: the oldest send time still unanswered is the one it answers), and
presence events (``{"type":0,"data":{"op":"presence","event":"join",...},"room":
"chat:7","seq":12,"epoch":...}``), counted per phase of the run
(:attr:`ChatState.phase`). A publish's ``ok`` reply has a fast path; every other
type-0 frame is decoded as JSON.
"""

import json
import time
from collections import Counter, deque
from typing import Any

from pushgate.bench.histogram import Histogram
from pushgate.bench.rawws import OP_TEXT, masked_frame
from pushgate.bench.resumeclient import ResumeClient, Tally, stream_key
from pushgate.bench.wsclient import Counters
from pushgate.wire import TYPE_WELCOME

PUBLISH_OK = b'{"type":0,"data":{"op":"publish","ok":true'
PHASES = ("subscribe", "publish", "api", "resume")


class ChatState:
    """What every chat client of one worker adds to: the phase the run is in, the
    presence events heard per phase, and the operations' round trips."""

    __slots__ = ("ack_hist", "phase", "presence", "sub_hist", "sub_refused", "sub_replies")

    def __init__(self) -> None:
        self.phase = PHASES[0]
        # phase -> [joins, leaves, other events]
        self.presence: dict[str, list[int]] = {phase: [0, 0, 0] for phase in PHASES}
        self.sub_hist = Histogram()  # µs from a subscribe sent to its reply
        self.sub_replies = 0
        self.sub_refused: Counter[str] = Counter()  # by code
        self.ack_hist = Histogram()  # µs from a publish sent to its reply

    def presence_total(self) -> int:
        return sum(sum(counts) for counts in self.presence.values())


class Member:
    """One chat client's room and counts, kept across its connections."""

    __slots__ = (
        "joins",
        "key",
        "leaves",
        "own_join",
        "pending",
        "position",
        "published",
        "published_ok",
        "refused",
        "room",
        "room_bytes",
        "roster",
        "roster_seq",
        "stream",
        "sub_sent",
        "token",
        "user",
    )

    def __init__(self, room: str, user: str, token: str) -> None:
        self.room = room
        self.room_bytes = room.encode()
        self.stream = f"room:{room}"  # the stream's name (docs/recovery.md)
        self.key = stream_key(self.stream)  # and its key in the tallies
        self.user = user
        self.token = token  # its connection token: a resume needs it too (docs/recovery.md)
        self.sub_sent = 0  # perf_counter_ns of the subscribe
        self.position: int | None = None  # the subscribe reply's position (seq)
        self.roster: int | None = None  # users its presence listed
        self.roster_seq: int | None = None  # the position that list is as of
        self.own_join: int | None = None  # seq of the join event of its own user
        self.joins: list[int] = []  # seqs of the join events it heard
        self.leaves = 0
        self.published = 0  # publishes sent
        self.published_ok = 0  # answered ok: each took a position it is not sent
        self.refused: Counter[str] = Counter()  # publishes refused, by code
        self.pending: deque[int] = deque()  # send times (ns) of publishes unanswered

    def joins_after(self, seq: int | None) -> int:
        """Joins it heard after position ``seq`` (all, for None)."""
        after = seq if seq is not None else -1
        return sum(1 for join in self.joins if join > after)


class ChatClient(ResumeClient):
    """A measured chat client; ``previous`` is the connection whose session it resumes."""

    def __init__(
        self,
        index: int,
        host: str,
        path: str,
        counters: Counters,
        state: ChatState,
        member: Member,
        *,
        previous: "ChatClient | None" = None,
    ) -> None:
        super().__init__(index, host, path, counters, previous=previous)
        self.state = state
        self.member = member

    # Operations

    def subscribe(self) -> bool:
        """Send the subscribe of its room; False when the connection is gone."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._closing:
            return False
        m = self.member
        frame = b'{"type":0,"data":{"op":"subscribe","room":"%s","id":1}}' % m.room_bytes
        m.sub_sent = time.perf_counter_ns()
        transport.write(masked_frame(OP_TEXT, frame))
        return True

    def publish(self, tag: int, pad: bytes) -> bool:
        """Publish one message to its room: its data is ``"<sent ns> <seq> <pad>"``,
        as the bench's pushes; False when the connection is gone."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._closing:
            return False
        m = self.member
        now = time.time_ns()
        frame = b'{"type":0,"data":{"op":"publish","room":"%s","tag":%d,"data":"%d %d %s"}}' % (
            m.room_bytes,
            tag,
            now,
            m.published,
            pad,
        )
        m.published += 1
        m.pending.append(now)
        transport.write(masked_frame(OP_TEXT, frame))
        return True

    # Frames

    def _on_text(self, buf: bytes, start: int, end: int, now: int) -> None:
        if buf.startswith(PUBLISH_OK, start, end):
            self._answered(now, None)
            return
        super()._on_text(buf, start, end, now)

    def _on_other_message(self, payload: bytes, now: int) -> None:
        """Type-0 frames with an ``op``: replies and presence events; anything else
        goes the resume client's way (its welcome, gap notices)."""
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        data = message.get("data")
        op = data.get("op") if isinstance(data, dict) else None
        if message.get("type") != TYPE_WELCOME or not isinstance(op, str):
            super()._on_other_message(payload, now)
            return
        assert isinstance(data, dict)
        if op == "presence" and "event" in data:
            self._on_presence(message, data)
        elif op == "publish":
            self._answered(now, None if data.get("ok") is True else str(data.get("code")))
        elif op == "subscribe":
            self._on_subscribed(data)

    def _on_subscribed(self, data: dict[str, Any]) -> None:
        m, state = self.member, self.state
        state.sub_hist.add((time.perf_counter_ns() - m.sub_sent) // 1000)
        state.sub_replies += 1
        if data.get("ok") is not True:
            state.sub_refused[str(data.get("code"))] += 1
            return
        m.position = _seq_of(data.get("position"))
        presence = data.get("presence")
        if isinstance(presence, dict):
            members = presence.get("members")
            m.roster = len(members) if isinstance(members, list) else None
            m.roster_seq = _seq_of(presence.get("position"))

    def _answered(self, now: int, refused: str | None) -> None:
        """A publish reply: it answers the oldest publish still unanswered."""
        m = self.member
        if m.pending:
            self.state.ack_hist.add((now - m.pending.popleft()) // 1000)
        if refused is None:
            m.published_ok += 1
        else:
            m.refused[refused] += 1

    def _on_presence(self, message: dict[str, Any], data: dict[str, Any]) -> None:
        """A presence event: counted in its phase, and at its position in the stream."""
        m = self.member
        event, seq, room = data.get("event"), message.get("seq"), message.get("room")
        counts = self.state.presence[self.state.phase]
        if event == "join":
            counts[0] += 1
            m.joins.append(seq if isinstance(seq, int) else -1)
            if data.get("user") == m.user and isinstance(seq, int) and m.own_join is None:
                m.own_join = seq
        elif event == "leave":
            counts[1] += 1
            m.leaves += 1
        else:
            counts[2] += 1
        if not isinstance(seq, int) or not isinstance(room, str):
            self.unpositioned += 1
            return
        epoch = str(message.get("epoch") or "").encode()
        self._position(stream_key(f"room:{room}"), seq, epoch)

    def _position(self, key: bytes, seq: int, epoch: bytes) -> None:
        """Count a position of the stream that carries no send time (a presence
        event): in the tally, not as a delivery."""
        tally = self.streams.get(key)
        if tally is None:
            self.streams[key] = Tally(epoch, seq)
        elif seq == tally.last + 1 and epoch == tally.epoch:
            tally.last = seq
            tally.received += 1
        else:
            tally.add(seq, epoch)
        arrivals = self.counters.arrivals
        if arrivals is not None:
            arrivals.setdefault(key, {})[seq] = time.time_ns()


def _seq_of(position: object) -> int | None:
    """The seq of a ``[epoch, seq]`` position."""
    if isinstance(position, list) and len(position) == 2 and isinstance(position[1], int):
        return position[1]
    return None
