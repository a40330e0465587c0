"""What the chat scenario's workers answer (:mod:`pushgate.bench.chatworker`), typed
as the other workers' replies are (:mod:`pushgate.bench.replies`); the drop and the
catching up answer with :class:`~pushgate.bench.replies.Resumed` and
:class:`~pushgate.bench.replies.CaughtUp`, as in the resume scenario."""

from dataclasses import dataclass
from typing import Any, Self

from pushgate.bench.histogram import Histogram
from pushgate.bench.replies import Json, Pairs, Reply


@dataclass(frozen=True, slots=True)
class Subscribed(Reply):
    """``chat_subscribe``: every client sent its subscribe; the replies that came."""

    sent: int
    replied: int
    ok: int
    refused: dict[str, int]  # by code
    sub_us: Pairs  # from a subscribe sent to its reply
    elapsed_s: float  # from the first subscribe sent to the last reply

    @property
    def sub_hist(self) -> Histogram:
        return Histogram.from_pairs(self.sub_us)


@dataclass(frozen=True, slots=True)
class Published(Reply):
    """``chat_publish``: the messages the clients published, and the replies."""

    sent: int
    ok: int
    refused: dict[str, int]  # by code
    unanswered: int  # no reply within the stall timeout after the last publish
    ack_us: Pairs  # from a publish sent to its reply
    first_ns: int  # wall clock of the first publish
    last_ns: int  # of the last
    late_ms: float  # the most a publish was sent after its time (the worker fell behind)
    ok_by_room: dict[str, int]

    @property
    def ack_hist(self) -> Histogram:
        return Histogram.from_pairs(self.ack_us)


@dataclass(frozen=True, slots=True)
class ChatStatus(Reply):
    """``chat_status``: a glance for the progress display and the drains."""

    open: int
    deliveries: int  # messages and pushes (with a send time) since ``chat_mark``
    presence: int  # presence events since the connect
    last_ns: int


@dataclass(frozen=True, slots=True)
class ChatRow:
    """One client's counts on its room's stream (positions), and its presence."""

    index: int
    room: str
    own_join: int  # the position of its own user's join event; -1: not heard
    position: int  # the subscribe reply's position; -1: none (not a member)
    received: int  # distinct positions received after its subscription's position
    last: int  # the highest received
    dups: int  # positions received again
    epoch_changes: int
    published_ok: int  # its messages the server took (each a position not sent to it)
    joins: int  # join events heard
    joins_after_position: int  # of which after its subscription's position
    roster: int  # users listed in its subscribe reply; -1: none
    joins_after_roster: int  # joins heard after the position the roster is as of
    leaves: int
    close_code: int | None  # the server closed it
    unrecovered: bool  # a welcome or a notice said its room's stream was not recovered

    @property
    def member(self) -> bool:
        """Its subscription took effect (the reply said so, with a position)."""
        return self.position >= 0

    def to_row(self) -> list[Any]:
        return [
            self.index,
            self.room,
            self.own_join,
            self.position,
            self.received,
            self.last,
            self.dups,
            self.epoch_changes,
            self.published_ok,
            self.joins,
            self.joins_after_position,
            self.roster,
            self.joins_after_roster,
            self.leaves,
            self.close_code,
            self.unrecovered,
        ]


@dataclass(frozen=True, slots=True)
class ChatReport(Reply):
    """``chat_report``: what was measured since ``chat_mark``, and each client's
    counts since it connected."""

    cpu_s: float  # the worker's own CPU since chat_mark
    deliveries: int  # since chat_mark
    last_ns: int
    hist: Pairs  # delivery latency, µs, since chat_mark
    presence: dict[str, list[int]]  # phase -> [joins, leaves, other], since the connect
    rows: list[ChatRow]
    unpositioned: int  # frames that should have had a position and had none
    gap_notices: int

    @property
    def latency_hist(self) -> Histogram:
        return Histogram.from_pairs(self.hist)

    def to_json(self) -> Json:
        return {**Reply.to_json(self), "rows": [row.to_row() for row in self.rows]}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(
            cpu_s=data["cpu_s"],
            deliveries=data["deliveries"],
            last_ns=data["last_ns"],
            hist=data["hist"],
            presence=data["presence"],
            rows=[ChatRow(*row) for row in data["rows"]],
            unpositioned=data["unpositioned"],
            gap_notices=data["gap_notices"],
        )
