"""The scenarios: who is in which room, and where each push goes.

Pure: a :class:`Plan` is built from the scenario and the indexes of the clients
that opened, and answers the three questions a run asks of it: which joins to
make, where push number ``seq`` goes, and how many pushes each client should
therefore receive (the basis of loss accounting). For the resume scenario, which
accounts per stream (docs/recovery.md), :func:`stream_of` names a target's stream.

The two scenarios that drop every client (resume, and reconnect, its baseline) put
every client in one room and alternate their pushes between the room and all.

The chat scenario's clients subscribe themselves, each to the room of its index
(:func:`chat_room`), and publish on a schedule every process of the bench computes
alike (:func:`chat_slot`); its phases are :mod:`pushgate.bench.chat`'s.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

ALL = ""  # the target of a POST /push/all
ROOM = "bench"  # the one room of the room scenario
GROUP_SIZE = 10  # members of each group room in the rooms scenario
# The abuse scenario's attacks (issue 25), each run in its own process by
# pushgate.bench.abusers.
ATTACKS = ("ping", "fragments", "nonreaders", "handshakes")


@dataclass(frozen=True, slots=True)
class Scenario:
    """What a scenario does, as the CLI and the runner need to know it."""

    name: str
    summary: str
    needs_welcome: bool  # it joins rooms, so it needs every client's wsId
    pushes: bool  # it pushes (idle does not)
    default_pushes: int | None = None
    default_duration: float | None = None
    default_rate: float = 0.0  # pushes per second when --rate is not given
    default_connections: int = 1000  # when -n is not given
    default_size: int = 100  # bytes of each push's val when --size is not given
    drops: bool = False  # every client drops its connection mid-run, and comes back


RESUME = Scenario(
    "resume",
    "N connections in one room drop their TCP connections at once and resume "
    "their sessions (docs/recovery.md) while pushes to the room and to all go on",
    True,
    True,
    default_duration=2.0,
    default_rate=5.0,
    drops=True,
)

CHAT = Scenario(
    "chat",
    "N connections subscribe themselves to rooms of --room-size (with presence), "
    "publish to them at --rate each, the same messages then go through the logic "
    "API, and every client drops and resumes",
    True,
    True,
    default_duration=10.0,
    default_rate=1.0,
    default_connections=1000,
)
CHAT_NAMESPACE = "chat"  # the namespace of the chat scenario's rooms
CHAT_NAMESPACES = f"{CHAT_NAMESPACE}=public+publish+presence"  # the server's --namespaces

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("broadcast", "N connections; POST /push/all", False, True, default_pushes=100),
        Scenario(
            "room", "N connections in one room; POST /push/room", True, True, default_pushes=100
        ),
        Scenario(
            "rooms",
            f"N connections, each in its own room and in one {GROUP_SIZE}-member group "
            "room; pushes alternate between group rooms and own rooms, round robin",
            True,
            True,
            default_duration=10.0,
        ),
        Scenario(
            "idle",
            "N idle connections: server RSS and CPU per connection",
            False,
            False,
            default_duration=10.0,
        ),
        Scenario(
            "churn",
            "N connections receive POST /push/all while others open and close at "
            "--churn-rate per second",
            False,
            True,
            default_duration=10.0,
        ),
        RESUME,
        # The baseline of a resume storm: its defaults must stay resume's.
        replace(
            RESUME,
            name="reconnect",
            summary="the same drop as resume, then fresh connects under the same pushes "
            "(a new session, back in the room with a token): the baseline of a resume storm",
        ),
        Scenario(
            "abuse",
            "N honest connections receive POST /push/all, quiet, then under four "
            "attacks at once (issue 25)",
            False,
            True,
            default_duration=10.0,
            default_rate=20.0,
            default_connections=300,
            default_size=1024,
        ),
        CHAT,
    )
}


class Plan:
    """Rooms and push targets of one run, over the clients that opened."""

    def __init__(
        self,
        scenario: Scenario,
        indexes: Iterable[int],
        *,
        room: str = ROOM,
        joined_by_api: bool = True,
    ) -> None:
        """``room``: the room of the room scenario and of the drops (a Pusher
        client's is its app's); ``joined_by_api``: the bench joins the clients to it
        (False: they are in it from their own subscribe, or their URL)."""
        self.scenario = scenario
        self.indexes = sorted(indexes)
        self.room = room
        self.joined_by_api = joined_by_api
        self._own: list[str] = []
        self._groups: list[str] = []
        if scenario.name == "rooms":
            self._own = [own_room(i) for i in self.indexes]
            self._groups = sorted({group_room(i) for i in self.indexes}, key=_room_number)

    def joins(self) -> list[tuple[str, int]]:
        """(room, client index) pairs to join before pushing."""
        name = self.scenario.name
        if not self.joined_by_api:
            return []
        if name == "room" or self.scenario.drops:
            return [(self.room, i) for i in self.indexes]
        if name == "rooms":
            return [(room, i) for i in self.indexes for room in (own_room(i), group_room(i))]
        return []

    def target(self, seq: int) -> str:
        """Where push ``seq`` (from 0) goes: a room id, or ALL."""
        name = self.scenario.name
        if name == "room":
            return self.room
        if self.scenario.drops:
            return self.room if seq % 2 == 0 else ALL
        if name == "rooms":
            half = seq // 2
            if seq % 2 == 0 and self._groups:
                return self._groups[half % len(self._groups)]
            return self._own[half % len(self._own)] if self._own else ALL
        return ALL

    def rooms_of(self, index: int) -> tuple[str, ...]:
        """The targets whose pushes client ``index`` receives."""
        name = self.scenario.name
        if name == "room":
            return (self.room,)
        if self.scenario.drops:
            return (self.room, ALL)
        if name == "rooms":
            return (own_room(index), group_room(index))
        return (ALL,)

    def expected(self, accepted: Mapping[str, int]) -> dict[int, int]:
        """Pushes each client should have received, given the pushes the server
        accepted per target."""
        return {i: sum(accepted.get(room, 0) for room in self.rooms_of(i)) for i in self.indexes}


def stream_of(target: str) -> str:
    """The stream a push to ``target`` (a room id, or ALL) belongs to: ``all`` or
    ``room:<id>``, as docs/recovery.md names them."""
    return "all" if target == ALL else f"room:{target}"


def own_room(index: int) -> str:
    return f"c{index}"


def group_room(index: int) -> str:
    return f"g{index // GROUP_SIZE}"


def _room_number(room: str) -> int:
    return int(room[1:])


def chat_room(index: int, room_size: int, prefix: str = "") -> str:
    """The chat room of client ``index``: ``chat:<index // room_size>`` (``prefix``
    before the number keeps the rooms of one run apart from another's on a server
    that outlives runs)."""
    return f"{CHAT_NAMESPACE}:{prefix}{index // room_size}"


def chat_user(index: int, prefix: str = "") -> str:
    """The user (its connection token's ``sub``) of chat client ``index``."""
    return f"{prefix}{index}"


def chat_slot(index: int, connections: int, room_size: int) -> float:
    """When, within each period of 1/rate seconds, chat client ``index`` publishes:
    a fraction in [0, 1). The N clients take N evenly spaced slots, and the members
    of a room are spread over the period (member j of room r takes slot
    ``j * rooms + r``), so that a room's messages do not come in bursts."""
    rooms = -(-connections // room_size)
    return ((index % room_size) * rooms + index // room_size) / (rooms * room_size)
