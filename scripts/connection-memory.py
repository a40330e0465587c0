"""Where an idle connection's bytes go: server memory per connection, by allocation
site, beside the RSS that ``pushgate bench idle`` reports.

A pushgate server (the same one ``pushgate serve`` runs, default settings) is started
in a child process of this script; ``pushgate bench idle`` connects N clients to it
from its own processes, as it does to its own server. Once all N are open and the
server has been quiet for a moment, the child measures itself against what it held
before the first client came, and the bench is stopped. Two runs, each with a fresh
server:

1. **RSS** (no tracing): the server's RSS per connection, split into what Python's
   small-object allocator (pymalloc: objects of 512 bytes or less, in 16-byte size
   classes, from arenas it maps itself) and the C library's ``malloc`` (larger
   blocks, and ``PyMem_RawMalloc``: uvloop's libuv handles) hold, from
   ``sys._debugmallocstats()`` and glibc's ``mallinfo2()``.
2. **Sites** (``tracemalloc``, ``--frames`` frames a traceback): the bytes Python
   allocated per connection and still holds, by the line that allocated them, by the
   innermost line of pushgate's own code they were allocated under (what pushgate can
   change), and by pushgate module. tracemalloc counts the bytes asked for; "held"
   also counts each block's rounding up to its allocator's size class, which is what
   the block really takes.

What no Python tool sees: the C library's own bookkeeping and free space (shown in
run 1), the kernel's memory for each socket (its buffers, not part of RSS), and pages
of an arena that are mapped but never touched (not RSS either).

Its clients speak pushgate's own protocol (``/connect``): ``pushgate bench`` runs Pusher
and SSE clients against its own server only (``--client``), whose RSS it reports.

    PYTHONPATH=src .venv/bin/python scripts/connection-memory.py [-n 10000] [--src DIR]
"""

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import json
import linecache
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVE = "serve"  # the child's first argument: it is the server
SETTLE = 2.0  # seconds without a new connection before measuring
SMALL = 512  # pymalloc's largest block
ALIGN = 16  # pymalloc's size classes (64-bit), and malloc's chunk granularity
# The lines of sys._debugmallocstats() read, and their values.
PYMALLOC_TOTALS = {
    "arenas": r"^\d+ arenas \* \d+ bytes/arena +=\s+([\d,]+)$",
    "blocks": r"^# bytes in allocated blocks +=\s+([\d,]+)$",
    "available": r"^# bytes in available blocks +=\s+([\d,]+)$",
    "unused pools": r"^\d+ unused pools \* \d+ bytes +=\s+([\d,]+)$",
}
SRC = str(Path(__file__).resolve().parent.parent / "src")


# The server's side (the child process)


@dataclass
class Allocators:
    """What the allocators hold, in bytes: pymalloc's arenas, the blocks in use in
    them (rounded to their size class) and the free space in their pools; the C
    library's heap (from the kernel) and what of it is in use."""

    rss: int
    py_arenas: int
    py_blocks: int
    py_free: int
    malloc_heap: int
    malloc_used: int

    @classmethod
    def read(cls) -> "Allocators":
        """Now (after a full collection). Under tracemalloc pymalloc tells nothing."""
        gc.collect()
        if tracemalloc.is_tracing():
            return cls(_rss(), 0, 0, 0, 0, 0)
        stats = _pymalloc_stats()
        info = _mallinfo2()
        return cls(
            rss=_rss(),
            py_arenas=stats["arenas"],
            py_blocks=stats["blocks"],
            py_free=stats["available"] + stats["unused pools"],
            malloc_heap=info["arena"] + info["hblkhd"],
            malloc_used=info["uordblks"] + info["hblkhd"],
        )


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _pymalloc_stats() -> dict[str, int]:
    """The totals ``sys._debugmallocstats()`` writes to the C stderr."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()
    stats: dict[str, int] = {}
    for name, pattern in PYMALLOC_TOTALS.items():
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no {name!r} in sys._debugmallocstats()")
        stats[name] = int(match.group(1).replace(",", ""))
    return stats


# glibc's struct mallinfo2, in order: every field a size_t.
MALLINFO2: tuple[str, ...] = ("arena", "ordblks", "smblks", "hblks", "hblkhd")
MALLINFO2 += ("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2]


def _mallinfo2() -> dict[str, int]:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {name: int(getattr(info, name)) for name in MALLINFO2}


def _held(size: int) -> int:
    """What a block asked for ``size`` bytes takes: pymalloc's size class, or a
    malloc chunk (an 8-byte header, 16-byte granularity, 32 at least)."""
    if size <= SMALL:
        return max(ALIGN, -(-size // ALIGN) * ALIGN)
    return max(32, -(-(size + 8) // ALIGN) * ALIGN)


def _where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/"):
        if marker in name:
            name = name.split(marker, 1)[1]
            break
    return f"{name}:{frame.lineno}"


def _line(frame: tracemalloc.Frame) -> str:
    return linecache.getline(frame.filename, frame.lineno).strip()[:70]


def _ours(frame: tracemalloc.Frame) -> bool:
    return "/pushgate/" in frame.filename and "/pushgate/bench/" not in frame.filename


def _sites(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> dict[str, Any]:
    """The blocks allocated since ``before`` and still alive, per traceback (as
    ``Snapshot.compare_to`` pairs them), summed by site, cause and module: bytes
    asked, bytes held, blocks."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    old = _by_traceback(before.filter_traces(ignore).traces)
    new = _by_traceback(after.filter_traces(ignore).traces)
    totals: dict[str, dict[str, list[int]]] = {
        kind: defaultdict(lambda: [0, 0, 0]) for kind in ("site", "cause", "module")
    }
    lines: dict[str, str] = {}
    for tb in old.keys() | new.keys():
        made, gone = new.get(tb, []), old.get(tb, [])
        diff = (
            sum(made) - sum(gone),
            sum(map(_held, made)) - sum(map(_held, gone)),
            len(made) - len(gone),
        )
        if diff == (0, 0, 0):
            continue
        site = tb[-1]  # the most recent frame
        cause = next((f for f in reversed(tb) if _ours(f)), None)
        keys = {"site": _where(site)}
        lines.setdefault(keys["site"], _line(site))
        if cause is None:
            keys["cause"], keys["module"] = f"(no pushgate frame) {keys['site']}", "(not pushgate)"
        else:
            keys["cause"] = _where(cause)
            keys["module"] = keys["cause"].partition(":")[0]
            lines.setdefault(keys["cause"], _line(cause))
        for kind, key in keys.items():
            row = totals[kind][key]
            for i, value in enumerate(diff):
                row[i] += value
    return {kind: dict(rows) for kind, rows in totals.items()} | {"lines": lines}


def _by_traceback(traces: Iterable[tracemalloc.Trace]) -> dict[tracemalloc.Traceback, list[int]]:
    grouped: dict[tracemalloc.Traceback, list[int]] = defaultdict(list)
    for trace in traces:
        grouped[trace.traceback].append(trace.size)
    return grouped


async def _serve(n: int, frames: int, server_args: list[str]) -> None:
    """Run the server; measure once ``n`` connections are open; stop at EOF on stdin."""
    from pushgate.app import PushServer
    from pushgate.cli import build_parser
    from pushgate.config import from_sources

    loopback = ["--ws-host", "127.0.0.1", "--ws-port", "0", "--api-host", "127.0.0.1"]
    args = build_parser().parse_args(["serve", *loopback, "--api-port", "0", *server_args])
    server = PushServer(from_sources(vars(args), {}), "serve")
    await server.start()
    hub = server.node.hub
    before = Allocators.read()
    first = tracemalloc.take_snapshot() if frames else None
    print(json.dumps({"ws_port": server.ws_port, "api_port": server.api_port}), flush=True)
    seen, still_since, first_at = -1, time.monotonic(), 0.0
    while len(hub) < n or time.monotonic() - still_since < SETTLE:
        await asyncio.sleep(0.2)
        if len(hub) != seen:
            seen, still_since = len(hub), time.monotonic()
            first_at = first_at or still_since
    open_ = len(hub)
    after = Allocators.read()
    report: dict[str, Any] = {
        "connections": open_,
        "before": vars(before),
        "after": vars(after),
        "connecting_s": still_since - first_at,  # from the first to the last (about)
        "measured_s": time.monotonic() - first_at,  # after the first
    }
    if first is not None:
        report["traced"] = tracemalloc.get_traced_memory()[0]
        report["sites"] = _sites(first, tracemalloc.take_snapshot())
    print(json.dumps(report), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()


def serve_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int)
    parser.add_argument("--frames", type=int, default=0)
    args, server_args = parser.parse_known_args(argv)
    import uvloop

    import pushgate.app
    import pushgate.cli  # noqa: F401 (imported before tracing: compiling under it is slow)

    if args.frames:
        tracemalloc.start(args.frames)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(args.n, args.frames, [a for a in server_args if a != "--"]))


# The measuring side (the parent)


def measure(n: int, frames: int, server_args: list[str], src: str) -> dict[str, Any]:
    """One run: a fresh server (pushgate from ``src``), N bench clients, the server's
    report."""
    env = dict(os.environ, PYTHONPATH=src)
    server = [sys.executable, __file__, SERVE, "-n", str(n), "--frames", str(frames)]
    child = subprocess.Popen(
        [*server, "--", *server_args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    bench, report = None, None
    try:
        ports = json.loads(child.stdout.readline())
        clients = ["-n", str(n), "--duration", "600", "-q", "--json"]
        server_under_test = [
            f"--ws-url=ws://127.0.0.1:{ports['ws_port']}/connect",
            f"--api-url=http://127.0.0.1:{ports['api_port']}",
            f"--server-pid={child.pid}",
            "--connect-timeout=60",
        ]
        bench = subprocess.Popen(
            [sys.executable, "-m", "pushgate", "bench", "idle", *clients, *server_under_test],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        while not select.select([child.stdout], [], [], 1.0)[0]:
            if bench.poll() is not None:
                status = bench.returncode
                raise SystemExit(f"the bench ended (status {status}) before all connected")
        line = child.stdout.readline()
        if not line:
            raise SystemExit("the server ended before it measured")
        report = dict(json.loads(line))
        return report
    finally:
        if bench is not None:
            bench.send_signal(signal.SIGTERM)  # it stops its workers
            bench.wait()
        if report is None:  # it waits for connections that will not come
            child.terminate()
        child.stdin.close()
        child.wait()


def report_allocators(run: dict[str, Any]) -> list[str]:
    n = run["connections"]
    before, after = run["before"], run["after"]

    def per(name: str) -> float:
        return float(after[name] - before[name]) / float(n)

    rss = per("rss")
    py, malloc = per("py_arenas"), per("malloc_heap")
    rows = [
        ("RSS", rss),
        ("  pymalloc arenas (objects <= 512 B)", py),
        ("    blocks in use (rounded to their size class)", per("py_blocks")),
        ("    free blocks and pools in them", per("py_free")),
        ("  malloc heap (larger blocks, PyMem_RawMalloc)", malloc),
        ("    in use (with each chunk's header)", per("malloc_used")),
        ("  neither: mapped-but-untouched pages, stacks, other", rss - py - malloc),
    ]
    head = (
        f"{n:,} connections, opened over {run['connecting_s']:.0f} s, measured "
        f"{run['measured_s']:.0f} s after the first"
    )
    return [head] + [f"  {value:8.0f} B  {label}" for label, value in rows]


def report_sites(run: dict[str, Any], top: int) -> list[str]:
    n = run["connections"]
    sites, lines = run["sites"], run["sites"]["lines"]
    out = []
    titles = {
        "module": "by pushgate module under which it was allocated",
        "cause": "by the innermost line of pushgate's code",
        "site": "by the line that allocated it",
    }
    for kind, title in titles.items():
        rows = sorted(sites[kind].items(), key=lambda item: -item[1][1])
        total = [sum(row[i] for _, row in rows) / n for i in range(3)]
        out.append(f"\n{title} (per connection: bytes asked, bytes held, blocks)")
        for key, (size, held, count) in rows[:top]:
            if abs(held) / n < 1:
                continue
            text = lines.get(key, "") if kind != "module" else ""
            out.append(f"  {size / n:7.0f} {held / n:7.0f} {count / n:6.2f}  {key}  {text}")
        out.append(f"  {total[0]:7.0f} {total[1]:7.0f} {total[2]:6.2f}  all")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == SERVE:
        serve_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="idle connections (10,000)")
    parser.add_argument("--frames", type=int, default=12, help="tracemalloc's frames (12)")
    parser.add_argument("--top", type=int, default=40, help="rows per table (40)")
    parser.add_argument("--no-trace", action="store_true", help="run 1 only")
    parser.add_argument("--json", metavar="FILE", help="write both runs' reports here")
    parser.add_argument("--src", default=SRC, help="the pushgate to measure (this tree's src)")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="for the server (repeatable)"
    )
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    runs = {"rss": measure(args.n, 0, args.server_arg, args.src)}
    print("\n".join(report_allocators(runs["rss"])), flush=True)
    if not args.no_trace:
        runs["sites"] = measure(args.n, args.frames, args.server_arg, args.src)
        traced = runs["sites"]
        print(f"\ntracemalloc, {args.frames} frames (a run of its own):")
        print(report_allocators(traced)[0])
        print("\n".join(report_sites(traced, args.top)))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
