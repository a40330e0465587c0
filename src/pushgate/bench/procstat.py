"""CPU time and resident memory of processes, from ``/proc`` (Linux only).

CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (every thread of the process), in
seconds; its resolution is one clock tick (usually 10 ms), so CPU per delivery is
only meaningful over runs that use at least a few hundred milliseconds of CPU.
"""

import os
import resource
from collections.abc import Iterable, Sequence

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessGone(Exception):
    """The process no longer exists (or its ``/proc`` entry cannot be read)."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError as exc:
        raise ProcessGone(f"cannot read /proc/{pid}/stat: {exc.strerror}") from None
    # The command name (field 2) is in parentheses and may hold spaces or ')':
    # fields are counted from the last ')'. utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size (``VmRSS``) of the process, in bytes."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError as exc:
        raise ProcessGone(f"cannot read /proc/{pid}/status: {exc.strerror}") from None
    raise ProcessGone(f"process {pid} has no VmRSS (a zombie?)")


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal): CPU seconds the machine spent on its processes since boot (all
    cores), and those the hypervisor took.

    Busy is user + nice + system + irq + softirq: with tick-based accounting the
    kernel charges a tick spent in an interrupt to the interrupted process's stime
    too, so busy counts the way the processes' utime + stime add up, and busy minus
    the processes one knows about is what the others used: the noise in a
    measurement on a shared machine.
    """
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal ...
    busy = sum(int(fields[i]) for i in (1, 2, 3, 6, 7))
    steal = int(fields[8]) if len(fields) > 8 else 0
    return busy / CLOCK_TICKS, steal / CLOCK_TICKS


def waiting_seconds(pid: int) -> float | None:
    """Seconds the process's main thread (a server's event loop, a worker's) was ready
    to run but waited for a CPU, so far: the second field of ``/proc/<pid>/schedstat``.
    None where the kernel keeps no such count, or the process is gone."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def mean_waiting_seconds(pids: Sequence[int]) -> float | None:
    """:func:`waiting_seconds` of each process, on average (None if any is unknown)."""
    waits = [waiting_seconds(pid) for pid in pids]
    known = [w for w in waits if w is not None]
    return sum(known) / len(known) if known and len(known) == len(waits) else None


def total_cpu_seconds(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def total_rss_bytes(pids: Iterable[int]) -> int:
    return sum(rss_bytes(pid) for pid in pids)


def own_cpu_seconds() -> float:
    """User plus system CPU time of the calling process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_fd_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; return the limit.

    Children inherit it, so calling this before spawning raises theirs too.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
