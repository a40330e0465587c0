"""PresenceTable (pushgate.presence): who is in a room by user, and which changes are
joins and leaves. Pure: no event loop, a clock the test sets."""

import math
import tracemalloc

import pytest

from pushgate.ids import ConnId, RoomId
from pushgate.presence import (
    NEVER,
    Change,
    Identity,
    PresenceTable,
    Present,
    decode_info,
    encode_info,
)

ROOM = RoomId("chat:1")
A1, A2, B1, X1 = (ConnId(c) for c in ("a1", "a2", "b1", "x1"))
ANN = Identity(A1, "ann", '{"name":"Ann"}')
ANN_TAB = Identity(A2, "ann", '{"name":"Ann again"}')
BOB = Identity(B1, "bob")
ANON = Identity(X1, None)


def test_a_users_first_session_joins_and_its_second_is_silent() -> None:
    """The room's first user occupies it (edge): webhooks' room_occupied."""
    table = PresenceTable()
    assert table.enter(ROOM, ANN, "h1", NEVER, 0) == [Change(ROOM, True, ANN, edge=True)]
    assert table.enter(ROOM, ANN_TAB, "h2", NEVER, 0) == []
    assert table.enter(ROOM, BOB, "h3", NEVER, 0) == [Change(ROOM, True, BOB)]
    # The user is told with the info of its first session, and both its wsIds.
    assert table.roster(ROOM, 0) == [
        Present("ann", '{"name":"Ann"}', (A1, A2)),
        Present("bob", None, (B1,)),
    ]


def test_a_user_leaves_when_its_last_session_goes() -> None:
    """The room's last user vacates it (edge): webhooks' room_vacated."""
    table = PresenceTable()
    table.enter(ROOM, ANN, "h1", NEVER, 0)
    table.enter(ROOM, ANN_TAB, "h2", NEVER, 0)
    assert table.leave(ROOM, A1) == []
    assert table.leave(ROOM, A1) == []  # twice: nothing more
    assert table.leave(ROOM, A2) == [Change(ROOM, False, ANN, edge=True)]
    assert table.roster(ROOM, 0) == []
    assert len(table) == 0
    assert table.rooms() == []


def test_an_anonymous_member_is_a_user_of_its_own() -> None:
    table = PresenceTable()
    other = Identity(ConnId("x2"), None)
    assert table.enter(ROOM, ANON, "h", NEVER, 0) == [Change(ROOM, True, ANON, edge=True)]
    assert table.enter(ROOM, other, "h2", NEVER, 0) == [Change(ROOM, True, other)]
    assert ANON.key != other.key
    assert table.leave(ROOM, X1) == [Change(ROOM, False, ANON)]


def test_a_resume_reenters_silently_and_keeps_its_identity() -> None:
    """A new holder (a resume, here or on another node) takes the entry: no event,
    the first identity kept, and the old holder's detach no longer counts."""
    table = PresenceTable()
    table.enter(ROOM, ANN, "old", NEVER, 0)
    table.detach(A1, "old", [ROOM], 10)
    assert table.enter(ROOM, Identity(A1, "ann", None), "new", NEVER, 5) == []
    table.detach(A1, "old", [ROOM], 12)  # the old connection's close, arriving late
    assert table.sweep(100) == []
    assert table.roster(ROOM, 100) == [Present("ann", '{"name":"Ann"}', (A1,))]


def test_a_detached_session_leaves_at_its_deadline() -> None:
    table = PresenceTable()
    table.enter(ROOM, ANN, "h", NEVER, 0)
    table.enter(ROOM, BOB, "h2", NEVER, 0)
    table.detach(A1, "h", [ROOM], 10)
    assert table.sweep(9.9) == []
    assert [p.user for p in table.roster(ROOM, 9.9)] == ["ann", "bob"]
    assert [p.user for p in table.roster(ROOM, 10)] == ["bob"]  # past it: left out
    assert table.sweep(10) == [Change(ROOM, False, ANN)]
    assert table.sweep(11) == []


def test_an_entry_swept_when_the_room_is_entered_again() -> None:
    """Entering sweeps the room first: a stale user's leave comes before the join."""
    table = PresenceTable()
    table.enter(ROOM, ANN, "h", NEVER, 0)
    table.detach(A1, "h", [ROOM], 10)
    assert table.enter(ROOM, BOB, "h2", NEVER, 20) == [
        Change(ROOM, False, ANN, edge=True),
        Change(ROOM, True, BOB, edge=True),
    ]


def test_keep_pushes_only_the_entries_their_holder_still_holds() -> None:
    table = PresenceTable()
    table.enter(ROOM, ANN, "h", 10, 0)
    table.enter(ROOM, BOB, "h2", 10, 0)
    table.keep(ROOM, [(A1, "h"), (B1, "stale")], 30)
    assert table.sweep(20) == [Change(ROOM, False, BOB)]
    assert table.sweep(29) == []
    table.keep(ROOM, [(A1, "h")], 5)  # never earlier than it was
    assert table.sweep(29) == []


def test_a_sweep_finds_each_deadline_however_keeps_and_detaches_moved_it() -> None:
    """A sweep looks only at rooms that may have an entry due: a deadline a keep
    pushed on, or a detach brought nearer, is still found exactly when it passes."""
    table = PresenceTable()
    other = RoomId("chat:2")
    table.enter(ROOM, ANN, "h", 10, 0)
    table.enter(other, BOB, "h2", 10, 0)
    table.keep(ROOM, [(A1, "h")], 30)
    assert table.sweep(10) == [Change(other, False, BOB, edge=True)]
    assert table.sweep(20) == []
    table.detach(A1, "h", [ROOM], 25)  # nearer than its held deadline (30)
    assert table.sweep(24.9) == []
    assert table.sweep(25) == [Change(ROOM, False, ANN, edge=True)]
    # A resume before the detached deadline: no leave at it, nor later.
    table.enter(ROOM, BOB, "h2", 40, 30)
    table.detach(B1, "h2", [ROOM], 35)
    table.enter(ROOM, BOB, "h3", NEVER, 34)
    assert table.sweep(1000) == []
    assert [p.user for p in table.roster(ROOM, 1000)] == ["bob"]


def test_rooms_that_came_and_went_leave_nothing_behind() -> None:
    """One connection subscribing to room after room and leaving each (an attack on
    memory): what the table keeps for the sweeps does not grow with them."""
    table = PresenceTable()
    table.enter(ROOM, ANN, "h", 100, 0)

    def churn(first: int, count: int) -> None:
        for n in range(first, first + count):
            room = RoomId(f"chat:churn{n}")
            table.enter(room, BOB, "h2", 100 + n, 0)
            table.leave(room, B1)

    churn(0, 1000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        churn(1000, 50_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 50_000  # bytes; a mark kept for each room gone was 7 MB
    assert table.sweep(100) == [Change(ROOM, False, ANN, edge=True)]


def test_rooms_are_apart() -> None:
    table = PresenceTable()
    other = RoomId("chat:2")
    table.enter(ROOM, ANN, "h", NEVER, 0)
    assert table.enter(other, ANN, "h", NEVER, 0) == [Change(other, True, ANN, edge=True)]
    assert table.leave(ROOM, A1) == [Change(ROOM, False, ANN, edge=True)]
    assert table.roster(other, 0) == [Present("ann", '{"name":"Ann"}', (A1,))]
    assert math.isinf(NEVER)


def test_info_is_a_small_json_object() -> None:
    assert encode_info({"name": "Ann", "n": 1}) == '{"name":"Ann","n":1}'
    assert decode_info('{"a": [1, 2]}') == {"a": [1, 2]}
    for bad in ([1], "text", None):
        with pytest.raises(ValueError, match="object"):
            encode_info(bad)
    with pytest.raises(ValueError, match="1024 bytes"):
        encode_info({"x": "y" * 1100})
    with pytest.raises(ValueError, match="not JSON"):
        decode_info("{nope")
    with pytest.raises(ValueError, match="object"):
        decode_info("[1]")
