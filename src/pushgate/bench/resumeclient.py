"""The client of the resume scenario: a :class:`~pushgate.bench.wsclient.BenchClient`
that keeps its session, counts what it receives per stream from the positions in the
frames, and can resume on a new connection (docs/recovery.md).

A push frame carries its stream's position after the bench's own ``data``::

    {"type":2,"data":"<sent ns> <seq> xxx","room":"bench","seq":5,"epoch":"4b0e77d1"}

The fast path finds them with ``bytes.find`` instead of decoding the JSON, as the
base client does for ``data``, and keeps, per stream, a :class:`Tally`: the first and
the last seq received, and the exceptions to "the next one in order": gaps (seqs
still missing), late arrivals that filled a gap, and duplicates. Delivery is in
order per stream, so the common case costs one comparison.

A stream is keyed by the bytes of its frame keys: ``all`` for a push to all,
``room":"bench`` for a push to room ``bench`` (the text between the first and the
last quote of ``"room":"bench"``), ``user":"alice`` for a user; :func:`stream_name`
turns a key into the stream's name (``room:bench``), :func:`stream_key` back.

Resuming: the worker drops the connection (:meth:`ResumeClient.drop`: the TCP
connection is aborted, no close frame) and opens a new ``ResumeClient`` with
``previous=`` the old one, on ``<path>?resume=1``. It takes the old one's wsId,
session and tallies (the same objects: counting goes on), and sends the resume
message as soon as the 101 arrived, with ``since`` built from the tallies; ``opened``
resolves on the welcome that answers it.
"""

import json
from typing import Any

from pushgate.bench.rawws import OP_TEXT, masked_frame
from pushgate.bench.replies import ClientStreams, Duplicated, StreamCount
from pushgate.bench.wsclient import BenchClient, Counters
from pushgate.ids import ConnId
from pushgate.wire import ResumeRequest

STREAM_ALL = b"all"
MAX_SAMPLES = 5  # duplicated seqs kept per stream, to show in the report
_ROOM = b'"room":"'
_USER = b'"user":"'
_SEQ = b'"seq":'
_EPOCH = b'"epoch":"'


def stream_key(name: str) -> bytes:
    """The key of a stream name: ``all`` → ``all``, ``room:x`` → ``room":"x``."""
    kind, sep, rest = name.partition(":")
    return f'{kind}":"{rest}'.encode() if sep else name.encode()


def stream_name(key: bytes) -> str:
    """The stream name of a key: ``room":"x`` → ``room:x``."""
    return key.decode(errors="replace").replace('":"', ":", 1)


def resume_path(path: str) -> str:
    """The gateway path with ``resume=1`` added to its query."""
    return f"{path}{'&' if '?' in path else '?'}resume=1"


def fresh_path(path: str, token: str | None) -> str:
    """The gateway path for a fresh connect, with ``token=`` when there is one."""
    return f"{path}{'&' if '?' in path else '?'}token={token}" if token else path


class Tally:
    """What one client received on one stream, by position."""

    __slots__ = (
        "dup_seqs",
        "dups",
        "epoch",
        "epoch_changes",
        "first",
        "last",
        "late",
        "missing",
        "received",
    )

    def __init__(self, epoch: bytes, seq: int) -> None:
        self.epoch = epoch
        self.first = seq  # the lowest seq received
        self.last = seq  # the highest seq received
        self.received = 1  # distinct pushes received
        self.missing: set[int] = set()  # seqs between first and last not received (yet)
        self.dups = 0  # pushes received again
        self.dup_seqs: list[int] = []  # the first few of them, for the report
        self.late = 0  # pushes that arrived after a later one (out of order)
        self.epoch_changes = 0

    def add(self, seq: int, epoch: bytes) -> None:
        """Count a push that is not simply the next one (the fast path counts those)."""
        if epoch != self.epoch:
            # The stream's history was lost (docs/recovery.md): its numbering starts
            # again, and what was lost before cannot be told from the seqs.
            self.epoch_changes += 1
            self.epoch = epoch
            self.first = self.last = seq
            self.missing.clear()
            self.received += 1
        elif seq > self.last:
            self.missing.update(range(self.last + 1, seq))
            self.last = seq
            self.received += 1
        elif seq in self.missing:
            self.missing.discard(seq)
            self.late += 1
            self.received += 1
        elif seq < self.first:
            self.missing.update(range(seq + 1, self.first))
            self.first = seq
            self.late += 1
            self.received += 1
        else:
            self.dups += 1
            if len(self.dup_seqs) < MAX_SAMPLES:
                self.dup_seqs.append(seq)

    def count(self) -> StreamCount:
        """The tally as the worker reports it."""
        return StreamCount(
            self.first,
            self.last,
            self.received,
            len(self.missing),
            self.dups,
            self.late,
            self.epoch_changes,
        )


class ResumeClient(BenchClient):
    """A measured client that resumes; ``previous`` is the one whose session it resumes."""

    def __init__(
        self,
        index: int,
        host: str,
        path: str,
        counters: Counters,
        *,
        previous: "ResumeClient | None" = None,
    ) -> None:
        super().__init__(index, host, path, counters, need_welcome=True)
        self.gateway = host  # host:port of the gateway this connection went to
        self.session: str | None = None
        self.streams: dict[bytes, Tally] = {}
        self.unrecovered: set[str] = set()  # streams the server said it could not recover
        self.gap_notices = 0  # type-0 frames after the welcome with recovered false
        self.unpositioned = 0  # pushes without a seq (a server that keeps no history)
        self.welcome: dict[str, Any] | None = None  # this connection's welcome
        self.welcome_ns = 0  # and when it arrived (wall clock)
        self.since: dict[str, list[object]] = {}  # the positions this connection resumed from
        self._resume_frame: bytes | None = None
        if previous is not None:
            self.ws_id = previous.ws_id
            self.session = previous.session
            self.streams = previous.streams
            self.unrecovered = previous.unrecovered
            self.gap_notices = previous.gap_notices
            self.unpositioned = previous.unpositioned
            self.received = previous.received
            since = {
                stream_name(key): (tally.epoch.decode(errors="replace"), tally.last)
                for key, tally in self.streams.items()
            }
            self.since = {name: list(position) for name, position in since.items()}
            # The worker resumes only clients that were welcomed with a session.
            request = ResumeRequest(ConnId(self.ws_id or ""), self.session or "", since)
            message = json.dumps(request.as_message(), separators=(",", ":"))
            self._resume_frame = masked_frame(OP_TEXT, message.encode())

    @property
    def welcome_resumed(self) -> bool:
        """The welcome says the session was resumed (same wsId)."""
        return self.welcome is not None and self.welcome.get("resumed") is True

    def drop(self) -> None:
        """Lose the connection: abort the TCP connection, no close frame. The loss is
        ours, so no close code is recorded."""
        self._closing = True
        self.abort()

    def client_streams(self) -> ClientStreams:
        """What this client received per stream, as its worker reports it."""
        return ClientStreams(
            self.index,
            {stream_name(key): tally.count() for key, tally in self.streams.items()},
            frozenset(self.unrecovered),
            self.close_code,
            self.gap_notices,
        )

    def duplicated(self) -> list[Duplicated]:
        """The streams on which this client received a push twice, with what its
        resume asked for and was told there: the clues to why."""
        told = (self.welcome or {}).get("streams") or {}
        samples = []
        for key, tally in self.streams.items():
            if tally.dup_seqs:
                name = stream_name(key)
                welcome = told.get(name) if isinstance(told, dict) else None
                since = self.since.get(name)
                samples.append(
                    Duplicated(self.index, name, tally.dup_seqs, since, welcome, self.gateway)
                )
        return samples

    def caught_up(self, targets: list[tuple[bytes, str, int]]) -> bool:
        """Whether the client has received, on each stream (key, name), every push up
        to that seq; on a stream the server said it could not recover, the last one
        (what it could not give is lost, and said so)."""
        streams = self.streams
        for key, name, seq in targets:
            tally = streams.get(key)
            if tally is None or tally.last < seq:
                return False
            if tally.missing and min(tally.missing) <= seq and name not in self.unrecovered:
                return False
        return True

    # The handshake: the resume request goes first, as soon as the 101 arrived.

    def _on_handshake_data(self, data: bytes) -> bytes:
        rest = super()._on_handshake_data(data)
        if self._resume_frame is not None and self.upgraded and self.transport is not None:
            self.transport.write(self._resume_frame)
            self._resume_frame = None
        return rest

    # Frames

    def _on_text(self, buf: bytes, start: int, end: int, now: int) -> None:
        """A text message, counted on its stream by position (:meth:`_count`) if it
        is a push::

            {"type":N,"data":"<sent ns> <seq> <pad>","room":"R","seq":S,"epoch":"E"}

        The keys after data are searched for after its second space: the pad holds
        no quote. Anything else is decoded as JSON."""
        i = buf.find(b'"data":"', start, end) + 8
        j = buf.find(b" ", i, end) if i > 7 else -1
        k = buf.find(b" ", j + 1, end) if j > 0 else -1
        s = buf.find(_SEQ, k, end) if k > 0 else -1
        try:
            if s < 0:
                raise ValueError
            s += 6
            c = buf.find(b",", s, end)
            if c < 0:
                c = buf.find(b"}", s, end)
            seq = int(buf[s:c])
            sent = int(buf[i:j])
        except ValueError:
            self._on_other_message(buf[start:end], now)
            return
        e = buf.find(_EPOCH, k, end)
        if e >= 0:
            e += 9
            epoch = buf[e : buf.find(b'"', e, end)]
        else:
            epoch = b""
        r = buf.find(_ROOM, k, end)
        if r < 0:
            r = buf.find(_USER, k, end)
        key = buf[r + 1 : buf.find(b'"', r + 8, end)] if r >= 0 else STREAM_ALL
        self._count(key, seq, epoch, sent, now)

    def _on_type0(self, data: dict[str, Any], now: int) -> None:
        """This connection's welcome, or a gap notice after it."""
        if self.welcome is None:
            self._on_welcome(data, now)
        elif data.get("recovered") is False:
            self.gap_notices += 1
            self._unrecovered(data.get("streams"))

    def _on_push(self, message: dict[str, Any], sent_ns: int, seq: int, now: int) -> None:
        """A push off the fast path, counted on its stream by the position its
        message carries (the ``seq`` in its data is the bench's, not the stream's)."""
        position, epoch = message.get("seq"), message.get("epoch")
        if not isinstance(position, int):
            self.unpositioned += 1  # a push, but no position to count it by
            self.counters.deliveries += 1
            return
        room, user = message.get("room"), message.get("user")
        if isinstance(room, str):
            key = stream_key(f"room:{room}")
        elif isinstance(user, str):
            key = stream_key(f"user:{user}")
        else:
            key = STREAM_ALL
        self._count(key, position, str(epoch or "").encode(), sent_ns, now)

    def _on_welcome(self, data: dict[str, Any], now: int) -> None:
        self.welcome = data
        self.welcome_ns = now
        session = data.get("session")
        if isinstance(session, str):
            self.session = session
        if data.get("resumed") is True:
            self._unrecovered(data.get("streams"))
        super()._on_type0(data, now)  # the wsId and heartbeat; open now

    def _unrecovered(self, streams: object) -> None:
        """Note the streams a welcome or a gap notice says were not recovered."""
        if isinstance(streams, dict):
            for name, state in streams.items():
                if isinstance(state, dict) and state.get("recovered") is False:
                    self.unrecovered.add(str(name))

    def _count(self, key: bytes, seq: int, epoch: bytes, sent_ns: int, now: int) -> None:
        """Count a push on its stream: the next in order costs one comparison."""
        tally = self.streams.get(key)
        if tally is None:
            self.streams[key] = Tally(epoch, seq)
        elif seq == tally.last + 1 and epoch == tally.epoch:
            tally.last = seq
            tally.received += 1
        else:
            tally.add(seq, epoch)
        self.received += 1
        counters = self.counters
        counters.deliveries += 1
        counters.hist.add((now - sent_ns) // 1000)
        counters.last_ns = now
        if counters.arrivals is not None:
            counters.arrivals.setdefault(key, {})[seq] = now
