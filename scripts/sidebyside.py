"""What scripts/bench-versions and scripts/bench-seed share: two servers measured by
this tree's ``pushgate bench`` in alternating rounds, and the summary of their runs.

Each script starts its servers its own way (an older pushgate from ``git archive``,
the seed's Go code built with Go); this module starts a ``pushgate serve`` from a
source tree, runs the bench against a server through its external-server options
(--ws-url, --api-url, --server-pid), stops what it started, and sums the runs up:
each side's median (min-max) per row, the ratio of the medians and the ratios of
the pairs measured in the same round.
"""

import contextlib
import ctypes
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
READY = re.compile(
    r"pushgate (\S+) serve ready: gateway (ws://\S+/connect), logic API (http://[^ ,]+)"
)
START_TIMEOUT = 30.0
STOP_GRACE = 20.0
PR_SET_PDEATHSIG = 1
# A summary row: bench JSON key, label, decimals.
Row = tuple[str, str, int]


class Failed(Exception):
    """A server or a bench run failed (or what it needs is missing); the message says
    why."""


class Interrupted(Exception):
    """SIGINT or SIGTERM: stop what runs, clean up, exit 130."""


def on_signal(signum: int, frame: object) -> None:
    raise Interrupted


@dataclass
class Side:
    """One server under test: its name in the JSON, its label in the output, and the
    bench's result of each of its runs."""

    name: str
    label: str
    runs: list[dict[str, Any]] = field(default_factory=list)


def dies_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when this script dies (Linux; else nothing)."""

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return preexec


def stop(process: subprocess.Popen[Any], grace: float = STOP_GRACE) -> None:
    """SIGTERM (the servers and the bench stop gracefully on it), then SIGKILL after
    grace."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    process.wait()


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def version_of(src: Path) -> str:
    match = re.search(r'__version__ = "([^"]+)"', (src / "pushgate" / "__init__.py").read_text())
    return match.group(1) if match else "?"


def this_tree() -> str:
    """This tree's commit, with ``+changes`` when its src/ has uncommitted changes."""
    head = git("rev-parse", "--short", "HEAD")
    return head + ("+changes" if git("status", "--porcelain", "--", "src") else "")


def find_python() -> str:
    """The .venv of this tree, or of the main tree when this is a git worktree."""
    candidates = [ROOT / ".venv" / "bin" / "python"]
    with contextlib.suppress(subprocess.CalledProcessError, OSError):
        common = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir"))
        candidates.append(common.parent / ".venv" / "bin" / "python")
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    return sys.executable


@contextlib.contextmanager
def pushgate_server(
    side: Side, python: str, src: Path, args: list[str], work: Path
) -> Iterator[tuple[int, str, str]]:
    """Start ``pushgate serve`` from the tree ``src`` on free loopback ports, with
    ``args``; yield (pid, ws URL, API URL) once it says it is ready, as the version
    that tree is; stop it after."""
    log_path = work / f"{side.name}-server.log"
    command = [
        python,
        "-m",
        "pushgate",
        "serve",
        "--ws-host",
        LOOPBACK,
        "--ws-port",
        "0",
        "--api-host",
        LOOPBACK,
        "--api-port",
        "0",
        *args,
    ]
    env = dict(os.environ, PYTHONPATH=str(src))
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches this script, which stops it
            preexec_fn=dies_with_parent(),
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (match := READY.search(log_path.read_text(errors="replace"))):
            if process.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with status {process.returncode}"
                    if process.poll() is not None
                    else f"was not ready within {START_TIMEOUT:g} s"
                )
                raise Failed(
                    f"{side.label}: the server {why}; {shlex.join(command)} logged:\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.05)
        version, ws_url, api_url = match.groups()
        if version != version_of(src):
            raise Failed(f"{side.label}: the server says it is {version}: not that tree's")
        yield process.pid, ws_url, api_url
    finally:
        stop(process)


def bench(
    python: str, bench_args: Sequence[str], pid: int, ws_url: str, api_url: str, verbose: bool
) -> dict[str, Any]:
    """This tree's ``pushgate bench`` against the server; its JSON object, with its
    exit status (3: it lost, duplicated or reordered messages)."""
    command = [
        python,
        "-m",
        "pushgate",
        "bench",
        *bench_args,
        "--ws-url",
        ws_url,
        "--api-url",
        api_url,
        "--server-pid",
        str(pid),
        "--json",
        "-q",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=dies_with_parent(),
    )
    try:
        out, err = process.communicate()
    finally:
        stop(process)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode not in (0, 3) or not lines:
        raise Failed(f"the bench exited with status {process.returncode}:\n{err}{out}")
    if verbose or process.returncode:
        print(err, file=sys.stderr, end="")
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit_status"] = process.returncode
    return result


def fmt(value: float | None, decimals: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{decimals}f}"


def summary(
    rows: Sequence[Row], no_ratio: Sequence[str], base: Side, other: Side
) -> dict[str, Any]:
    """Per row: each side's median, min, max (by its name); the ratio of the medians,
    other ÷ base; the ratios of the pairs of each round (none for ``no_ratio``)."""
    summed: dict[str, Any] = {}
    for key, _, _ in rows:
        row: dict[str, Any] = {}
        for side in (base, other):
            values = [r[key] for r in side.runs if r.get(key) is not None]
            row[side.name] = {
                "median": statistics.median(values) if values else None,
                "min": min(values, default=None),
                "max": max(values, default=None),
            }
        a, b = row[base.name]["median"], row[other.name]["median"]
        row["ratio"] = b / a if a and b is not None and key not in no_ratio else None
        row["paired_ratios"] = [
            r2[key] / r1[key]
            for r1, r2 in zip(base.runs, other.runs, strict=True)
            if r1.get(key) and r2.get(key) is not None and key not in no_ratio
        ]
        summed[key] = row
    return summed


def print_summary(
    rows: Sequence[Row],
    base: Side,
    other: Side,
    summed: dict[str, Any],
    rounds: int,
    *,
    ratio: str,
    width: int,
    paired: Sequence[str],
) -> None:
    """The summary as a table (``ratio`` heads the ratio column), then the paired
    ratios of the rows ``paired``, where there are several."""

    def cell(stats: dict[str, float | None], decimals: int) -> str:
        text = fmt(stats["median"], decimals)
        if stats["min"] != stats["max"]:
            text += f" ({fmt(stats['min'], decimals)}-{fmt(stats['max'], decimals)})"
        return text

    print(f"\nmedian of {rounds} run{'s' if rounds > 1 else ''} each (min-max)")
    column = len(ratio) + 1
    print(f"{'':<24} {base.label:>{width}} {other.label:>{width}} {ratio:>{column}}")
    for key, label, decimals in rows:
        row = summed[key]
        quotient = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(
            f"{label:<24} {cell(row[base.name], decimals):>{width}}"
            f" {cell(row[other.name], decimals):>{width}} {quotient:>{column}}"
        )
    labels = {key: label for key, label, _ in rows}
    for key in paired:
        pairs = summed[key]["paired_ratios"]
        if len(pairs) > 1:
            each = ", ".join(f"{p:.2f}" for p in pairs)
            print(
                f"{labels[key]}, {ratio} in each round: {each}"
                f" (median {statistics.median(pairs):.2f})"
            )
