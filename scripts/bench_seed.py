"""One `pushgate bench` scenario against the seed's own Go code and this tree's
pushgate, side by side on the same harness (issue 23).

    scripts/bench-seed -- idle -n 10000 --duration 20 --client-ping 4
    scripts/bench-seed --rounds 2 -- broadcast -n 1000 --rate 20 --pushes 400 --senders 1
    scripts/bench-seed --rounds 2 -- broadcast -n 10000 --pushes 30

The seed's Go code (hwholiday/learning_tools, go_push/, Apache-2.0) is kept unchanged
in scripts/seed-go/ (see its README.md). It is built afresh into a temporary
directory with Debian's Go in GOPATH mode against Debian's packages of its two
libraries:

    apt-get install -y golang-go golang-github-gorilla-websocket-dev \\
        golang-github-satori-go.uuid-dev

The seed's code listens on 0.0.0.0:8888 and 0.0.0.0:9999, hard-coded. The copy
that is built (never the files in scripts/seed-go/) has those two addresses
replaced by two free loopback ports, chosen when it is built: nothing else in it
changes, and a run on a shared machine neither needs 8888 and 9999 free nor
listens beyond loopback. In each round, both servers are started afresh, one after
the other: the seed and this tree's `python -m pushgate serve` on free loopback
ports, with nothing else but --server-args. THIS tree's `pushgate bench` measures each through
its external-server options (--ws-url, --api-url, --server-pid) and the server is
stopped. Which one goes first alternates from round to round (the seed first in
rounds 1, 3, ...), so a drift of the machine weighs on both alike.

Scenarios: idle and broadcast only. The room scenarios join clients by the wsId of
pushgate's welcome frame; the seed never tells a client its wsId (it only prints
it on its stdout), so they cannot be run against it; the others rely on
pushgate's own protocol (sessions, resume, publish, Pusher, SSE) or attack it.

The seed drops an upgrade request that took over 10 ms to arrive (its
http.Server ReadTimeout is 10 ms) and a connection that sent no application PING
for 10 s (a broadcast of 400 pushes at 20/s lasts 20 s). So both sides are measured
with the same client settings, added unless given: --connect-concurrency 10
--connect-retries 3 --client-ping 4 (pushgate answers the PING too).
The seed also closes a push's connection without an answer when reading it or
answering took over 10 ms (a push it queued is delivered even so): such a push
counts as a push error, and if it was delivered, its deliveries as duplicates
(its 3 distribution goroutines may also reorder pushes).

Each run prints its figures; the end is a summary: each side's median (min-max)
and the ratio of pushgate's median to the seed's, and the ratios of the pairs
measured in the same round. --json prints every run's bench object and the
summary as one JSON object on stdout.

Exit status: 0 done; 1 a server or a bench failed (its output is shown), or Go or
its libraries are missing (the apt-get command is given); 2 bad arguments; 3 a
bench run lost, duplicated or reordered messages (on the seed, expected: see above).
"""

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sidebyside
from sidebyside import (
    LOOPBACK,
    ROOT,
    START_TIMEOUT,
    Failed,
    Interrupted,
    Row,
    Side,
    dies_with_parent,
    find_python,
    fmt,
    on_signal,
    print_summary,
    pushgate_server,
    stop,
    summary,
    this_tree,
    version_of,
)

SEED_DIR = ROOT / "scripts" / "seed-go"
SEED_PACKAGE = "github.com/hwholiday/learning_tools/go_push"
SEED_COMMIT = "71e1320"  # learning_tools, as scripts/seed-go/README.md says
# The seed's listening addresses, hard-coded (gateway, logic API), and the files
# that name them: the copy that is built listens on free loopback ports instead.
SEED_ADDRESSES = {
    "gateway/ws_server.go": '"0.0.0.0:8888"',
    "logic/http_server.go": '"0.0.0.0:9999"',
}
GOCODE = Path("/usr/share/gocode/src")
LIBRARIES = {  # import path -> the Debian package that holds it
    "github.com/gorilla/websocket": "golang-github-gorilla-websocket-dev",
    "github.com/satori/go.uuid": "golang-github-satori-go.uuid-dev",
}
APT = "apt-get install -y golang-go " + " ".join(LIBRARIES.values())
SCENARIOS = ("idle", "broadcast")
NOT_AGAINST_THE_SEED = {
    "room": "it joins clients by the wsId of a welcome frame, which the seed never sends",
    "rooms": "it joins clients by the wsId of a welcome frame, which the seed never sends",
    "resume": "sessions and resume are pushgate's, and it joins clients by wsId",
    "reconnect": "it joins clients by wsId and reconnects with a token",
    "chat": "clients publish and subscribe over pushgate's own protocol",
    "churn": "not measured against the seed (its 10 ms handshake window drops churners)",
    "abuse": "it attacks pushgate's limits, which the seed has none of",
}
# Bench options the script gives itself, or that only apply to the bench's own server.
OWN_OPTIONS = ("--ws-url", "--api-url", "--server-pid", "--repeat", "--client")
SERVER_OPTIONS = (
    "--server-arg",
    "--max-output-bytes",
    "--heartbeat",
    "--idle-timeout",
    "--close-timeout",
    "--log-level",
)
# Client settings both sides get unless given (see the docstring).
CLIENT_DEFAULTS = (
    ("--connect-concurrency", "10"),
    ("--connect-retries", "3"),
    ("--client-ping", "4"),
)
# What the summary shows, per scenario: bench JSON key, label, decimals. "cpu_pct"
# is computed (idle_cpu_us_per_conn_s over the connections open).
ROWS: dict[str, tuple[Row, ...]] = {
    "idle": (
        ("cpu_pct", "server CPU %", 2),
        ("idle_cpu_us_per_conn_s", "server CPU µs/conn/s", 3),
        ("rss_kb_per_conn", "server RSS KB/conn", 2),
        ("connected", "connections open", 0),
        ("connect_retries", "connect retries", 0),
        ("other_cpu_pct", "other processes' CPU %", 0),
        ("lost", "lost", 0),
    ),
    "broadcast": (
        ("server_cpu_us_per_delivery", "server CPU µs/delivery", 2),
        ("p50_ms", "latency p50 ms", 2),
        ("p99_ms", "latency p99 ms", 2),
        ("max_ms", "latency max ms", 1),
        ("deliveries_per_s", "deliveries/s", 0),
        ("rss_kb_per_conn", "server RSS KB/conn", 2),
        ("client_cpu_us_per_delivery", "client CPU µs/delivery", 2),
        ("connect_retries", "connect retries", 0),
        ("push_errors", "push errors", 0),
        ("other_cpu_pct", "other processes' CPU %", 0),
        ("lost", "lost", 0),
        ("duplicates", "duplicates", 0),
        ("out_of_order", "out of order", 0),
    ),
}
# Counts and noise, for which a ratio means nothing.
NO_RATIO = (
    "connected",
    "connect_retries",
    "other_cpu_pct",
    "lost",
    "push_errors",
    "duplicates",
    "out_of_order",
)


def check_go(go: str, gocode: Path) -> str:
    """The go command's path; Failed, naming the apt-get command, if Go or a library
    is missing."""
    path = shutil.which(go)
    if path is None:
        raise Failed(f"Go is not installed ({go!r} is not on PATH); as root: {APT}")
    missing = [pkg for lib, pkg in LIBRARIES.items() if not (gocode / lib).is_dir()]
    if missing:
        raise Failed(
            f"the seed's Go libraries are missing from {gocode} ({', '.join(missing)});"
            f" as root: {APT}"
        )
    return path


@dataclass(frozen=True)
class SeedBuild:
    """The seed's binary, and the loopback ports it was built to listen on."""

    binary: Path
    ws_port: int
    api_port: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def build_seed(go: str, gocode: Path, work: Path) -> SeedBuild:
    """Build a copy of scripts/seed-go/go_push in GOPATH mode into ``work``, its two
    hard-coded listening addresses replaced by free loopback ports (module
    docstring)."""
    gopath = work / "gopath"
    package_dir = gopath / "src" / SEED_PACKAGE
    shutil.copytree(SEED_DIR / "go_push", package_dir)
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    for (name, address), port in zip(SEED_ADDRESSES.items(), ports, strict=True):
        source = package_dir / name
        text = source.read_text()
        if text.count(address) != 1:
            raise Failed(f"{name} no longer says {address} once: update SEED_ADDRESSES")
        source.write_text(text.replace(address, f'"{LOOPBACK}:{port}"'))
    binary = work / "seed-go-push"
    env = dict(
        os.environ,
        GO111MODULE="off",
        GOPATH=f"{gopath}{os.pathsep}{gocode.parent}",
        GOCACHE=str(work / "gocache"),
        GOFLAGS="",
        CGO_ENABLED="0",
    )
    built = subprocess.run(
        [go, "build", "-o", str(binary), SEED_PACKAGE],
        cwd=gopath,
        env=env,
        capture_output=True,
        text=True,
    )
    if built.returncode:
        raise Failed(f"building the seed failed:\n{built.stderr}{built.stdout}")
    return SeedBuild(binary, ports[0], ports[1])


def port_free(port: int) -> bool:
    """Whether the seed can listen on ``port``: as Go does, with SO_REUSEADDR (the
    connections of a previous run in TIME_WAIT do not hold the port)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((LOOPBACK, port)) == 0


@contextlib.contextmanager
def seed_server(seed: SeedBuild, work: Path) -> Iterator[tuple[int, str, str]]:
    """Start the seed's Go server; yield (pid, ws URL, API URL)."""
    ports = (seed.ws_port, seed.api_port)
    busy = [port for port in ports if not port_free(port)]
    if busy:
        raise Failed(
            f"port {' and '.join(map(str, busy))} was taken by another program after the"
            " seed was built to listen on it: run again"
        )
    log_path = work / "seed-server.log"
    with log_path.open("w") as log:  # it prints a line per connection opened and closed
        process = subprocess.Popen(
            [str(seed.binary)],
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=dies_with_parent(),
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not all(listening(port) for port in ports):
            if process.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with status {process.returncode}"
                    if process.poll() is not None
                    else f"was not listening within {START_TIMEOUT:g} s"
                )
                raise Failed(
                    f"the seed's server {why}; it printed:\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.05)
        yield (
            process.pid,
            f"ws://{LOOPBACK}:{seed.ws_port}/connect",
            f"http://{LOOPBACK}:{seed.api_port}",
        )
    finally:
        stop(process)


def bench(
    python: str, bench_args: Sequence[str], pid: int, ws_url: str, api_url: str, verbose: bool
) -> dict[str, Any]:
    """The bench's result (sidebyside.bench), with the idle server's CPU in % of one
    CPU where it measured idle connections."""
    result = sidebyside.bench(python, bench_args, pid, ws_url, api_url, verbose)
    if result.get("idle_cpu_us_per_conn_s") is not None:
        # µs per connection per second, times the connections: % of one CPU.
        result["cpu_pct"] = result["idle_cpu_us_per_conn_s"] * result["connected"] / 1e4
    return result


def run_line(side: Side, scenario: str, result: dict[str, Any]) -> str:
    opened = f"{result['connected']:,} open"
    if result.get("connect_retries"):
        opened += f" ({result['connect_retries']:,} retried)"
    if scenario == "idle":
        return (
            f"{side.label:<22} {opened}  server CPU {fmt(result.get('cpu_pct'), 2)} %"
            f" = {fmt(result['idle_cpu_us_per_conn_s'], 3)} µs/conn/s"
            f"  RSS {fmt(result['rss_kb_per_conn'], 2)} KB/conn"
            f"  others' CPU {fmt(result['other_cpu_pct'], 0)} %"
        )
    return (
        f"{side.label:<22} server CPU {fmt(result['server_cpu_us_per_delivery'], 2):>6}"
        f" µs/delivery  p50 {fmt(result['p50_ms'], 2):>7} ms  p99 {fmt(result['p99_ms'], 2):>7}"
        f" ms  lost {result['lost']}  push errors {result['push_errors']}"
        f"  others' CPU {fmt(result['other_cpu_pct'], 0)} %"
    )


def with_defaults(bench_args: list[str]) -> list[str]:
    """The bench arguments, with the client settings both sides need (see the docstring)."""
    given = {arg.split("=", 1)[0] for arg in bench_args}
    extra: list[str] = []
    for flag, value in CLIENT_DEFAULTS:
        if flag not in given:
            extra += [flag, value]
    return bench_args + extra


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="scripts/bench-seed",
        usage="scripts/bench-seed [OPTIONS] -- {idle,broadcast} [BENCH ARGS]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; one run of each per round (default: 3)"
    )
    parser.add_argument(
        "--server-args",
        default="",
        metavar="ARGS",
        help='more options for pushgate serve, one string: "--history-size 0"',
    )
    parser.add_argument("--go", default="go", help="the go command (default: go, on PATH)")
    parser.add_argument(
        "--gocode",
        type=Path,
        default=GOCODE,
        metavar="DIR",
        help=f"where the Go libraries are, GOPATH-style (default: {GOCODE}, Debian's)",
    )
    parser.add_argument("--python", help="the Python that runs pushgate and the bench")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs (1)")
    parser.add_argument("--json", action="store_true", help="everything as one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each bench's table")
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    bench_args = argv[split + 1 :]
    if not bench_args:
        parser.error("name a bench scenario after --, e.g. -- idle -n 10000 --client-ping 4")
    scenario = bench_args[0]
    if scenario in NOT_AGAINST_THE_SEED:
        parser.error(f"{scenario} cannot run against the seed: {NOT_AGAINST_THE_SEED[scenario]}")
    if scenario not in SCENARIOS:
        parser.error(f"the scenario comes first after --: one of {', '.join(SCENARIOS)}")
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    for arg in bench_args:
        flag = arg.split("=", 1)[0]
        if flag in OWN_OPTIONS:
            parser.error(f"{flag} is this script's to give the bench")
        if flag in SERVER_OPTIONS:
            parser.error(f"{flag} is a server option: use --server-args")
    return args, with_defaults(bench_args)


def main(argv: Sequence[str]) -> int:
    args, bench_args = parse_args(argv)
    scenario = bench_args[0]
    python = args.python or find_python()
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    try:
        go = check_go(args.go, args.gocode)
    except Failed as exc:
        print(f"scripts/bench-seed: {exc}", file=sys.stderr)
        return 1
    server_args = shlex.split(args.server_args)
    seed = Side("seed", f"seed Go ({SEED_COMMIT})")
    ours = Side("pushgate", f"pushgate {version_of(ROOT / 'src')} ({this_tree()})")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp:
        work = Path(tmp)
        try:
            built = build_seed(go, args.gocode, work)
            say(f"bench-seed: pushgate bench {shlex.join(bench_args)}")
            say(f"  seed:     {seed.label}, built with {go} from {SEED_DIR.relative_to(ROOT)}")
            say(f"  pushgate: {ours.label} serve {shlex.join(server_args)}".rstrip())
            say(f"  python:   {python}")
            for k in range(args.rounds):
                order = (seed, ours) if k % 2 == 0 else (ours, seed)
                for side in order:
                    if side.runs or k:
                        time.sleep(args.pause)
                    start = (
                        seed_server(built, work)
                        if side is seed
                        else pushgate_server(ours, python, ROOT / "src", server_args, work)
                    )
                    with start as (pid, ws_url, api_url):
                        result = bench(python, bench_args, pid, ws_url, api_url, args.verbose)
                    side.runs.append(result)
                    say(f"round {k + 1}/{args.rounds}  " + run_line(side, scenario, result))
        except Failed as exc:
            print(f"scripts/bench-seed: {exc}", file=sys.stderr)
            return 1
        except Interrupted:
            print("\nscripts/bench-seed: interrupted; its servers are stopped", file=sys.stderr)
            return 130
    rows = summary(ROWS[scenario], NO_RATIO, seed, ours)
    if args.json:
        print(
            json.dumps(
                {
                    "bench_args": bench_args,
                    "rounds": args.rounds,
                    "seed": {"label": seed.label, "runs": seed.runs},
                    "pushgate": {
                        "label": ours.label,
                        "server_args": server_args,
                        "runs": ours.runs,
                    },
                    "summary": rows,
                }
            )
        )
    else:
        print_summary(
            ROWS[scenario],
            seed,
            ours,
            rows,
            args.rounds,
            ratio="pushgate ÷ seed",
            width=28,
            paired=[key for key, _, _ in ROWS[scenario][:1]],
        )
    if any(r["exit_status"] for r in seed.runs + ours.runs):
        say("scripts/bench-seed: a bench run lost, duplicated or reordered messages")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
