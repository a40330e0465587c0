"""Streams (pure): their names, a position spliced into a push, what history holds
after a position, and StreamGuard, how a node judges each push against the last
position it delivered (the live paths are in tests/test_recovery*.py)."""

import json

from pushgate.ids import RoomId
from pushgate.streams import (
    History,
    Position,
    Publication,
    StreamGuard,
    Verdict,
    history_after,
    room_of,
    room_topic,
    user_of,
    user_topic,
    with_position,
)


def pub(epoch: str, seq: int) -> Publication:
    return Publication(seq, epoch, b"{}\n")


def test_a_push_after_the_last_is_next_a_skip_is_a_gap_a_repeat_a_duplicate() -> None:
    guard = StreamGuard()
    assert guard.check("s", pub("a", 7)) is Verdict.NEXT  # nothing known yet
    guard.delivered("s", Position("a", 7))
    assert guard.check("s", pub("a", 8)) is Verdict.NEXT
    assert guard.check("s", pub("a", 10)) is Verdict.GAP
    assert guard.check("s", pub("a", 7)) is Verdict.DUPLICATE


def test_a_new_epoch_is_news_only_if_something_was_delivered_in_the_old_one() -> None:
    """A position noted at subscription (seq 0: nothing delivered yet) loses nothing
    when the epoch changes: the new epoch is checked from its start. After a push,
    a new epoch means the old history is gone, which the clients must be told."""
    guard = StreamGuard()
    guard.delivered("quiet", Position("a", 0))
    assert guard.check("quiet", pub("b", 1)) is Verdict.NEXT
    assert guard.check("quiet", pub("b", 3)) is Verdict.GAP
    guard.delivered("busy", Position("a", 5))
    assert guard.check("busy", pub("b", 1)) is Verdict.NEW_EPOCH


def test_a_stream_is_named_for_its_room_or_its_user() -> None:
    """Room and user streams are their topics; a name tells which room or user it is
    the stream of, and only by its prefix."""
    assert room_topic(RoomId("news")) == "room:news"
    assert user_topic("alice") == "user:alice"
    assert room_of("room:news") == "news"
    assert room_of("room:user:x") == "user:x"
    assert user_of("user:alice") == "alice"
    for topic in ("all", "user:alice", "news", "xroom:news"):
        assert room_of(topic) is None, topic
    for topic in ("all", "room:alice", "alice"):
        assert user_of(topic) is None, topic


def test_a_position_is_spliced_into_the_encoded_push() -> None:
    """Two keys before the closing brace, the newline kept: what a client reads as
    the push's ``seq`` and ``epoch``."""
    spliced = with_position(b'{"type":2,"data":{"a":[1]}}\n', 41, "9f2c1a7e")
    assert spliced == b'{"type":2,"data":{"a":[1]},"seq":41,"epoch":"9f2c1a7e"}\n'
    assert json.loads(spliced) == {"type": 2, "data": {"a": [1]}, "seq": 41, "epoch": "9f2c1a7e"}


def kept(epoch: str, *seqs: int) -> tuple[Publication, ...]:
    return tuple(pub(epoch, seq) for seq in seqs)


def test_history_after_a_position_is_what_came_after_it_and_whether_it_is_all() -> None:
    """From a position in the stream's epoch: the pushes after it, complete when the
    first of them follows it; nothing after the top is complete; none asks only
    for the position."""
    top = Position("e", 5)
    assert history_after(top, kept("e", 3, 4, 5), Position("e", 3)) == History(
        top, kept("e", 4, 5), True
    )
    assert history_after(top, kept("e", 4, 5), Position("e", 2)) == History(
        top, kept("e", 4, 5), False
    )
    assert history_after(top, kept("e", 3, 4, 5), Position("e", 5)) == History(top)
    assert history_after(top, kept("e", 3, 4, 5), None) == History(top)


def test_history_from_another_epoch_or_from_beyond_the_top_is_all_of_it_incomplete() -> None:
    """A client whose position is of an earlier epoch (the history was lost) or
    further than the stream has gone gets every push kept, and is told that is not
    all it missed, whatever its seq."""
    top = Position("new", 5)
    for since in (Position("old", 2), Position("old", 9), Position("new", 6)):
        assert history_after(top, kept("new", 4, 5), since) == History(
            top, kept("new", 4, 5), False
        ), since


def test_a_stream_no_longer_followed_is_forgotten() -> None:
    guard = StreamGuard()
    guard.delivered("room:a", Position("a", 3))
    guard.delivered("room:b", Position("a", 1))
    assert guard.topics() == ["room:a", "room:b"]
    guard.forget("room:a")
    guard.forget("room:never")
    assert guard.topics() == ["room:b"]
    assert guard.last("room:a") is None
    assert guard.check("room:a", pub("a", 9)) is Verdict.NEXT
