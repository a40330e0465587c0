"""One reading of the clocks a run is metered with: wall, the server's CPU, the
bench's own CPU, and the whole machine's (busy and stolen), so that the CPU of a
phase is the difference of two readings and what others used can be told apart."""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pushgate.bench.procstat import machine_cpu_seconds, own_cpu_seconds

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

    @classmethod
    def read(cls, server: "ServerUnderTest") -> "Meter":
        busy, steal = machine_cpu_seconds()
        return cls(time.monotonic(), server.cpu_seconds(), own_cpu_seconds(), busy, steal)
