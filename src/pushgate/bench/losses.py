"""How losses are accounted: client by client, or, for the clients that count by
position, stream by stream. Pure: what the workers reported in, numbers out.

Per client (:func:`account`): each client should have received every push the
server accepted for a target it belongs to (its rooms, or all); ``lost`` is the sum
of the shortfalls. The part of it on clients the server closed (the slow-client
policy's 1008, a heartbeat timeout's 1011, or a dropped TCP connection, 1006) is
``lost_on_closed``, and those closes are counted by code in ``closed_by_server``:
a non-zero ``lost`` is a bug unless it all sits there.

The resume scenario accounts by position instead (:func:`account_streams`): each
client reports, per stream, the first and last seq it received and the gaps and
duplicates between; a stream's pushes of the run are the seqs from the lowest any
client received, as many as the server accepted for it. Losses on a stream the
server said it could not recover (``recovered`` false) are ``lost_not_recovered``:
told, hence explained.
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pushgate.bench.replies import ClientCount, ClientStreams


@dataclass(frozen=True, slots=True)
class Losses:
    expected: int
    received: int
    lost: int
    lost_on_closed: int
    duplicates: int
    out_of_order: int
    closed_by_server: dict[int, int]


@dataclass(frozen=True, slots=True)
class StreamLosses(Losses):
    lost_not_recovered: int = 0
    epoch_changes: int = 0


def account_streams(
    accepted: Mapping[str, int], indexes: Iterable[int], clients: Iterable[ClientStreams]
) -> StreamLosses:
    """Per client and stream, the pushes of the run it did not receive (``lost``)
    and those it received twice (``duplicates``). ``accepted`` is the number of
    pushes the server accepted per stream; every client in ``indexes`` should have
    received them all. Each stream's pushes are taken to be ``accepted`` seqs from
    the lowest seq any client received on it."""
    by_index = {c.index: c for c in clients}
    start: dict[str, int] = {}
    for tallies in by_index.values():
        for name, tally in tallies.streams.items():
            start[name] = min(start.get(name, tally.first), tally.first)
    lost = lost_on_closed = lost_not_recovered = duplicates = out_of_order = 0
    received_total = expected_total = epoch_changes = 0
    closed: Counter[int] = Counter()
    for index in indexes:
        client = by_index.get(index)
        if client is not None and client.close_code is not None:
            closed[client.close_code] += 1
        for name, n in accepted.items():
            if n <= 0:
                continue
            expected_total += n
            count = client.streams.get(name) if client is not None else None
            if count is None:
                shortfall = n
            else:
                first, end = start[name], start[name] + n - 1
                shortfall = min(
                    n, max(0, count.first - first) + count.missing + max(0, end - count.last)
                )
                received_total += count.received
                duplicates += count.dups
                out_of_order += count.late
                epoch_changes += count.epoch_changes
            lost += shortfall
            if client is None:
                continue
            if name in client.unrecovered:
                lost_not_recovered += shortfall
            elif client.close_code is not None:
                lost_on_closed += shortfall
    return StreamLosses(
        expected=expected_total,
        received=received_total,
        lost=lost,
        lost_on_closed=lost_on_closed,
        duplicates=duplicates,
        out_of_order=out_of_order,
        closed_by_server=dict(sorted(closed.items())),
        lost_not_recovered=lost_not_recovered,
        epoch_changes=epoch_changes,
    )


def account(expected: Mapping[int, int], clients: Iterable[ClientCount]) -> Losses:
    """Compare what each client received with what it should have (``expected`` by
    client index). A client missing from ``clients`` lost everything it expected."""
    lost = lost_on_closed = duplicates = out_of_order = received_total = 0
    closed: Counter[int] = Counter()
    seen: set[int] = set()
    for client in clients:
        seen.add(client.index)
        want = expected.get(client.index, 0)
        received_total += client.received
        out_of_order += client.out_of_order
        shortfall = max(0, want - client.received)
        duplicates += max(0, client.received - want)
        lost += shortfall
        if client.close_code is not None:
            closed[client.close_code] += 1
            lost_on_closed += shortfall
    missing = sum(n for index, n in expected.items() if index not in seen)
    return Losses(
        expected=sum(expected.values()),
        received=received_total,
        lost=lost + missing,
        lost_on_closed=lost_on_closed,
        duplicates=duplicates,
        out_of_order=out_of_order,
        closed_by_server=dict(sorted(closed.items())),
    )
