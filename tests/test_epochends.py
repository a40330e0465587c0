"""Where a lost epoch ended (epochends.py): EpochEnds on its own, then a node on the
memory broker whose history is swapped for an empty one, as a Redis restarted
empty. Through StreamRecovery: tests/test_stream_recovery.py; on a real Redis:
tests/test_redis_restart.py."""

import json

from pushgate.broker.memory import MemoryBroker, MemoryBus
from pushgate.epochends import EpochEnds, holds_from_start
from pushgate.hub import Hub
from pushgate.ids import ConnId, RoomId
from pushgate.node import Node
from pushgate.presencestore import MemoryPresence
from pushgate.streams import History, MemoryHistory, Position, Publication
from tests.test_recovery import Collector

S = "room:s"
OLD_END = Position("e", 3)


def new_epoch(top: int, kept: range) -> History:
    """Epoch f's history at ``top``, keeping ``kept``, as read after a position of e."""
    pubs = tuple(Publication(seq, "f", b"f-%d" % seq) for seq in kept)
    return History(Position("f", top), pubs, complete=False)


def cut_at(at: Position | None = OLD_END, *, closed: bool = True) -> EpochEnds:
    ends = EpochEnds()
    ends.interrupted(S, at, closed=closed)
    return ends


def test_a_history_holds_its_epoch_from_the_start_or_not() -> None:
    assert holds_from_start(new_epoch(0, range(0)))  # nothing published yet
    assert holds_from_start(new_epoch(3, range(1, 4)))
    assert not holds_from_start(new_epoch(3, range(2, 4)))  # seq 1 trimmed or expired
    assert not holds_from_start(new_epoch(3, range(1, 3)))  # not up to its top


def test_a_closed_cut_then_a_whole_new_epoch_carries_the_end_over() -> None:
    """The node was at (e, 3) when the connection was closed under it; the repair
    finds it still there and epoch f whole: a client at (e, 3) is at f's start."""
    ends = cut_at()
    assert ends.carry(S, OLD_END, new_epoch(2, range(1, 3))) == Position("f", 0)
    assert ends.start(S, OLD_END, "f") == Position("f", 0)
    assert ends.start(S, Position("e", 2), "f") == Position("e", 2)  # it missed e-3
    assert ends.start(S, OLD_END, "g") == OLD_END  # the stream has moved on again
    assert ends.start("room:other", OLD_END, "f") == OLD_END


def test_a_quiet_stream_carries_over_as_well() -> None:
    """Nothing delivered in e (the node noted (e, 0)): a session that started there."""
    ends = cut_at(Position("e", 0))
    assert ends.carry(S, Position("e", 0), new_epoch(1, range(1, 2))) == Position("f", 0)
    assert ends.start(S, Position("e", 0), "f") == Position("f", 0)


def test_what_the_node_cannot_tell_carries_nothing() -> None:
    """A cut that was not closed (silence: Redis may have gone on accepting), one
    with no position the node can vouch for (a repair under way), a node that moved
    since the cut, a new epoch trimmed already, a history that could not be read,
    and no cut at all."""
    whole = new_epoch(2, range(1, 3))
    assert cut_at(closed=False).carry(S, OLD_END, whole) is None
    assert cut_at(None).carry(S, OLD_END, whole) is None
    assert cut_at().carry(S, Position("e", 4), whole) is None
    assert cut_at().carry(S, OLD_END, new_epoch(9, range(5, 10))) is None
    assert cut_at().carry(S, OLD_END, None) is None
    assert EpochEnds().carry(S, OLD_END, whole) is None
    ends = cut_at(closed=False)
    ends.carry(S, OLD_END, whole)
    assert ends.start(S, OLD_END, "f") == OLD_END


def test_a_cut_is_used_up_by_the_repair_that_follows_it() -> None:
    """Redis came back with its data (the same epoch): nothing to carry, and the cut
    cannot serve a later repair, which must have a cut of its own."""
    ends = cut_at()
    assert ends.carry(S, OLD_END, History(Position("e", 5))) is None
    assert ends.carry(S, OLD_END, new_epoch(2, range(1, 3))) is None


def test_a_later_cut_that_is_not_closed_cancels_an_earlier_one() -> None:
    ends = cut_at()
    ends.interrupted(S, OLD_END, closed=False)
    assert ends.carry(S, OLD_END, new_epoch(2, range(1, 3))) is None


def test_a_stream_no_longer_followed_keeps_its_end_a_while() -> None:
    """The node let go of the stream (its members were all cut at once): where the
    epoch ended is still known for ``linger`` seconds, in which they resume; a cut
    of it is not, and a stream carried over again lingers anew."""
    ends = EpochEnds(linger=10.0)
    ends.interrupted(S, OLD_END, closed=True)
    ends.carry(S, OLD_END, new_epoch(2, range(1, 3)))
    ends.interrupted("room:t", OLD_END, closed=True)
    ends.forget(S, 100.0)
    ends.forget("room:t", 100.0)
    assert ends.carry("room:t", OLD_END, new_epoch(2, range(1, 3))) is None
    ends.forget("room:u", 109.0)
    assert ends.start(S, OLD_END, "f") == Position("f", 0)
    ends.forget("room:u", 110.0)
    assert ends.start(S, OLD_END, "f") == OLD_END


def test_without_linger_a_stream_let_go_of_forgets_its_end_at_once() -> None:
    ends = cut_at()
    ends.carry(S, OLD_END, new_epoch(2, range(1, 3)))
    ends.forget(S, 0.0)
    assert ends.start(S, OLD_END, "f") == OLD_END


async def test_a_node_tells_a_lost_history_only_where_its_clients_may_have_missed_some() -> None:
    """A node follows a plain room and a presence room; its subscription is closed
    under it and the broker comes back without history: the plain room just goes
    on in its new epoch, while the presence room's clients are told (its store lost
    its members without a leave), as is every stream after a cut that went silent."""
    bus = MemoryBus(history_size=100, history_ttl=60)
    broker = MemoryBroker(bus)
    presence = MemoryPresence(broker, ttl=60.0, announces=lambda room: room.startswith("chat:"))
    node = Node(
        Hub(max_rooms_per_conn=10),
        broker,
        presence=presence,
        has_presence=lambda room: room.startswith("chat:"),
    )
    await node.start()
    sink = Collector()
    rooms = [RoomId("news"), RoomId("chat:1"), RoomId("other")]
    opened = node.connection_opened(ConnId("c"), sink, rooms=rooms)
    if opened.ready is not None:
        await opened.ready
    for room in rooms:  # delivered at once: the memory broker calls the node
        await broker.publish_push(f"room:{room}", b'{"type":2,"data":"%s"}\n' % room.encode())
    before, old = len(sink.frames), node.recovery.last("room:news")

    node.on_interrupted({"room:news": True, "room:chat:1": True, "room:other": False})
    bus.history = MemoryHistory(size=100, ttl=60, position_ttl=60)  # back empty
    node.on_reconnected()
    await broker.publish_push("room:news", b'{"type":2,"data":"after"}\n')  # held: repairing
    await sink.wait_for(before + 3)  # two notices, and the push that followed on
    frames = [json.loads(frame[2:]) for frame in sink.frames[before:]]
    notices = [frame["data"]["streams"] for frame in frames if frame["type"] == 0]
    assert sorted(name for streams in notices for name in streams) == ["room:chat:1", "room:other"]
    assert [frame["data"] for frame in frames if frame["type"] == 2] == ["after"]
    now = node.recovery.last("room:news")
    assert old is not None
    assert now is not None
    assert (now.epoch != old.epoch, now.seq) == (True, 1)
    await node.close()
