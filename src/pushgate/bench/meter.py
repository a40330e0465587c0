"""One reading of the clocks a run is metered with: wall, the server's CPU, the
bench's own CPU, and the whole machine's (busy and stolen), so that the CPU of a
phase is the difference of two readings and what others used can be told apart."""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pushgate.bench.procstat import machine_cpu_seconds, mean_waiting_seconds, own_cpu_seconds

if TYPE_CHECKING:
    from pushgate.bench.server import ServerUnderTest


@dataclass(frozen=True, slots=True)
class Meter:
    """One reading of the clocks a run is metered with."""

    wall: float  # monotonic seconds
    server: float | None  # the server's CPU seconds, if its pids are known
    own: float  # the bench process's own CPU seconds (the pusher)
    busy: float  # CPU seconds of every process on the machine
    steal: float  # CPU seconds the hypervisor took
    # Seconds a server process's event loop was ready to run but waited for a CPU
    # (on average over its pids; None if unknown): on a shared machine, what other
    # processes cost the server's latency.
    server_waiting: float | None = None

    @classmethod
    def read(cls, server: "ServerUnderTest") -> "Meter":
        busy, steal = machine_cpu_seconds()
        waiting = mean_waiting_seconds(server.pids) if server.pids else None
        return cls(time.monotonic(), server.cpu_seconds(), own_cpu_seconds(), busy, steal, waiting)
