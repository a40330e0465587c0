"""StreamGuard: how a node judges each push against the last position it delivered
(pure; the live paths are in tests/test_recovery*.py)."""

from pushgate.streams import Position, Publication, StreamGuard, Verdict


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
