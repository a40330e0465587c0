"""What the fan-out path costs in the interpreter, per delivery, without sockets.

N WebSocketConnection objects (their slots set as an open connection's are, not
through a handshake) whose transport's ``write`` and ``is_closing`` are C builtins
(``len``, ``bool``), in a hub; each round hands one push (or ``--frames`` pushes) to
all of them and writes each connection's queue once, as a turn of the event loop
does: what is left is the hand-out and the write loop, with no system call. Run on
the compiled path and the pure-Python one, alternating, best of ``--repeat``:

    PYTHONPATH=src python scripts/fanout-micro.py -n 10000 --rounds 20

The kernel's own cost per write (scripts/floor) comes on top of these figures.
"""

import argparse
import asyncio
import time

from pushgate import speedups
from pushgate.connection import WebSocketConnection
from pushgate.hub import Hub, Outgoing
from pushgate.ids import ConnId
from pushgate.meters import Meters
from pushgate.outbox import Outbox
from pushgate.phase import Phase
from pushgate.wshandshake import PUSHGATE_OVER_WEBSOCKET


class NoTransport:
    """A transport whose write and is_closing cost a C call and nothing else."""

    write = staticmethod(len)
    is_closing = staticmethod(bool)


def measure(n: int, rounds: int, frames: int, repeat: int, compiled: bool) -> float:
    """Best of ``repeat``: nanoseconds per delivery."""
    speedups.compiled = speedups.BUILT if compiled else None
    loop = asyncio.new_event_loop()
    try:
        outbox = Outbox(loop, Meters())
        hub = Hub(max_rooms_per_conn=4)
        for i in range(n):
            conn = WebSocketConnection.__new__(WebSocketConnection)
            conn._phase = Phase.OPEN
            conn._deflate_bits = 0
            conn._pending = []
            conn._outbox = outbox
            conn._transport = NoTransport()  # type: ignore[assignment]
            conn._backlogged = False
            conn._head = 0
            conn.encoding = PUSHGATE_OVER_WEBSOCKET
            conn.connected_at = 0.0
            hub.register(ConnId(str(i)), conn)
        message = b'{"type":2,"data":"' + b"x" * 100 + b'"}\n'
        best = float("inf")
        for _ in range(repeat):
            began = time.perf_counter()
            for _ in range(rounds):
                for _ in range(frames):
                    hub.broadcast(Outgoing(message))
                outbox._dirty, dirty = [], outbox._dirty  # the turn's flush, unscheduled
                outbox._write_all(dirty, 0, len(dirty))
            best = min(best, (time.perf_counter() - began) * 1e9 / (n * rounds * frames))
        return best
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="connections (default 10000)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per measure")
    parser.add_argument("--frames", type=int, default=1, help="pushes per round (per write)")
    parser.add_argument("--repeat", type=int, default=5, help="measures; the best is shown")
    parser.add_argument("--pairs", type=int, default=3, help="compiled/Python pairs")
    args = parser.parse_args()
    if speedups.BUILT is None:
        parser.exit(2, f"fanout-micro: {speedups.WHY_NOT}: nothing to compare\n")
    print(f"{args.n} connections, {args.frames} push(es) per write; ns per delivery")
    for pair in range(args.pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        for compiled in order:
            ns = measure(args.n, args.rounds, args.frames, args.repeat, compiled)
            print(f"  {'compiled' if compiled else 'python  '}  {ns:7.1f}")


if __name__ == "__main__":
    main()
