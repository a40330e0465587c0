"""StreamRecovery without an event loop: positions and histories in, the pushes to
hand out and the notices to send out (docs/recovery.md). The live paths are in
tests/test_recovery*.py and tests/test_resume_race.py."""

from pushgate.recovery import Action, RepairOutcome, StreamRecovery
from pushgate.streams import History, Position, Publication
from pushgate.wire import StreamReport, encode_push

S = "room:s"


def pub(seq: int, epoch: str = "e") -> Publication:
    return Publication(seq, epoch, b"%s-%d" % (epoch.encode(), seq))


def following(at: int, epoch: str = "e") -> StreamRecovery:
    """A node that has delivered ``S`` up to ``at``."""
    recovery = StreamRecovery()
    recovery.noted(S, Position(epoch, 0))
    for seq in range(1, at + 1):
        assert recovery.arrive(S, pub(seq, epoch)).action is Action.DELIVER
    return recovery


def history(top: int, kept: range | list[int], epoch: str = "e", complete: bool = True) -> History:
    return History(Position(epoch, top), tuple(pub(s, epoch) for s in kept), complete)


def data(steps: list[Publication | StreamReport]) -> list[object]:
    return [s.data if isinstance(s, Publication) else s for s in steps]


# Live pushes


def test_the_next_push_is_delivered_a_repeat_dropped() -> None:
    recovery = following(3)
    assert recovery.arrive(S, pub(4)).action is Action.DELIVER
    assert recovery.arrive(S, pub(4)).action is Action.DROP
    assert recovery.arrive(S, pub(2)).action is Action.DROP
    assert recovery.last(S) == Position("e", 4)


def test_a_push_without_a_position_is_always_delivered() -> None:
    """History off: pushes carry seq 0 and nothing is checked."""
    recovery = StreamRecovery()
    assert recovery.arrive(S, Publication(0, "", b"x")).action is Action.DELIVER
    assert recovery.last(S) is None


def test_a_gap_holds_the_stream_until_history_fills_it() -> None:
    """Push 6 after 3: a repair starts, 6 and what follows wait; history (which has
    6 and 7 too by then) fills 4 to 7, the held copies of 6 and 7 are not given
    twice, and nothing is told lost."""
    recovery = following(3)
    assert recovery.arrive(S, pub(6)).action is Action.REPAIR
    assert recovery.repairing(S)
    assert recovery.arrive(S, pub(7)).action is Action.HOLD
    outcome = recovery.finish_repair(S, history(7, range(4, 8)))
    assert data(outcome.steps) == [b"e-4", b"e-5", b"e-6", b"e-7"]
    assert (outcome.filled, outcome.lost) == (4, 0)
    assert not recovery.repairing(S)
    assert recovery.last(S) == Position("e", 7)
    assert recovery.arrive(S, pub(8)).action is Action.DELIVER


def test_a_gap_history_no_longer_holds_is_told_then_the_held_pushes_go_on() -> None:
    """History was trimmed past the gap: the clients are told (a notice naming where
    the stream went on), then get the held pushes."""
    recovery = following(3)
    recovery.arrive(S, pub(9))
    outcome = recovery.finish_repair(S, history(9, range(7, 10), complete=False))
    assert data(outcome.steps) == [StreamReport(False, "e", 9), b"e-9"]
    assert outcome.lost == 1
    assert recovery.last(S) == Position("e", 9)


def test_a_repair_whose_history_could_not_be_read() -> None:
    """The broker did not answer: the held pushes go out behind a notice (the gap
    before them is unknown), in order."""
    recovery = following(3)
    recovery.arrive(S, pub(6))
    recovery.arrive(S, pub(7))
    outcome = recovery.finish_repair(S, None)
    assert data(outcome.steps) == [StreamReport(False, "e", 6), b"e-6", b"e-7"]
    assert outcome.lost == 1


def test_a_reconnect_catches_every_stream_up() -> None:
    """After the broker reconnected: a repair per stream, with nothing held; history
    gives what was missed; a stream with nothing new says nothing."""
    recovery = following(3)
    assert recovery.start_repair(S)
    assert not recovery.start_repair(S)  # one repair at a time
    outcome = recovery.finish_repair(S, history(5, range(1, 6)))
    assert data(outcome.steps) == [b"e-4", b"e-5"]
    assert recovery.start_repair(S)
    assert recovery.finish_repair(S, history(5, range(1, 6))).steps == []


def test_a_reconnect_whose_history_could_not_be_read_says_so() -> None:
    recovery = following(3)
    recovery.start_repair(S)
    outcome = recovery.finish_repair(S, None)
    assert outcome.steps == [StreamReport(False, "e", 3)]


def test_a_new_epoch_is_delivered_after_a_notice() -> None:
    """The stream's history was lost (Redis restarted empty): its next push comes
    with a notice naming the new epoch and the epoch before."""
    recovery = following(3)
    arrival = recovery.arrive(S, pub(1, "f"))
    assert arrival.action is Action.DELIVER
    assert arrival.notice == StreamReport(False, "f", 1)
    assert arrival.was == "e"
    assert recovery.last(S) == Position("f", 1)


def test_a_repair_that_finds_a_new_epoch() -> None:
    """Repairing after a reconnect finds the stream in a new epoch: what followed the
    old position is gone (a notice at the new epoch's start), then the new epoch's
    pushes, each once."""
    recovery = following(3)
    recovery.start_repair(S)
    outcome = recovery.finish_repair(S, history(2, range(1, 3), epoch="f"))
    assert data(outcome.steps) == [StreamReport(False, "f", 0), b"f-1", b"f-2"]
    assert recovery.last(S) == Position("f", 2)


def test_a_quiet_stream_in_a_new_epoch_loses_nothing() -> None:
    """Noted at subscription (seq 0, nothing delivered), a stream whose epoch changes
    is simply followed from the new epoch's start: no false notice."""
    recovery = StreamRecovery()
    recovery.noted(S, Position("e", 0))
    arrival = recovery.arrive(S, pub(1, "f"))
    assert (arrival.action, arrival.notice) == (Action.DELIVER, None)
    recovery.start_repair(S)
    assert recovery.finish_repair(S, history(1, range(1, 2), epoch="f")).steps == []


def test_a_noted_position_gives_way_to_a_push_that_came_first() -> None:
    recovery = StreamRecovery()
    recovery.arrive(S, pub(5))
    recovery.noted(S, Position("e", 2))
    assert recovery.last(S) == Position("e", 5)


# Resumes


def test_a_resume_gets_history_then_the_capture_each_push_once() -> None:
    """The client saw 2; history (read while pushes went on) has 3-5; pushes 5 and 6
    arrived live during the resume and were captured: it gets 3, 4, 5, 6."""
    recovery = following(4)
    recovery.capture([S])
    for seq in (5, 6):
        recovery.arrive(S, pub(seq))
        recovery.fanned_out(S, pub(seq))
    catch_up = recovery.catch_up({S: Position("e", 2)}, {S: history(5, range(3, 6))}, True)
    recovery.release([S])
    assert catch_up.frames == [b"e-3", b"e-4", b"e-5", b"e-6"]
    assert catch_up.reports == {S: StreamReport(True, "e", 6)}
    assert catch_up.repair == []
    assert recovery.capturing() == []


def test_a_resume_past_what_history_keeps_is_not_recovered() -> None:
    recovery = following(9)
    recovery.capture([S])
    catch_up = recovery.catch_up(
        {S: Position("e", 2)}, {S: history(9, range(7, 10), complete=False)}, True
    )
    assert catch_up.frames == [b"e-7", b"e-8", b"e-9"]
    assert catch_up.reports[S].recovered is False


def test_a_resume_with_history_off_is_never_recovered() -> None:
    recovery = following(2)
    recovery.capture([S])
    catch_up = recovery.catch_up({S: Position("e", 2)}, {S: history(2, range(0))}, False)
    assert catch_up.reports[S] == StreamReport(False, "e", 2)


def test_a_resume_on_a_node_behind_on_the_stream() -> None:
    """The node delivered up to 3 but history is at 5 (the node missed 4 and 5 on
    the way): the connection gets only up to 3 now, and the node repairs the
    stream, which gives 4 and 5 to every member, this one included, once."""
    recovery = following(3)
    recovery.capture([S])
    catch_up = recovery.catch_up({S: Position("e", 1)}, {S: history(5, range(2, 6))}, True)
    assert catch_up.frames == [b"e-2", b"e-3"]
    assert catch_up.reports[S] == StreamReport(True, "e", 3)
    assert catch_up.repair == [S]


def test_a_resume_across_a_new_epoch() -> None:
    """The client's position is of an epoch the stream no longer has: everything the
    new epoch kept, and the report names it."""
    recovery = following(2, epoch="f")
    recovery.capture([S])
    catch_up = recovery.catch_up({S: Position("e", 7)}, {S: history(2, range(1, 3), "f")}, True)
    assert catch_up.frames == [b"f-1", b"f-2"]
    assert catch_up.reports[S] == StreamReport(True, "f", 2)


def test_a_capture_with_a_hole_is_not_recovered() -> None:
    """A live push captured after a gap the capture cannot fill: delivered, but the
    stream is reported not recovered."""
    recovery = following(3)
    recovery.capture([S])
    recovery.fanned_out(S, pub(6))
    catch_up = recovery.catch_up({S: Position("e", 3)}, {S: history(3, range(0))}, True)
    assert catch_up.frames == [b"e-6"]
    assert catch_up.reports[S] == StreamReport(False, "e", 6)


def test_captures_are_counted_per_resume_and_released() -> None:
    """Two resumes on one stream share its capture; it ends with the last of them."""
    recovery = StreamRecovery()
    recovery.capture([S, "all"])
    recovery.capture([S])
    recovery.release([S, "all"])
    assert recovery.capturing() == [S]
    recovery.fanned_out(S, pub(1))
    recovery.release([S])
    assert recovery.capturing() == []
    recovery.fanned_out(S, pub(2))  # nobody captures: kept nowhere
    assert recovery.capturing() == []


def counted(outcome: RepairOutcome) -> RepairOutcome:
    """The outcome, once its counts are checked against its steps: ``filled`` the
    pushes handed out from history, ``lost`` the notices (what the node logs)."""
    notices = sum(isinstance(step, StreamReport) for step in outcome.steps)
    assert outcome.lost == notices
    return outcome


def test_a_stream_no_longer_followed_is_judged_afresh() -> None:
    """Once the node lets go of a stream, its old position is forgotten: a later
    subscription's first push is delivered, not taken for a gap."""
    recovery = following(3)
    recovery.forget(S, 0.0)
    assert recovery.last(S) is None
    assert S not in recovery.topics()
    assert recovery.arrive(S, pub(9)).action is Action.DELIVER


def test_each_hole_among_held_pushes_is_told() -> None:
    """History could not be read and the held pushes have holes between them too:
    a notice before each push that does not follow the one before."""
    recovery = following(3)
    recovery.arrive(S, pub(6))
    recovery.arrive(S, pub(7))
    recovery.arrive(S, pub(9))
    outcome = counted(recovery.finish_repair(S, None))
    assert data(outcome.steps) == [
        StreamReport(False, "e", 6),
        b"e-6",
        b"e-7",
        StreamReport(False, "e", 9),
        b"e-9",
    ]
    assert outcome.lost == 2
    assert recovery.last(S) == Position("e", 9)


def test_held_pushes_history_already_gave_are_skipped_and_the_later_ones_go_on() -> None:
    """History was read at 7 while 6 and 8 were held: 4 to 7 from history, then 8."""
    recovery = following(3)
    recovery.arrive(S, pub(6))
    recovery.arrive(S, pub(8))
    outcome = counted(recovery.finish_repair(S, history(7, range(4, 8))))
    assert data(outcome.steps) == [b"e-4", b"e-5", b"e-6", b"e-7", b"e-8"]
    assert (outcome.filled, outcome.lost) == (4, 0)


def test_a_reconnect_whose_history_has_a_hole_says_so_and_goes_on_from_the_top() -> None:
    """Nothing held: history gives what follows without a gap, then one notice that
    the stream is not recovered, at its top, which becomes the node's position."""
    recovery = following(3)
    recovery.start_repair(S)
    outcome = counted(recovery.finish_repair(S, history(9, range(6, 10), complete=False)))
    assert data(outcome.steps) == [StreamReport(False, "e", 9)]
    assert (outcome.filled, outcome.lost) == (0, 1)
    assert recovery.last(S) == Position("e", 9)
    recovery.start_repair(S)
    outcome = counted(recovery.finish_repair(S, history(12, [10, 11, 12], complete=True)))
    assert data(outcome.steps) == [b"e-10", b"e-11", b"e-12"]


def test_a_reconnect_whose_history_could_not_be_read_counts_one_loss() -> None:
    recovery = following(3)
    recovery.start_repair(S)
    outcome = counted(recovery.finish_repair(S, None))
    assert (outcome.filled, outcome.lost) == (0, 1)


def test_a_repair_that_finds_a_new_epoch_with_a_hole_tells_both() -> None:
    """The old epoch is gone and the new one no longer holds its first pushes: a
    notice for each, and the stream goes on from the new epoch's top."""
    recovery = following(3)
    recovery.start_repair(S)
    outcome = counted(recovery.finish_repair(S, history(5, range(3, 6), "f", complete=False)))
    assert data(outcome.steps) == [StreamReport(False, "f", 0), StreamReport(False, "f", 5)]
    assert (outcome.filled, outcome.lost) == (0, 2)
    assert recovery.last(S) == Position("f", 5)


def test_a_repair_that_finds_a_new_epoch_counts_its_notice() -> None:
    recovery = following(3)
    recovery.start_repair(S)
    outcome = counted(recovery.finish_repair(S, history(2, range(1, 3), epoch="f")))
    assert (outcome.filled, outcome.lost) == (2, 1)


def test_a_quiet_stream_repaired_into_a_new_epoch_loses_nothing() -> None:
    """Noted at subscription (nothing delivered), a stream that a reconnect finds in
    a new epoch gets that epoch's pushes and no notice."""
    recovery = StreamRecovery()
    recovery.noted(S, Position("e", 0))
    recovery.start_repair(S)
    outcome = counted(recovery.finish_repair(S, history(2, range(1, 3), epoch="f")))
    assert data(outcome.steps) == [b"f-1", b"f-2"]
    assert recovery.last(S) == Position("f", 2)


def test_a_resume_on_a_node_level_with_history_repairs_nothing() -> None:
    recovery = following(5)
    recovery.capture([S])
    catch_up = recovery.catch_up({S: Position("e", 3)}, {S: history(5, range(4, 6))}, True)
    assert catch_up.frames == [b"e-4", b"e-5"]
    assert catch_up.reports[S] == StreamReport(True, "e", 5)
    assert catch_up.repair == []


def test_a_resume_from_a_lost_epoch_to_a_quiet_stream_names_the_new_epoch() -> None:
    """The stream restarted and has nothing yet: the client is told where it is now
    (not where it was), and that it was not recovered."""
    recovery = StreamRecovery()
    recovery.noted(S, Position("f", 0))
    recovery.capture([S])
    lost = History(Position("f", 0), (), complete=False)
    catch_up = recovery.catch_up({S: Position("e", 7)}, {S: lost}, True)
    assert catch_up.frames == []
    assert catch_up.reports[S] == StreamReport(False, "f", 0)


def test_a_resume_with_nothing_left_in_history_reports_where_history_is() -> None:
    """History kept nothing and the node is ahead of the read: the client is given
    the position history was read at, so that a later resume asks for what came
    after it."""
    recovery = following(3, epoch="f")
    recovery.capture([S])
    gone = History(Position("f", 2), (), complete=False)
    catch_up = recovery.catch_up({S: Position("e", 7)}, {S: gone}, True)
    assert catch_up.reports[S] == StreamReport(False, "f", 2)


def test_a_resume_from_a_lost_epoch_on_a_node_behind_reports_the_nodes_position() -> None:
    """The node has delivered nothing of the new epoch yet but history has: the
    client gets nothing now and is told the node's position; the repair gives it
    the rest with every other member."""
    recovery = StreamRecovery()
    recovery.noted(S, Position("f", 0))
    recovery.capture([S])
    catch_up = recovery.catch_up({S: Position("e", 7)}, {S: history(2, range(1, 3), "f")}, True)
    assert catch_up.frames == []
    assert catch_up.reports[S] == StreamReport(True, "f", 0)
    assert catch_up.repair == [S]


def test_a_resume_across_a_new_epoch_whose_pushes_arrive_while_it_resumes() -> None:
    """The client's epoch is gone and the new one's pushes came live during the
    resume: it gets them, and the report names the new epoch."""
    recovery = StreamRecovery()
    recovery.capture([S])
    for seq in (1, 2):
        recovery.arrive(S, pub(seq, "f"))
        recovery.fanned_out(S, pub(seq, "f"))
    catch_up = recovery.catch_up({S: Position("e", 7)}, {S: history(0, range(0), "f")}, True)
    assert catch_up.frames == [b"f-1", b"f-2"]
    assert catch_up.reports[S] == StreamReport(True, "f", 2)


def test_a_new_epoch_captured_during_a_resume_is_not_recovered() -> None:
    """History was read in one epoch and a push of a new one arrived live: the
    client gets it but is told it was not recovered (what came between is lost)."""
    recovery = following(5)
    recovery.capture([S])
    recovery.arrive(S, pub(1, "f"))
    recovery.fanned_out(S, pub(1, "f"))
    catch_up = recovery.catch_up({S: Position("e", 3)}, {S: history(5, range(4, 6))}, True)
    assert catch_up.frames == [b"e-4", b"e-5", b"f-1"]
    assert catch_up.reports[S] == StreamReport(False, "f", 1)


def test_a_resume_is_not_handed_its_own_messages_back() -> None:
    """A push that excludes the resuming connection (one it published itself) moves
    its position on, from history and from the capture alike, but is not given to
    it; every other connection's pushes are."""
    mine = [Publication(seq, "e", encode_push(2, seq, exclude="me")) for seq in (4, 6)]
    theirs = [Publication(seq, "e", encode_push(2, seq, exclude="you")) for seq in (3, 5)]
    recovery = following(4)
    recovery.capture([S])
    for pub in (theirs[1], mine[1]):
        recovery.arrive(S, pub)
        recovery.fanned_out(S, pub)
    read = History(Position("e", 4), (theirs[0], mine[0]))
    catch_up = recovery.catch_up({S: Position("e", 2)}, {S: read}, True, conn="me")
    assert catch_up.frames == [theirs[0].data, theirs[1].data]
    assert catch_up.reports[S] == StreamReport(True, "e", 6)
    everyone = recovery.catch_up({S: Position("e", 2)}, {S: read}, True)
    assert everyone.frames == [theirs[0].data, mine[0].data, theirs[1].data, mine[1].data]


# A new epoch that follows on from the old one's end (epochends.py)


def closed_at(at: int) -> StreamRecovery:
    """A node that delivered ``S`` up to ``at`` in epoch e, then saw its subscription
    closed under it; the reconnect's repair is under way."""
    recovery = following(at)
    recovery.interrupted({S: True})
    assert recovery.start_repair(S)
    return recovery


def read_after_e(top: int, kept: range) -> History:
    """History of epoch f as a read after a position of e returns it: all it keeps,
    and not complete (the epoch changed)."""
    return history(top, kept, "f", complete=False)


def test_a_repair_into_a_new_epoch_after_a_closed_cut_tells_nothing() -> None:
    """The node had delivered e up to 3 when Redis closed its connection; it comes
    back without history, and f holds all it has: f's pushes, and no notice."""
    recovery = closed_at(3)
    recovery.arrive(S, pub(3, "f"))  # live meanwhile: held
    outcome = counted(recovery.finish_repair(S, read_after_e(2, range(1, 3))))
    assert data(outcome.steps) == [b"f-1", b"f-2", b"f-3"]
    assert (outcome.filled, outcome.lost, outcome.carried_from) == (2, 0, "e")
    assert recovery.last(S) == Position("f", 3)


def test_a_resume_from_the_old_epochs_end_is_recovered() -> None:
    """After that, a client at (e, 3) is at f's start: it gets all of f, recovered;
    one at (e, 2) missed e-3, which went with the old history: not recovered."""
    recovery = closed_at(3)
    recovery.finish_repair(S, read_after_e(2, range(1, 3)))
    recovery.capture([S])
    read = read_after_e(2, range(1, 3))
    at_end = recovery.catch_up({S: Position("e", 3)}, {S: read}, True)
    assert at_end.frames == [b"f-1", b"f-2"]
    assert at_end.reports[S] == StreamReport(True, "f", 2)
    short = recovery.catch_up({S: Position("e", 2)}, {S: read}, True)
    assert short.frames == [b"f-1", b"f-2"]
    assert short.reports[S] == StreamReport(False, "f", 2)


def test_a_resume_from_the_old_epochs_end_to_a_quiet_new_one() -> None:
    """Nothing published in f yet: the client is recovered, at f's start."""
    recovery = closed_at(3)
    assert recovery.finish_repair(S, read_after_e(0, range(0))).steps == []
    recovery.capture([S])
    catch_up = recovery.catch_up({S: Position("e", 3)}, {S: read_after_e(0, range(0))}, True)
    assert catch_up.reports[S] == StreamReport(True, "f", 0)


def test_a_cut_that_was_not_closed_still_tells() -> None:
    """The subscription went silent: Redis may have accepted pushes after e-3 that
    never arrived. A notice, as for any lost history; a resume from (e, 3) is not
    recovered."""
    recovery = following(3)
    recovery.interrupted({S: False})
    recovery.start_repair(S)
    outcome = counted(recovery.finish_repair(S, read_after_e(2, range(1, 3))))
    assert data(outcome.steps) == [StreamReport(False, "f", 0), b"f-1", b"f-2"]
    recovery.capture([S])
    catch_up = recovery.catch_up({S: Position("e", 3)}, {S: read_after_e(2, range(1, 3))}, True)
    assert catch_up.reports[S].recovered is False


def test_a_cut_during_a_repair_still_tells() -> None:
    """The stream was being repaired when the connection closed: its position was
    not where the epoch stood, whatever the repair would have found."""
    recovery = following(3)
    recovery.arrive(S, pub(6))  # a gap: repairing
    recovery.interrupted({S: True})
    outcome = counted(recovery.finish_repair(S, read_after_e(2, range(1, 3))))
    assert outcome.lost >= 1
    assert outcome.carried_from == ""


def test_a_new_epoch_trimmed_already_still_tells() -> None:
    """f no longer holds its first pushes: the client cannot be given them."""
    recovery = closed_at(3)
    outcome = counted(recovery.finish_repair(S, read_after_e(9, range(5, 10))))
    assert data(outcome.steps)[0] == StreamReport(False, "f", 0)
    assert outcome.carried_from == ""


def test_a_session_written_back_from_a_quiet_stream_keeps_its_clean_start() -> None:
    """Noted at (e, 0), nothing delivered, a closed cut, f empty: the start a session
    written back is given is f's start, and one at (e, 0) is recovered."""
    recovery = StreamRecovery()
    recovery.noted(S, Position("e", 0))
    recovery.interrupted({S: True})
    recovery.start_repair(S)
    assert recovery.finish_repair(S, read_after_e(0, range(0))).steps == []
    assert recovery.clean_start(S) == Position("f", 0)
    recovery.capture([S])
    catch_up = recovery.catch_up({S: Position("e", 0)}, {S: read_after_e(0, range(0))}, True)
    assert catch_up.reports[S] == StreamReport(True, "f", 0)


def test_a_stream_followed_again_has_no_end_to_carry() -> None:
    """The node let go of the stream and follows it again: what it saw before is
    no evidence of anything."""
    recovery = closed_at(3)
    recovery.finish_repair(S, read_after_e(2, range(1, 3)))
    recovery.forget(S, 0.0)
    recovery.noted(S, Position("f", 2))
    recovery.capture([S])
    catch_up = recovery.catch_up({S: Position("e", 3)}, {S: read_after_e(2, range(1, 3))}, True)
    assert catch_up.reports[S].recovered is False
