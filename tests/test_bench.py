"""``pushgate bench``: small runs against a real server, and its accounting.

No test asserts a timing: figures such as deliveries/s are only checked to be there.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pushgate.bench.cli import add_bench_parser, run_bench
from pushgate.bench.histogram import Histogram, bucket
from pushgate.bench.options import BenchError, BenchOptions, check_url, scenario_named
from pushgate.bench.report import ClientCount, RunResult, account, table
from pushgate.bench.scenarios import ALL, Plan
from tests.helpers import LOOPBACK, UNIT, pushgate_command

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
    """50 clients, 20 pushes to all: 1,000 deliveries, none lost, every figure reported."""
    status, runs, err = bench(capsys, "broadcast", "-n", "50", "--pushes", "20", *SMALL)
    assert status == 0, err
    [run] = runs
    assert run.keys() >= REQUIRED_KEYS
    assert run["scenario"] == "broadcast"
    assert run["connections"] == run["connected"] == 50
    assert run["pushes"] == 20
    assert run["deliveries"] == run["expected"] == 1000
    assert run["lost"] == 0
    assert run["server_delivered"] == 1000
    for key in ("deliveries_per_s", "server_cpu_us_per_delivery", "client_cpu_us_per_delivery"):
        assert run[key] >= 0, key
    assert 0 <= run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"] <= run["max_ms"]
    assert run["rss_kb_per_conn"] is not None
    assert "deliveries/s" in err  # the table goes to stderr with --json


def test_room_with_one_sender_checks_order(capsys: pytest.CaptureFixture[str]) -> None:
    """Clients joined to one room through their welcome's wsId receive every push,
    in order when a single sender pushes."""
    status, runs, err = bench(
        capsys, "--scenario", "room", "-n", "50", "--pushes", "20", "--senders", "1", *SMALL
    )
    assert status == 0, err
    [run] = runs
    assert run["scenario"] == "room"
    assert run["deliveries"] == 1000
    assert run["lost"] == run["duplicates"] == run["out_of_order"] == 0


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
    """churn: the steady clients lose nothing while others come and go."""
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
        *SMALL,
    )
    assert status == 0, err
    [run] = runs
    assert run["churn_opened"] > 0
    assert run["churn_closed"] == run["churn_opened"]
    assert run["churn_failed"] == 0
    assert run["deliveries"] == run["expected"] == 20 * run["pushes"]
    assert run["lost"] == 0


def test_idle_reports_memory_and_cpu_per_connection(capsys: pytest.CaptureFixture[str]) -> None:
    """idle pushes nothing and reports the server's RSS and CPU per connection."""
    status, runs, err = bench(capsys, "idle", "-n", "50", "--duration", "1", *SMALL)
    assert status == 0, err
    [run] = runs
    assert run["deliveries"] == run["pushes"] == run["lost"] == 0
    assert run["deliveries_per_s"] is None
    assert run["rss_kb_per_conn"] is not None
    assert run["idle_cpu_us_per_conn_s"] >= 0
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
    ],
)
def test_refuses_what_it_cannot_do_safely(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, runs, err = bench(capsys, *argv)
    assert status == 2
    assert runs == []
    assert message in err


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


def test_defaults_are_bounded() -> None:
    """Without --pushes or --duration each scenario still has a bound."""
    for name in ("broadcast", "room", "rooms", "idle", "churn"):
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
