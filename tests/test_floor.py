"""scripts/floor: the C program that measures the kernel's floor for fan-out builds and
reports a figure for each batch size. A small run (50 connections, 20 rounds): no
timing is asserted, only that the counts add up and every figure is there."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

FLOOR = Path(__file__).parent.parent / "scripts" / "floor"


def test_floor_builds_and_reports_each_batch_size() -> None:
    if shutil.which("cc") is None:
        pytest.fail("scripts/floor needs a C compiler: scripts/test installs gcc (apt-get)")
    done = subprocess.run(
        [FLOOR, "-n", "50", "--rounds", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["connections"] == 50
    assert report["size"] == 110
    assert [v["batch"] for v in report["variants"]] == [1, 4, 16]
    for variant in report["variants"]:
        assert variant["rounds"] == 20
        assert variant["messages"] == 50 * 20 * variant["batch"]
        # One send() per socket per round, and one more for each short write.
        assert variant["sends"] == 50 * 20 + variant["partial"] + variant["eagain"]
        assert variant["cpu_s"] > 0
        assert variant["us_per_message"] > 0


def test_floor_refuses_what_does_not_fit_the_open_file_limit() -> None:
    done = subprocess.run([FLOOR, "-n", "100000000"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "open-file limit" in done.stderr
