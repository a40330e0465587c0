"""``pushgate bench``: small runs against a real server, and its accounting.

No test asserts a timing: figures such as deliveries/s are only checked to be there.
"""

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from pushgate.bench.chatclient import ChatClient, ChatState, Member
from pushgate.bench.chatreplies import ChatReport, ChatRow
from pushgate.bench.chatreport import account_chat, check_joins, expected_joins
from pushgate.bench.cli import run_bench
from pushgate.bench.clientkinds import ClientKind
from pushgate.bench.fromargs import options_from
from pushgate.bench.histogram import Histogram, bucket
from pushgate.bench.losses import account, account_streams
from pushgate.bench.options import BenchError, BenchOptions, check_url, scenario_named
from pushgate.bench.parser import add_bench_parser
from pushgate.bench.progress import Progress
from pushgate.bench.pusherclient import PusherClient
from pushgate.bench.rawws import (
    GUID,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    CloseScanner,
    frame_spans,
    masked_frame,
)
from pushgate.bench.replies import (
    ClientCount,
    ClientStreams,
    Connected,
    Duplicated,
    Report,
    StreamCount,
)
from pushgate.bench.result import RunResult
from pushgate.bench.resumeclient import (
    ResumeClient,
    Tally,
    resume_path,
    stream_key,
    stream_name,
)
from pushgate.bench.runner import Run
from pushgate.bench.scenarios import ALL, ROOM, Plan, chat_room, chat_slot, stream_of
from pushgate.bench.server import ServerUnderTest
from pushgate.bench.serverlatency import LatencyBuckets
from pushgate.bench.sseclient import SseClient
from pushgate.bench.table import table
from pushgate.bench.workers import WorkerPool
from pushgate.bench.wsclient import BenchClient, Counters, HandshakeError
from tests.helpers import LOOPBACK, UNIT, free_port, pushgate_command

REQUIRED_KEYS = {
    "scenario",
    "connections",
    "deliveries_per_s",
    "server_cpu_us_per_delivery",
    "client_cpu_us_per_delivery",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "rss_kb_per_conn",
    "lost",
}
SMALL = ("--workers", "2", "--quiet", "--json")


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``pushgate bench ARGV`` in this process; return the status, the JSON
    objects it printed and its stderr."""
    parser = argparse.ArgumentParser(prog="pushgate")
    add_bench_parser(parser.add_subparsers(dest="command"))
    status = run_bench(parser.parse_args(["bench", *argv]))
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines() if line.strip()], err


# Small runs against a real server


def test_broadcast_counts_every_delivery(capsys: pytest.CaptureFixture[str]) -> None:
    """50 clients, 100 pushes to all: 5,000 deliveries, none lost, every figure
    reported, and the CPU the server and the clients spent on them."""
    status, runs, err = bench(capsys, "broadcast", "-n", "50", "--pushes", "100", *SMALL)
    assert status == 0, err
    [run] = runs
    assert run.keys() >= REQUIRED_KEYS
    assert run["scenario"] == "broadcast"
    assert run["connections"] == run["connected"] == 50
    assert run["pushes"] == 100
    assert run["deliveries"] == run["expected"] == 5000
    assert run["lost"] == 0
    assert run["server_delivered"] == 5000
    assert run["deliveries_per_s"] > 0
    # The server's CPU is read in clock ticks (10 ms): these 5,000 deliveries cost it
    # 40-60 ms here, several ticks (20 pushes could read 0); the clients' is exact.
    assert run["server_cpu_s"] > 0
    assert run["server_cpu_us_per_delivery"] == pytest.approx(run["server_cpu_s"] * 1e6 / 5000)
    assert run["client_cpu_us_per_delivery"] > 0
    assert 0 <= run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"] <= run["max_ms"]
    assert run["rss_kb_per_conn"] is not None
    assert "deliveries/s" in err  # the table goes to stderr with --json


def test_room_with_one_sender_checks_order(capsys: pytest.CaptureFixture[str]) -> None:
    """Clients joined to one room through their welcome's wsId receive every push,
    in order when a single sender pushes; the walk through the room's members (GET
    /rooms/{id}) lists each of them once."""
    status, runs, err = bench(
        capsys, "--scenario", "room", "-n", "50", "--pushes", "20", "--senders", "1", *SMALL
    )
    assert status == 0, err
    [run] = runs
    assert run["scenario"] == "room"
    assert run["members_paged"] == 50
    # The server's own latency (GET /metrics) is read beside the clients', and how many
    # frames its writes carried (one sender, pushes in turn: about one each).
    assert 0 < run["server_p50_ms"] <= run["server_p99_ms"]
    assert 1 <= run["frames_per_write"] < 2
    assert run["deliveries"] == 1000
    assert run["lost"] == run["duplicates"] == run["out_of_order"] == 0


async def test_the_walk_through_the_members_is_left_out_where_the_server_has_none() -> None:
    """pushgate before 0.3 answers GET /rooms/{id} with 404 (scripts/bench-versions
    measures 0.1.0): the room scenario goes on without the walk; any other answer
    still stops the run."""

    async def room(request: web.Request) -> web.Response:
        status = 404 if request.match_info["id"] == "old" else 500
        return web.json_response({"ok": False, "error": "no"}, status=status)

    app = web.Application()
    app.router.add_get("/rooms/{id}", room)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        [sock] = cast(Any, site._server).sockets
        api_url = f"http://{LOOPBACK}:{sock.getsockname()[1]}"
        ws_url = f"ws://{LOOPBACK}:1/connect"
        parser = argparse.ArgumentParser(prog="pushgate")
        add_bench_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["bench", "room", "--ws-url", ws_url, "--api-url", api_url])
        result = RunResult("room", 1)
        run = Run(
            options_from(args),
            ServerUnderTest([ws_url], api_url, []),
            cast(WorkerPool, None),  # not used by the walk
            Progress(enabled=False),
            result,
        )
        await run.page_members("old")
        assert result.members_paged is None
        assert result.members_page_s is None
        with pytest.raises(BenchError, match="HTTP 500"):
            await run.page_members("broken")
    finally:
        await runner.cleanup()


def test_rooms_delivers_each_push_to_its_room_only(capsys: pytest.CaptureFixture[str]) -> None:
    """rooms: 30 clients, each in its own room and a 10-member group; every push
    reaches exactly its room's members."""
    status, runs, err = bench(capsys, "rooms", "-n", "30", "--pushes", "60", *SMALL)
    assert status == 0, err
    [run] = runs
    # 30 pushes to group rooms (10 members each) and 30 to own rooms (1 member each).
    assert run["deliveries"] == run["expected"] == run["server_delivered"] == 30 * 10 + 30
    assert run["lost"] == 0


def test_churn_opens_and_closes_alongside_pushes(capsys: pytest.CaptureFixture[str]) -> None:
    """churn: the steady clients lose nothing while others come and go, from workers
    of their own."""
    status, runs, err = bench(
        capsys,
        "churn",
        "-n",
        "20",
        "--duration",
        "1",
        "--rate",
        "20",
        "--churn-rate",
        "20",
        "--churn-lifetime",
        "0.2",
        "--churn-workers",
        "1",
        *SMALL,
    )
    assert status == 0, err
    [run] = runs
    # The churn came from a worker of its own, whose CPU is told apart.
    assert run["churn_workers"] == 1
    assert run["churn_cpu_s"] >= 0
    # How long the server and the clients waited for a CPU is told (Linux keeps it).
    assert 0 <= run["server_waiting_pct"] <= 100
    assert 0 <= run["client_waiting_pct"] <= 100
    assert run["churn_opened"] > 0
    assert run["churn_closed"] == run["churn_opened"]
    assert run["churn_failed"] == 0
    assert run["deliveries"] == run["expected"] == 20 * run["pushes"]
    assert run["lost"] == 0


@pytest.mark.parametrize("client", ["pusher", "sse"])
@pytest.mark.parametrize("scenario", ["broadcast", "room"])
def test_other_protocols_clients_count_every_delivery(
    capsys: pytest.CaptureFixture[str], client: str, scenario: str
) -> None:
    """--client pusher and sse: 40 clients in the room (a Pusher channel, or a stream
    naming it) or receiving pushes to all get every push, in order, counted and
    timed as pushgate's clients are; the bench joins nobody by API."""
    status, runs, err = bench(
        capsys, scenario, "-n", "40", "--pushes", "30", "--senders", "1", "--client", client, *SMALL
    )
    assert status == 0, err
    [run] = runs
    assert (run["scenario"], run["client"]) == (scenario, client)
    assert run["connected"] == 40
    assert run["deliveries"] == run["expected"] == run["server_delivered"] == 40 * 30
    assert run["lost"] == run["duplicates"] == run["out_of_order"] == 0
    assert run["members_paged"] is None  # no joins by wsId, so no walk of the members
    assert run["server_cpu_us_per_delivery"] is not None
    assert 0 <= run["p50_ms"] <= run["p99_ms"]
    assert f"40 {client} connections" in err


def test_idle_streams_report_memory_per_connection(capsys: pytest.CaptureFixture[str]) -> None:
    """idle --client sse holds event streams and reports the server's RSS per stream."""
    status, runs, err = bench(
        capsys, "idle", "-n", "40", "--duration", "1", "--client", "sse", *SMALL
    )
    assert status == 0, err
    [run] = runs
    assert run["client"] == "sse"
    assert run["connected"] == 40
    assert run["rss_kb_per_conn"] is not None
    assert run["closed_by_server"] == {}


def test_idle_reports_memory_and_cpu_per_connection(capsys: pytest.CaptureFixture[str]) -> None:
    """idle pushes nothing and reports the server's RSS and CPU per connection."""
    status, runs, err = bench(capsys, "idle", "-n", "50", "--duration", "1", *SMALL)
    assert status == 0, err
    [run] = runs
    assert run["deliveries"] == run["pushes"] == run["lost"] == 0
    assert run["deliveries_per_s"] is None
    assert run["rss_kb_per_conn"] is not None
    # An idle server spends next to nothing (0 ticks here): under a tenth of a core,
    # where a loop that spins (a sweeper that never sleeps) would take all of one.
    assert run["idle_cpu_us_per_conn_s"] * 50 < 0.1e6
    assert run["closed_by_server"] == {}


def test_slow_clients_closed_by_the_server_account_for_the_losses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two clients that stop reading are closed with 1008 by the slow-client policy;
    the pushes they missed are counted as lost, on closed clients, by close code."""
    status, runs, err = bench(
        capsys,
        "broadcast",
        "-n",
        "10",
        "--pushes",
        "120",
        "--size",
        "64K",
        "--slow",
        "2",
        "--max-output-bytes",
        "64K",
        "--drain-timeout",
        "1",
        *SMALL,
    )
    assert status == 0, err  # the losses are explained: not an error
    [run] = runs
    assert run["closed_by_server"] == {"1008": 2}
    assert run["lost"] > 0
    assert run["lost"] == run["lost_on_closed"]
    assert run["deliveries"] == run["expected"] - run["lost"]
    assert "1008: 2" in err


def test_repeat_prints_one_object_per_run_and_a_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, runs, err = bench(
        capsys, "broadcast", "-n", "10", "--pushes", "5", "--repeat", "2", *SMALL
    )
    assert status == 0, err
    assert [run["deliveries"] for run in runs] == [50, 50]
    assert "median" in err
    assert "min-max" in err


@pytest.fixture
def external_server() -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """``pushgate serve`` started by the test, not by the bench."""
    process = subprocess.Popen(
        pushgate_command("serve", "--ws-host", LOOPBACK, "--ws-port", "0", "--api-port", "0"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert process.stderr is not None
        for _ in range(100):
            line = process.stderr.readline().decode()
            match = re.search(r"ws://[^:]+:(\d+)/connect, logic API http://[^:]+:(\d+)", line)
            if match or not line:
                break
        assert match, "the server did not start"
        yield process, int(match.group(1)), int(match.group(2))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15 * UNIT)
        if process.stderr is not None:
            process.stderr.close()


def test_external_server_is_measured_through_its_pid(
    capsys: pytest.CaptureFixture[str],
    external_server: tuple[subprocess.Popen[bytes], int, int],
) -> None:
    """--ws-url, --api-url and --server-pid measure a server the bench did not start,
    and leave it running."""
    process, ws_port, api_port = external_server
    status, runs, err = bench(
        capsys,
        "broadcast",
        "-n",
        "20",
        "--pushes",
        "10",
        "--ws-url",
        f"ws://{LOOPBACK}:{ws_port}/connect",
        "--api-url",
        f"http://{LOOPBACK}:{api_port}",
        "--server-pid",
        str(process.pid),
        *SMALL,
    )
    assert status == 0, err
    [run] = runs
    assert run["deliveries"] == 200
    assert run["lost"] == 0
    assert run["server_cpu_us_per_delivery"] is not None
    assert process.poll() is None


# The resume scenario (docs/recovery.md)

RESUME = ("resume", "--rate", "50", "--duration", "0.5")


def assert_ratio_of_rounded(ratio: float, numerator: float, denominator: float) -> None:
    """``ratio`` is ``numerator / denominator`` of the unrounded times, which the JSON
    gives in whole ms: a few ms each in these small runs, so the rounding alone can
    move the ratio by a tenth (the ratio itself rounded to 3 decimals too)."""
    low = (numerator - 0.0005) / (denominator + 0.0005)
    high = (numerator + 0.0005) / (denominator - 0.0005)
    assert low - 0.001 <= ratio <= high + 0.001, (ratio, numerator, denominator)


def check_resume(run: dict[str, Any], n: int) -> None:
    """Every client resumed, recovered and caught up; nothing lost, nothing twice."""
    assert run["scenario"] == "resume"
    assert run["connected"] == run["resumed"] == n
    assert run["resume_failed"] == run["not_recovered"] == run["not_caught_up"] == 0
    assert run["lost"] == run["duplicates"] == run["out_of_order"] == 0
    assert run["lost_not_recovered"] == run["gap_notices"] == 0
    assert run["pushes"] > 0
    assert run["deliveries"] == run["expected"] == n * run["pushes"]
    assert 0 < run["resume_s"] <= run["caught_up_s"]
    assert run["connect_s"] > 0
    assert_ratio_of_rounded(run["caught_up_vs_connect"], run["caught_up_s"], run["connect_s"])
    assert run["resume_p50_ms"] <= run["resume_p99_ms"]
    assert run["replayed"] <= run["deliveries"]
    if run["server_delivered"] is not None:  # one process: its answers count deliveries
        # Every push a client got that the server did not hand it live came in its
        # resume's replay (which may also hold a push the server handed the old
        # connection as the client dropped it).
        assert run["replayed"] >= run["deliveries"] - run["server_delivered"]
    # The server's CPU over the resumes (in clock ticks: a few here), per resume; the
    # workers' is exact, and their resumes cost them some.
    assert run["server_cpu_us_per_resume"] == pytest.approx(run["server_cpu_s"] * 1e6 / n)
    assert run["client_cpu_us_per_resume"] > 0
    assert run["errors"] == []


def test_resume_recovers_every_push_exactly_once(capsys: pytest.CaptureFixture[str]) -> None:
    """30 clients drop their connections at once and resume at once while pushes go
    on: every push reaches every client exactly once, and the table says so."""
    status, runs, err = bench(capsys, *RESUME, "-n", "30", *SMALL)
    assert status == 0, err
    [run] = runs
    check_resume(run, 30)
    for label in (
        "connect time s",
        "resumed",
        "resumed, recovered=false",
        "resume time s",
        "caught up time s",
        "caught up / connect time",
        "server CPU µs/resume",
        "duplicated",
        "lost",
    ):
        assert re.search(rf"^{re.escape(label)}  +\S", err, re.MULTILINE), label
    assert "pushgate bench resume: 30 connections over 2 workers" in err


def test_resume_replays_what_was_missed(capsys: pytest.CaptureFixture[str]) -> None:
    """Clients away for 0.3 s while 50 pushes/s go on miss some on both streams; the
    resume replays them: none lost, none twice."""
    status, runs, err = bench(
        capsys, *RESUME, "-n", "20", "--outage", "0.3", "--senders", "1", *SMALL
    )
    assert status == 0, err
    [run] = runs
    check_resume(run, 20)
    assert run["replayed"] >= 20 * 2  # at least one push per stream per client
    assert run["caught_up_s"] >= 0.3


RECONNECT = ("reconnect", *RESUME[1:])


@pytest.mark.parametrize(
    ("secret", "in_room", "title"),
    [([], 20, "into the room"), (["--token-secret", ""], 0, "in no room")],
)
def test_reconnect_measures_fresh_connects_under_the_same_pushes(
    capsys: pytest.CaptureFixture[str], secret: list[str], in_room: int, title: str
) -> None:
    """reconnect drops the same way as resume and reconnects afresh while the pushes
    go on: the baseline a resume storm is compared with. With a token (the bench
    makes up the secret of its own server) each client is back in the room; without,
    in none. Fresh sessions owe nothing, so no loss is counted, and the server needs
    no sessions for it."""
    status, runs, err = bench(
        capsys, *RECONNECT, "-n", "20", *secret, "--server-arg=--session-ttl=0", *SMALL
    )
    assert status == 0, err
    [run] = runs
    assert run["scenario"] == "reconnect"
    assert run["connected"] == run["reconnected"] == 20
    assert run["in_room"] == in_room
    assert run["reconnect_failed"] == 0
    assert run["reconnect_s"] > 0
    assert_ratio_of_rounded(run["reconnect_vs_connect"], run["reconnect_s"], run["connect_s"])
    # The server's CPU over the reconnects, in clock ticks (20 reconnects may cost it
    # under one), per reconnect; the workers' is exact.
    assert run["server_cpu_us_per_reconnect"] == pytest.approx(run["server_cpu_s"] * 1e6 / 20)
    assert run["client_cpu_us_per_reconnect"] > 0
    assert run["resumed"] is None
    assert run["caught_up_s"] is None
    assert run["pushes"] > 0
    assert run["errors"] == []
    said = f"reconnect: 20 connections over 2 workers drop and reconnect afresh {title} after"
    assert f"pushgate bench {said} 0.5 s of pushes" in err
    for label in ("reconnected afresh", "reconnect time s", "server CPU µs/reconnect"):
        assert re.search(rf"^{re.escape(label)}  +\S", err, re.MULTILINE), label
    assert not re.search(r"^lost  ", err, re.MULTILINE)  # nothing is owed, nothing counted


def test_resume_fresh_is_the_old_name_of_reconnect() -> None:
    """`resume --fresh`, as the benchmarks of before the reconnect scenario ran it,
    still runs reconnect (and says it is deprecated); elsewhere it is refused."""
    parser = argparse.ArgumentParser(prog="pushgate")
    add_bench_parser(parser.add_subparsers(dest="command"))
    opts = options_from(parser.parse_args(["bench", "resume", "--fresh"]))
    assert opts.scenario.name == "reconnect"
    assert opts.token_secret  # made up for its own server, as for reconnect
    with pytest.raises(BenchError, match="--fresh applies to resume only"):
        options_from(parser.parse_args(["bench", "room", "--fresh"]))


def test_resume_needs_sessions(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that gives no session cannot be measured resuming: the bench says so."""
    status, runs, err = bench(capsys, *RESUME, "-n", "5", "--server-arg=--session-ttl=0", *SMALL)
    assert status == 1
    assert runs == []
    assert "does not resume sessions" in err


REDIS_ARGS = ("--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning")
GATEWAY_READY = r"gateway ws://[^:]+:(\d+)/"
LOGIC_READY = r"logic API http://[^:]+:(\d+)"


@pytest.fixture
def external_cluster() -> Iterator[tuple[list[str], str, list[int]]]:
    """redis-server, two `pushgate gateway` and one `pushgate logic` on free loopback
    ports, started by the test as scripts/bench-cluster starts them: the gateway URLs,
    the logic API URL and the four pids."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.fail("redis-server is not installed: run scripts/test, which installs it")
    redis_port = free_port()
    broker = f"redis://{LOOPBACK}:{redis_port}/0"
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as work:
        logs = Path(work)

        def start(name: str, command: list[str]) -> None:
            with open(logs / f"{name}.log", "wb") as log:
                processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log))

        try:
            start(
                "redis",
                [redis_server, "--bind", LOOPBACK, "--port", str(redis_port), *REDIS_ARGS],
            )
            wait_for_port(redis_port)
            listen = {
                "gateway": ["--ws-host", LOOPBACK, "--ws-port", "0"],
                "logic": ["--api-host", LOOPBACK, "--api-port", "0"],
            }
            for name, role in (("g1", "gateway"), ("g2", "gateway"), ("logic", "logic")):
                start(name, pushgate_command(role, "--broker", broker, *listen[role]))
            gateway_ports = [
                ready_port(logs / f"{name}.log", GATEWAY_READY) for name in ("g1", "g2")
            ]
            ws_urls = [f"ws://{LOOPBACK}:{port}/connect" for port in gateway_ports]
            api_port = ready_port(logs / "logic.log", LOGIC_READY)
            yield ws_urls, f"http://{LOOPBACK}:{api_port}", [p.pid for p in processes]
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                try:
                    process.wait(15 * UNIT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_for_port(port: int) -> None:
    """Until something accepts connections on the loopback port (bounded)."""
    deadline = time.monotonic() + 10 * UNIT
    while True:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
            return
        assert time.monotonic() < deadline, f"nothing listens on port {port}"
        time.sleep(0.02)


def ready_port(log: Path, pattern: str) -> int:
    """The port a process logged in its ready line (bounded wait)."""
    deadline = time.monotonic() + 15 * UNIT
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            match = re.search(pattern, line)
            if " ready: " in line and match:
                return int(match.group(1))
        assert time.monotonic() < deadline, f"{log.name} has no ready line:\n{text}"
        time.sleep(0.05)


# Away for 0.3 s at 50 pushes/s: every client misses pushes on both streams, so every
# resume replays some (resuming at once, a quick client may have missed none).
OUTAGE = ("--outage", "0.3")


@pytest.mark.parametrize("resume_on", ["same", "other"])
def test_resume_on_a_two_gateway_cluster(
    capsys: pytest.CaptureFixture[str],
    external_cluster: tuple[list[str], str, list[int]],
    resume_on: str,
) -> None:
    """Against two gateways on Redis, each client resumes on its own gateway or on the
    other one: nothing lost, nothing twice; server CPU is read from all four processes."""
    ws_urls, api_url, pids = external_cluster
    status, runs, err = bench(
        capsys,
        *RESUME,
        "-n",
        "20",
        "--resume-on",
        resume_on,
        *OUTAGE,
        *(arg for url in ws_urls for arg in ("--ws-url", url)),
        "--api-url",
        api_url,
        *(arg for pid in pids for arg in ("--server-pid", str(pid))),
        *SMALL,
    )
    assert status == 0, err
    [run] = runs
    check_resume(run, 20)
    assert run["replayed"] >= 20 * 2  # at least one push per stream per client
    assert ("drop and resume on the next gateway" in err) == (resume_on == "other")


# The abuse scenario (issue 25)


def test_abuse_measures_the_honest_clients_quiet_then_under_every_attack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """10 honest clients, 2-second phases, every attack at a tiny size: both phases
    are measured and accounted on their own, /healthz and RSS are sampled in each,
    and every attacker opened its connections and reports what became of them.
    Whether the server withstands the attacks is the run's finding, not checked here;
    only that the exit status says whether honest clients lost pushes."""
    status, runs, err = bench(
        capsys,
        "abuse",
        "-n",
        "10",
        "--duration",
        "2",
        "--non-readers",
        "5",
        "--fat-handshakes",
        "5",
        "--drain-timeout",
        "1",
        *SMALL,
    )
    [run] = runs
    assert status == (3 if run["lost"] else 0), err
    assert run["scenario"] == "abuse"
    assert run["connected"] == 10
    assert run["attacks"] == ["ping", "fragments", "nonreaders", "handshakes"]
    # The quiet phase: nothing is attacking yet, so nothing may be missing.
    assert run["quiet_pushes"] > 0
    assert run["quiet_received"] == run["quiet_expected"] == 10 * run["quiet_pushes"]
    assert run["quiet_lost"] == 0
    assert 0 <= run["quiet_p50_ms"] <= run["quiet_p99_ms"] <= run["quiet_max_ms"]
    # The attacked phase was pushed to and accounted on its own: its clients are
    # owed its pushes, and counted only what arrived after the quiet phase.
    assert run["attacked_sent"] > 0
    assert run["attacked_expected"] == 10 * run["attacked_pushes"]
    assert run["attacked_received"] <= 10 * run["attacked_sent"]
    assert run["lost"] == run["quiet_lost"] + run["attacked_lost"]
    for port in ("gateway", "api"):
        for phase in ("quiet", "attacked"):
            assert run[f"{port}_health_{phase}_max_ms"] is not None, (port, phase)
    assert run["rss_attack_cost_mb"] == pytest.approx(
        run["rss_attack_peak_mb"] - run["rss_start_mb"], abs=0.01
    )
    assert run["rss_end_mb"] > 0
    # Every attacker opened, and says what became of its connections.
    attackers = run["attackers"]
    for flooder in ("ping", "fragments"):
        assert attackers[flooder]["opened"] is True, attackers[flooder]
        assert attackers[flooder]["frames"] > 0
    for crowd in ("nonreaders", "handshakes"):
        assert attackers[crowd]["opened"] == attackers[crowd]["count"] == 5, attackers[crowd]
        assert sum(attackers[crowd]["outcomes"].values()) == 5
    assert attackers["handshakes"]["bytes_sent"] > 0
    for label in ("latency p99 attacked/quiet", "ping flooder", "non-readers", "issue 25's bar"):
        assert re.search(rf"^{re.escape(label)}  +\S", err, re.MULTILINE), label


def parsed_by_a_server(data: bytes) -> list[Frame]:
    """The frames in ``data`` as websockets' reader parses client frames (unmasked)."""
    reader = StreamReader()
    reader.feed_data(data)
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=True)
        with pytest.raises(StopIteration) as stop:
            next(parser)
        frames.append(stop.value.value)
    return frames


def test_the_attackers_frames_are_masked_client_frames() -> None:
    """The attackers' hand-made frames are what a server accepts from a client:
    masked, with the payload and the fin bit they mean."""
    data = (
        masked_frame(OP_PING)
        + masked_frame(OP_TEXT, b"x" * 300, fin=False)
        + masked_frame(OP_CONT, fin=False)
    )
    frames = parsed_by_a_server(data)
    assert [(f.opcode, f.data, f.fin) for f in frames] == [
        (Opcode.PING, b"", True),
        (Opcode.TEXT, b"x" * 300, False),
        (Opcode.CONT, b"", False),
    ]


def test_the_close_scanner_finds_the_close_frame_however_the_reads_fall() -> None:
    """A flooder learns the server's close code from the stream it discards, whether
    the close frame arrives whole or a byte at a time, and is not fooled by a
    payload that holds a close frame's bytes."""
    decoy = bytes([0x88, 0x02, 0x03, 0xE8]) + b"x" * 300  # a close frame's bytes, as data
    stream = (
        server_frame(decoy)
        + Frame(Opcode.PONG, b"").serialize(mask=False)
        + Frame(Opcode.CLOSE, (1008).to_bytes(2, "big") + b"slow").serialize(mask=False)
    )
    assert CloseScanner().feed(stream) == 1008
    scanner = CloseScanner()
    codes = [scanner.feed(stream[i : i + 1]) for i in range(len(stream))]
    assert codes[-1] == 1008
    assert codes[:-1] == [None] * (len(stream) - 1)
    assert CloseScanner().feed(Frame(Opcode.CLOSE, b"").serialize(mask=False)) == 1005


# Refusals


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ws-url", "ws://10.1.2.3:8888/connect", "--api-url", "http://127.0.0.1:1"], "loopback"),
        (
            ["--ws-url", "ws://127.0.0.1:1/connect", "--api-url", "http://example.com:80"],
            "loopback",
        ),
        (["--api-url", "http://127.0.0.1:9999"], "--ws-url"),
        (["--connections", "0"], "--connections"),
        (["--duration", "100000"], "--duration"),
        (["--pushes", "5", "--duration", "5"], "not both"),
        (["idle", "--pushes", "5"], "--duration"),
        (["room", "--scenario", "broadcast"], "two scenarios"),
        (["--connections", "50000", "--workers", "1"], "--workers"),
        (["resume", "--slow", "2"], "--slow"),
        (["reconnect", "--slow", "2"], "reconnect drops every client"),
        (["broadcast", "--fresh"], "--fresh applies to resume only"),
        (["resume", "--outage", "100"], "--outage"),
        (["abuse", "--attacks", "ping,teleport"], "--attacks"),
        (["abuse", "--pushes", "5"], "--duration"),
        (["abuse", "--non-readers", "15001"], "--non-readers"),
        (["broadcast", "--fat-handshakes", "5"], "abuse only"),
        (["resume", "--client", "pusher"], "--client pusher runs broadcast, room, idle"),
        (["rooms", "--client", "sse"], "not rooms"),
        (["--client", "sse", "--client-ping", "5"], "no --client-ping"),
        (
            [
                *("--client", "pusher", "--ws-url", "ws://127.0.0.1:1/connect"),
                *("--api-url", "http://127.0.0.1:2"),
            ],
            "the bench's own server",
        ),
    ],
)
def test_refuses_what_it_cannot_do_safely(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, runs, err = bench(capsys, *argv)
    assert status == 2
    assert runs == []
    assert message in err


def test_an_unknown_client_protocol_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--client takes pushgate, pusher or sse; anything else is a usage error (2)."""
    with pytest.raises(SystemExit) as exited:
        bench(capsys, "broadcast", "--client", "socketio")
    assert exited.value.code == 2
    assert "invalid choice: 'socketio'" in capsys.readouterr().err
    with pytest.raises(BenchError, match="--client must be one of"):
        BenchOptions(scenario_named("room"), client="socketio").check(20_000)


def test_loopback_check_accepts_only_this_machine() -> None:
    for url in (
        "ws://127.0.0.1:1/connect",
        "ws://localhost:1/",
        "ws://[::1]:1/",
        "ws://127.9.9.9:1",
    ):
        check_url(url, ("ws",), "--ws-url")
    for url in ("ws://192.168.1.1:1/", "ws://0.0.0.0:1/", "ws://pushgate.example:1/"):
        with pytest.raises(BenchError, match="loopback"):
            check_url(url, ("ws",), "--ws-url")


# Accounting, with synthetic data


def test_losses_are_the_shortfall_of_each_client() -> None:
    """A client that got fewer pushes than it should have lost the difference; one
    that got more counts as duplicates; one never reported lost everything."""
    expected = {0: 10, 1: 10, 2: 10, 3: 10}
    losses = account(
        expected,
        [ClientCount(0, 10), ClientCount(1, 7), ClientCount(2, 12, out_of_order=1)],
    )
    assert losses.expected == 40
    assert losses.received == 29
    assert losses.lost == 3 + 10
    assert losses.lost_on_closed == 0
    assert losses.duplicates == 2
    assert losses.out_of_order == 1
    assert losses.closed_by_server == {}


def test_losses_on_clients_the_server_closed_are_told_apart() -> None:
    expected = {0: 100, 1: 100, 2: 100}
    losses = account(
        expected,
        [
            ClientCount(0, 100),
            ClientCount(1, 40, close_code=1008),
            ClientCount(2, 90, close_code=1006),
        ],
    )
    assert losses.lost == 70
    assert losses.lost_on_closed == 70
    assert losses.closed_by_server == {1006: 1, 1008: 1}


def test_rooms_plan_spreads_pushes_and_expects_per_room() -> None:
    """In rooms, each client is in its own room and a 10-member group; pushes
    alternate between group rooms and own rooms."""
    plan = Plan(scenario_named("rooms"), range(25))
    joins = plan.joins()
    assert len(joins) == 50
    assert {("c7", 7), ("g0", 7), ("g2", 24)} <= set(joins)
    targets = [plan.target(seq) for seq in range(8)]
    assert targets == ["g0", "c0", "g1", "c1", "g2", "c2", "g0", "c3"]
    accepted = {"g0": 2, "g1": 1, "c0": 1, "c3": 1}
    expected = plan.expected(accepted)
    assert expected[0] == 3  # g0 twice and c0 once
    assert expected[3] == 3  # g0 twice and c3 once
    assert expected[12] == 1  # g1
    assert expected[24] == 0


def test_broadcast_plan_sends_everything_to_all() -> None:
    plan = Plan(scenario_named("broadcast"), [3, 1, 2])
    assert plan.joins() == []
    assert plan.target(5) == ALL
    assert plan.expected({ALL: 4}) == {1: 4, 2: 4, 3: 4}


def test_server_latency_is_read_from_the_metrics_text() -> None:
    """Bucket counts between two scrapes; quantiles linear within a bucket."""
    before = LatencyBuckets.parse(
        'pushgate_delivery_latency_seconds_bucket{le="0.01"} 10.0\n'
        'pushgate_delivery_latency_seconds_bucket{le="0.02"} 10.0\n'
        'pushgate_delivery_latency_seconds_bucket{le="+Inf"} 10.0\n'
    )
    after = LatencyBuckets.parse(
        "# HELP whatever\n"
        'pushgate_delivery_latency_seconds_bucket{le="0.01"} 60.0\n'
        'pushgate_delivery_latency_seconds_bucket{le="0.02"} 110.0\n'
        'pushgate_delivery_latency_seconds_bucket{le="+Inf"} 110.0\n'
    )
    assert before is not None
    assert after is not None
    run = after.since(before)
    assert run.counts == (50.0, 100.0, 100.0)
    assert run.quantile(0.5) == pytest.approx(0.01)
    assert run.quantile(0.75) == pytest.approx(0.015)
    assert LatencyBuckets.parse("nothing here") is None


def test_histogram_percentiles_within_its_precision() -> None:
    hist = Histogram()
    for value in range(1, 10_001):
        hist.add(value)
    assert hist.total == 10_000
    for fraction in (0.5, 0.95, 0.99):
        p = hist.percentile(fraction)
        assert p is not None
        assert abs(p - fraction * 10_000) <= fraction * 10_000 / 64 + 1
    merged = Histogram.from_pairs(hist.to_pairs())
    merged.merge(hist)
    assert merged.total == 20_000
    assert [bucket(v) for v in (100, 1000, 1001, 1007, 1008)] == [100, 1000, 1000, 1000, 1008]
    assert Histogram().percentile(0.5) is None


def test_table_shows_medians_and_spread() -> None:
    runs = [RunResult("room", 10, deliveries=d, deliveries_per_s=float(d)) for d in (10, 30, 20)]
    text = table(runs, "title")
    row = next(line for line in text.splitlines() if line.startswith("deliveries/s"))
    assert row.split()[-2:] == ["20", "10-30"]


def test_table_shows_the_resume_rows_for_resume_only() -> None:
    resume = RunResult("resume", 10, resumed=10, caught_up_s=1.5, connect_s=1.0)
    resume.caught_up_vs_connect = 1.5
    text = table([resume], "title")
    assert re.search(r"^caught up / connect time +1\.50$", text, re.MULTILINE)
    assert re.search(r"^duplicated +0$", text, re.MULTILINE)
    assert "resumed" not in table([RunResult("room", 10, deliveries=5)], "title")
    assert "duplicated" not in table([RunResult("room", 10, deliveries=5)], "title")


def test_resume_paces_its_pushes_by_default() -> None:
    parser = argparse.ArgumentParser(prog="pushgate")
    add_bench_parser(parser.add_subparsers(dest="command"))
    assert options_from(parser.parse_args(["bench", "resume"])).rate == 5.0
    assert options_from(parser.parse_args(["bench", "room"])).rate == 0.0
    assert options_from(parser.parse_args(["bench", "resume", "--rate", "0"])).rate == 0.0


def test_defaults_are_bounded() -> None:
    """Without --pushes or --duration each scenario still has a bound."""
    for name in ("broadcast", "room", "rooms", "idle", "churn", "resume", "reconnect", "abuse"):
        opts = BenchOptions(scenario_named(name))
        assert (opts.push_count is not None) != (opts.push_duration is not None)
        assert opts.worker_count >= 2


def test_worker_module_runs_as_a_script() -> None:
    """The worker answers hello and quits on its stdin's end, as the bench relies on."""
    process = subprocess.run(
        [sys.executable, "-m", "pushgate.bench.worker"],
        input=b'{"id":1,"cmd":"hello"}\n',
        capture_output=True,
        timeout=30 * UNIT,
        env={**os.environ},
        check=True,
    )
    reply = json.loads(process.stdout)
    assert reply["id"] == 1
    assert reply["fd_limit"] > 0


# The resume scenario's parts, with synthetic data


@pytest.mark.parametrize("name", ["resume", "reconnect"])
def test_the_drop_plans_alternate_between_the_room_and_all(name: str) -> None:
    plan = Plan(scenario_named(name), [2, 0, 1])
    assert plan.joins() == [(ROOM, 0), (ROOM, 1), (ROOM, 2)]
    assert [plan.target(seq) for seq in range(4)] == [ROOM, ALL, ROOM, ALL]
    assert plan.expected({ROOM: 2, ALL: 1}) == {0: 3, 1: 3, 2: 3}
    assert (stream_of(ROOM), stream_of(ALL)) == ("room:bench", "all")


def test_stream_keys_and_the_resume_path() -> None:
    assert stream_key("room:bench") == b'room":"bench'
    assert stream_key("all") == b"all"
    for name in ("all", "room:a:b", "user:alice"):
        assert stream_name(stream_key(name)) == name
    assert resume_path("/connect") == "/connect?resume=1"
    assert resume_path("/connect?token=t") == "/connect?token=t&resume=1"


def test_tally_tells_gaps_late_pushes_and_duplicates_apart() -> None:
    tally = Tally(b"e1", 5)
    for seq in (6, 7, 9, 10):  # 8 is missing
        tally.add(seq, b"e1")
    # [first, last, received, missing, dups, late, epoch_changes]
    assert tally.count().to_row() == [5, 10, 5, 1, 0, 0, 0]
    tally.add(8, b"e1")  # late: fills the gap
    tally.add(9, b"e1")  # received twice
    tally.add(3, b"e1")  # before the first: late, and 4 is missing
    assert tally.count().to_row() == [3, 10, 7, 1, 1, 2, 0]
    tally.add(1, b"e2")  # the stream's history was lost: numbering starts again
    assert tally.count() == StreamCount(1, 1, 8, 0, dups=1, late=2, epoch_changes=1)


def test_stream_losses_are_counted_per_client_and_stream() -> None:
    """Each stream's pushes are as many seqs as were accepted, from the lowest any
    client received; a client lost those it does not have, and losses the server
    owned up to (recovered false) or on clients it closed are told apart."""
    accepted = {"all": 5, "room:bench": 4}
    clients = [
        ClientStreams(0, {"all": StreamCount(11, 15, 5, 0), "room:bench": StreamCount(1, 4, 4, 0)}),
        ClientStreams(  # missed all's first push, and one in the room; two twice
            1,
            {
                "all": StreamCount(12, 15, 4, 0, dups=2),
                "room:bench": StreamCount(1, 4, 3, 1, late=1),
            },
        ),
        ClientStreams(  # all's last two, not recovered; nothing from the room
            2, {"all": StreamCount(11, 13, 3, 0)}, unrecovered=frozenset({"all"})
        ),
        ClientStreams(  # closed by the server before the room's last push
            3,
            {"all": StreamCount(11, 15, 5, 0), "room:bench": StreamCount(1, 3, 3, 0)},
            close_code=1008,
        ),
    ]
    losses = account_streams(accepted, [0, 1, 2, 3, 4], clients)  # 4 never reported
    assert losses.expected == 5 * 9
    assert losses.received == 9 + 7 + 3 + 8
    assert losses.lost == 0 + 2 + (2 + 4) + 1 + 9
    assert losses.lost_not_recovered == 2
    assert losses.lost_on_closed == 1
    assert losses.duplicates == 2
    assert losses.out_of_order == 1
    assert losses.closed_by_server == {1008: 1}


class FakeTransport:
    """What a BenchClient writes, kept."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def server_frame(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def push_frame(seq: int, keys: bytes = b"", epoch: bytes = b"e1") -> bytes:
    """A push as pushgate frames it: the bench's data, then the stream's keys."""
    data = b'"%d 7 xxxx"' % time.time_ns()
    return server_frame(
        b'{"type":2,"data":%s%s,"seq":%d,"epoch":"%s"}\n' % (data, keys, seq, epoch)
    )


async def test_clients_count_pushes_off_the_fast_path_too() -> None:
    """A push whose keys come in another order, or that is fragmented, is decoded as
    JSON and counted as the fast path would: by the bench's seq, or by position."""
    push = b'{"type":2,"seq":4,"epoch":"e1","room":"bench","data":"%d 9 x"}' % time.time_ns()
    first = Frame(Opcode.TEXT, push[:20], fin=False).serialize(mask=False)
    rest = Frame(Opcode.CONT, push[20:]).serialize(mask=False)
    welcome = server_frame(b'{"type":0,"data":{"wsId":"W","heartbeat":10,"session":"S"}}')
    plain = BenchClient(0, "127.0.0.1:1", "/connect", Counters(), need_welcome=True)
    resuming = ResumeClient(1, "127.0.0.1:1", "/connect", Counters())
    for client in (plain, resuming):
        client.transport = cast(asyncio.Transport, FakeTransport())
        client._handshaking = False  # past the 101
        client.data_received(welcome + server_frame(push) + first + rest)
    assert (plain.ws_id, plain.heartbeat, plain.received, plain.last_seq) == ("W", 10.0, 2, 9)
    assert plain.out_of_order == 1  # the bench's seq 9 twice
    assert plain.opened.done()
    assert resuming.session == "S"
    assert resuming.streams[b'room":"bench'].count() == StreamCount(4, 4, 1, 0, dups=1)


async def test_pusher_client_subscribes_then_counts_its_channels_pushes() -> None:
    """A Pusher client keeps its socket_id, subscribes to its channel, is open once
    the subscription succeeded, answers pusher:ping, and counts a pushgate:push by
    the bench's val in its data string, in one read or cut anywhere."""
    client = PusherClient(0, "127.0.0.1:1", "/app/k?protocol=7", Counters(), channel="bench")
    transport = FakeTransport()
    client.transport = cast(asyncio.Transport, transport)
    client._handshaking = False  # past the 101
    established = b'{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"1.2\\"}"}'
    client.data_received(server_frame(established))
    assert client.ws_id == "1.2"
    assert not client.opened.done()
    [subscribe] = transport.written
    assert json.loads(unmask(subscribe)) == {
        "event": "pusher:subscribe",
        "data": {"channel": "bench"},
    }
    succeeded = b'{"event":"pusher_internal:subscription_succeeded","channel":"bench","data":"{}"}'
    pushes = b"".join(
        server_frame(
            b'{"event":"pushgate:push","channel":"bench","data":"%d %d xxxx"}'
            % (time.time_ns(), seq)
        )
        for seq in range(3)
    )
    stream = server_frame(succeeded) + pushes + server_frame(b'{"event":"pusher:ping"}')
    for i in range(0, len(stream), 7):
        client.data_received(stream[i : i + 7])
    assert client.opened.done()
    assert (client.received, client.last_seq, client.out_of_order) == (3, 2, 0)
    assert json.loads(unmask(transport.written[-1])) == {"event": "pusher:pong", "data": {}}


async def test_pusher_client_without_a_channel_is_open_once_established() -> None:
    """For pushes to all a Pusher client subscribes to nothing; a push without a
    channel is counted; a pusher:error before it opened fails its opening."""
    client = PusherClient(0, "127.0.0.1:1", "/app/k?protocol=7", Counters(), channel=None)
    client.transport = cast(asyncio.Transport, FakeTransport())
    client._handshaking = False
    established = b'{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"3.4\\"}"}'
    push = b'{"event":"pushgate:push","data":"%d 5 xx"}' % time.time_ns()
    client.data_received(server_frame(established) + server_frame(push))
    assert client.opened.done()
    assert client.transport.written == []  # type: ignore[attr-defined]
    assert (client.received, client.last_seq) == (1, 5)
    refused = PusherClient(1, "127.0.0.1:1", "/app/x?protocol=7", Counters(), channel="bench")
    refused.transport = cast(asyncio.Transport, FakeTransport())
    refused._handshaking = False
    error = b'{"event":"pusher:error","data":{"code":4001,"message":"App key not in this cluster"}}'
    refused.data_received(server_frame(error))
    with pytest.raises(HandshakeError, match="4001"):
        await refused.opened


async def test_sse_client_reads_events_however_the_reads_fall() -> None:
    """A stream client checks the 200, opens with pushgate:open (its wsId), counts
    each push by the bench's val in its data: line's JSON, skips comments and
    pushgate:lost, and keeps the code of a pushgate:close."""
    counters = Counters()
    client = SseClient(0, "127.0.0.1:1", "/events?room=bench", counters)
    transport = FakeTransport()
    client.connection_made(cast(asyncio.Transport, transport))
    assert transport.written[0].startswith(b"GET /events?room=bench HTTP/1.1\r\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    opened = b'id: f/e:0,e:0\nevent: pushgate:open\ndata: {"wsId":"W","resumed":false}\n\n'
    pushes = b"".join(
        b'id: f/e:0,e:%d\ndata: {"type":2,"data":"%d %d xx","room":"bench","seq":%d}\n\n'
        % (seq + 1, time.time_ns(), seq, seq + 1)
        for seq in range(4)
    )
    lost = b'event: pushgate:lost\ndata: {"recovered":false,"streams":{}}\n\n'
    closed = b'event: pushgate:close\ndata: {"code":1001,"reason":"going away"}\n\n'
    stream = head + opened + pushes + b": ping\n\n" + lost + closed
    for i in range(0, len(stream), 5):
        client.data_received(stream[i : i + 5])
    assert client.opened.done()
    assert client.ws_id == "W"
    assert counters.open == 1
    assert (client.received, client.last_seq, client.out_of_order) == (4, 3, 0)
    assert counters.deliveries == 4
    assert client.close_code == 1001
    refused = SseClient(1, "127.0.0.1:1", "/events?room=x", Counters())
    refused.connection_made(cast(asyncio.Transport, FakeTransport()))
    refused.data_received(b"HTTP/1.1 403 Forbidden\r\n\r\nnot a public room\n")
    with pytest.raises(HandshakeError, match=r"403 Forbidden.*not a public room"):
        await refused.opened


def test_client_kinds_name_their_room_path_and_server_options() -> None:
    """pushgate's clients are joined by API to the room; a Pusher client subscribes
    to the channel of its app's room; a stream names pushgate's room in its URL."""
    pushgate, pusher, sse = (ClientKind(name) for name in ("pushgate", "pusher", "sse"))
    assert (pushgate.room, pushgate.joins_by_api, pushgate.path("/connect", True)) == (
        ROOM,
        True,
        "/connect",
    )
    assert pusher.room == f"bench:{ROOM}"
    assert not pusher.joins_by_api
    assert pusher.path("/connect", True) == "/app/bench-key?protocol=7"
    assert pusher.server_args("s" * 16) == ["--pusher-app", "bench:bench-key:" + "s" * 16]
    assert (sse.path("/connect", True), sse.path("/connect", False)) == (
        f"/events?room={ROOM}",
        "/events",
    )
    assert sse.server_args("unused") == ["--namespaces", "=public"]
    plan = Plan(scenario_named("room"), [0, 1], room=pusher.room, joined_by_api=False)
    assert plan.joins() == []
    assert plan.target(0) == pusher.room
    assert plan.expected({pusher.room: 3}) == {0: 3, 1: 3}


def unmask(frame: bytes) -> bytes:
    """The payload of one masked client frame."""
    length, offset = frame[1] & 0x7F, 2
    if length == 126:
        length, offset = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(frame[2:10], "big"), 10
    mask, body = frame[offset : offset + 4], frame[offset + 4 : offset + 4 + length]
    return bytes(b ^ mask[i % 4] for i, b in enumerate(body))


async def test_resume_client_counts_streams_and_resumes_from_its_positions() -> None:
    """The lean resume client reads each push's stream and position without decoding
    its JSON, and resumes with the last position of every stream."""
    counters = Counters()
    client = ResumeClient(0, "127.0.0.1:1", "/connect", counters)
    client.transport = cast(asyncio.Transport, FakeTransport())
    client._handshaking = False  # past the 101
    room, user = b',"room":"bench"', b',"user":"alice"'
    welcome = b'{"type":0,"data":{"wsId":"W","heartbeat":10,"session":"S","resumed":false}}\n'
    frames = b"".join(
        [
            server_frame(welcome),
            push_frame(1),
            push_frame(1, room),
            push_frame(2),
            push_frame(2, room),
            push_frame(2),  # again
            push_frame(4, user),
        ]
    )
    client.data_received(frames[:70])  # reads need not end at a frame's end
    client.data_received(frames[70:])
    assert (client.ws_id, client.session) == ("W", "S")
    assert client.opened.done()
    assert {stream_name(k): t.count().to_row() for k, t in client.streams.items()} == {
        "all": [1, 2, 2, 0, 1, 0, 0],
        "room:bench": [1, 2, 2, 0, 0, 0, 0],
        "user:alice": [4, 4, 1, 0, 0, 0, 0],
    }
    assert counters.deliveries == client.received == 6
    counters.arrivals = {}  # the drop: arrivals are recorded from now on
    client.data_received(push_frame(3))
    assert list(counters.arrivals) == [b"all"]
    assert list(counters.arrivals[b"all"]) == [3]
    client.drop()

    transport = FakeTransport()
    resumed = ResumeClient(0, "127.0.0.1:1", resume_path("/connect"), counters, previous=client)
    resumed.connection_made(cast(asyncio.BaseTransport, transport))
    assert transport.written[0].startswith(b"GET /connect?resume=1 HTTP/1.1\r\n")
    accept = base64.b64encode(hashlib.sha1(resumed.key + GUID).digest())
    resumed.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    assert json.loads(unmask(transport.written[-1])) == {
        "type": 0,
        "data": {
            "wsId": "W",
            "session": "S",
            "since": {"all": ["e1", 3], "room:bench": ["e1", 2], "user:alice": ["e1", 4]},
        },
    }
    assert not resumed.opened.done()
    streams = {
        "all": {"recovered": True, "epoch": "e1", "seq": 4},
        "room:bench": {"recovered": False, "epoch": "e1", "seq": 9},
    }
    data = {"wsId": "W", "heartbeat": 10, "session": "S", "resumed": True, "streams": streams}
    resumed.data_received(
        server_frame(json.dumps({"type": 0, "data": data}).encode()) + push_frame(4)
    )
    assert resumed.opened.done()
    assert resumed.welcome_resumed
    assert resumed.unrecovered == {"room:bench"}
    assert resumed.streams is client.streams
    assert client.streams[b"all"].last == 4
    assert resumed.caught_up([(b"all", "all", 4)])
    assert not resumed.caught_up([(b"all", "all", 5)])
    assert not resumed.caught_up([(b'room":"bench', "room:bench", 9)])


# The bench's own frame walk, and what the workers answer


def test_the_frame_walk_finds_every_frame_however_the_reads_fall() -> None:
    """Short, 16-bit and 64-bit lengths, and a masked frame, whose payload starts
    after its mask; a frame cut short is yielded with its end past the read, and a
    header cut short not at all, so a reader keeps both for the next read."""
    payloads = [b"a" * 5, b"b" * 300, b"c" * 70_000]
    frames = [server_frame(p) for p in payloads] + [masked_frame(OP_TEXT, b"d" * 3)]
    stream = b"".join(frames)
    spans = list(frame_spans(stream))
    assert [stream[start:end] for _, _, start, end in spans[:3]] == payloads
    assert [(b0, b1) for b0, b1, _, _ in spans] == [
        (0x81, 5),
        (0x81, 126),
        (0x81, 127),
        (0x81, 0x83),
    ]
    assert [end for _, _, _, end in spans] == [7, 311, 70_321, 70_330]  # each the next's start
    assert spans[3][2] == 70_321 + 6  # after the mask
    cut = stream[: 7 + 4 + 100]  # the second frame's header and 100 of its 300 bytes
    assert list(frame_spans(cut)) == [(0x81, 5, 2, 7), (0x81, 126, 11, 311)]
    assert list(frame_spans(stream[: 7 + 3])) == [(0x81, 5, 2, 7)]  # its length half there


def test_worker_replies_read_back_as_sent() -> None:
    """A reply crosses the pipe as JSON, client rows as arrays, and reads back equal."""
    report = Report(
        cpu_s=1.5,
        deliveries=3,
        last_ns=10,
        hist=[[100, 3]],
        clients=[ClientCount(0, 2), ClientCount(1, 1, 1, 1008)],
        streams=[ClientStreams(0, {"all": StreamCount(1, 2, 2, 0)}, frozenset({"all"}), None, 1)],
        duplicated=[Duplicated(0, "all", [2], ["e1", 1], {"seq": 2}, "127.0.0.1:1")],
        unpositioned=4,
    )
    data = json.loads(json.dumps({"id": 7, **report.to_json()}))
    assert data["clients"] == [[0, 2, 0, None], [1, 1, 1, 1008]]
    assert Report.from_json(data) == report
    assert report.latency_hist.total == 3
    connected = Connected([0, 1], 0, {}, 0.5, [], {0: "w0", 1: "w1"}, 2)
    assert Connected.from_json(json.loads(json.dumps(connected.to_json()))) == connected


# The chat scenario: clients that subscribe, publish and hear presence


CHAT = ("chat", "--room-size", "10", "--duration", "1", "--rate", "2")


def check_chat(run: dict[str, Any], n: int, room_size: int) -> None:
    """Every position of every room's stream accounted for, the joins each member
    heard checked, the same messages through the API, a resume storm without a
    presence event; accounting only, never timings."""
    rooms = -(-n // room_size)
    assert run["scenario"] == "chat"
    assert run["connected"] == run["subscribed"] == n
    assert (run["rooms"], run["room_size"]) == (rooms, room_size)
    assert run["subscribe_refused"] == run["subscribe_unanswered"] == 0
    assert 0 < run["sub_p50_ms"] <= run["sub_p99_ms"] <= run["sub_max_ms"]
    # Joins: its own and every later one, and some heard early; whatever the order,
    # at least R(R+1)/2 a room; every member known once.
    assert run["joins_wrong"] == run["roster_wrong"] == run["no_own_join"] == 0
    assert run["joins_received"] == run["joins_expected"] + run["joins_early"]
    assert run["joins_received"] >= expected_joins([room_size] * rooms)
    assert run["subscribe_lost"] == 0
    # Each member published --rate messages a second for --duration seconds; each
    # reached the other members of its room.
    assert run["published"] == run["publish_ok"] == n * 2
    assert run["publish_refused"] == run["publish_unanswered"] == 0
    assert run["msg_deliveries"] == run["msg_expected"] == run["publish_ok"] * (room_size - 1)
    # The same messages through the API, each leaving its sender out: the same deliveries.
    assert run["api_pushes"] == run["publish_ok"]
    assert run["api_push_errors"] == 0
    assert run["api_deliveries"] == run["api_expected"] == run["msg_deliveries"]
    assert run["cpu_ratio"] == pytest.approx(
        run["msg_server_cpu_us_per_delivery"] / run["api_server_cpu_us_per_delivery"], rel=0.01
    )
    # The resume storm: everyone back, caught up, and not a presence event.
    assert run["resumed"] == n
    assert run["resume_failed"] == run["not_recovered"] == run["not_caught_up"] == 0
    assert run["presence_on_resume"] == run["leaves"] == 0
    # The API's pushes while resuming (each leaving one member out), then one to
    # each room for all its members once everyone was back.
    assert run["storm_pushes"] > rooms
    assert run["storm_deliveries"] == run["storm_expected"]
    assert run["storm_deliveries"] == (run["storm_pushes"] - rooms) * (room_size - 1) + n
    assert run["presence_by_phase"]["subscribe"][0] == run["joins_received"]
    # Nothing lost, nothing twice, no position unaccounted for.
    for key in ("msg_lost", "api_lost", "storm_lost", "lost", "duplicates", "extra_positions"):
        assert run[key] == 0, key
    assert run["epoch_changes"] == run["unpositioned"] == run["gap_notices"] == 0
    assert run["goals"]["presence on resume"] is True
    assert set(run["goals"]) == {"subscribe p99", "cpu ratio", "presence on resume"}
    assert run["errors"] == []


def test_chat_accounts_for_every_position_join_and_resume(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """40 clients in 4 rooms of 10 subscribe themselves, publish 2 messages a second
    for a second, the same messages go through the API, and everyone resumes."""
    status, runs, err = bench(capsys, *CHAT, "-n", "40", *SMALL)
    assert status == 0, err
    [run] = runs
    check_chat(run, 40, 10)
    for label in (
        "subscribe: p99 ms",
        "subscribe: joins heard",
        "messages: server CPU µs/delivery",
        "API: server CPU µs/delivery",
        "CPU/delivery, messages / API",
        "resume: presence events",
        "resume: lost",
    ):
        assert re.search(rf"^{re.escape(label)}  +\S", err, re.MULTILINE), label
    assert re.search(r"^goals +subscribe p99 .* presence events on resume 0 = 0: met$", err, re.M)
    # The ratio's goal line says what the messages were weighed against.
    assert re.search(
        r"message/API CPU per delivery .*\(API pushes ~10 to a POST /push/batch\)", err
    )
    assert "pushgate bench chat: 40 connections over 2 workers in rooms of 10" in err


def test_chat_subscribes_all_at_once_in_uneven_rooms(capsys: pytest.CaptureFixture[str]) -> None:
    """All subscribes at once, the last room short of members: the joins of
    concurrent subscribes, counted right; and no push while resuming, so that the
    last positions of a room may be a member's own messages, which it is never sent:
    it catches up all the same. The API's copies go one POST /push/room each."""
    status, runs, err = bench(
        capsys,
        *CHAT,
        "-n",
        "25",
        "--subscribe-rate",
        "0",
        "--resume-rate",
        "0",
        "--api-push",
        "room",
        *SMALL,
    )
    assert status == 0, err
    [run] = runs
    assert run["api_push"] == "room"
    assert run["api_pushes"] == run["api_batches"] == run["publish_ok"]  # a request each
    assert run["api_push_errors"] == run["api_lost"] == 0
    assert run["api_deliveries"] == run["api_expected"] == run["msg_deliveries"]
    assert re.search(r"^API pushes +room$", err, re.MULTILINE)
    assert "(API pushes one POST /push/room each)" in err
    assert run["rooms"] == 3
    assert run["joins_wrong"] == run["roster_wrong"] == 0
    assert run["joins_received"] >= expected_joins([10, 10, 5])
    assert run["storm_pushes"] == 3  # one to each room once everyone was back
    assert run["storm_deliveries"] == 25
    assert run["resumed"] == 25
    assert run["presence_on_resume"] == run["lost"] == run["duplicates"] == 0


@pytest.fixture
def chat_cluster() -> Iterator[tuple[list[str], str, list[int], str]]:
    """As external_cluster, with the gateways chat needs: --namespaces and a token
    secret (as scripts/bench-cluster starts them for chat). Also the secret."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.fail("redis-server is not installed: run scripts/test, which installs it")
    redis_port = free_port()
    broker = f"redis://{LOOPBACK}:{redis_port}/0"
    secret = "a-chat-bench-secret-of-32-bytes-x"
    env = {**os.environ, "PUSHGATE_NAMESPACES": "chat=public+publish+presence"}
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as work:
        logs = Path(work)

        def start(name: str, command: list[str]) -> None:
            with open(logs / f"{name}.log", "wb") as log:
                processes.append(
                    subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
                )

        try:
            start(
                "redis",
                [redis_server, "--bind", LOOPBACK, "--port", str(redis_port), *REDIS_ARGS],
            )
            wait_for_port(redis_port)
            listen = ["--ws-host", LOOPBACK, "--ws-port", "0"]
            for name in ("g1", "g2"):
                start(
                    name,
                    pushgate_command(
                        "gateway", "--broker", broker, *listen, "--token-secret", secret
                    ),
                )
            start(
                "logic",
                pushgate_command(
                    "logic", "--broker", broker, "--api-host", LOOPBACK, "--api-port", "0"
                ),
            )
            ports = [ready_port(logs / f"{name}.log", GATEWAY_READY) for name in ("g1", "g2")]
            api_port = ready_port(logs / "logic.log", LOGIC_READY)
            yield (
                [f"ws://{LOOPBACK}:{port}/connect" for port in ports],
                f"http://{LOOPBACK}:{api_port}",
                [p.pid for p in processes],
                secret,
            )
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                try:
                    process.wait(15 * UNIT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def test_chat_on_a_two_gateway_cluster(
    capsys: pytest.CaptureFixture[str],
    chat_cluster: tuple[list[str], str, list[int], str],
) -> None:
    """Against two gateways on Redis (rooms spread over both, presence kept in Redis),
    each client resuming on the other gateway, twice against the same servers (each
    run's rooms and users its own): the same accounting."""
    ws_urls, api_url, pids, secret = chat_cluster
    status, runs, err = bench(
        capsys,
        *CHAT,
        "-n",
        "20",
        "--resume-on",
        "other",
        "--repeat",
        "2",
        *(arg for url in ws_urls for arg in ("--ws-url", url)),
        "--api-url",
        api_url,
        *(arg for pid in pids for arg in ("--server-pid", str(pid))),
        "--token-secret",
        secret,
        *SMALL,
    )
    assert status == 0, err
    assert len(runs) == 2
    for run in runs:
        check_chat(run, 20, 10)


def chat_row(index: int, room: str, own_join: int, position: int, **counts: Any) -> ChatRow:
    fields: dict[str, Any] = {
        "received": 0,
        "last": -1,
        "dups": 0,
        "epoch_changes": 0,
        "published_ok": 0,
        "joins": 0,
        "joins_after_position": 0,
        "roster": 1,
        "joins_after_roster": 0,
        "leaves": 0,
        "close_code": None,
        "unrecovered": False,
        **counts,
    }
    return ChatRow(index, room, own_join, position, **fields)


def test_chat_losses_are_counted_by_position_per_member() -> None:
    """Room r: three members joined at 1, 2, 3; 0 published 2 messages, the API
    pushed 3 (one leaving out 1): positions 1-8. Each member is owed what came after
    its subscription's position, but its own messages and the pushes leaving it out."""
    rows = [
        # owed 8 - 1 - 2 = 5 (joins 2, 3; a push excluding 1... and 3 pushes, less 0's own)
        chat_row(0, "r", 1, 1, received=5, last=8, published_ok=2),
        # owed 8 - 2 - 1 = 5, received 4: one lost
        chat_row(1, "r", 2, 2, received=4, last=8),
        # owed 8 - 3 = 5, received 5, one of them twice; the server closed it
        chat_row(2, "r", 3, 3, received=5, last=8, dups=1, close_code=1006),
        # not a member: its subscribe was refused
        chat_row(3, "r", -1, -1, received=0, last=-1),
    ]
    losses = account_chat(rows, excluded={1: 1}, pushed={"r": 3})
    assert (losses.expected, losses.received, losses.lost) == (15, 14, 1)
    assert (losses.lost_on_closed, losses.duplicates, losses.extra) == (0, 1, 0)
    # The stream's last push reached nobody: the plan still counts it.
    short = [chat_row(0, "r", 1, 1, received=2, last=3), chat_row(1, "r", 2, 2, received=1, last=3)]
    assert account_chat(short, {}, {"r": 2}).lost == 2
    # Two positions nobody put there (a leave and a join again), received by all.
    extra = [chat_row(0, "r", 1, 1, received=3, last=4), chat_row(1, "r", 2, 2, received=2, last=4)]
    assert (account_chat(extra, {}, {}).extra, account_chat(extra, {}, {}).lost) == (2, 0)


def test_chat_joins_are_checked_against_every_members_position() -> None:
    """Members joined at 1, 2, 3; the third's position was read after a fourth's
    join (its own at 3, the fourth's at 4): it heard 4 early, and is owed none
    after; the second missed the join at 4. In room s the second's reply names a
    position before its own join, which it hears after it."""
    rows = [
        chat_row(0, "r", 1, 1, joins=4, joins_after_position=3, roster=1, joins_after_roster=3),
        chat_row(1, "r", 2, 2, joins=2, joins_after_position=1, roster=2, joins_after_roster=1),
        chat_row(2, "r", 3, 4, joins=2, joins_after_position=0, roster=4, joins_after_roster=0),
        chat_row(3, "r", 4, 4, joins=1, joins_after_position=0, roster=4, joins_after_roster=0),
        # In a cluster the reply may name a position before the member's own join.
        chat_row(4, "s", 1, 1, joins=2, joins_after_position=1, roster=1, joins_after_roster=1),
        chat_row(5, "s", 2, 1, joins=1, joins_after_position=1, roster=1, joins_after_roster=1),
    ]
    check = check_joins(rows)
    assert (check.members, check.rooms, check.received) == (6, 2, 12)
    assert check.expected == (3 + 1) + (2 + 1) + (0 + 1) + (0 + 1) + (1 + 1) + (1 + 0)
    assert check.early == 1
    assert (check.wrong, check.roster_wrong, check.no_own_join) == (1, 1, 0)
    assert expected_joins([10, 10, 5]) == 55 + 55 + 15


def test_chat_slots_spread_each_room_over_the_period() -> None:
    slots = [chat_slot(i, 25, 10) for i in range(25)]
    assert len(set(slots)) == 25
    assert all(0 <= s < 1 for s in slots)
    room_0 = sorted(chat_slot(i, 25, 10) for i in range(10))
    assert min(b - a for a, b in itertools.pairwise(room_0)) == pytest.approx(0.1)
    assert [chat_room(i, 10) for i in (0, 9, 10, 24)] == ["chat:0", "chat:0", "chat:1", "chat:2"]
    assert chat_room(12, 10, "ab-") == "chat:ab-1"


async def test_chat_client_counts_presence_by_position_and_resumes_with_its_token() -> None:
    """The chat client's frames: a subscribe and a publish it sends; the presence
    events it hears counted per phase and at their positions, its reply's roster,
    its publishes answered in order; a resume takes its member over, with its token."""
    state, counters = ChatState(), Counters()
    member = Member("chat:7", "u7", "TOKEN")
    client = ChatClient(7, "127.0.0.1:1", "/connect?token=TOKEN", counters, state, member)
    transport = FakeTransport()
    client.transport = cast(asyncio.Transport, transport)
    client._handshaking = False  # past the 101
    welcome = b'{"type":0,"data":{"wsId":"W","heartbeat":10,"session":"S","resumed":false}}'
    client.data_received(server_frame(welcome))
    assert client.subscribe()
    assert json.loads(unmask(transport.written[-1])) == {
        "type": 0,
        "data": {"op": "subscribe", "room": "chat:7", "id": 1},
    }

    def presence(event: str, user: str, seq: int) -> bytes:
        data = {"op": "presence", "room": "chat:7", "event": event, "user": user}
        frame = {"type": 0, "data": data, "room": "chat:7", "seq": seq, "epoch": "e1"}
        return server_frame(json.dumps(frame).encode())

    reply = {
        "op": "subscribe",
        "id": 1,
        "ok": True,
        "room": "chat:7",
        "position": ["e1", 4],
        "presence": {"members": [{"user": "u5"}, {"user": "u6"}], "position": ["e1", 3]},
    }
    client.data_received(
        presence("join", "u6", 3)  # before its position: early, and in its roster
        + presence("join", "u7", 4)
        + server_frame(json.dumps({"type": 0, "data": reply}).encode())
        + presence("join", "u8", 5)
    )
    assert (member.position, member.own_join, member.roster, member.roster_seq) == (4, 4, 2, 3)
    assert (member.joins, member.joins_after(4), member.joins_after(3)) == ([3, 4, 5], 1, 2)
    assert state.presence["subscribe"] == [3, 0, 0]
    assert state.sub_replies == 1
    assert client.streams[member.key].count() == StreamCount(3, 5, 3, 0)
    state.phase = "publish"
    assert client.publish(2, b"xx")
    assert client.publish(2, b"xx")
    sent = json.loads(unmask(transport.written[-1]))["data"]
    assert (sent["op"], sent["room"], sent["tag"]) == ("publish", "chat:7", 2)
    assert sent["data"].split(" ")[1:] == ["1", "xx"]
    other = b'{"exclude":"X","type":2,"data":"%d 0 xx","room":"chat:7","from":{"wsId":"X"},' % (
        time.time_ns()
    )
    client.data_received(
        server_frame(b'{"type":0,"data":{"op":"publish","ok":true,"room":"chat:7"}}')
        + server_frame(other + b'"seq":7,"epoch":"e1"}')
        + server_frame(b'{"type":0,"data":{"op":"publish","ok":false,"code":429}}')
    )
    assert (member.published, member.published_ok, dict(member.refused)) == (2, 1, {"429": 1})
    assert not member.pending
    assert counters.deliveries == 1
    assert client.streams[member.key].count() == StreamCount(3, 7, 4, 1)  # 6: its own message
    client.drop()

    resumed = ChatClient(
        7,
        "127.0.0.1:1",
        resume_path("/connect?token=TOKEN"),
        counters,
        state,
        member,
        previous=client,
    )
    written = FakeTransport()
    resumed.connection_made(cast(asyncio.BaseTransport, written))
    assert written.written[0].startswith(b"GET /connect?token=TOKEN&resume=1 HTTP/1.1\r\n")
    assert resumed.streams is client.streams
    assert resumed.since == {"room:chat:7": ["e1", 7]}


def test_chat_reports_read_back_as_sent() -> None:
    row = chat_row(3, "chat:0", 2, 2, received=5, last=9, close_code=1006)
    report = ChatReport(1.0, 5, 9, [[100, 5]], {"subscribe": [3, 0, 0]}, [row], 0, 0)
    data = json.loads(json.dumps({"id": 2, **report.to_json()}))
    assert data["rows"][0][:4] == [3, "chat:0", 2, 2]
    assert ChatReport.from_json(data) == report


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "--pushes", "5"], "--duration"),
        (["chat", "--rate", "0"], "--rate above 0"),
        (["chat", "--room-size", "1"], "--room-size"),
        (["chat", "--slow", "2"], "--slow"),
        (["room", "--room-size", "5"], "chat only"),
        (["room", "--api-push", "room"], "chat only"),
        (["chat", "--ws-url", "ws://127.0.0.1:1/", "--api-url", "http://127.0.0.1:2"], "secret"),
    ],
)
def test_chat_refuses_what_it_cannot_do(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, runs, err = bench(capsys, *argv)
    assert status == 2
    assert runs == []
    assert message in err


def test_chat_defaults_and_its_own_server() -> None:
    """Chat publishes 1 message a second per client for 10 s by default; its own
    server gets the namespaces and a made-up token secret, which its clients share."""
    parser = argparse.ArgumentParser(prog="pushgate")
    add_bench_parser(parser.add_subparsers(dest="command"))
    opts = options_from(parser.parse_args(["bench", "chat"]))
    assert (opts.rate, opts.push_duration, opts.room_size, opts.chat_resume_rate) == (
        1.0,
        10.0,
        10,
        1.0,
    )
    args = list(opts.server_args)
    assert args[args.index("--namespaces") + 1] == "chat=public+publish+presence"
    assert args[args.index("--token-secret") + 1] == opts.token_secret
    resume = options_from(parser.parse_args(["bench", "chat", "--resume-rate", "0.5"]))
    assert resume.chat_resume_rate == 0.5


def test_chat_worker_module_runs_as_a_script() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "pushgate.bench.chatworker"],
        input=b'{"id":1,"cmd":"hello"}\n{"id":2,"cmd":"chat_mark","phase":"nope"}\n',
        capture_output=True,
        timeout=30 * UNIT,
        env={**os.environ},
        check=True,
    )
    hello, refused = (json.loads(line) for line in process.stdout.splitlines())
    assert hello["id"] == 1
    assert hello["fd_limit"] > 0
    assert "unknown phase" in refused["error"]


# A gateway that drops handshakes, as the seed's Go server does to a slow one


@contextlib.contextmanager
def handshake_dropper(drops: int) -> Iterator[int]:
    """A WebSocket gateway on a free port that closes its first ``drops``
    connections before answering (the seed's 10 ms ReadTimeout), then upgrades the
    others and holds them; yields its port."""
    port = free_port()
    seen = 0
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        if seen <= drops:
            writer.close()
            return
        request = await reader.readuntil(b"\r\n\r\n")
        [key] = re.findall(rb"(?i)sec-websocket-key: *(\S+)", request)
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve_one, LOOPBACK, port)
        ready.set()
        await stop.wait()
        server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("retries", [0, 3])
def test_connect_retries_try_again_a_handshake_the_server_dropped(
    capsys: pytest.CaptureFixture[str], retries: int
) -> None:
    """--connect-retries K opens a connection anew when the server closed it before
    its 101, K times at most, and counts the retries; without it, each is a failure."""
    with handshake_dropper(drops=3) as port:
        status, [run], err = bench(
            capsys,
            "idle",
            "-n",
            "4",
            "--duration",
            "0.2",
            "--workers",
            "1",
            "--connect-concurrency",
            "1",
            "--connect-retries",
            str(retries),
            "--ws-url",
            f"ws://{LOOPBACK}:{port}/connect",
            "--quiet",
            "--json",
        )
    assert status == 0, err
    if retries:
        assert (run["connected"], run["connect_failed"], run["connect_retries"]) == (4, 0, 3)
    else:
        assert (run["connected"], run["connect_failed"], run["connect_retries"]) == (1, 3, None)
        assert any("connection lost during the handshake" in e for e in run["errors"])
