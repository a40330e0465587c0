"""What a node keeps of the pushes it fanned out, and the resumes it catches up from
them without reading history (recent.py, StreamRecovery.recent_histories), without
an event loop. The live path is in tests/test_promises_resume.py."""

import pytest

from pushgate.recent import OVERHEAD, Recent
from pushgate.recovery import Action, StreamRecovery
from pushgate.streams import History, Position, Publication

S, T = "room:s", "room:t"
BIG = 1 << 20


def pub(seq: int, epoch: str = "e") -> Publication:
    return Publication(seq, epoch, b"%s-%d" % (epoch.encode(), seq))


def seqs(history: History | None) -> list[int] | None:
    return None if history is None else [p.seq for p in history.publications]


def kept(recent: Recent, topic: str, upto: int, epoch: str = "e") -> list[int] | None:
    """The seqs ``recent`` can give after the oldest position it reaches from (None:
    it cannot give even the last push)."""
    top = Position(epoch, upto)
    for since in range(upto):
        history = recent.after(topic, Position(epoch, since), top)
        if history is not None:
            return seqs(history)
    return None


# Recent on its own


def test_what_was_missed_since_a_position_it_reaches() -> None:
    recent = Recent(per_stream=8, budget=BIG)
    for seq in range(1, 6):
        recent.add(S, pub(seq))
    top = Position("e", 5)
    assert seqs(recent.after(S, Position("e", 2), top)) == [3, 4, 5]
    assert seqs(recent.after(S, Position("e", 0), top)) == [1, 2, 3, 4, 5]
    history = recent.after(S, Position("e", 5), top)
    assert history == History(top)  # nothing missed: complete, nothing to give
    assert recent.after(S, Position("e", 3), top).complete  # type: ignore[union-attr]


def test_no_answer_where_it_cannot_vouch_for_every_push() -> None:
    """Another epoch, a position beyond the top, a top that is not its last push (the
    node moved on without one: a notice), or a stream it keeps nothing of: the
    caller reads history instead."""
    recent = Recent(per_stream=8, budget=BIG)
    for seq in range(3, 6):
        recent.add(S, pub(seq))
    top = Position("e", 5)
    assert recent.after(S, Position("e", 1), top) is None  # 2 is not kept
    assert seqs(recent.after(S, Position("e", 2), top)) == [3, 4, 5]
    assert recent.after(S, Position("old", 4), top) is None
    assert recent.after(S, Position("e", 6), top) is None
    assert recent.after(S, Position("e", 4), Position("e", 6)) is None
    assert recent.after(S, Position("e", 4), Position("f", 5)) is None
    assert recent.after(T, Position("e", 4), top) is None


def test_a_gap_or_a_new_epoch_starts_the_stream_over() -> None:
    recent = Recent(per_stream=8, budget=BIG)
    for seq in (1, 2, 3, 5, 6):
        recent.add(S, pub(seq))
    assert kept(recent, S, 6) == [5, 6]  # 4 never came: nothing before 5 is vouched for
    recent.add(S, pub(1, "f"))
    assert kept(recent, S, 1, "f") == [1]
    assert recent.after(S, Position("e", 5), Position("e", 6)) is None
    assert recent.held == len(b"f-1") + OVERHEAD


def test_each_stream_keeps_at_least_its_last_per_stream_pushes() -> None:
    recent = Recent(per_stream=4, budget=BIG)
    for seq in range(1, 30):
        recent.add(S, pub(seq))
        reach = kept(recent, S, seq)
        assert reach is not None
        assert len(reach) >= 4 or reach == list(range(1, seq + 1))
        assert len(reach) < 8
    assert recent.held < 8 * (len(b"e-29") + OVERHEAD)


def test_the_budget_drops_the_streams_published_to_least_recently() -> None:
    """Counted in bytes (each push's data and OVERHEAD): ten of these pushes fit."""
    recent = Recent(per_stream=4, budget=10 * (3 + OVERHEAD))
    for seq in range(1, 5):
        recent.add(S, pub(seq))
        recent.add(T, pub(seq))
    recent.add(S, pub(5))  # S is the latest now: T goes when the budget is passed
    recent.add("room:u", pub(1))
    recent.add("room:u", pub(2))
    assert recent.held <= recent.budget
    assert kept(recent, T, 4) is None
    assert kept(recent, S, 5) == [1, 2, 3, 4, 5]
    assert kept(recent, "room:u", 2) == [1, 2]


def test_a_stream_over_the_budget_on_its_own_keeps_what_fits_and_its_last() -> None:
    recent = Recent(per_stream=64, budget=3 * (3 + OVERHEAD))
    for seq in range(1, 10):
        recent.add(S, pub(seq))
    assert kept(recent, S, 9) == [7, 8, 9]
    big = Publication(10, "e", b"x" * 10_000)
    recent.add(S, big)
    assert recent.after(S, Position("e", 9), Position("e", 10)) == History(
        Position("e", 10), (big,)
    )
    assert recent.after(S, Position("e", 8), Position("e", 10)) is None


def test_forget_drops_what_a_stream_kept() -> None:
    recent = Recent(per_stream=4, budget=10)
    recent.add(S, pub(1))
    recent.add(S, pub(2))
    recent.forget(S)
    recent.forget(S)
    assert recent.held == 0
    assert recent.after(S, Position("e", 1), Position("e", 2)) is None


def test_bounds_must_make_sense() -> None:
    with pytest.raises(ValueError, match="per_stream"):
        Recent(per_stream=0, budget=10)
    with pytest.raises(ValueError, match="per_stream"):
        Recent(per_stream=8, budget=0)


# Through StreamRecovery, as the node drives it


def node(at: int, *, keep: bool = True) -> StreamRecovery:
    """A node that followed ``S`` from seq 0 and fanned out its pushes up to ``at``."""
    recovery = StreamRecovery(recent=Recent(per_stream=16, budget=BIG) if keep else None)
    recovery.noted(S, Position("e", 0))
    for seq in range(1, at + 1):
        deliver(recovery, pub(seq))
    return recovery


def deliver(recovery: StreamRecovery, push: Publication) -> None:
    assert recovery.arrive(S, push).action is Action.DELIVER
    recovery.fanned_out(S, push)


def test_a_resume_is_caught_up_from_what_the_node_fanned_out() -> None:
    """The node is at 6: a client at 3 gets 4 to 6 from memory, then what arrives
    while its resume goes on is captured, each push once."""
    recovery = node(6)
    recovery.capture([S])
    starts = {S: Position("e", 3)}
    histories = recovery.recent_histories(starts)
    assert seqs(histories[S]) == [4, 5, 6]
    deliver(recovery, pub(7))  # live, while the resume waits on the broker
    catch_up = recovery.catch_up(starts, histories, history_on=True)
    recovery.release([S])
    assert catch_up.frames == [b"e-4", b"e-5", b"e-6", b"e-7"]
    report = catch_up.reports[S]
    assert (report.recovered, report.epoch, report.seq) == (True, "e", 7)
    assert catch_up.repair == []


def test_no_memory_while_the_stream_is_repaired_or_not_followed() -> None:
    """A gap the node is filling, a stream it does not follow, or a node that keeps
    nothing: history is read."""
    recovery = node(4)
    assert recovery.arrive(S, pub(7)).action is Action.REPAIR
    assert recovery.recent_histories({S: Position("e", 2)}) == {}
    outcome = recovery.finish_repair(S, History(Position("e", 7), tuple(map(pub, (5, 6, 7)))))
    for step in outcome.steps:
        assert isinstance(step, Publication)
        recovery.fanned_out(S, step)
    assert seqs(recovery.recent_histories({S: Position("e", 2)})[S]) == [3, 4, 5, 6, 7]
    recovery.forget(S, 0.0)
    assert recovery.recent_histories({S: Position("e", 2)}) == {}
    assert node(4, keep=False).recent_histories({S: Position("e", 2)}) == {}


def test_no_memory_across_pushes_the_node_was_told_were_lost() -> None:
    """5 to 8 were lost on the way and history no longer has them: the node tells
    its clients, then fans out 9. A client at 3 is not caught up from memory (it
    would never hear of the loss); one at 8 is."""
    recovery = node(4)
    assert recovery.arrive(S, pub(9)).action is Action.REPAIR
    outcome = recovery.finish_repair(S, History(Position("e", 8), (), complete=False))
    assert outcome.lost == 1
    for step in outcome.steps:
        if isinstance(step, Publication):
            recovery.fanned_out(S, step)
    assert recovery.recent_histories({S: Position("e", 3)}) == {}
    assert seqs(recovery.recent_histories({S: Position("e", 8)})[S]) == [9]


def test_a_stream_with_no_start_is_given_where_the_node_is() -> None:
    """A new stream (SSE without Last-Event-ID) asks only where the stream stands:
    the node's own position, unless it is filling a gap of it."""
    recovery = node(5)
    assert recovery.recent_histories({S: None}) == {S: History(Position("e", 5))}
    assert recovery.arrive(S, pub(8)).action is Action.REPAIR
    assert recovery.recent_histories({S: None}) == {}


def test_no_memory_for_a_position_the_node_only_noted() -> None:
    """Where the stream stood when the node began following it, read then: the node
    has fanned nothing out since, and a read (which also finds whether it is behind)
    answers instead."""
    recovery = node(0)
    assert recovery.last(S) == Position("e", 0)
    assert recovery.recent_histories({S: Position("e", 0), T: None}) == {}
    assert recovery.recent_histories({S: None}) == {}


def test_no_memory_after_a_repair_that_could_not_read_history() -> None:
    """The broker came back and the repair could not read history: the members were
    told pushes may be lost, and the node, still where it was, may be behind without
    knowing it. A resume then reads history (which finds that out and repairs),
    until the node fans out its next push."""
    recovery = node(4)
    assert recovery.start_repair(S)
    outcome = recovery.finish_repair(S, None)
    assert outcome.lost == 1
    assert recovery.last(S) == Position("e", 4)
    assert recovery.recent_histories({S: Position("e", 2)}) == {}
    assert recovery.recent_histories({S: Position("e", 4)}) == {}
    deliver(recovery, pub(5))
    assert seqs(recovery.recent_histories({S: Position("e", 4)})[S]) == [5]
