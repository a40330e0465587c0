"""The hub: open connections, their rooms, and fan-out of one frame to many sinks."""

import pytest

from pushgate.errors import RoomLimitExceeded, UnknownConnection
from pushgate.hub import Encoding, Hub, MembershipChange, Outgoing
from pushgate.ids import ConnId, RoomId
from pushgate.wire import encode_push

# Each test runs on both fan-out paths, compiled and pure Python (conftest.py).
pytestmark = pytest.mark.usefixtures("fanout")

A = ConnId("conn-a")
B = ConnId("conn-b")
C = ConnId("conn-c")
LOBBY = RoomId("lobby")
GAME = RoomId("game")
CHAT = RoomId("chat")
# The message's own bytes, as they are: what the hub hands over is what a sink sends.
AS_IS = Encoding("as is", bytes, bytes)


class FakeSink:
    """Records every frame the hub hands it."""

    connected_at = 0.0
    encoding = AS_IS

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: int, reason: str) -> None:
        raise AssertionError("the hub never closes a connection")

    def member(self, room: str, joined: bool, reason: str) -> None:
        raise AssertionError("the hub never moves a connection")


def hub_with(*conns: ConnId, max_rooms: int = 8) -> tuple[Hub, dict[ConnId, FakeSink]]:
    """A hub with one registered fake sink per connection."""
    hub = Hub(max_rooms_per_conn=max_rooms)
    sinks = {conn: FakeSink() for conn in conns}
    for conn, sink in sinks.items():
        hub.register(conn, sink)
    return hub, sinks


# Connections


def test_register_and_unregister_track_open_connections() -> None:
    """Registered connections are known to the hub until unregistered."""
    hub, _ = hub_with(A, B)
    assert A in hub
    assert len(hub) == 2
    assert set(hub.conn_ids()) == {A, B}
    assert hub.unregister(A) == []
    assert A not in hub
    assert list(hub.conn_ids()) == [B]


def test_registering_a_wsid_twice_is_refused() -> None:
    """Registering a wsId already open is an error, and the first sink stays."""
    hub, sinks = hub_with(A)
    with pytest.raises(ValueError, match="already registered"):
        hub.register(A, FakeSink())
    hub.broadcast(Outgoing(b"x"))
    assert sinks[A].frames == [b"x"]


def test_unregister_twice_is_harmless() -> None:
    """Unregistering a connection already gone (or never there) does nothing."""
    hub, _ = hub_with(A)
    hub.join(LOBBY, A)
    assert hub.unregister(A) == [LOBBY]
    assert hub.unregister(A) == []
    assert hub.unregister(C) == []


def test_unregister_leaves_every_room_and_reports_the_emptied_ones() -> None:
    """A closing connection leaves all its rooms at once; only rooms left empty are reported."""
    hub, sinks = hub_with(A, B)
    for room in (LOBBY, GAME, CHAT):
        hub.join(room, A)
    hub.join(GAME, B)
    assert sorted(hub.unregister(A)) == sorted([LOBBY, CHAT])
    assert hub.rooms_of(A) == frozenset()
    assert hub.room_sizes() == {GAME: 1}
    assert hub.send_room(GAME, Outgoing(b"g")) == 1
    assert sinks[A].frames == []


def test_reconnecting_with_the_same_wsid_starts_in_no_room() -> None:
    """A wsId registered again after closing is in no room and gets no room pushes."""
    hub, _ = hub_with(A)
    hub.join(LOBBY, A)
    hub.unregister(A)
    sink = FakeSink()
    hub.register(A, sink)
    assert hub.rooms_of(A) == frozenset()
    assert hub.send_room(LOBBY, Outgoing(b"x")) == 0
    assert sink.frames == []


# Rooms


def test_join_reports_room_creation_and_repeat_joins() -> None:
    """The first member creates the room, a second does not, a repeat join changes nothing."""
    hub, _ = hub_with(A, B)
    assert hub.join(LOBBY, A) == MembershipChange(changed=True, room_boundary=True)
    assert hub.join(LOBBY, B) == MembershipChange(changed=True, room_boundary=False)
    assert hub.join(LOBBY, A) == MembershipChange(changed=False, room_boundary=False)
    assert hub.room_size(LOBBY) == 2


def test_leave_reports_room_emptied_and_repeat_leaves() -> None:
    """Leaving reports the room emptied when the last member goes; leaving again is no change."""
    hub, _ = hub_with(A, B)
    hub.join(LOBBY, A)
    hub.join(LOBBY, B)
    assert hub.leave(LOBBY, A) == MembershipChange(changed=True, room_boundary=False)
    assert hub.leave(LOBBY, B) == MembershipChange(changed=True, room_boundary=True)
    assert hub.leave(LOBBY, B) == MembershipChange(changed=False, room_boundary=False)
    assert hub.room_sizes() == {}


def test_join_or_leave_of_unknown_connection_is_refused() -> None:
    """Joining or leaving with a wsId that is not open raises UnknownConnection naming it."""
    hub, _ = hub_with(A)
    with pytest.raises(UnknownConnection) as info:
        hub.join(LOBBY, C)
    assert info.value.conn_id == C
    with pytest.raises(UnknownConnection):
        hub.leave(LOBBY, C)
    assert hub.room_sizes() == {}


def test_join_past_the_room_cap_is_refused() -> None:
    """A connection at the per-connection room cap cannot join another room."""
    hub, _ = hub_with(A, max_rooms=2)
    hub.join(LOBBY, A)
    hub.join(GAME, A)
    with pytest.raises(RoomLimitExceeded) as info:
        hub.join(CHAT, A)
    assert (info.value.conn_id, info.value.limit) == (A, 2)
    assert hub.rooms_of(A) == {LOBBY, GAME}
    assert hub.room_size(CHAT) == 0


def test_rejoining_a_room_at_the_cap_is_fine() -> None:
    """At the cap, joining a room already in is accepted as no change."""
    hub, _ = hub_with(A, max_rooms=2)
    hub.join(LOBBY, A)
    hub.join(GAME, A)
    assert hub.join(LOBBY, A) == MembershipChange(changed=False, room_boundary=False)


def test_leaving_a_room_frees_a_place_under_the_cap() -> None:
    """After leaving a room, a capped connection can join another."""
    hub, _ = hub_with(A, max_rooms=1)
    hub.join(LOBBY, A)
    hub.leave(LOBBY, A)
    assert hub.join(GAME, A).changed
    assert hub.rooms_of(A) == {GAME}


def test_room_cap_is_per_connection() -> None:
    """One connection at its cap does not stop another from joining."""
    hub, _ = hub_with(A, B, max_rooms=1)
    hub.join(LOBBY, A)
    assert hub.join(GAME, B).changed
    with pytest.raises(RoomLimitExceeded):
        hub.join(LOBBY, B)
    assert hub.room_sizes() == {LOBBY: 1, GAME: 1}


# Fan-out


def test_broadcast_hands_the_same_bytes_to_every_connection() -> None:
    """A broadcast gives every open connection the very same frame object, and counts them."""
    hub, sinks = hub_with(A, B, C)
    frame = encode_push(3, "hello")
    assert hub.broadcast(Outgoing(frame)) == 3
    for sink in sinks.values():
        assert len(sink.frames) == 1
        assert sink.frames[0] is frame


def test_broadcast_to_no_connections_counts_zero() -> None:
    """A broadcast with nobody connected reaches zero connections."""
    hub = Hub(max_rooms_per_conn=4)
    assert hub.broadcast(Outgoing(b"x")) == 0


def test_room_push_reaches_members_only_with_the_same_bytes() -> None:
    """A room push gives each member the same frame object; non-members get nothing."""
    hub, sinks = hub_with(A, B, C)
    hub.join(LOBBY, A)
    hub.join(LOBBY, C)
    hub.join(GAME, B)
    frame = encode_push(4, {"k": 1}, LOBBY)
    assert hub.send_room(LOBBY, Outgoing(frame)) == 2
    assert sinks[A].frames[0] is frame
    assert sinks[C].frames[0] is frame
    assert len(sinks[A].frames) == len(sinks[C].frames) == 1
    assert sinks[B].frames == []


def test_room_push_to_an_unknown_room_reaches_nobody() -> None:
    """A push to a room with no members reaches zero connections."""
    hub, sinks = hub_with(A)
    assert hub.send_room(LOBBY, Outgoing(b"x")) == 0
    assert sinks[A].frames == []


def test_a_member_who_left_gets_no_more_room_pushes() -> None:
    """After leaving a room a connection stops receiving its pushes."""
    hub, sinks = hub_with(A, B)
    hub.join(LOBBY, A)
    hub.join(LOBBY, B)
    hub.send_room(LOBBY, Outgoing(b"1"))
    hub.leave(LOBBY, A)
    assert hub.send_room(LOBBY, Outgoing(b"2")) == 1
    assert sinks[A].frames == [b"1"]
    assert sinks[B].frames == [b"1", b"2"]


def test_frames_reach_each_sink_in_the_order_sent() -> None:
    """Broadcasts and room pushes reach each connection in the order the hub sent them."""
    hub, sinks = hub_with(A, B)
    hub.join(LOBBY, A)
    frames = [encode_push(n, n) for n in range(2, 12)]
    for n, frame in enumerate(frames):
        if n % 3 == 0:
            hub.send_room(LOBBY, Outgoing(frame))
        else:
            hub.broadcast(Outgoing(frame))
    assert sinks[A].frames == frames
    assert sinks[B].frames == [f for n, f in enumerate(frames) if n % 3 != 0]


def test_a_message_is_made_once_per_encoding_whatever_the_recipients() -> None:
    """Connections of two protocols in one room: each encoding of a push is made
    once, by its first recipient, and every recipient of it gets the same bytes."""
    made: list[str] = []

    def encoding(name: str) -> Encoding:
        def encode(message: bytes) -> bytes:
            made.append(name)
            return name.encode() + b":" + message

        return Encoding(name, encode, bytes)

    seed, other = encoding("seed"), encoding("other")

    class Speaker:
        connected_at = 0.0

        def __init__(self, speaks: Encoding) -> None:
            self.encoding = speaks
            self.got: list[bytes] = []

        def send(self, frame: bytes) -> None:
            self.got.append(frame)

        def close(self, code: int, reason: str) -> None:
            raise AssertionError("not closed here")

        def member(self, room: str, joined: bool, reason: str) -> None:
            raise AssertionError("not moved here")

    hub = Hub(max_rooms_per_conn=8)
    speakers = [Speaker(seed), Speaker(other), Speaker(seed), Speaker(other), Speaker(seed)]
    for n, speaker in enumerate(speakers):
        hub.register(ConnId(f"c{n}"), speaker)
        hub.join(LOBBY, ConnId(f"c{n}"))
    assert hub.send_room(LOBBY, Outgoing(b"hi")) == 5
    assert sorted(made) == ["other", "seed"]
    assert [s.got[0] for s in speakers] == [b"seed:hi", b"other:hi"] * 2 + [b"seed:hi"]
    assert speakers[0].got[0] is speakers[2].got[0] is speakers[4].got[0]
    assert speakers[1].got[0] is speakers[3].got[0]


def test_a_push_to_many_encodings_gives_each_its_own_and_counts_them() -> None:
    """Twelve encodings in one room (more than the compiled path keeps at once), one
    recipient skipped: each other gets its encoding's bytes, counted by encoding."""

    def encoding(n: int) -> Encoding:
        return Encoding(f"e{n}", lambda message: b"%d:" % n + message, bytes)

    encodings = [encoding(n) for n in range(12)]
    hub = Hub(max_rooms_per_conn=8)
    sinks = []
    for n in range(24):
        sink = FakeSink()
        sink.encoding = encodings[n % 12]
        sinks.append(sink)
        hub.register(ConnId(f"c{n}"), sink)
        hub.join(LOBBY, ConnId(f"c{n}"))
    assert hub.send_room(LOBBY, Outgoing(b"hi"), skip=sinks[5]) == 23
    for n, sink in enumerate(sinks):
        assert sink.frames == ([] if n == 5 else [b"%d:hi" % (n % 12)])
    assert hub.delivered == {e: 1 if e is encodings[5] else 2 for e in encodings}
