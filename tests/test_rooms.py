"""Room membership both ways, and when rooms are created and emptied."""

from pushgate.ids import ConnId, RoomId
from pushgate.rooms import Rooms

A = ConnId("conn-a")
B = ConnId("conn-b")
LOBBY = RoomId("lobby")
GAME = RoomId("game")
CHAT = RoomId("chat")


def test_first_member_creates_the_room() -> None:
    """The first join creates the room; a second member does not."""
    rooms: Rooms[str] = Rooms()
    assert rooms.add(LOBBY, A, "a") == (True, True)
    assert rooms.add(LOBBY, B, "b") == (True, False)
    assert list(rooms.members(LOBBY)) == ["a", "b"]
    assert rooms.size(LOBBY) == 2
    assert len(rooms) == 1


def test_joining_twice_changes_nothing() -> None:
    """Joining a room one is already in reports no change and keeps one membership."""
    rooms: Rooms[str] = Rooms()
    rooms.add(LOBBY, A, "a")
    assert rooms.add(LOBBY, A, "a-again") == (False, False)
    assert list(rooms.members(LOBBY)) == ["a"]
    assert rooms.count_rooms_of(A) == 1


def test_last_member_leaving_empties_the_room() -> None:
    """Leaving reports the room emptied only when the last member goes."""
    rooms: Rooms[str] = Rooms()
    rooms.add(LOBBY, A, "a")
    rooms.add(LOBBY, B, "b")
    assert rooms.discard(LOBBY, A) == (True, False)
    assert list(rooms.members(LOBBY)) == ["b"]
    assert rooms.discard(LOBBY, B) == (True, True)
    assert list(rooms.members(LOBBY)) == []
    assert rooms.size(LOBBY) == 0
    assert len(rooms) == 0
    assert rooms.sizes() == {}


def test_leaving_twice_or_a_room_not_in_changes_nothing() -> None:
    """Leaving a room one is not in, or that does not exist, is a harmless no-op."""
    rooms: Rooms[str] = Rooms()
    rooms.add(LOBBY, A, "a")
    assert rooms.discard(LOBBY, B) == (False, False)
    assert rooms.discard(GAME, A) == (False, False)
    assert rooms.discard(LOBBY, A) == (True, True)
    assert rooms.discard(LOBBY, A) == (False, False)
    assert rooms.rooms_of(A) == frozenset()


def test_rooms_of_lists_a_connections_rooms() -> None:
    """rooms_of gives exactly the rooms a connection is in, following joins and leaves."""
    rooms: Rooms[str] = Rooms()
    assert rooms.rooms_of(A) == frozenset()
    rooms.add(LOBBY, A, "a")
    rooms.add(GAME, A, "a")
    rooms.add(CHAT, B, "b")
    assert rooms.rooms_of(A) == {LOBBY, GAME}
    assert rooms.count_rooms_of(A) == 2
    rooms.discard(LOBBY, A)
    assert rooms.rooms_of(A) == {GAME}
    assert rooms.rooms_of(B) == {CHAT}


def test_discard_all_leaves_every_room_and_reports_the_emptied_ones() -> None:
    """Taking a connection out of all rooms reports only the rooms it leaves empty."""
    rooms: Rooms[str] = Rooms()
    rooms.add(LOBBY, A, "a")
    rooms.add(GAME, A, "a")
    rooms.add(CHAT, A, "a")
    rooms.add(GAME, B, "b")
    assert sorted(rooms.discard_all(A)) == sorted([LOBBY, CHAT])
    assert rooms.rooms_of(A) == frozenset()
    assert rooms.count_rooms_of(A) == 0
    assert rooms.sizes() == {GAME: 1}
    assert list(rooms.members(GAME)) == ["b"]


def test_discard_all_of_a_connection_in_no_room_is_harmless() -> None:
    """Taking out a connection that is in no room empties nothing and touches no one."""
    rooms: Rooms[str] = Rooms()
    rooms.add(LOBBY, B, "b")
    assert rooms.discard_all(A) == []
    assert rooms.sizes() == {LOBBY: 1}


def test_room_can_be_recreated_after_emptying() -> None:
    """A room emptied and joined again reports being created again."""
    rooms: Rooms[str] = Rooms()
    rooms.add(LOBBY, A, "a")
    rooms.discard_all(A)
    assert rooms.add(LOBBY, B, "b") == (True, True)
    assert rooms.add(LOBBY, A, "a") == (True, False)


def test_sizes_counts_members_per_room() -> None:
    """sizes gives every existing room with its member count."""
    rooms: Rooms[str] = Rooms()
    rooms.add(LOBBY, A, "a")
    rooms.add(LOBBY, B, "b")
    rooms.add(GAME, B, "b")
    assert rooms.sizes() == {LOBBY: 2, GAME: 1}
