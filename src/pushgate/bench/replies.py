"""What the bench's worker processes answer, typed: one dataclass per command.

A worker (:mod:`pushgate.bench.worker`) builds its reply as one of these and sends
it as a JSON object (:meth:`Reply.to_json`); the coordinator reads it back
(:meth:`Reply.from_json`), so that the runner and the report work with named,
typed fields rather than dicts. Fields hold JSON values (numbers, strings, lists,
objects with string keys), except where a class says how it turns its rows into
arrays and back: a reply lists every client, up to 200,000 of them, so each
client's row crosses the pipe as a short array, not as an object.

Histograms cross as :meth:`~pushgate.bench.histogram.Histogram.to_pairs` (the fields
ending in ``_us``); their ``*_hist`` properties read them back.
"""

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Self, cast

from pushgate.bench.histogram import Histogram

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Json = dict[str, Any]
Pairs = list[list[int]]  # a histogram, as Histogram.to_pairs gives it


class Reply:
    """A worker's answer to one command: a frozen dataclass whose fields are JSON."""

    __slots__ = ()

    def to_json(self) -> Json:
        """The JSON object that carries the reply."""
        return {f.name: getattr(self, f.name) for f in fields(cast("DataclassInstance", self))}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        """The reply read back from its JSON object (keys it does not have, such as
        the ``id`` of the call, are left out)."""
        return cls(**_named(cls, data))

    @classmethod
    def from_each(cls, replies: Iterable[Json]) -> list[Self]:
        """Every worker's reply to one command, read back."""
        return [cls.from_json(data) for data in replies]


def _named(cls: type, data: Json) -> Json:
    """The values in ``data`` of the fields of dataclass ``cls``."""
    return {f.name: data[f.name] for f in fields(cast("type[DataclassInstance]", cls))}


@dataclass(frozen=True, slots=True)
class Hello(Reply):
    """``hello``: the worker is up."""

    pid: int
    fd_limit: int


@dataclass(frozen=True, slots=True)
class Status(Reply):
    """``status``: a glance for the progress display and the drain."""

    open: int  # measured clients past the handshake and not yet closed
    deliveries: int  # since ``mark``
    last_ns: int  # wall clock of the latest delivery


@dataclass(frozen=True, slots=True)
class Connected(Reply):
    """``connect``: the clients that opened, and how long each took."""

    indexes: list[int]
    failed: int
    errors: dict[str, int]  # failures by reason
    elapsed_s: float
    connect_us: Pairs
    ws_ids: dict[int, str]  # the wsId of each client whose welcome gave one
    sessions: int  # welcomes that gave a session (the resume scenario)
    retries: int = 0  # handshakes the server dropped, tried again (--connect-retries)

    @property
    def connect_hist(self) -> Histogram:
        return Histogram.from_pairs(self.connect_us)

    def to_json(self) -> Json:
        return {**Reply.to_json(self), "ws_ids": list(self.ws_ids.items())}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        ws_ids = {int(index): str(ws_id) for index, ws_id in data["ws_ids"]}
        return cls(**{**_named(cls, data), "ws_ids": ws_ids})


@dataclass(frozen=True, slots=True)
class ChurnStopped(Reply):
    """``churn_stop``: the churning clients, opened and closed."""

    opened: int
    closed: int
    failed: int
    errors: dict[str, int]
    connect_us: Pairs
    cpu_s: float  # the worker's CPU from churn to churn_stop

    @property
    def connect_hist(self) -> Histogram:
        return Histogram.from_pairs(self.connect_us)


@dataclass(frozen=True, slots=True)
class ClientCount:
    """One client's tally, as its worker reports it."""

    index: int
    received: int
    out_of_order: int = 0
    close_code: int | None = None  # the server closed it (1006: without a close frame)

    def to_row(self) -> list[int | None]:
        return [self.index, self.received, self.out_of_order, self.close_code]


@dataclass(frozen=True, slots=True)
class StreamCount:
    """What one client received on one stream, as its worker reports it (see
    :meth:`pushgate.bench.resumeclient.Tally.to_list`)."""

    first: int
    last: int
    received: int
    missing: int  # seqs between first and last never received
    dups: int = 0
    late: int = 0
    epoch_changes: int = 0

    def to_row(self) -> list[int]:
        return [
            self.first,
            self.last,
            self.received,
            self.missing,
            self.dups,
            self.late,
            self.epoch_changes,
        ]


@dataclass(frozen=True, slots=True)
class ClientStreams:
    """One client's per-stream tally, the streams the server said it could not
    recover for it, and how it ended (as :class:`ClientCount`)."""

    index: int
    streams: Mapping[str, StreamCount]
    unrecovered: frozenset[str] = frozenset()
    close_code: int | None = None
    gap_notices: int = 0  # type-0 messages after its welcome with recovered false

    def to_row(self) -> list[object]:
        """``[index, {stream: [first, last, ...]}, [unrecovered], close_code, gaps]``."""
        streams = {name: count.to_row() for name, count in self.streams.items()}
        return [self.index, streams, sorted(self.unrecovered), self.close_code, self.gap_notices]

    @classmethod
    def from_row(cls, row: list[Any]) -> "ClientStreams":
        index, streams, unrecovered, close_code, gaps = row
        counts = {name: StreamCount(*count) for name, count in streams.items()}
        return cls(index, counts, frozenset(unrecovered), close_code, gaps)


@dataclass(frozen=True, slots=True)
class Duplicated:
    """A client that received pushes twice: which, and where it resumed from."""

    client: int
    stream: str
    seqs: list[int]  # the first few seqs received twice
    since: list[object] | None  # the position it resumed from on that stream
    welcome: object  # what its resume's welcome said of that stream
    gateway: str  # host:port of the gateway it resumed on


@dataclass(frozen=True, slots=True)
class Report(Reply):
    """``report``: everything measured since ``mark``, and each client's counts."""

    cpu_s: float  # the worker's own CPU
    deliveries: int
    last_ns: int
    hist: Pairs  # delivery latency, µs
    clients: list[ClientCount]
    # The resume scenario only (clients that count by position):
    streams: list[ClientStreams] = field(default_factory=list)
    duplicated: list[Duplicated] = field(default_factory=list)
    unpositioned: int = 0  # pushes that carried no seq

    @property
    def latency_hist(self) -> Histogram:
        return Histogram.from_pairs(self.hist)

    def to_json(self) -> Json:
        return {
            **Reply.to_json(self),
            "clients": [client.to_row() for client in self.clients],
            "streams": [client.to_row() for client in self.streams],
            "duplicated": [asdict(sample) for sample in self.duplicated],
        }

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(
            cpu_s=data["cpu_s"],
            deliveries=data["deliveries"],
            last_ns=data["last_ns"],
            hist=data["hist"],
            clients=[ClientCount(*row) for row in data["clients"]],
            streams=[ClientStreams.from_row(row) for row in data["streams"]],
            duplicated=[Duplicated(**sample) for sample in data["duplicated"]],
            unpositioned=data["unpositioned"],
        )


@dataclass(frozen=True, slots=True)
class Reopened(Reply):
    """``drop_resume`` and ``drop_reconnect``: when the worker dropped its clients,
    and how their new connections went."""

    drop_ns: int  # wall clock of the drop
    welcome_ns: int  # of the last welcome that counted (a resume, or a reconnect)
    failed: int  # no new connection (errors, by reason)
    errors: dict[str, int]
    retried: int  # resumes closed with 1013 (try again later), and tried again
    reopen_us: Pairs  # one client's new connection, to its welcome
    cpu_s: float  # the worker's CPU since the drop

    @property
    def reopen_hist(self) -> Histogram:
        return Histogram.from_pairs(self.reopen_us)


@dataclass(frozen=True, slots=True)
class Resumed(Reopened):
    """``drop_resume``: the clients that resumed their sessions, and what the
    welcomes said."""

    resumed: int
    new_session: int  # a welcome with a new wsId instead (reasons, by text)
    reasons: dict[str, int]
    not_recovered: int  # resumed, but the welcome said recovered false
    replayed: int  # pushes the welcomes said each client had missed, summed
    seqs: dict[str, int]  # each stream's highest seq in a resumed welcome


@dataclass(frozen=True, slots=True)
class Reconnected(Reopened):
    """``drop_reconnect``: the clients that connected afresh."""

    reconnected: int


@dataclass(frozen=True, slots=True)
class CaughtUp(Reply):
    """``caught_up``: when the last resumed client had every push it was owed."""

    caught_up_ns: int  # wall clock: its welcome, or the arrival of the last push it needed
    caught_up: int
    not_caught_up: int
    cpu_s: float  # the worker's CPU since the drop
