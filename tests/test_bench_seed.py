"""scripts/bench-seed: the seed's Go code beside pushgate (issue 23, goal 4).

The fast tests need no Go; the one that builds and runs the seed is skipped where
``go`` is missing (scripts/test installs golang-go and the seed's two libraries)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "bench-seed"
APT = "apt-get install -y golang-go golang-github-gorilla-websocket-dev"


def bench_seed(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_help_explains_what_it_measures() -> None:
    done = bench_seed("--help")
    assert done.returncode == 0, done.stderr
    assert "scripts/bench-seed [OPTIONS] -- {idle,broadcast}" in done.stdout
    assert "hwholiday/learning_tools" in done.stdout
    assert APT in done.stdout


def test_missing_go_names_the_packages_to_install(tmp_path: Path) -> None:
    done = bench_seed("--go", str(tmp_path / "go"), "--", "idle", "-n", "10")
    assert done.returncode == 1
    assert "Go is not installed" in done.stderr
    assert APT in done.stderr


def test_missing_libraries_name_the_packages_to_install(tmp_path: Path) -> None:
    go = tmp_path / "go"
    go.write_text("#!/bin/sh\nexit 0\n")
    go.chmod(0o755)
    done = bench_seed("--go", str(go), "--gocode", str(tmp_path), "--", "broadcast")
    assert done.returncode == 1
    assert "golang-github-satori-go.uuid-dev" in done.stderr
    assert APT in done.stderr


@pytest.mark.parametrize("scenario", ["room", "rooms", "resume"])
def test_scenarios_that_need_a_wsid_are_refused_with_the_reason(scenario: str) -> None:
    done = bench_seed("--", scenario)
    assert done.returncode == 2
    assert "cannot run against the seed" in done.stderr


def test_options_it_gives_the_bench_itself_are_refused() -> None:
    done = bench_seed("--", "idle", "--ws-url", "ws://127.0.0.1:1/connect")
    assert done.returncode == 2
    assert "--ws-url is this script's" in done.stderr


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")
@pytest.mark.timeout(120)
def test_builds_the_seed_and_measures_both_side_by_side() -> None:
    """One short round of a paced broadcast: the seed built from scripts/seed-go and
    this tree's pushgate, each measured by the bench, both answering every push."""
    done = bench_seed(
        "--rounds",
        "1",
        "--pause",
        "0",
        "--json",
        "--",
        "broadcast",
        "-n",
        "20",
        "--pushes",
        "5",
        "--rate",
        "20",
        "--senders",
        "1",
        "--workers",
        "1",
        timeout=110,
    )
    assert done.returncode in (0, 3), done.stderr
    result = json.loads(done.stdout)
    [seed], [ours] = result["seed"]["runs"], result["pushgate"]["runs"]
    assert result["seed"]["label"].startswith("seed Go")
    # The seed may drop a push's answer (its 10 ms WriteTimeout) on a loaded machine.
    assert seed["pushes"] + seed["push_errors"] == 5
    assert seed["deliveries"] >= 20 * seed["pushes"]
    assert seed["server_cpu_us_per_delivery"] is not None
    assert ours["deliveries"] == 100
    assert ours["lost"] == 0
    # 100 deliveries take a clock tick of CPU or none: a ratio may be undefined.
    assert result["summary"]["server_cpu_us_per_delivery"]["pushgate"]["median"] is not None
    assert "round 1/1  seed Go" in done.stderr
