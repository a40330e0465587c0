"""The memory broker's history (MemoryHistory), on a fake clock: pushes expire on
the timer, the byte cap drops the oldest pushes of all, a stream without pushes
keeps only its position (so a resume sees no false new epoch), and a position
nobody needs is forgotten. The behaviour every broker shares is in
tests/broker/test_contract.py."""

import asyncio

import pytest

from pushgate.broker.memory import MemoryBroker, MemoryBus
from pushgate.config import Config
from pushgate.errors import ConfigError
from pushgate.streams import PUSH_OVERHEAD, MemoryHistory, Position, Publication
from tests.helpers import UNIT


def push(n: int) -> bytes:
    return b'{"type":1,"data":"push %d"}\n' % n


def history(*, size: int = 10, max_bytes: int = 0) -> MemoryHistory:
    """Pushes live 5 s; a position nobody follows is kept 20 s after its last use."""
    return MemoryHistory(size=size, ttl=5.0, position_ttl=20.0, max_bytes=max_bytes)


def seqs(pubs: tuple[Publication, ...]) -> list[int]:
    return [p.seq for p in pubs]


def test_pushes_expire_on_the_timer_while_nobody_reads_their_stream() -> None:
    """expire(), which the bus runs on a timer, drops each push ttl after it was
    published, from the streams nobody reads or publishes to."""
    kept = history()
    pubs = [kept.publish("room:a", push(n), now=float(n)) for n in (1, 2, 3)]
    kept.expire(6.5)  # push 1 is 5.5 s old
    assert kept.bytes == sum(len(p.data) + PUSH_OVERHEAD for p in pubs[1:])
    kept.expire(8.0)
    assert kept.bytes == 0


def test_a_stream_without_pushes_keeps_its_position_and_nothing_else() -> None:
    """Once its pushes expired, a stream holds no list of pushes, but its position
    stays: a client that had everything is recovered in the same epoch, one that
    missed a push is told it was not recovered, in the same epoch too."""
    kept = history()
    kept.publish("room:a", push(1), now=0.0)
    top = kept.publish("room:a", push(2), now=0.0).position
    kept.expire(10.0)
    assert kept._streams["room:a"].kept is None
    had_all = kept.read("room:a", top, now=11.0)
    assert (had_all.position, had_all.publications, had_all.complete) == (top, (), True)
    missed = kept.read("room:a", Position(top.epoch, 1), now=11.0)
    assert (missed.position, missed.publications, missed.complete) == (top, (), False)


def test_the_byte_cap_drops_the_oldest_pushes_of_all_streams_first() -> None:
    """Past max_bytes the oldest push of all goes first, whatever its stream; a
    client that missed it is told it was not recovered, and no position changes."""
    cost = len(MemoryHistory(size=1, ttl=1, position_ttl=1).publish("x", push(1), 0).data)
    kept = history(max_bytes=3 * (cost + PUSH_OVERHEAD))
    a1 = kept.publish("room:a", push(1), now=1.0)
    b1 = kept.publish("room:b", push(1), now=2.0)
    kept.publish("room:a", push(2), now=3.0)
    kept.publish("room:c", push(1), now=4.0)  # a fourth: a1, the oldest, goes
    from_a = kept.read("room:a", Position(a1.epoch, 0), now=4.0)
    assert (seqs(from_a.publications), from_a.complete) == ([2], False)
    assert from_a.position == Position(a1.epoch, 2)
    assert seqs(kept.read("room:b", Position(b1.epoch, 0), now=4.0).publications) == [1]
    kept.publish("room:c", push(2), now=5.0)  # then b1
    from_b = kept.read("room:b", Position(b1.epoch, 0), now=5.0)
    assert (from_b.position, from_b.publications, from_b.complete) == (b1.position, (), False)
    assert kept.bytes == 3 * (cost + PUSH_OVERHEAD)


def test_pushes_trimmed_to_history_size_do_not_hasten_the_expiry_of_the_others() -> None:
    """A push trimmed because its stream holds ``size`` newer ones leaves its place in
    the expiry order behind: the push after it still lives its whole ttl."""
    kept = history(size=2)
    epoch = kept.publish("room:a", push(1), now=0.0).epoch
    kept.publish("room:a", push(2), now=1.0)
    kept.publish("room:a", push(3), now=2.0)  # push 1 trimmed
    kept.expire(5.5)  # push 1's time has come, push 2's not
    after_one = kept.read("room:a", Position(epoch, 1), now=5.5)
    assert (seqs(after_one.publications), after_one.complete) == ([2, 3], True)
    kept.expire(6.5)
    assert seqs(kept.read("room:a", Position(epoch, 1), now=6.5).publications) == [3]


def test_a_position_nobody_follows_is_forgotten_once_idle_and_comes_back_anew() -> None:
    """A stream nobody follows, idle past position_ttl, is forgotten whole; made
    again, it starts in a new epoch (a client still holding its old position is
    told). A followed stream is kept however long it is idle."""
    kept = history()
    old = kept.publish("room:a", push(1), now=0.0).epoch
    kept.publish("room:b", push(1), now=0.0)
    assert kept.expire(19.0) == 0
    assert kept.expire(21.0, followed={"room:b"}) == 1
    assert len(kept) == 1
    again = kept.read("room:a", Position(old, 1), now=22.0)
    assert again.position.epoch != old
    assert not again.complete
    kept.expire(1000.0, followed={"room:b"})
    assert kept.read("room:b", None, now=1000.0).position == Position(old, 1)


def test_a_position_is_kept_position_ttl_after_its_last_follower_left() -> None:
    """touch() (the last follower left) starts the position's idle time again, so a
    session that followed the stream may resume within its TTL."""
    kept = history()
    top = kept.publish("room:a", push(1), now=0.0).position
    assert kept.expire(50.0, followed={"room:a"}) == 0
    kept.touch("room:a", 100.0)
    assert kept.expire(110.0) == 0
    assert kept.read("room:a", top, now=110.0).position == top
    assert kept.expire(200.0) == 1


async def test_the_bus_expires_history_on_a_timer_with_nobody_publishing() -> None:
    """The memory bus frees an idle stream's pushes, then the stream, by itself."""
    bus = MemoryBus(history_ttl=0.1 * UNIT, session_ttl=0.0, position_margin=0.1 * UNIT)
    broker = MemoryBroker(bus)
    await broker.publish_push("room:a", push(1))
    assert bus.history.bytes > 0
    await asyncio.sleep(0.6 * UNIT)
    assert (bus.history.bytes, len(bus.history)) == (0, 0)


def test_history_max_bytes_holds_the_largest_push_or_is_no_limit() -> None:
    assert Config(history_max_bytes=0).history_max_bytes == 0
    assert Config(history_max_bytes=2 * 1024 * 1024).history_max_bytes == 2 * 1024 * 1024
    with pytest.raises(ConfigError, match="--history-max-bytes"):
        Config(history_max_bytes=1000)


def test_pushes_trimmed_to_history_size_give_back_their_bytes() -> None:
    """A stream keeps its last ``size`` pushes; the bytes counted against
    --history-max-bytes are those of the pushes still kept."""
    kept = history(size=2)
    pubs = [kept.publish("room:a", push(n), now=float(n)) for n in (1, 2, 3, 4)]
    assert kept.bytes == sum(len(p.data) + PUSH_OVERHEAD for p in pubs[2:])
    read = kept.read("room:a", Position(pubs[0].epoch, 0), now=4.0)
    assert (seqs(read.publications), read.complete) == ([3, 4], False)


def test_a_stream_trimmed_many_times_still_keeps_its_last_push_its_whole_ttl() -> None:
    """The expiry of several pushes trimmed already takes none of those still kept."""
    kept = history(size=1)
    epoch = kept.publish("room:a", push(1), now=0.0).epoch
    kept.publish("room:a", push(2), now=1.0)
    last = kept.publish("room:a", push(3), now=2.0)
    kept.expire(6.5)  # pushes 1 and 2 (trimmed) are due, push 3 is not
    assert seqs(kept.read("room:a", Position(epoch, 2), now=6.5).publications) == [3]
    assert kept.bytes == len(last.data) + PUSH_OVERHEAD


def test_without_max_bytes_nothing_is_dropped_for_its_size() -> None:
    kept = MemoryHistory(size=3, ttl=5.0, position_ttl=20.0)
    epoch = kept.publish("room:a", push(1), now=0.0).epoch
    kept.publish("room:a", push(2) * 1000, now=0.0)
    assert seqs(kept.read("room:a", Position(epoch, 0), now=0.0).publications) == [1, 2]


def test_a_publication_carries_when_the_api_accepted_it() -> None:
    """Where the delivery-latency metric starts; 0 when it is not known."""
    kept = history()
    assert kept.publish("room:a", push(1), now=0.0, accepted_at=1_700_000_000.5).accepted_at == (
        1_700_000_000.5
    )
    assert kept.publish("room:a", push(2), now=0.0).accepted_at == 0.0


def test_every_idle_stream_is_forgotten_once_idle_position_ttl() -> None:
    """Each stream is judged on its own (a followed one does not shelter those after
    it), as soon as it has been idle position_ttl; expire() says how many went."""
    kept = history()
    for topic in ("room:followed", "room:a", "room:b"):
        kept.publish(topic, push(1), now=0.0)
    assert kept.expire(19.9, followed={"room:followed"}) == 0
    assert kept.expire(20.0, followed={"room:followed"}) == 2
    assert len(kept) == 1


def test_next_due_is_when_a_push_expires_or_a_position_may_be_forgotten() -> None:
    """What the bus's timer waits for: the first push's ttl, or else the first
    check of an idle position; None when nothing is kept."""
    kept = history()
    assert kept.next_due() is None
    kept.publish("room:a", push(1), now=3.0)
    assert kept.next_due() == 3.0 + 5.0
    kept.expire(8.0)
    assert kept.next_due() == 3.0 + 20.0


def test_a_client_from_an_epoch_the_stream_no_longer_has_gets_all_it_kept() -> None:
    """Whatever seq the client held in the old epoch, the new epoch's pushes are all
    given, and the client is told that is not all it missed."""
    kept = history()
    old = kept.publish("room:a", push(1), now=0.0).epoch
    kept.publish("room:a", push(2), now=0.0)
    assert kept.expire(30.0) == 1
    for n in (1, 2, 3):
        kept.publish("room:a", push(n), now=30.0 + n)
    read = kept.read("room:a", Position(old, 2), now=34.0)
    assert read.position.epoch != old
    assert (seqs(read.publications), read.complete) == ([1, 2, 3], False)
